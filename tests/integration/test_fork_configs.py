"""Configs written the way the paper's fork wrote them run with the fork's schedule, and 'midtrain port' writes a
native config that trains with the same LR at every step."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml

from midtrain.cli import main
from midtrain.data.module import ShardedMixedDataset
from tests.helpers import fork_cosine, fork_step_lrs, write_index_only
from tests.integration.train_helpers import SEQ_LENGTH, TINY_MODEL, metric, read_json, tiny_config, write_config

ACCUM = 2  # global batch 4 / micro batch 2 on one process
MAX_LR, MIN_LR = 0.002, 1e-6  # min_lr is written "1e-6" in the configs: YAML 1.1 reads the paper's 1e-6 as a string


def fork_config(train_root, out_dir, resume=False, mix=None, **train) -> dict:
    """A paper-fork config: litgpt's class path, max_iters 10,000,000 plus max_additional_steps, warmup fraction."""
    config = {
        "model_config": dict(TINY_MODEL),
        "out_dir": str(out_dir),
        "precision": "32-true",
        "initial_checkpoint_dir": None,
        "resume": resume,
        "data": {"class_path": "litgpt.data.ShardedMixedDataset",
                 "init_args": {"data_path": str(train_root / "train"), "val_data_path": str(train_root / "val"),
                               "num_workers": 0, **(mix or {"mix_weights_str": "main:1.0"})}},
        "train": {"max_iters": 10_000_000, "max_additional_steps": 8, "micro_batch_size": 2, "global_batch_size": 4,
                  "log_interval": 1, "save_interval": 4, "min_lr": "1e-6", "lr_scheduler": "cosine",
                  "lr_warmup_fraction": 0.5, "max_lr": MAX_LR, "max_seq_length": SEQ_LENGTH, **train},
        "eval": {"interval": 4, "max_iters": 2},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"weight_decay": 0.1, "betas": [0.9, 0.95]}},
        "accelerator": "cpu",
        "devices": 1,
        "logger_name": "csv",
    }
    return config


def fork_lr(it: int, warmup_iters: int) -> float:
    return fork_cosine(it, MAX_LR, warmup_iters, MIN_LR)


def logged_lr_at_step(out_dir, step: int) -> float:
    """``train/lr`` is logged at step s for the optimizer step s - 1 -> s."""
    return metric(out_dir, "train/lr")[step]


@pytest.fixture(scope="module")
def fork_trunk(train_root, tmp_path_factory):
    """An 8-step trunk from a fork config (resume: false, max_additional_steps 8)."""
    out = tmp_path_factory.mktemp("fork") / "trunk"
    path = write_config(out.parent / "trunk.yaml", fork_config(train_root, out))
    assert main(["pretrain", "--config", str(path)]) == 0
    return out


def test_fork_trunk_trains_with_the_forks_lr_at_every_step(fork_trunk):
    warmup_iters = math.ceil(0.5 * 8 * ACCUM)
    for step in range(1, 9):
        assert logged_lr_at_step(fork_trunk, step) == pytest.approx(fork_lr(step * ACCUM - 1, warmup_iters), rel=1e-9)
    invocation = read_json(fork_trunk / "run.json")["invocations"][-1]
    assert invocation["dialect"] == "fork"
    assert any("976,560" in n for n in invocation["notices"]) and any("ignored" in n for n in invocation["notices"])
    info = read_json(fork_trunk / "final" / "checkpoint.json")
    assert info["lr_schedule"]["horizon_iters"] == 976_560 and info["dialect"] == "fork"


def link_trunk_checkpoint(trunk, out_dir, step=4):
    """What the paper's scripts did: link the trunk's step folder into the branch's out_dir, then resume: true."""
    out_dir.mkdir(parents=True)
    name = f"step-{step:08d}"
    (out_dir / name).symlink_to(trunk / name, target_is_directory=True)


def test_fork_branch_over_a_linked_checkpoint_continues_with_literal_weights(fork_trunk, train_root, tmp_path, capsys):
    out = tmp_path / "branch"
    link_trunk_checkpoint(fork_trunk, out)
    config = fork_config(train_root, out, resume=True, mix={"literal_weights_str": "main/1:0.75,c1:0.25"},
                         max_additional_steps=4)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", config))]) == 0
    printed = capsys.readouterr().out
    assert "Start: branch from" in printed and "max_iters = 8 + 4 × 2 = 16 micro-iterations" in printed
    warmup_iters = math.ceil(0.5 * 16)  # of this invocation's max_iters, as the fork
    for step in range(5, 9):
        assert logged_lr_at_step(out, step) == pytest.approx(
            fork_lr(8 + (step - 4) * ACCUM - 1, warmup_iters), rel=1e-9
        )
    ledger = read_json(out / "final" / "ledger.json")
    assert set(ledger["domains"]) == {"main", "code"}
    assert read_json(out / "run.json")["lineage"][0]["step"] == 4


