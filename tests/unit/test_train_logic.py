"""Pure training logic: budgets, LR schedules, checkpoint folders, and where a run starts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from midtrain.errors import ConfigError
from midtrain.train import checkpoint_files as files
from midtrain.train.budget import resolve_budget
from midtrain.train.lr_schedule import resolve_lr_schedule
from midtrain.train.preemption import StopReason
from tests.helpers import train_settings


def train_args(**kwargs):
    kwargs.setdefault("global_batch_size", 8)
    kwargs.setdefault("micro_batch_size", 2)
    return train_settings(**kwargs)


# -- budget ---------------------------------------------------------------------------------------------------
def test_budget_from_tokens_steps_and_fork_iters():
    b = resolve_budget(train_args(max_tokens=8 * 16 * 100 + 5), world_size=2, seq_length=16)
    assert (b.total_steps, b.accumulation_iters, b.tokens_per_step) == (100, 2, 128)
    assert resolve_budget(train_args(max_steps=7), 1, 16).total_steps == 7
    # the paper fork's max_iters counts micro-batches: 4 per step here
    assert resolve_budget(train_args(max_iters=40), 1, 16).total_steps == 10
    # with a horizon given, max_iters is only a cap, and max_additional_steps caps one invocation
    b = resolve_budget(train_args(max_steps=100, max_iters=10_000_000, max_additional_steps=5), 1, 16)
    assert (b.total_steps, b.stop_step(40), b.stop_reason(45, 40)) == (100, 45, StopReason.MAX_ADDITIONAL_STEPS)
    b = resolve_budget(train_args(max_steps=100, max_iters=200), 1, 16)
    assert (b.stop_step(0), b.stop_reason(50, 0)) == (50, StopReason.MAX_ITERS)


@pytest.mark.parametrize(
    ("kwargs", "world", "match"),
    [
        ({}, 1, r"no length: set --train.max_tokens .* or --train.max_steps"),
        (
            {"max_steps": 10, "max_tokens": 8 * 16 * 11},
            1,
            r"--train.max_steps=10 and --train.max_tokens=1,408 .* different",
        ),
        ({"max_steps": 10, "global_batch_size": 6}, 2, r"--train.global_batch_size=6 is not a multiple of .*= 4"),
        ({"max_iters": 10}, 1, r"--train.max_iters=10 .* not a whole number of optimizer steps \(4 iterations"),
        ({"max_steps": 0}, 1, r"--train.max_steps=0 must be a positive integer"),
        ({"max_steps": 5, "epochs": 2}, 1, r"--train.epochs=2 is not used"),
        ({"max_tokens": 100}, 1, r"--train.max_tokens=100 is less than one optimizer step"),
        ({"max_steps": 5, "max_time": -1}, 1, r"--train.max_time=-1 must be a positive number of seconds"),
    ],
)
def test_budget_errors_name_the_flag(kwargs, world, match):
    with pytest.raises(ConfigError, match=match):
        resolve_budget(train_args(**kwargs), world, 16)


# -- LR schedules ---------------------------------------------------------------------------------------------
def schedule(**kwargs):
    total = kwargs.pop("total", 100)
    peak = kwargs.pop("peak", 1e-3)
    kwargs.setdefault("min_lr", 1e-5)
    return resolve_lr_schedule(train_args(**kwargs), peak, total)


def test_cosine_warms_up_then_reaches_min_at_the_horizon():
    s = schedule(lr_warmup_steps=10)
    assert s.lr_at(0) == pytest.approx(1e-4) and s.lr_at(9) == pytest.approx(1e-3)
    assert s.lr_at(10) == pytest.approx(1e-3)
    assert s.lr_at(55) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert s.lr_at(100) == pytest.approx(1e-5) and s.lr_at(500) == pytest.approx(1e-5)
    lrs = [s.lr_at(i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_warmup_fraction_is_of_the_total_and_litgpt_default_is_capped():
    assert schedule(lr_warmup_fraction=0.1, total=61_035).warmup_steps == 6104
    assert schedule(total=50).warmup_steps == 50  # litgpt's 2000 warmup steps, capped at the run's length


def test_wsd_linear_constant_shapes():
    wsd = schedule(lr_scheduler="wsd", lr_warmup_steps=10, stable_steps=60)
    assert wsd.decay_start_step == 70
    assert wsd.lr_at(69) == pytest.approx(1e-3) and wsd.lr_at(85) == pytest.approx(1e-3 + (1e-5 - 1e-3) * 0.5)
    assert schedule(lr_scheduler="wsd", lr_warmup_steps=0, decay_fraction=0.2).decay_start_step == 80
    assert schedule(lr_scheduler="wsd", lr_warmup_steps=0).decay_start_step == 90  # default: last 10 %
    linear = schedule(lr_scheduler="linear", lr_warmup_steps=0)
    assert linear.lr_at(50) == pytest.approx((1e-3 + 1e-5) / 2)
    constant = schedule(lr_scheduler="constant", lr_warmup_steps=5)
    assert constant.lr_at(4) == pytest.approx(1e-3) and constant.lr_at(99) == pytest.approx(1e-3)


def test_decay_anneals_from_the_lr_in_effect_at_the_branch_point():
    trunk = schedule(lr_warmup_steps=10)
    branch = schedule(lr_scheduler="decay", lr_warmup_steps=10).anchored(40, trunk.lr_at(40))
    assert branch.lr_at(40) == pytest.approx(trunk.lr_at(40))  # continuous at the branch point
    assert branch.lr_at(70) == pytest.approx(trunk.lr_at(40) + (1e-5 - trunk.lr_at(40)) * 0.5)
    assert branch.lr_at(100) == pytest.approx(1e-5)


def test_decay_shapes_of_wsd_and_decay_reach_zero():
    """sqrt is 1 - sqrt(progress): at a quarter of the decay half the drop is done; cosine half a cosine."""
    for name, extra in (("wsd", {"stable_steps": 60}), ("decay", {})):
        lrs = {shape: schedule(lr_scheduler=name, lr_warmup_steps=0, min_lr=0, lr_decay_shape=shape, **extra)
               for shape in ("linear", "sqrt", "cosine")}
        start, length = (60, 40) if name == "wsd" else (0, 100)
        quarter = start + length // 4
        assert lrs["linear"].lr_at(quarter) == pytest.approx(0.75e-3)
        assert lrs["sqrt"].lr_at(quarter) == pytest.approx(0.5e-3)
        assert lrs["cosine"].lr_at(quarter) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
        for s in lrs.values():
            assert s.lr_at(start) == pytest.approx(1e-3) and s.lr_at(100) == 0.0
            assert s.record()["decay_shape"] in ("linear", "sqrt", "cosine")
    branch = schedule(lr_scheduler="decay", lr_decay_shape="sqrt", min_lr=0).anchored(40, 6e-4)
    assert branch.lr_at(40) == pytest.approx(6e-4) and branch.lr_at(55) == pytest.approx(6e-4 * (1 - 0.5))
    assert branch.lr_at(99) > 0 and branch.lr_at(100) == 0.0
    assert schedule().decay_shape == "linear"  # unset: linear, as before


def test_a_length_from_the_branch_point_ends_there_plus_the_budget():
    b = resolve_budget(train_args(tokens_from_branch=8 * 16 * 30 + 7), 1, 16)
    assert (b.steps_from_branch, b.from_branch(40).total_steps) == (30, 70)
    assert resolve_budget(train_args(steps_from_branch=12), 1, 16).from_branch(0).total_steps == 12
    assert resolve_budget(train_args(max_steps=9), 1, 16).from_branch(None).total_steps == 9
    with pytest.raises(ConfigError, match=r"branches from nothing .* Set --branch_from"):
        resolve_budget(train_args(steps_from_branch=12), 1, 16).from_branch(None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps_from_branch": 5, "max_steps": 100}, r"--train.max_steps and --train.steps_from_branch all give"),
        ({"steps_from_branch": 5, "tokens_from_branch": 5000}, r"steps_from_branch and --train.tokens_from_branch"),
        ({"tokens_from_branch": 100}, r"--train.tokens_from_branch=100 is less than one optimizer step"),
        ({"steps_from_branch": 0}, r"--train.steps_from_branch=0 must be a positive integer"),
    ],
)
def test_a_length_from_the_branch_point_is_checked(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        resolve_budget(train_args(**kwargs), 1, 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr_decay_shape": "sqrt"}, r"--train.lr_decay_shape=sqrt shapes the decay of --train.lr_scheduler wsd or "
                                     r"decay \(it is 'cosine'\)"),
        ({"lr_scheduler": "wsd", "lr_decay_shape": "exp"}, r"--train.lr_decay_shape='exp' is not one of linear"),
        (
            {"lr_warmup_steps": 5, "lr_warmup_fraction": 0.1},
            r"--train.lr_warmup_steps=5 and --train.lr_warmup_fraction=0.1 both",
        ),
        ({"lr_warmup_fraction": 1.5}, r"--train.lr_warmup_fraction=1.5 must be between 0 and 1"),
        ({"stable_steps": 10}, r"--train.stable_steps=10 only applies to --train.lr_scheduler=wsd"),
        ({"lr_scheduler": "wsd", "stable_steps": 5, "decay_fraction": 0.1}, r"both place the wsd decay"),
        ({"min_lr": 1.0}, r"--train.min_lr=1.0 must be between 0 and the peak LR"),
        ({"lr_scheduler": "cosin"}, r"--train.lr_scheduler='cosin' is not one of"),
    ],
)
def test_schedule_errors_name_the_flag(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        schedule(**kwargs)


# -- checkpoint folders ---------------------------------------------------------------------------------------
def fake_checkpoint(out_dir: Path, name: str, step: int, **info) -> Path:
    folder = out_dir / name
    folder.mkdir(parents=True)
    (folder / files.MODEL_FILE).write_bytes(b"x")
    (folder / files.INFO_FILE).write_text(json.dumps({"step": step, **info}))
    return folder


def test_partial_checkpoints_are_never_found_and_are_cleaned(tmp_path):
    fake_checkpoint(tmp_path, "step-00000004", 4)
    fake_checkpoint(tmp_path, ".step-00000008.partial", 8)  # a save killed before publication
    no_info = tmp_path / "step-00000012"
    no_info.mkdir()  # killed before lit_model.pth was complete
    assert files.latest_checkpoint(tmp_path).step == 4
    files.remove_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004", "step-00000012"]


def test_publish_replaces_atomically_and_restores_a_retired_copy(tmp_path):
    fake_checkpoint(tmp_path, "final", 10)
    staging = fake_checkpoint(tmp_path, ".final.partial", 12)
    files.publish(staging, tmp_path / "final")
    assert files.latest_checkpoint(tmp_path).step == 12 and not staging.exists()
    # killed between the two renames: the old copy is hidden as .retired and comes back
    (tmp_path / "final").rename(tmp_path / ".final.retired")
    files.remove_partials(tmp_path)
    assert files.latest_checkpoint(tmp_path).step == 12


def test_retention_keeps_the_newest_and_the_listed_steps(tmp_path):
    for step in (2, 4, 6, 8, 10):
        fake_checkpoint(tmp_path, files.step_dir_name(step), step)
    fake_checkpoint(tmp_path, "final", 10)
    removed = files.prune(tmp_path, keep_last=2, keep_steps={4})
    assert sorted(p.name for p in removed) == ["step-00000002", "step-00000006"]
    assert [c.path.name for c in files.list_checkpoints(tmp_path)] == [
        "step-00000004",
        "step-00000008",
        "step-00000010",
        "final",
    ]
    assert files.prune(tmp_path, keep_last=None, keep_steps=set()) == []


def test_checkpoint_folder_accepts_the_folder_or_the_file_and_explains_otherwise(tmp_path):
    folder = fake_checkpoint(tmp_path / "run", "step-00000020", 20)
    assert files.checkpoint_folder(folder / files.MODEL_FILE, "--branch_from").path == folder
    assert files.checkpoint_folder(folder, "--branch_from").step == 20
    with pytest.raises(ConfigError, match=r"--branch_from='.*nowhere' does not exist"):
        files.checkpoint_folder(tmp_path / "nowhere", "--branch_from")
    with pytest.raises(ConfigError, match=r"is not a complete checkpoint .* It is a run folder; name one of its "
                                          r"checkpoints"):
        files.checkpoint_folder(tmp_path / "run", "--branch_from")


def test_math_of_the_paper_trunk():
    b = resolve_budget(train_args(global_batch_size=1024, micro_batch_size=16, max_tokens=128_000_000_000), 8, 2048)
    assert b.total_steps == 128_000_000_000 // (1024 * 2048) == 61_035 and b.accumulation_iters == 8
    assert math.isclose(schedule(lr_warmup_fraction=0.1, total=b.total_steps).warmup_steps, 6104)
