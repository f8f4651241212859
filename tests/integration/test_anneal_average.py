"""Anneals, weight averages and data-order seeds on real tiny runs (CPU, real shards): an anneal decays from the
branch point's LR to zero over a budget counted from there; the in-run average equals the mean (or EMA) of the
weights it took, and a resumed run ends with the same one; an order seed reads the same shares in another order,
exactly; the ledger weighs every token by its step's LR."""

from __future__ import annotations

import math
import re

import pytest
import torch

from midtrain.cli import main
from tests.integration.train_helpers import losses, metric, read_json, tiny_config, write_config


def pretrain(path, *extra) -> int:
    return main(["pretrain", "--config", str(path), *extra])


def anneal_config(train_root, tiny_trunk, out, **train):
    config = tiny_config(train_root, out, mix="main:0.7,code:0.3", max_steps=None, lr_scheduler="decay", min_lr=0,
                         **train)
    config["branch_from"] = str(tiny_trunk / "step-00000008")
    return config


def weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / "lit_model.pth", weights_only=True, map_location="cpu")["model"]


def test_an_anneal_decays_to_zero_over_its_own_budget_and_its_ledger_weighs_tokens_by_lr(train_root, tiny_trunk,
                                                                                       tmp_path, capsys):
    out = tmp_path / "anneal"
    config = anneal_config(train_root, tiny_trunk, out, tokens_from_branch=6 * 4 * 16, lr_decay_shape="sqrt")
    path = write_config(tmp_path / "a.yaml", config)
    assert pretrain(path, "--dry_run", "true") == 0
    said = capsys.readouterr().out
    assert "the end is the branch point + 6 steps" in said
    assert "decay, peak" in said and "sqrt decay from the LR" in said and "of step 8" in said
    assert "this invocation's first step 9:" in said and "last step 14:" in said
    assert "Planned LR-weighted tokens" in said
    assert pretrain(path) == 0
    lrs = metric(out, "train/lr")
    anchor = read_json(tiny_trunk / "step-00000008" / "checkpoint.json")["lr_next"]
    assert sorted(lrs) == list(range(9, 15))
    for step, lr in lrs.items():  # the LR of step k+1 is that of position k of the decay: 1 - sqrt(progress)
        assert lr == pytest.approx(anchor * (1 - math.sqrt((step - 1 - 8) / 6)), rel=1e-9)
    final = read_json(out / "final" / "checkpoint.json")
    assert final["step"] == 14 and final["lr_next"] == 0.0
    ledger = read_json(out / "final" / "ledger.json")
    branch = ledger["stretches"][-1]
    # this run's stretch: each step's 4 samples of 16 tokens, weighted by its LR, split by the domains it read
    assert sum(branch["lr_weighted_tokens"].values()) == pytest.approx(sum(lrs.values()) * 4 * 16, rel=1e-12)
    trunk_lr = sum(metric(tiny_trunk, "train/lr")[s] for s in range(1, 9))
    assert ledger["domains"]["main"]["lr_weighted_tokens"] == pytest.approx(
        trunk_lr * 4 * 16 + branch["lr_weighted_tokens"]["main"], rel=1e-12)


def test_a_length_from_the_branch_point_needs_a_branch(train_root, tmp_path, capsys):
    config = tiny_config(train_root, tmp_path / "fresh", max_steps=None, steps_from_branch=4)
    assert pretrain(write_config(tmp_path / "f.yaml", config), "--dry_run", "true") == 2
    assert "branches from nothing" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["uniform", "ema"])
