"""``data.mix_controller`` in real runs (tiny models on CPU): the hard domain's share grows; a branch's forgetting
guard; stops before, on and after a decision step resume to the uninterrupted run's decisions, losses and ledger, with
0 or 2 loader workers and with either signal; ``mix --replay`` reads the identical stream; bad configs are refused
before training; ``--dry_run`` and ``mix --config`` say what is decided during the run."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from midtrain.cli import main
from tests.helpers import write_documents_shard
from tests.integration.test_faults import stop_at_step
from tests.integration.train_helpers import losses, metric, read_json, run_cli, tiny_config, write_config


@pytest.fixture(scope="module")
def cycle_root(tmp_path_factory):
    """main: the cycle 100 101 102 103 (easy); code: the same tokens backwards (learning it unlearns main's);
    math: uniform random tokens (hard). Each with a held-out shard."""
    root = tmp_path_factory.mktemp("cycles")
    rng = np.random.default_rng(0)
    forward = [[100 + k % 4 for k in range(50)] for _ in range(40)]
    backward = [[103 - k % 4 for k in range(50)] for _ in range(40)]
    uniform = [rng.integers(1000, 2000, 50).tolist() for _ in range(40)]
    for folder, documents in (("1", forward), ("c1", backward), ("m1", uniform)):
        write_documents_shard(root / "train" / folder, documents)
        write_documents_shard(root / "val" / folder, documents[:4])
    return root


def controlled(root, out, mix="main:0.5,code:0.25,math:0.25", **controller) -> dict:
    config = tiny_config(root, out, mix=mix, max_steps=12, save_interval=100)
    config["data"]["init_args"]["mix_controller"] = {"every_steps": 4, "eta": 1.0, **controller}
    return config


def run(config, path) -> int:
    return main(["pretrain", "--config", str(write_config(path, config))])


def weights(out, domain) -> list[float]:
    return list(metric(out, f"mix/{domain}/weight").values())


def test_the_hard_domains_share_grows_at_every_decision_and_each_phase_is_exact(cycle_root, tmp_path):
    config = controlled(cycle_root, tmp_path / "direction", mix="main:0.5,math:0.5")
    config["train"]["max_steps"] = 24
    assert run(config, tmp_path / "d.yaml") == 0
    hard = weights(tmp_path / "direction", "math")
    # decisions at steps 4, 8, ..., 20: the random tokens' share rises at every one
    assert len(hard) == 5 and hard == sorted(hard) and hard[0] > 0.5 and hard[-1] > 0.9
    ledger = read_json(tmp_path / "direction" / "final" / "ledger.json")
    stretches = ledger["stretches"]
    assert [s["segment"] for s in stretches] == ["prior", *(f"decision {k}" for k in range(1, 6))]
    assert [s["decision"]["after"]["math"] for s in stretches[1:]] == hard
    for stretch in stretches:  # every phase read exactly: each shard within one sample of its share
        samples = {i: t // 16 for i, t in stretch["tokens"].items()}
        total = sum(samples.values())
        for share, ids in stretch["shares"]:
            for shard_id in ids:
                assert abs(samples.get(shard_id, 0) - share * total) <= 1, (stretch, shard_id)


def test_a_branch_with_reference_start_raises_the_forgotten_domains_share(cycle_root, tmp_path):
    trunk = tiny_config(cycle_root, tmp_path / "trunk", mix="main:1.0", max_steps=16, save_interval=100, min_lr=0.01)
    trunk["optimizer"]["init_args"]["lr"] = 0.01
    assert run(trunk, tmp_path / "t.yaml") == 0
    branch = controlled(cycle_root, tmp_path / "branch", mix="main:0.5,code:0.5", reference="start")
    branch["branch_from"] = str(tmp_path / "trunk" / "final")
    branch["train"].update(max_steps=28, min_lr=0.01)
    branch["optimizer"]["init_args"]["lr"] = 0.01
    assert run(branch, tmp_path / "b.yaml") == 0
    first = read_json(tmp_path / "branch" / "final" / "ledger.json")["stretches"][2]["decision"]
    branch_point = metric(tmp_path / "trunk", "val/main/loss")[16]
    assert first["step"] == 20
    # the reference is the branch point's held-out loss; code, new to the model, falls below its own
    assert metric(tmp_path / "branch", "val/main/loss")[16] == pytest.approx(branch_point, rel=1e-6)
    assert first["signal"]["main"] > branch_point  # learning code backwards made main worse: forgetting
    assert first["score"] == {"main": 1.0, "code": 0.0}
    assert first["after"]["main"] > first["before"]["main"] == 0.5


@pytest.fixture(scope="module")
def reference_run(train_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("controlled") / "reference"
    assert run(controlled(train_root, out), out.parent / "r.yaml") == 0
    return out


@pytest.mark.parametrize("stop", [3, 4, 5])
def test_a_stop_before_on_or_after_a_decision_resumes_to_the_same_decisions(train_root, tmp_path, monkeypatch,
                                                                            reference_run, stop):
    out = tmp_path / "stopped"
    path = write_config(tmp_path / "s.yaml", controlled(train_root, out))
    with monkeypatch.context() as patch:
        stop_at_step(patch, stop, signal.SIGUSR1)
        assert main(["pretrain", "--config", str(path)]) == 75
    assert [p.name for p in out.glob("step-*")] == [f"step-{stop:08d}"]
    saved = torch.load(out / f"step-{stop:08d}" / "lit_model.pth", weights_only=False)
    assert len(saved["train_dataloader"]["controller"]["decisions"]) == (1 if stop >= 4 else 0)
    assert main(["pretrain", "--config", str(path)]) == 0
    assert read_json(out / "final" / "ledger.json") == read_json(reference_run / "final" / "ledger.json")
    assert losses(out) == losses(reference_run)
    for domain in ("main", "code", "math"):
        assert weights(out, domain) == weights(reference_run, domain)


def test_two_loader_workers_take_the_same_decisions(train_root, tmp_path, reference_run):
    config = controlled(train_root, tmp_path / "workers")
    config["data"]["init_args"]["num_workers"] = 2
    assert run(config, tmp_path / "w.yaml") == 0
    assert read_json(tmp_path / "workers" / "final" / "ledger.json") == read_json(
        reference_run / "final" / "ledger.json")
    assert losses(tmp_path / "workers") == losses(reference_run)


def test_a_small_domain_without_samples_in_an_interval_keeps_its_share(cycle_root, tmp_path, capsys):
    """math (random tokens: the highest loss) at 3 %: an interval of 2 steps reads 8 samples, none of them math's. It
    used to score as loss 0 and fall to min_weight; no samples is no signal: it keeps its share, said in the table."""
    config = controlled(cycle_root, tmp_path / "small", mix="main:0.87,code:0.1,math:0.03", signal="train_loss",
                        every_steps=2, eta=0.5)
    assert run(config, tmp_path / "s.yaml") == 0
    printed = capsys.readouterr().out
    stretches = read_json(tmp_path / "small" / "final" / "ledger.json")["stretches"]
    decisions = [s["decision"] for s in stretches[1:]]
    assert len(decisions) == 5 and all(d["after"]["math"] == 0.03 for d in decisions)
    assert all(d["signal"]["math"] is None and d["score"]["math"] is None for d in decisions)
    assert all(d["signal"]["code"] is not None for d in decisions)  # code is heard and moves
    assert decisions[-1]["after"]["code"] != 0.1
    assert "no samples in the interval: weight kept" in printed
    assert metric(tmp_path / "small", "mix/math/signal") == {}  # no 0.0 logged for a loss never measured
    assert list(metric(tmp_path / "small", "mix/math/weight").values()) == [0.03] * 5


def test_the_train_loss_signal_resumes_mid_interval(train_root, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    assert run(controlled(train_root, reference, signal="train_loss", every_steps=3), tmp_path / "r.yaml") == 0
    signals = metric(reference, "mix/code/signal")
    assert list(signals) == [3, 6, 9] and len(set(signals.values())) == 3
    # the per-domain training loss is the mean of the interval's per-sample losses: close to the logged train/loss
    assert abs(signals[3] - sum(losses(reference)[s] for s in (1, 2, 3)) / 3) < 0.5
    out = tmp_path / "stopped"
    path = write_config(tmp_path / "s.yaml", controlled(train_root, out, signal="train_loss", every_steps=3))
    with monkeypatch.context() as patch:
        stop_at_step(patch, 5, signal.SIGUSR1)  # inside the second interval, during a step's accumulation
        assert main(["pretrain", "--config", str(path)]) == 75
    assert main(["pretrain", "--config", str(path)]) == 0
    assert metric(out, "mix/code/signal") == signals
    assert read_json(out / "final" / "ledger.json") == read_json(reference / "final" / "ledger.json")


def test_replay_reads_the_identical_stream(train_root, tmp_path, reference_run, capsys):
    replayed_config = tmp_path / "replay.yaml"
    assert main(["mix", "--replay", str(reference_run / "final"), "--out", str(replayed_config)]) == 0
    printed = capsys.readouterr().out
    assert "2 decision(s)" in printed and "mix_schedule:" in printed and "start_step: 8" in printed
    config = yaml.safe_load(replayed_config.read_text())
    assert "mix_controller" not in config["data"]["init_args"] and config["out_dir"].endswith("-replay-step12")
    assert main(["pretrain", "--config", str(replayed_config)]) == 0
    replay = Path(config["out_dir"])
    ours, theirs = (read_json(o / "final" / "ledger.json") for o in (replay, reference_run))
    assert ours["shards"] == theirs["shards"]
    assert [(s["start_step"], s["shares"], s["tokens"]) for s in ours["stretches"]] == [
        (s["start_step"], s["shares"], s["tokens"]) for s in theirs["stretches"]]
    assert losses(replay) == losses(reference_run)
    assert main(["mix", "--replay", str(replayed_config.parent / "nothing")]) == 2
    assert "--replay='" in capsys.readouterr().err
    assert main(["mix", "--replay", str(reference_run / "final"), "--out", str(replayed_config)]) == 2
    assert "overwrites nothing" in capsys.readouterr().err
    # replays of one run to two steps are two runs, each in its own folder: the second used to find the first's
    # finished folder ("already finished")
    stopped = tmp_path / "stopped"
    path = write_config(tmp_path / "s.yaml", controlled(train_root, stopped))
    assert main(["pretrain", "--config", str(path), "--train.max_additional_steps=8"]) == 0
    assert main(["pretrain", "--config", str(path)]) == 0
    folders = []
    for step, name in ((8, "step-00000008"), (12, "final")):
        out = tmp_path / "later" / f"replay{step}.yaml"  # a folder that does not exist yet: created
        assert main(["mix", "--replay", str(stopped / name), "--out", str(out)]) == 0
        folders.append(yaml.safe_load(out.read_text())["out_dir"])
    assert folders == [f"{stopped}-replay-step8", f"{stopped}-replay-step12"]
    for bad, message in ((tmp_path, "is a folder"), (tmp_path / "r.yaml" / "x.yaml", "cannot be created")):
        if bad != tmp_path:
            (tmp_path / "r.yaml").write_text("a file where a folder is needed")
        assert main(["mix", "--replay", str(reference_run / "final"), "--out", str(bad)]) == 2
        assert message in capsys.readouterr().err


def test_a_changed_controller_on_resume_is_refused_unless_reset(train_root, tmp_path, capsys):
    out = tmp_path / "run"
    first = controlled(train_root, out)
    first["train"]["max_steps"] = 6
    assert run(first, tmp_path / "a.yaml") == 0
    longer = controlled(train_root, out, eta=0.7)
    assert run(longer, tmp_path / "b.yaml") == 2
    err = capsys.readouterr().err
    assert "--data.mix_controller.eta=0.7 (the run's: 1.0)" in err and "reset=true" in err
    removed = tiny_config(train_root, out, mix="main:0.5,code:0.25,math:0.25", max_steps=12, save_interval=100)
    assert run(removed, tmp_path / "c.yaml") == 2
    assert "no longer sets" in capsys.readouterr().err
    assert run(controlled(train_root, out, eta=0.7, reset=True), tmp_path / "d.yaml") == 0
    shown = capsys.readouterr().out
    assert "--data.mix_controller.reset=true: new controller state from step 6 (changed: eta)" in shown
    record = read_json(out / "run.json")["invocations"][-1]["mix_controller"]
    assert record == {"decisions_before": 1, "resets": [{"step": 6, "changed": ["eta"]}]}
    assert [s["segment"] for s in read_json(out / "final" / "ledger.json")["stretches"]] == [
        "prior", "decision 1", "decision 2"]


def test_bad_configs_are_refused_before_training(train_root, tmp_path, capsys):
    from tests.helpers import write_token_shard

    no_val = tmp_path / "no_val"
    for folder, start in (("train/1", 0), ("train/c1", 2000), ("val/1", 1600)):
        write_token_shard(no_val / folder, start, 600, doc_tokens=50, chunk_tokens=512)
    cases = [
        (controlled(no_val, tmp_path / "a", mix="main:0.5,code:0.5"), "code lack a validation set"),
        (controlled(train_root, tmp_path / "b", every_steps=6), "every_steps=6 is not a multiple of --eval.interval=4"),
        (controlled(train_root, tmp_path / "c", eta=-1), "--data.mix_controller.eta=-1.0 must be a positive step size"),
        (controlled(train_root, tmp_path / "d", mix="main:1.0"), "would move 1 domain(s) (main)"),
    ]
    scheduled = controlled(train_root, tmp_path / "e")
    scheduled["data"]["init_args"]["mix_schedule"] = [{"start_step": 0, "mix_weights_str": "main:1.0"}]
    del scheduled["data"]["init_args"]["mix_weights_str"]
    cases.append((scheduled, "--data.mix_controller and --data.mix_schedule are both set"))
    literal = controlled(train_root, tmp_path / "f")
    literal["data"]["init_args"]["literal_weights_str"] = literal["data"]["init_args"].pop("mix_weights_str")
    literal["data"]["init_args"]["literal_weights_str"] = "main/1:0.5,c1:0.5"
    cases.append((literal, "moves domain shares, but the prior is given as --data.literal_weights_str"))
    for k, (config, message) in enumerate(cases):
        assert run(config, tmp_path / f"{k}.yaml") == 2, message
        assert message in capsys.readouterr().err
        assert not (tmp_path / "abcdef"[k]).exists()


def test_plain_litgpt_cannot_count_the_decisions_steps(train_root):
    from midtrain.data.module import ShardedMixedDataset
    from midtrain.errors import ConfigError

    data = ShardedMixedDataset(data_path=train_root, mix_weights_str="main:0.5,code:0.5",
                               mix_controller={"every_steps": 4})
    data.connect(batch_size=2, max_seq_length=16)
    with pytest.raises(ConfigError, match=r"--data.mix_controller counts in optimizer steps"):
        data.train_dataloader(rank=0, world_size=1)


def test_dry_run_and_mix_say_what_is_decided_during_the_run(train_root, tmp_path, capsys):
    path = write_config(tmp_path / "m.yaml", controlled(train_root, tmp_path / "run", max_weight=0.9))
    assert main(["pretrain", "--config", str(path), "--dry_run", "true"]) == 0
    shown = capsys.readouterr().out
    assert ("the later phases are decided during the run, every 4 steps from step 4, from val_loss (eta 1, reference "
            "none, smoothing 0), moving main, code, math within [0.01, 0.9] each") in shown
    assert "Worst case: math at max_weight 0.9 from here to the end reads its fullest shard" in shown
    assert not (tmp_path / "run").exists()
    assert main(["mix", "--config", str(path)]) == 0
    assert "the later phases are decided during the run" in capsys.readouterr().out
    assert main(["mix", "--data.data_path", str(train_root), "--data.mix_weights_str", "main:0.5,code:0.5",
                 "--data.mix_controller", "{every_steps: 4}"]) == 2
    assert "give the run's config, 'midtrain mix --config run.yaml'" in capsys.readouterr().err


@pytest.mark.slow
def test_two_ddp_processes_decide_alike(train_root, tmp_path):
    """Every rank reads the same signal (rank 0's, broadcast) and so takes the same decision; with train_loss the
    per-domain sums are all-reduced."""
    out = tmp_path / "ddp"
    config = controlled(train_root, out, signal="train_loss", every_steps=3)
    config["devices"] = 2
    result = run_cli(write_config(tmp_path / "ddp.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    stretches = read_json(out / "final" / "ledger.json")["stretches"]
    assert [s["segment"] for s in stretches] == ["prior", "decision 1", "decision 2", "decision 3"]
    assert sum(sum(s["tokens"].values()) for s in stretches) == 12 * 4 * 16


def test_a_domain_near_max_passes_is_capped_and_the_table_says_so(cycle_root, tmp_path, capsys):
    # math (random tokens, the hard domain) holds 116 samples of 17 tokens; max_passes 0.3 allows it 34.8 in all
    config = controlled(cycle_root, tmp_path / "capped", mix="main:0.5,math:0.5", eta=5.0)
    config["data"]["init_args"]["max_passes"] = 0.3
    assert run(config, tmp_path / "c.yaml") == 0
    assert "capped by max_passes" in capsys.readouterr().out
    ledger = read_json(tmp_path / "capped" / "final" / "ledger.json")
    first = ledger["stretches"][1]["decision"]
    assert first["capped"] == ["math"]
    m1 = ledger["shards"]["m1"]
    assert round(m1["samples"] / m1["passes"]) == 116
    # read 8 of math by step 4, 32 samples of the run still to come, one held back: (0.3 * 116 - 8 - 1) / 32
    assert first["after"]["math"] == math.floor((0.3 * 116 - 9) / 32 * 1e4) / 1e4
    assert ledger["shards"]["m1"]["passes"] <= 0.3


def test_a_decision_due_at_the_end_is_taken_when_the_run_is_extended(train_root, tmp_path):
    out = tmp_path / "run"
    assert run(controlled(train_root, out), tmp_path / "a.yaml") == 0  # decisions at 4 and 8; 12 is the end
    longer = controlled(train_root, out)
    longer["train"]["max_steps"] = 16
    assert run(longer, tmp_path / "b.yaml") == 0
    stretches = read_json(out / "final" / "ledger.json")["stretches"]
    assert [(s["segment"], s["start_step"]) for s in stretches] == [
        ("prior", 0), ("decision 1", 4), ("decision 2", 8), ("decision 3", 12)]
    assert 12 in metric(out, "mix/main/weight")
