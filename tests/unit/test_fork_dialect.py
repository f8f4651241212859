"""The paper fork's dialect: its LR at sampled steps equals the fork's formulas written out here independently,
its quirks are named, and what it cannot reproduce is refused."""

from __future__ import annotations

import math

import pytest

from midtrain.errors import ConfigError
from midtrain.train.budget import resolve_budget
from midtrain.train.fork_dialect import ForkStart, dialect_of, refuse_fork_only_keys, resolve_fork_schedule
from midtrain.train.lr_schedule import resolve_lr_schedule
from tests.helpers import fork_cosine, train_settings

ACCUM_8_GPUS = 1024 // (16 * 8)  # the paper's 70M/160M configs on one 8-GPU node


def fork_train(**overrides):
    """The training settings with the fork's keys as the paper's configs set them."""
    values = dict(
        max_iters=10_000_000, max_additional_steps=61_035, micro_batch_size=16, global_batch_size=1024,
        log_interval=10, save_interval=2000, min_lr=1e-6, lr_scheduler="cosine", lr_warmup_fraction=0.1, max_norm=1.0,
    )
    values.update(overrides)
    return train_settings(**values)


def last_iteration(step, accum):
    """The fork set the LR at every micro-iteration; optimizer step ``step`` used the one of its last."""
    return (step + 1) * accum - 1


def test_trunk_cosine_matches_the_fork_at_sampled_steps_and_ends_near_54_percent():
    resolved = resolve_fork_schedule(fork_train(), ACCUM_8_GPUS, ForkStart(), None)
    assert resolved.end_step == 61_035 and resolved.end_iter == 61_035 * 8
    warmup = math.ceil(0.1 * 61_035 * 8)
    assert resolved.schedule.warmup_iters == warmup and resolved.schedule.horizon_iters == 976_560
    for step in (0, 1, 5, 6_103, 6_104, 20_000, 40_000, 61_034):
        expected = fork_cosine(last_iteration(step, 8), 3e-4, warmup, 1e-6)
        assert resolved.schedule.lr_at(step) == pytest.approx(expected, rel=1e-12)
    assert resolved.schedule.lr_at(61_034) / 3e-4 == pytest.approx(0.54, abs=0.01)
    text = "\n".join(resolved.notices)
    assert "976,560" in text and "peak LR 0.0003" in text and "--train.max_iters=10,000,000 ignored" in text
    assert "Set --train.max_steps" in text and "Set --train.max_lr" in text


def test_branch_continues_the_trunk_curve_from_its_iteration():
    """A branch from step 40,000 (resume: true over the trunk checkpoint) with 21,035 more steps."""
    start = ForkStart(step=40_000, iteration=40_000 * 8, optimizer_lr=1.5e-4)
    resolved = resolve_fork_schedule(fork_train(max_additional_steps=21_035), 8, start, None)
    trunk = resolve_fork_schedule(fork_train(), 8, ForkStart(), None)
    assert resolved.end_step == 61_035 and resolved.schedule.warmup_iters == trunk.schedule.warmup_iters
    for step in (40_000, 50_000, 61_034):
        assert resolved.schedule.lr_at(step) == pytest.approx(trunk.schedule.lr_at(step), rel=1e-12)


def test_warmup_counts_this_invocations_max_iters_and_steps_convert_to_iterations():
    start = ForkStart(step=100, iteration=800)
    by_fraction = resolve_fork_schedule(fork_train(max_additional_steps=50), 8, start, None)
    assert by_fraction.schedule.warmup_iters == math.ceil(0.1 * (800 + 50 * 8))
    by_steps = resolve_fork_schedule(fork_train(lr_warmup_fraction=None, lr_warmup_steps=2000), 8, ForkStart(), None)
    assert by_steps.schedule.warmup_iters == 2000 * 8
    assert by_steps.schedule.lr_at(0) == pytest.approx(3e-4 * 7 / 16_000)


def test_max_lr_sets_the_peak_and_a_budget_sets_the_horizon():
    resolved = resolve_fork_schedule(fork_train(max_lr=6e-4), 8, ForkStart(), 61_035)
    assert resolved.schedule.peak_lr == 6e-4 and resolved.schedule.horizon_iters == 61_035 * 8
    assert resolved.schedule.lr_at(61_034) == pytest.approx(1e-6, rel=1e-3)
    assert not any("976,560" in n or "peak LR" in n for n in resolved.notices)


def test_decay_is_exponential_from_the_restored_lr_to_a_tenth():
    start = ForkStart(step=40_000, iteration=320_000, optimizer_lr=2e-4)
    resolved = resolve_fork_schedule(fork_train(lr_scheduler="decay", max_additional_steps=1000, stable_steps=10**7),
                                     8, start, None)
    end_iter = 320_000 + 8000
    for step in (40_000, 40_500, 40_999):
        it = last_iteration(step, 8)
        assert resolved.schedule.lr_at(step) == pytest.approx(2e-4 * 0.1 ** ((it - 320_000) / (end_iter - 320_000)))
    text = "\n".join(resolved.notices)
    assert "--train.stable_steps ignored" in text and "exponential" in text and "min_lr" in text