def test_the_run_average_is_the_mean_of_the_weights_it_took_and_a_resume_ends_with_the_same(train_root, tmp_path,
                                                                                           form):
    average = {"last_steps": 6, "every_steps": 2} if form == "uniform" else {"ema_decay": 0.5, "start_step": 8}
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    config = tiny_config(train_root, whole, save_interval=1, average=average)
    assert pretrain(write_config(tmp_path / "w.yaml", config)) == 0
    config = tiny_config(train_root, stopped, save_interval=4, average=average, max_additional_steps=9)
    path = write_config(tmp_path / "s.yaml", config)
    assert pretrain(path) in (0, 75)
    assert (stopped / "average").is_dir()  # written beside the step-8 checkpoint, from the steps taken so far
    assert pretrain(path) == 0
    expected = None
    taken = [8, 10, 12] if form == "uniform" else list(range(8, 13))
    for step in taken:
        step_weights = weights(whole / f"step-{step:08d}")
        if expected is None:
            expected = {k: v.double() for k, v in step_weights.items()}
        elif form == "uniform":
            expected = {k: expected[k] + step_weights[k].double() for k in expected}
        else:
            expected = {k: 0.5 * expected[k] + 0.5 * step_weights[k].double() for k in expected}
    if form == "uniform":
        expected = {k: v / len(taken) for k, v in expected.items()}
    for run in (whole, stopped):
        got = weights(run / "average")
        for key, value in expected.items():
            assert torch.allclose(got[key].double(), value, atol=1e-6), (run, key)
        info = read_json(run / "average" / "checkpoint.json")
        assert info["average"]["count"] == len(taken) and info["step"] == 12
        assert (run / "average" / "ledger.json").is_file() and (run / "average" / "model_config.yaml").is_file()
    assert {k: v.tolist() for k, v in weights(whole / "average").items()} == {
        k: v.tolist() for k, v in weights(stopped / "average").items()}
    assert losses(whole) == losses(stopped)


@pytest.mark.parametrize(("average", "match"), [
    ({"last_steps": 20}, r"--train.average.last_steps=20 is longer than the run \(12 steps"),
    ({"last_steps": 4, "ema_decay": 0.9}, r"--train.average needs one form"),
    ({"ema_decay": 1.5}, r"--train.average.ema_decay=1.5 must lie strictly between 0 and 1"),
    ({"last_steps": 3, "every_steps": 7}, r"no step of the last 3 .* is a multiple of it"),
])
def test_average_settings_are_checked_before_training(train_root, tmp_path, capsys, average, match):
    config = tiny_config(train_root, tmp_path / "bad", average=average)
    assert pretrain(write_config(tmp_path / "b.yaml", config), "--dry_run", "true") == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()


def test_an_order_seed_reads_the_same_shares_in_another_order_exactly(train_root, tiny_trunk, tmp_path, capsys):
    """Two branches from one checkpoint, one with data.order_seed: the same ledger, other samples in the batches,
    no sample read twice; a resume of the seeded branch with another seed is refused."""
    runs = {}
    for name, seed in (("plain", None), ("seeded", 5)):
        out = tmp_path / name
        config = anneal_config(train_root, tiny_trunk, out, steps_from_branch=4)
        if seed is not None:
            config["data"]["init_args"]["order_seed"] = seed
        assert pretrain(write_config(tmp_path / f"{name}.yaml", config)) == 0
        said = capsys.readouterr().out
        assert ("Data order (--data.order_seed=5)" in said) == (seed is not None)  # said at start-up
        runs[name] = read_json(out / "final" / "ledger.json")
    plain, seeded = runs["plain"], runs["seeded"]
    assert {d: v["tokens"] for d, v in plain["domains"].items()} == {
        d: v["tokens"] for d, v in seeded["domains"].items()}
    assert seeded["stretches"][-1]["order_seed"] == 5 and "order_seed" not in plain["stretches"][-1]
    assert losses(tmp_path / "plain") != losses(tmp_path / "seeded")
    state = torch.load(tmp_path / "seeded" / "final" / "lit_model.pth", weights_only=True)["train_dataloader"]
    assert state["order_seed"] == 5
    assert state["shards"]["main/1"]["reorders"] == [[tiny_trunk_cursor(tiny_trunk), 5]]
    config = anneal_config(train_root, tiny_trunk, tmp_path / "seeded", steps_from_branch=6)
    config["data"]["init_args"]["order_seed"] = 6
    assert pretrain(write_config(tmp_path / "again.yaml", config), "--dry_run", "true") == 2
    assert "--data.order_seed=6 differs from the run's (5)" in capsys.readouterr().err


def tiny_trunk_cursor(tiny_trunk) -> int:
    return read_json(tiny_trunk / "step-00000008" / "ledger.json")["shards"]["main/1"]["samples"]