def test_fork_branch_with_a_mix_config_json_and_a_budget_horizon_dry_runs(fork_trunk, train_root, tmp_path, capsys):
    mix_json = tmp_path / "mix.json"
    mix_json.write_text(json.dumps({"weights": {"main": 0.88, "math": 0.12}}))
    out = tmp_path / "branch"
    link_trunk_checkpoint(fork_trunk, out)
    config = fork_config(train_root, out, resume=True, mix={"mix_config_path": str(mix_json)}, max_steps=12)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", config)), "--dry_run=true"]) == 0
    printed = capsys.readouterr().out
    assert "horizon 24 micro-iterations (12.0 steps)" in printed
    # the trunk was on the fork's fixed horizon: the branch's first LR jumps, and the warning says why
    assert (
        "where the checkpoint's run would have used" in printed
        and "horizon (micro-iterations) 976,560 -> 24" in printed
    )
    assert "math" in printed and "this invocation's first step 5" in printed


def test_resume_true_with_an_empty_out_dir_says_how_to_branch(train_root, tmp_path, capsys):
    config = fork_config(train_root, tmp_path / "empty", resume=True)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "c.yaml", config)), "--dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert "--resume=true, but --out_dir=" in err and "--branch_from=<trunk out_dir>/step-XXXXXXXX" in err
    assert "link that step folder into --out_dir" in err


def test_fork_decay_and_wsd(fork_trunk, train_root, tmp_path, capsys):
    out = tmp_path / "decay"
    link_trunk_checkpoint(fork_trunk, out)
    decay = fork_config(train_root, out, resume=True, lr_scheduler="decay", stable_steps=10_000_000,
                        max_additional_steps=4)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "d.yaml", decay)), "--dry_run=true"]) == 0
    printed = capsys.readouterr().out
    assert "decay: exponential from the LR the restored optimizer holds" in printed
    assert "--train.stable_steps ignored" in printed
    wsd = fork_config(train_root, tmp_path / "wsd", lr_scheduler="wsd", stable_steps=6)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "w.yaml", wsd)), "--dry_run=true"]) == 2
    assert "where the fork's wsd decay begins" in capsys.readouterr().err
    wsd["train"]["stable_steps"] = 8
    assert main(["pretrain", "--config", str(write_config(tmp_path / "w.yaml", wsd)), "--dry_run=true"]) == 0


PAPER_1B_CONFIG = """# config.yaml

model_name: pythia-1b

model_config:

out_dir: {out}

precision: bf16-true

initial_checkpoint_dir:

resume: false

tokenizer_dir: {tokenizer}

data:
  class_path: litgpt.data.ShardedMixedDataset
  init_args:
    data_path: {data}/train
    val_data_path: {data}/val/1
    num_workers: 8
    mix_weights_str: "main:1.0"

train:
  max_iters: 10000000
  max_additional_steps: 61035
  micro_batch_size: 4
  global_batch_size: 1024
  log_interval: 10
  save_interval: 2000
  min_lr: 1e-6
  lr_scheduler: "cosine"
  lr_warmup_fraction: 0.1

eval:
  interval: 2000

optimizer:
  class_path: torch.optim.AdamW

  init_args:
    weight_decay: 0.1

    betas:
      - 0.9
      - 0.95

logger_name: csv
"""


