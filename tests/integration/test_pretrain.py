"""``midtrain pretrain`` end to end on CPU with a tiny model: trunk, branch, resume, preemption, dry run."""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from midtrain.cli import main
from midtrain.data.module import ShardedMixedDataset
from tests.integration.train_helpers import (
    REPO,
    SEQ_LENGTH,
    losses,
    metric,
    preempt,
    read_json,
    run_cli,
    shard_of,
    tiny_config,
    write_config,
)

TRUNK_STEPS, BRANCH_STEP = 12, 8
MAIN_SAMPLES_PER_PASS = 87  # 1,500 tokens in chunks of 512: whole 17-token samples per chunk


@pytest.fixture
def trunk(tiny_trunk):
    """The session's 12-step trunk on main data, checkpoints every 4 steps (conftest.py)."""
    return tiny_trunk


def test_trunk_writes_litgpt_checkpoints_ledger_and_metrics(trunk):
    for name in ("step-00000004", "step-00000008", "final"):
        folder = trunk / name
        assert {"lit_model.pth", "model_config.yaml", "hyperparameters.yaml", "ledger.json", "checkpoint.json"} <= {
            p.name for p in folder.iterdir()}
    state = torch.load(trunk / "step-00000008" / "lit_model.pth", weights_only=False)
    assert {"model", "optimizer", "train_dataloader", "iter_num", "step_count"} <= set(state)
    assert (state["step_count"], state["iter_num"]) == (8, 16)
    ledger = read_json(trunk / "step-00000008" / "ledger.json")
    assert ledger["shards"]["main/1"]["tokens"] == 8 * 4 * SEQ_LENGTH == ledger["domains"]["main"]["tokens"]
    samples_per_pass = state["train_dataloader"]["shards"]["main/1"]["samples_per_pass"]
    assert samples_per_pass == MAIN_SAMPLES_PER_PASS
    assert ledger["shards"]["main/1"]["passes"] == pytest.approx(32 / MAIN_SAMPLES_PER_PASS)
    assert {"run.json", "config.yaml", "plan.json"} <= {p.name for p in trunk.iterdir()}
    train_loss = losses(trunk)
    assert sorted(train_loss) == list(range(1, TRUNK_STEPS + 1)) and all(math.isfinite(v) for v in train_loss.values())
    assert metric(trunk, "data/main/tokens")[TRUNK_STEPS] == TRUNK_STEPS * 4 * SEQ_LENGTH
    for domain in ("main", "code", "math", "overall"):
        assert set(metric(trunk, f"val/{domain}/loss")) == {4, 8, 12}
    assert not list(trunk.glob(".*partial"))


def branch_config(train_root, trunk, out, **overrides):
    config = tiny_config(train_root, out, mix="main:0.75,code:0.25", max_steps=TRUNK_STEPS, **overrides)
    config["branch_from"] = str(trunk / f"step-{BRANCH_STEP:08d}")
    return config


def test_branch_continues_steps_lr_and_data_cursors(train_root, trunk, tmp_path):
    out = tmp_path / "code-branch"
    assert (
        main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", branch_config(train_root, trunk, out)))])
        == 0
    )
    # the step counter and the LR schedule continue: same horizon, same cosine, from step 9
    assert sorted(losses(out)) == list(range(BRANCH_STEP + 1, TRUNK_STEPS + 1))
    trunk_lr, branch_lr = metric(trunk, "train/lr"), metric(out, "train/lr")
    assert all(branch_lr[s] == pytest.approx(trunk_lr[s]) for s in branch_lr)
    # lineage recorded, cumulative ledger over trunk and branch, per phase split
    run = read_json(out / "run.json")
    assert run["lineage"][0]["step"] == BRANCH_STEP and run["lineage"][0]["mixture_after"] == {
        "main/1": 0.75,
        "c1": 0.25,
    }
    ledger = read_json(out / "final" / "ledger.json")
    trunk_samples = BRANCH_STEP * 4
    branch_samples = (TRUNK_STEPS - BRANCH_STEP) * 4
    assert ledger["shards"]["main/1"]["samples"] + ledger["shards"]["c1"]["samples"] == trunk_samples + branch_samples
    assert ledger["shards"]["c1"]["samples"] == branch_samples // 4
    assert [p["tokens"] for p in ledger["stretches"]] == [
        {"main/1": trunk_samples * SEQ_LENGTH},
        {"main/1": 12 * SEQ_LENGTH, "c1": 4 * SEQ_LENGTH},
    ]
    assert read_json(out / "final" / "checkpoint.json")["lineage"] == run["lineage"]