def test_constant_is_the_forks_hard_coded_1e_5():
    resolved = resolve_fork_schedule(fork_train(lr_scheduler="constant", max_lr=1e-3), 8, ForkStart(), None)
    assert resolved.schedule.lr_at(0) == resolved.schedule.lr_at(60_000) == 1e-5
    assert any("hard-coded" in n and "--train.dialect=midtrain" in n for n in resolved.notices)


def test_wsd_runs_its_warmup_and_stable_phase_and_refuses_its_crashing_decay():
    train = fork_train(lr_scheduler="wsd", stable_steps=30_000, max_additional_steps=20_000, lr_warmup_fraction=0.01)
    resolved = resolve_fork_schedule(train, 8, ForkStart(), None)
    warmup = math.ceil(0.01 * 160_000)
    assert resolved.schedule.lr_at(10) == pytest.approx(3e-4 * last_iteration(10, 8) / warmup)
    assert resolved.schedule.lr_at(19_999) == 3e-4
    with pytest.raises(ConfigError, match=r"would reach micro-iteration 240,000 .*NameError.*End the run at step "
                                          r"30,000 at the latest \(--train.max_additional_steps=30,000\)"):
        resolve_fork_schedule(fork_train(lr_scheduler="wsd", stable_steps=30_000), 8, ForkStart(), None)
    at_the_latest = fork_train(lr_scheduler="wsd", stable_steps=30_000, max_additional_steps=30_000)
    assert resolve_fork_schedule(at_the_latest, 8, ForkStart(), None).end_step == 30_000  # what the message offers
    with pytest.raises(ConfigError, match="wsd needs --train.stable_steps"):
        resolve_fork_schedule(fork_train(lr_scheduler="wsd"), 8, ForkStart(), None)


def test_an_interrupted_run_keeps_its_end_instead_of_adding_max_additional_steps_again():
    first = resolve_fork_schedule(fork_train(), 8, ForkStart(), None)
    resumed = resolve_fork_schedule(fork_train(), 8, ForkStart(step=30_000, iteration=240_000,
                                                               saved_schedule=first.schedule.record()), None)
    assert resumed.end_step == 61_035 and resumed.schedule == first.schedule
    assert any("resumed within this run" in n for n in resumed.notices)


def test_fork_only_keys_are_ignored_with_a_warning_in_the_fork_and_refused_natively():
    train = fork_train(init_lr=2e-5, data_scheduler="linear")
    assert dialect_of(train)[0] == "fork"
    notices = resolve_fork_schedule(train, 8, ForkStart(), None).notices
    assert any("--train.init_lr, --train.data_scheduler ignored" in n for n in notices)
    assert any("online mixture, exact and resumable, is --data.mix_controller" in n for n in notices)
    with pytest.raises(ConfigError, match=r"--train.init_lr, --train.data_scheduler belong to the paper fork's "
                                          r"dialect"):
        refuse_fork_only_keys(train)


@pytest.mark.parametrize("overrides, dialect", [
    ({}, "fork"),  # length only as max_iters/max_additional_steps
    ({"max_steps": 100}, "midtrain"),
    ({"max_steps": 100, "dialect": "fork"}, "fork"),
    ({"dialect": "midtrain"}, "midtrain"),
    ({"max_additional_steps": None, "max_iters": None, "max_tokens": 10**9}, "midtrain"),
])
def test_dialect_detection(overrides, dialect):
    assert dialect_of(fork_train(**overrides))[0] == dialect


def test_midtrain_keys_are_refused_in_the_fork_dialect():
    with pytest.raises(ConfigError, match=r"--train.decay_fraction is midtrain's, not the fork's"):
        resolve_fork_schedule(fork_train(lr_scheduler="wsd", stable_steps=10, decay_fraction=0.1), 8, ForkStart(), None)
    with pytest.raises(ConfigError, match="the fork required --train.lr_warmup_fraction or --train.lr_warmup_steps"):
        resolve_fork_schedule(fork_train(lr_warmup_fraction=None), 8, ForkStart(), None)


def test_1b_micro_batch_4_on_one_device_ignores_max_iters_as_the_fork_did():
    train = fork_train(micro_batch_size=4)  # 256 micro-iterations per step; 10,000,000 is not a whole number of steps
    with pytest.raises(ConfigError, match=r"--train.max_iters=10,000,000 .* not a whole number of optimizer steps"):
        resolve_budget(train, world_size=1, seq_length=2048)
    budget = resolve_budget(train, world_size=1, seq_length=2048, fork_dialect=True)
    resolved = resolve_fork_schedule(train, budget.accumulation_iters, ForkStart(), None)
    assert budget.accumulation_iters == 256 and resolved.end_step == 61_035