def test_paper_1b_config_with_micro_batch_4_dry_runs_on_one_device(tmp_path, tokenizer_dir, capsys):
    """The paper's pythia_1b_from_scratch_128B.yaml written as the paper writes it (machine paths changed):
    peak 3e-4, 976,560-iteration horizon; no torch warning about its 8 loader workers, one line of ours instead."""
    import os
    import warnings

    for split in ("train", "val"):
        write_index_only(tmp_path / "c4" / split / "1", [10**11 if split == "train" else 10**7])
    path = tmp_path / "pythia_1b.yaml"
    path.write_text(PAPER_1B_CONFIG.format(out=tmp_path / "out", tokenizer=tokenizer_dir, data=tmp_path / "c4"))
    assert yaml.safe_load(path.read_text())["train"]["min_lr"] == "1e-6"  # a string, as YAML 1.1 reads it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["pretrain", "--config", str(path), "--dry_run=true", "--accelerator=cpu"]) == 0, \
            capsys.readouterr().err
    assert not [w for w in caught if "DataLoader will create" in str(w.message)]
    printed = capsys.readouterr().out
    assert "61,035 steps × 1,024 sequences × 2,048 tokens" in printed and "peak LR 0.0003" in printed
    assert "horizon 976,560 micro-iterations" in printed and "256 per step" in printed
    assert "% of peak" in printed
    assert ("--data.num_workers=8 per rank x 1 rank(s) on this node is 8 loader processes" in printed) == (
        len(os.sched_getaffinity(0)) < 8)
    ported = tmp_path / "native.yaml"
    assert main(["port", "--fork_config", str(path), "--output", str(ported), "--devices=8"]) == 0
    native = yaml.safe_load(ported.read_text())
    assert native["train"]["min_lr"] == 1e-6 and native["train"]["max_steps"] == 61_035


def test_val_data_path_may_name_one_dataset(train_root):
    data = ShardedMixedDataset(data_path=train_root / "train", val_data_path=train_root / "val" / "1", num_workers=0)
    data.connect(batch_size=2, max_seq_length=SEQ_LENGTH)
    data.setup()
    assert list(data.val_datasets()) == ["main"] and len(data.val_datasets()["main"]) > 0


def test_config_equals_form_expands_placeholders(train_root, tmp_path, monkeypatch):
    config = fork_config(train_root, tmp_path / "out")
    config["data"]["init_args"]["data_path"] = "${MIDTRAIN_FORK_TEST_DATA}/train"
    path = write_config(tmp_path / "p.yaml", config)
    monkeypatch.setenv("MIDTRAIN_FORK_TEST_DATA", str(train_root))
    assert main(["pretrain", f"--config={path}", "--dry_run=true"]) == 0


def test_port_writes_a_native_config_that_trains_with_the_same_lr(fork_trunk, train_root, tmp_path, capsys):
    """The fork branch and its ported copy, both trained: the same LR at every step, a native config."""
    source = fork_config(train_root, tmp_path / "fork-branch", resume=True, max_additional_steps=4, max_steps=8)
    link_trunk_checkpoint(fork_trunk, tmp_path / "fork-branch")
    fork_path = write_config(tmp_path / "fork.yaml", source)
    assert main(["pretrain", "--config", str(fork_path)]) == 0
    ported = tmp_path / "native.yaml"
    assert main(["port", "--fork_config", str(fork_path), "--output", str(ported), "--branch_from",
                 str(fork_trunk / "step-00000004")]) == 0
    assert "train.max_steps 8: the absolute end (step 4 + 4 steps)" in capsys.readouterr().out
    native = yaml.safe_load(ported.read_text())
    assert native["data"]["class_path"] == "midtrain.data.ShardedMixedDataset" and native["resume"] == "auto"
    assert native["train"]["dialect"] == "midtrain" and "max_iters" not in native["train"]
    assert native["optimizer"]["init_args"]["lr"] == MAX_LR and native["logger_name"] == "csv"
    native["out_dir"] = str(tmp_path / "native-branch")
    assert main(["pretrain", "--config", str(write_config(ported, native))]) == 0
    assert "Dialect: the paper fork's" not in capsys.readouterr().out
    fork_lrs, native_lrs = metric(tmp_path / "fork-branch", "train/lr"), metric(tmp_path / "native-branch", "train/lr")
    assert sorted(fork_lrs) == sorted(native_lrs) == [5, 6, 7, 8]
    assert all(fork_lrs[s] == native_lrs[s] for s in fork_lrs)
    assert fork_lrs[8] < fork_lrs[5]  # the budget's horizon: the cosine visibly decays over the branch


def test_port_needs_the_checkpoint_a_resume_config_continues(train_root, tmp_path, capsys):
    path = write_config(tmp_path / "fork.yaml", fork_config(train_root, tmp_path / "x", resume=True))
    assert main(["port", "--fork_config", str(path), "--output", str(tmp_path / "n.yaml")]) == 2
    assert "--branch_from <trunk out_dir>/step-XXXXXXXX" in capsys.readouterr().err
    decay = write_config(tmp_path / "decay.yaml", fork_config(train_root, tmp_path / "x", lr_scheduler="decay"))
    assert main(["port", "--fork_config", str(decay), "--output", str(tmp_path / "n.yaml")]) == 2
    assert "has no native form" in capsys.readouterr().err