def stream_first_tokens(loader, samples: int) -> list[int]:
    out, batches = [], iter(loader)
    while len(out) < samples:
        out.extend(int(t) for t in next(batches)[:, 0])
    return out[:samples]


def test_branch_never_repeats_a_main_sample_the_trunk_saw(train_root, trunk):
    """Replay the trunk's stream and the branch's (from the trunk checkpoint's saved cursors) sample by sample."""
    def module(mix):
        data = ShardedMixedDataset(data_path=train_root, mix_weights_str=mix, num_workers=0)
        data.connect(batch_size=2, max_seq_length=SEQ_LENGTH)
        return data

    trunk_tokens = stream_first_tokens(module("main:1.0").train_dataloader(), BRANCH_STEP * 4)
    loader = module("main:0.75,code:0.25").train_dataloader()
    loader.load_state_dict(
        torch.load(trunk / f"step-{BRANCH_STEP:08d}" / "lit_model.pth", weights_only=False)["train_dataloader"]
    )
    branch_tokens = stream_first_tokens(loader, 100)
    rest_of_pass = [t for t in branch_tokens if shard_of(t) == "main/1"][: MAIN_SAMPLES_PER_PASS - len(trunk_tokens)]
    # the branch reads the rest of the trunk's pass over main/1: nothing the trunk saw again, nothing skipped
    assert not set(trunk_tokens) & set(rest_of_pass)
    assert len(set(trunk_tokens) | set(rest_of_pass)) == MAIN_SAMPLES_PER_PASS
    assert {shard_of(t) for t in branch_tokens} == {"main/1", "c1"}


def test_paper_practice_copy_trunk_checkpoint_and_resume_true(train_root, trunk, tmp_path):
    out = tmp_path / "copied"
    shutil.copytree(trunk / f"step-{BRANCH_STEP:08d}", out / f"step-{BRANCH_STEP:08d}")
    config = tiny_config(train_root, out, mix="main:0.75,code:0.25", max_steps=TRUNK_STEPS)
    config["resume"] = True
    assert main(["pretrain", "--config", str(write_config(tmp_path / "c.yaml", config))]) == 0
    assert read_json(out / "run.json")["lineage"][0]["parent_out_dir"] == str(trunk.resolve())
    ledger = read_json(out / "final" / "ledger.json")
    assert len(ledger["stretches"]) == 2 and ledger["stretches"][0]["tokens"] == {
        "main/1": BRANCH_STEP * 4 * SEQ_LENGTH
    }


def test_resume_auto_after_max_additional_steps_equals_uninterrupted(train_root, trunk, tmp_path):
    out = tmp_path / "chunked"
    config = write_config(
        tmp_path / "r.yaml", tiny_config(train_root, out, max_steps=TRUNK_STEPS, max_additional_steps=5)
    )
    assert main(["pretrain", "--config", str(config)]) == 0
    assert (out / "step-00000005").is_dir() and not (out / "final").exists()
    assert main(["pretrain", "--config", str(config)]) == 0  # steps 6-10
    assert main(["pretrain", "--config", str(config)]) == 0  # steps 11-12, final
    assert losses(out) == pytest.approx(losses(trunk), rel=1e-6)
    assert main(["pretrain", "--config", str(config)]) == 0  # finished: nothing to do
    assert len(read_json(out / "run.json")["invocations"]) == 3


@pytest.mark.slow
def test_signal_stops_saves_and_resume_equals_uninterrupted(train_root, tmp_path):
    steps = 40
    config = tiny_config(train_root, tmp_path / "reference", max_steps=steps, save_interval=1000)
    config["data"]["init_args"]["max_passes"] = 10
    assert run_cli(write_config(tmp_path / "ref.yaml", config)).returncode == 0
    config["out_dir"] = str(tmp_path / "preempted")
    path = write_config(tmp_path / "p.yaml", config)
    _, output = preempt(path, at_step=3)
    saved = [p for p in (tmp_path / "preempted").iterdir() if p.name.startswith("step-")]
    assert len(saved) == 1 and 3 <= int(saved[0].name[5:]) < steps
    assert "SIGUSR1" in output
    resumed = run_cli(path)
    assert resumed.returncode == 0, resumed.stderr
    assert losses(tmp_path / "preempted") == pytest.approx(losses(tmp_path / "reference"), rel=1e-6)


KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    from unittest import mock
    import midtrain.train.checkpoint_files as files
    from midtrain.cli import main

    real_publish, calls = files.publish, []

    def publish(staging, target):
        calls.append(target)
        if len(calls) == 2:  # the second checkpoint is fully written but not yet in place: die now
            os.kill(os.getpid(), signal.SIGKILL)
        real_publish(staging, target)

    with mock.patch.object(files, "publish", publish):
        sys.exit(main(["pretrain", "--config", sys.argv[1]]))
""")


@pytest.mark.slow
def test_kill_during_a_save_keeps_the_previous_checkpoint_and_resume_equals_uninterrupted(train_root, trunk, tmp_path):
    config = write_config(tmp_path / "k.yaml", tiny_config(train_root, tmp_path / "killed", max_steps=TRUNK_STEPS))
    script = tmp_path / "kill_during_save.py"
    script.write_text(KILL_DURING_SAVE)
    env = {"PYTHONPATH": str(REPO), "LITDATA_DISABLE_VERSION_CHECK": "1"}
    killed = subprocess.run(
        [sys.executable, str(script), str(config)], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert killed.returncode == -9
    out = tmp_path / "killed"
    assert (out / ".step-00000008.partial" / "lit_model.pth").is_file() and (out / "step-00000004").is_dir()
    assert run_cli(config).returncode == 0
    assert not (out / ".step-00000008.partial").exists()
    assert losses(out) == pytest.approx(losses(trunk), rel=1e-6)


@pytest.mark.slow
def test_two_cpu_processes_share_the_global_batch_without_overlap(train_root, trunk, tmp_path):
    """Two gloo ranks with micro batch 2 see the same 4 samples per step as one process accumulating 2×2, so the
    loss curve matches the single-process trunk: every sample read once, none twice."""
    config = tiny_config(train_root, tmp_path / "ddp", max_steps=TRUNK_STEPS)
    config["devices"] = 2
    result = run_cli(write_config(tmp_path / "ddp.yaml", config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert losses(tmp_path / "ddp") == pytest.approx(losses(trunk), rel=1e-4)
    assert read_json(tmp_path / "ddp" / "final" / "checkpoint.json")["world_size"] == 2
    # validation is averaged over both ranks on the same fixed sets: equal to the single-process values
    assert metric(tmp_path / "ddp", "val/overall/loss") == pytest.approx(metric(trunk, "val/overall/loss"), rel=1e-4)


def test_dry_run_checks_everything_and_writes_nothing(train_root, trunk, tmp_path, capsys):
    out = tmp_path / "dry"
    config = branch_config(train_root, trunk, out)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "d.yaml", config)), "--dry_run", "true"]) == 0
    printed = capsys.readouterr().out
    assert "Start: branch from" in printed and "continued" in printed and "Dry run" in printed
    assert not out.exists()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda c: c["data"]["init_args"].update(mix_weights_str="main:0.8,maths:0.2"),
            r"'maths'.*Did you mean 'math'",
        ),
        (
            lambda c: c["model_config"].update(n_embd=64),
            r"--branch_from: the checkpoint .* does not fit the configured model",
        ),
        (lambda c: c["data"]["init_args"].update(seed=1), r"--data.seed=1 differs from the checkpoint's seed 42"),
        (lambda c: c["train"].update(max_seq_length=8), r"--train.max_seq_length=16"),
        (
            lambda c: c.update(branch_from="/nowhere/step-00000008"),
            r"--branch_from='/nowhere/step-00000008' does not exist",
        ),
        (lambda c: c.update(initial_checkpoint_dir="/x"), r"--branch_from and --initial_checkpoint_dir both"),
        (
            lambda c: c["train"].update(stable_steps=3),
            r"--train.stable_steps=3 only applies to --train.lr_scheduler=wsd",
        ),
        (lambda c: c.update(logger_name="mlflow"), r"--logger_name='mlflow' is not supported"),
    ],
)
def test_dry_run_errors_name_the_flag(train_root, trunk, tmp_path, capsys, edit, match):
    config = copy.deepcopy(branch_config(train_root, trunk, tmp_path / "bad"))
    edit(config)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "bad.yaml", config)), "--dry_run", "true"]) == 2
    assert __import__("re").search(match, capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()


def test_out_dir_with_checkpoints_needs_resume(train_root, trunk, tmp_path, capsys):
    config = tiny_config(train_root, trunk, max_steps=TRUNK_STEPS)
    config["resume"] = False
    assert main(["pretrain", "--config", str(write_config(tmp_path / "o.yaml", config))]) == 2
    assert "already holds checkpoints (latest final). Set --resume=auto" in capsys.readouterr().err


def test_max_time_saves_and_exits_for_requeue_then_resumes(train_root, tmp_path):
    # a horizon no machine trains in a second (20,000 steps), so the time limit is what stops the run
    config = tiny_config(train_root, tmp_path / "timed", max_steps=20_000, save_interval=100_000, max_time=1.0)
    config["data"]["init_args"]["max_passes"] = 1000
    path = write_config(tmp_path / "t.yaml", config)
    assert main(["pretrain", "--config", str(path)]) == 75
    saved = [p.name for p in (tmp_path / "timed").iterdir() if p.name.startswith("step-")]
    assert len(saved) == 1
    stopped_at = int(saved[0][5:])
    assert 0 < stopped_at < 20_000 and sorted(losses(tmp_path / "timed")) == list(range(1, stopped_at + 1))
    config["train"].update(max_time=None, max_additional_steps=3)
    assert main(["pretrain", "--config", str(write_config(path, config))]) == 0
    assert sorted(losses(tmp_path / "timed")) == list(range(1, stopped_at + 4))


def test_retention_keeps_the_last_n_and_the_branch_points(train_root, tmp_path):
    out = tmp_path / "kept"
    config = tiny_config(train_root, out, max_steps=TRUNK_STEPS, save_interval=2, keep_last_checkpoints=2,
                         keep_checkpoint_steps=[4])
    assert main(["pretrain", "--config", str(write_config(tmp_path / "k.yaml", config))]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("step-", "final"))) == [
        "final", "step-00000004", "step-00000010", "step-00000012"]  # the grid's last step under its own name too
    final, step = out / "final" / "lit_model.pth", out / "step-00000012" / "lit_model.pth"
    assert final.stat().st_ino == step.stat().st_ino  # one write: final/ links the step folder's files
    assert read_json(out / "final" / "checkpoint.json")["final"] and not read_json(
        out / "step-00000012" / "checkpoint.json")["final"]


@pytest.mark.slow
def test_wandb_files_stay_in_out_dir_and_restarts_continue_one_run(train_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "wandb-run"
    config = tiny_config(train_root, out, max_steps=6, max_additional_steps=3)
    config.update(logger_name="wandb", log={"project": "midtrain-test"})
    path = write_config(tmp_path / "w.yaml", config)
    assert main(["pretrain", "--config", str(path)]) == 0
    assert main(["pretrain", "--config", str(path)]) == 0
    run_id = read_json(out / "run.json")["run_id"]
    runs = sorted(p.name for p in (out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(run_id) for name in runs)
    assert not (tmp_path / "wandb").exists()


def test_sweep_writes_configs_and_list_and_dry_runs_them(train_root, trunk, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MIDTRAIN_TEST_RUNS", str(tmp_path / "runs"))
    base = tiny_config(train_root, tmp_path / "unused", max_steps=TRUNK_STEPS)
    write_config(tmp_path / "base.yaml", base)
    spec = {"base": "base.yaml", "out_root": "${MIDTRAIN_TEST_RUNS}", "trunk": str(trunk), "specialised_domain": "code",
            "axes": {"branch_step": [4, 8], "share": [0.25, 0.5]}}
    write_config(tmp_path / "spec.yaml", spec)
    assert main(["sweep", "--spec", str(tmp_path / "spec.yaml"), "--out_dir", str(tmp_path / "sweep")]) == 0
    listing = (tmp_path / "sweep" / "configs.txt").read_text().split()
    assert len(listing) == 4 and listing[0].endswith("branch_step4_share0.25.yaml")
    printed = capsys.readouterr().out
    assert printed.count("ok ") == 4 and "sbatch --array=1-4" in printed
    assert not (tmp_path / "runs").exists()  # dry runs write nothing
    spec["axes"]["branch_step"] = [5]  # no checkpoint at step 5: the sweep refuses before anything is submitted
    write_config(tmp_path / "spec.yaml", spec)
    assert main(["sweep", "--spec", str(tmp_path / "spec.yaml"), "--out_dir", str(tmp_path / "sweep2")]) == 2
    assert "2 of 2 generated configs fail the dry run" in capsys.readouterr().err


def test_util_scripts_list_runs_and_collect_metrics(trunk, train_root, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("runs", REPO / "util_scripts" / "runs.py")
    runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runs)
    assert runs.main(["list", str(trunk)]) == 0
    listing = capsys.readouterr().out
    assert "step-00000004" in listing and "final" in listing and "tokens" in listing
    assert runs.main(["metrics", str(trunk), "-o", str(tmp_path / "m.csv")]) == 0
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0] == "run,step,metric,value" and any(",val/code/loss," in r for r in rows)
    # a tensorboard run is read from its event files
    config = tiny_config(train_root, tmp_path / "tb", max_steps=2)
    config["logger_name"] = "tensorboard"
    assert main(["pretrain", "--config", str(write_config(tmp_path / "tb.yaml", config))]) == 0
    assert runs.main(["metrics", str(tmp_path / "tb"), "-o", str(tmp_path / "tb.csv")]) == 0
    assert ",train/loss," in (tmp_path / "tb.csv").read_text()


def test_initial_checkpoint_dir_loads_weights_only_from_full_or_raw_checkpoints(train_root, trunk, tmp_path):
    final_state = torch.load(trunk / "final" / "lit_model.pth", weights_only=False)
    raw = tmp_path / "converted"
    raw.mkdir()
    torch.save(final_state["model"], raw / "lit_model.pth")  # as litgpt's downloaded/converted checkpoints
    for name, source in (("from-full", trunk / "final"), ("from-raw", raw)):
        config = tiny_config(train_root, tmp_path / name, max_steps=2, save_interval=1000)
        config["initial_checkpoint_dir"] = str(source)
        assert main(["pretrain", "--config", str(write_config(tmp_path / f"{name}.yaml", config))]) == 0
        state = torch.load(tmp_path / name / "final" / "lit_model.pth", weights_only=False)
        assert state["step_count"] == 2  # step, optimizer and data start fresh
        assert state["train_dataloader"]["shards"]["main/1"]["consumed"] == 8
    # the weights came from the trunk: the first loss is the trained model's, far below a fresh model's
    assert losses(tmp_path / "from-full")[1] == pytest.approx(losses(tmp_path / "from-raw")[1])
    assert losses(tmp_path / "from-full")[1] < losses(trunk)[1] - 0.05


def test_a_terminal_gets_a_progress_bar_and_a_log_file_plain_lines(train_root, tmp_path, capsys, monkeypatch):
    import io

    from midtrain.progress import bar_wanted

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert bar_wanted(Terminal(), {}) and not bar_wanted(Terminal(), {"SLURM_JOB_ID": "7"})
    assert not bar_wanted(io.StringIO(), {}) and bar_wanted(io.StringIO(), {"MIDTRAIN_PROGRESS": "bar"})
    assert not bar_wanted(Terminal(), {"MIDTRAIN_PROGRESS": "plain"})
    config = tiny_config(train_root, tmp_path / "bar", max_steps=6, save_interval=3, log_interval=2)
    monkeypatch.setenv("MIDTRAIN_PROGRESS", "bar")
    assert main(["pretrain", "--config", str(write_config(tmp_path / "bar.yaml", config))]) == 0
    captured = capsys.readouterr()
    assert "train: 100%" in captured.err and "6/6" in captured.err and "loss " in captured.err
    assert "step 6/6 | loss" in captured.err  # the log lines go above the bar
    monkeypatch.setenv("MIDTRAIN_PROGRESS", "plain")
    config["out_dir"] = str(tmp_path / "plain")
    assert main(["pretrain", "--config", str(write_config(tmp_path / "plain.yaml", config))]) == 0
    captured = capsys.readouterr()
    assert "step 6/6 | loss" in captured.out and "train:" not in captured.err