def test_native_iteration_keys_reproduce_the_fork_schedule_at_every_step():
    """What 'midtrain port' writes: the same LR at every one of the 61,035 steps."""
    fork = resolve_fork_schedule(fork_train(), 8, ForkStart(), None).schedule
    native_train = fork_train(
        max_iters=None,
        max_additional_steps=None,
        max_steps=61_035,
        lr_warmup_fraction=None,
        lr_warmup_iters=fork.warmup_iters,
        lr_horizon_iters=fork.horizon_iters,
        dialect="midtrain",
    )
    native = resolve_lr_schedule(native_train, 3e-4, 61_035, accumulation_iters=8)
    assert all(native.lr_at(step) == fork.lr_at(step) for step in range(61_035))


def test_native_iteration_keys_are_checked():
    train = fork_train(max_iters=None, max_additional_steps=None, max_steps=100, lr_scheduler="wsd",
                       lr_warmup_iters=-1, dialect="midtrain")
    with pytest.raises(ConfigError, match=r"(?s)apply to --train.lr_scheduler cosine or constant \(it is 'wsd'\).*"
                                          r"lr_warmup_iters and --train.lr_warmup_steps/--train.lr_warmup_fraction all "
                                          r"set"
                                          r".*--train.lr_warmup_iters=-1 must be an integer of at least 0"):
        resolve_lr_schedule(train, 3e-4, 100, accumulation_iters=8)


def test_the_warning_says_where_the_run_ends_and_what_the_papers_launcher_ran():
    branch = fork_train(max_additional_steps=1_035)  # the 410m KnowledgeQA branch from 40k, as committed
    resolved = resolve_fork_schedule(branch, 8, ForkStart(step=40_000, iteration=320_000), None)
    assert resolved.end_step == 41_035
    assert any("the run ends at step 41,035 (step 40,000 + --train.max_additional_steps=1,035)" in n and
               "set --train.max_additional_steps=21,035" in n for n in resolved.notices)
    warmup_both = fork_train(lr_warmup_steps=100)
    assert any("--train.lr_warmup_steps=100 ignored" in n
               for n in resolve_fork_schedule(warmup_both, 8, ForkStart(), None).notices)


def test_the_device_count_the_fork_schedule_depends_on_is_said_with_both_lr_ranges():
    from midtrain.train.fork_dialect import device_count_note

    branch = fork_train(max_additional_steps=21_035)  # the 70m FLAN branch from 40k
    start = ForkStart(step=40_000, iteration=40_000 * 64, optimizer_lr=1e-3)
    one_device = resolve_fork_schedule(branch, 64, start, None).schedule  # 1024 / 16 on one device
    note = device_count_note(branch, one_device, start, 16, 1024, 1, None)
    assert "on this run's 1 device(s) (64 per step) the LR goes 1e-06 -> 1e-06 (0 -> 0 % of peak)" in note
    assert "on the 8 GPUs the paper ran on (8 per step) it went" in note and "(80 -> 54 % of peak)" in note
    assert device_count_note(branch, resolve_fork_schedule(branch, 8, ForkStart(40_000, 320_000), None).schedule,
                             ForkStart(40_000, 320_000), 16, 1024, 8, None) is None


def test_port_says_what_differs_when_the_offset_comes_from_another_device_count():
    """A parent at step 5,000 trained on 8 GPUs (64 micro-iterations per step: iteration 320,000) ported for 4 GPUs
    (128 per step): 320,000 is a multiple of 128, so "no multiple" was wrong; what differs is the steps per
    iteration."""
    from midtrain.train.fork_port import native_config

    start = ForkStart(step=5_000, iteration=320_000)
    resolved = resolve_fork_schedule(fork_train(max_additional_steps=100), 128, start, None)
    source = {"train": {}, "optimizer": "AdamW"}
    native, changes = native_config(source, {}, "cosine", resolved, 128, 4, 1, 5_000, 320_000, "note", None)
    assert native["train"]["lr_iter_offset"] == (320_000 // 128 - 5_000) * 128
    text = next(c for c in changes if c.startswith("train.lr_iter_offset"))
    assert "no multiple" not in text
    assert ("micro-iteration 320,000 is step 5,000 at 64 micro-iterations per step there (its device count), and "
            "this run takes 128 per step on 4 device(s), so the fork counts 2,500 steps where the checkpoint says "
            "5,000") in text
    resolved = resolve_fork_schedule(fork_train(max_additional_steps=100), 3, ForkStart(step=4, iteration=8), None)
    _, changes = native_config(source, {}, "cosine", resolved, 3, 1, 1, 4, 8, "note", None)
    assert "micro-iteration 8 is no multiple of 3" in next(c for c in changes if "lr_iter_offset" in c)