def test_a_finished_fork_run_rerun_exits_at_once_and_keeps_its_weights(fork_trunk, train_root, tmp_path, capsys):
    """An array resubmits every config: the fork extended a finished run by max_additional_steps and replaced final/."""
    run = tmp_path / "trunk"
    shutil.copytree(fork_trunk, run)
    before = (run / "final" / "lit_model.pth").read_bytes()
    path = write_config(tmp_path / "again.yaml", fork_config(train_root, run, resume=True))
    assert main(["pretrain", "--config", str(path)]) == 0
    assert "is already finished" in capsys.readouterr().out
    assert (run / "final" / "lit_model.pth").read_bytes() == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(("step-", "final"))) == [
        "final", "step-00000004", "step-00000008"]


def test_port_refuses_a_native_config_and_writes_the_branch_it_is_given(fork_trunk, train_root, tmp_path, capsys):
    native = tiny_config(train_root, tmp_path / "n", max_steps=4)
    path = write_config(tmp_path / "native.yaml", native)
    assert main(["port", "--fork_config", str(path), "--output", str(tmp_path / "o.yaml"), "--devices=1"]) == 2
    assert "is not in the paper fork's dialect (midtrain's own keys)" in capsys.readouterr().err
    assert not (tmp_path / "o.yaml").exists()
    fresh = write_config(tmp_path / "fork.yaml", fork_config(train_root, tmp_path / "b", resume=False))
    assert main(["port", "--fork_config", str(fresh), "--output", str(tmp_path / "o.yaml"), "--branch_from",
                 str(fork_trunk / "step-00000004")]) == 0
    ported = yaml.safe_load((tmp_path / "o.yaml").read_text())
    assert ported["branch_from"] == str(fork_trunk / "step-00000004") and ported["resume"] == "auto"
    assert ported["train"]["max_steps"] == 12  # step 4 + max_additional_steps 8


def test_a_branch_whose_parent_iteration_is_off_its_step_grid_keeps_the_forks_step_boundaries(fork_trunk, train_root,
                                                                                              tmp_path, capsys):
    """The trunk made 2 micro-batches a step; the branch makes 3: from iteration 8, the fork's first step ran 1."""
    out = tmp_path / "branch"
    link_trunk_checkpoint(fork_trunk, out)
    config = fork_config(train_root, out, resume=True, global_batch_size=6, max_additional_steps=4)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", config))]) == 0
    printed = capsys.readouterr().out
    assert (
        "micro-iteration 8 is no multiple of this run's 3 per step" in printed
        and "runs 1 of 3 micro-batches" in printed
    )
    max_iters = 8 + 4 * 3
    expected = fork_step_lrs(8, 3, max_iters, lambda it: fork_cosine(it, MAX_LR, math.ceil(0.5 * max_iters), MIN_LR))
    assert [logged_lr_at_step(out, s) for s in range(5, 9)] == pytest.approx(expected, rel=1e-9)
    read = [read_json(folder / "ledger.json")["domains"]["main"]["tokens"] for folder in
            (fork_trunk / "step-00000004", out / "final")]
    assert read[1] - read[0] == (1 + 3 * 3) * 2 * SEQ_LENGTH  # 1 + 3 + 3 + 3 micro-batches of 2 samples
    assert read_json(out / "final" / "checkpoint.json")["iter_num"] == 18
    # port reads the checkpoint's own iteration count and writes the offset: the native run has the fork's LRs
    ported = tmp_path / "native.yaml"
    assert main(["port", "--fork_config", str(tmp_path / "b.yaml"), "--output", str(ported), "--branch_from",
                 str(fork_trunk / "step-00000004")]) == 0
    assert "starts at micro-iteration 8, the checkpoint's iter_num" in capsys.readouterr().out
    native = yaml.safe_load(ported.read_text())
    assert native["train"]["lr_iter_offset"] == (8 // 3 - 4) * 3 and native["train"]["max_steps"] == 8
    native["out_dir"] = str(tmp_path / "native-branch")
    assert main(["pretrain", "--config", str(write_config(ported, native))]) == 0
    assert [logged_lr_at_step(tmp_path / "native-branch", s) for s in range(5, 9)] == pytest.approx(expected, rel=1e-9)


def fork_written_checkpoint(source, folder):
    """A checkpoint in the layout the paper's fork wrote under its pinned torch 2.3.1: lit_model.pth holding model,
    optimizer (AdamW's param groups without ``decoupled_weight_decay``, which torch added later), iter_num,
    step_count and litdata's loader state; litgpt's model_config.yaml and hyperparameters.yaml; no checkpoint.json."""
    import torch

    payload = torch.load(source / "lit_model.pth", weights_only=True)
    for group in payload["optimizer"]["param_groups"]:
        group.pop("decoupled_weight_decay", None)
    folder.mkdir(parents=True)
    litdata_state = {"dataset": {"0": {"num_samples_yielded": 32, "num_workers": 8, "batch_size": 16,
                                       "current_epoch": 1, "input_dir_path": "/work/hdd/c4/1", "shuffle": True}},
                     "current_epoch": 1, "latest_worker_idx": 0, "num_samples_yielded": {"0": [32]}}
    torch.save({"model": payload["model"], "optimizer": payload["optimizer"], "iter_num": payload["iter_num"],
                "step_count": payload["step_count"], "train_dataloader": litdata_state}, folder / "lit_model.pth")
    for name in ("model_config.yaml", "hyperparameters.yaml"):
        shutil.copy(source / name, folder / name)
    return folder


def test_a_checkpoint_written_by_the_fork_is_a_parent_whose_shards_start_at_zero(fork_trunk, train_root, tmp_path,
                                                                                 capsys):
    parent = fork_written_checkpoint(fork_trunk / "step-00000004", tmp_path / "fork-trunk" / "step-00000004")
    out = tmp_path / "branch"
    out.mkdir()
    (out / "step-00000004").symlink_to(parent, target_is_directory=True)  # the paper's symlink_chkpts.sh
    config = fork_config(train_root, out, resume=True, mix={"mix_weights_str": "main:0.5,code:0.5"},
                         max_additional_steps=4)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", config))]) == 0
    printed = capsys.readouterr().out
    assert "holds another data loader's state (litdata's" in printed and "every shard starts at its first" in printed
    lineage = read_json(out / "run.json")["lineage"][-1]
    assert lineage["data_cursors"].startswith("not restored") and lineage["step"] == 4
    # its parent is the folder the link points into, not the branch's own folder the link sits in
    assert lineage["parent_out_dir"] == str(parent.parent.resolve()) == lineage["checkpoint"].rpartition("/")[0]
    ledger = read_json(out / "final" / "ledger.json")
    assert ledger["domains"]["main"]["tokens"] + ledger["domains"]["code"]["tokens"] == 4 * 4 * SEQ_LENGTH
    warmup = math.ceil(0.5 * (8 + 4 * ACCUM))
    assert logged_lr_at_step(out, 5) == pytest.approx(fork_lr(8 + ACCUM - 1, warmup), rel=1e-9)  # its iter_num 8
    # torch 2.3.1's AdamW state (no decoupled_weight_decay, no class on record) is the same optimizer: its moments
    # continue (Adam's step count goes on from the parent's 4), said at start-up
    import torch

    saved = torch.load(out / "final" / "lit_model.pth", weights_only=True)["optimizer"]
    assert {float(s["step"]) for s in saved["state"].values()} == {8.0}
    assert saved["param_groups"][0]["decoupled_weight_decay"] is True
    assert "has no decoupled_weight_decay (written by an older torch" in printed


def test_a_mistyped_key_in_a_fork_config_is_matched_against_the_forks_keys(train_root, tmp_path, capsys):
    """Two of the paper's configs set the stale data.mix_weight: the suggestion is the fork's key, not midtrain's."""
    config = fork_config(train_root, tmp_path / "typo", mix={"mix_weight": 0.2})
    assert main(["pretrain", "--config", str(write_config(tmp_path / "t.yaml", config)), "--dry_run=true"]) == 2
    assert "--data.mix_weight is not a key of 'midtrain pretrain' (data). Did you mean --data.mix_weights_str?" in \
        capsys.readouterr().err


def test_resume_false_over_a_linked_parent_names_both_experiments(fork_trunk, train_root, tmp_path, capsys):
    """The paper's 70m knowledgeqa config: resume: false with the parent linked in. The fork ignored the link and
    trained from scratch; --resume auto would branch from step 4. The refusal says which experiment each runs."""
    out = tmp_path / "kqa"
    link_trunk_checkpoint(fork_trunk, out)
    config = fork_config(train_root, out, resume=False, max_additional_steps=4)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "k.yaml", config)), "--dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert f"holds step-00000004, a link to {(fork_trunk / 'step-00000004').resolve()}" in err
    assert "--resume=auto branches from that checkpoint at step 4" in err
    assert ("to train from scratch, as the paper's fork did with resume: false (it ignored the link), remove the "
            "link") in err
