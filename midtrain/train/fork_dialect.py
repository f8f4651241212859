"""The paper fork's dialect: its training keys read as its ``pretrain.py`` read them, step for step (pure logic).

The fork (nightingal3/litgpt) set the LR at every micro-iteration ``it`` (its per-rank ``iter_num``):

- peak = ``train.max_lr`` (default 3e-4) for ``cosine`` and ``wsd``; the optimizer's ``lr`` is ignored;
- ``cosine``: ``max_lr × it / warmup_iters`` during warmup, then cosine to ``min_lr`` at a horizon hard-coded at
  976,560 micro-iterations whatever the budget, ``min_lr`` past it;
- ``decay``: ``lr0 × 0.1^((it - it0) / (max_iters - it0))`` from the LR the restored optimizer holds (``min_lr``
  unused); ``constant``: 1e-5; ``wsd``: warmup, then the peak before ``stable_steps × accumulation`` iterations —
  its decay branch raised a NameError, so a run that would reach it is refused here;
- ``max_additional_steps`` redefines ``max_iters = it0 + max_additional_steps × accumulation`` (``max_iters`` given
  in the config is then ignored), and the warmup is ``min(max_iters, ceil(lr_warmup_fraction × max_iters))``
  iterations of *that* ``max_iters`` (``lr_warmup_steps × accumulation`` when given in steps).

``resolve_fork_schedule`` turns a config into an ``IterationLRSchedule`` and the step the run ends at, plus one
notice per reproduced quirk naming the key that switches to midtrain's own meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from midtrain.errors import ConfigError, Problems
from midtrain.train.lr_schedule import IterationLRSchedule

FORK_CLASS_PATH = "litgpt.data.ShardedMixedDataset"
FORK_PEAK_LR = 3e-4
FORK_COSINE_HORIZON_ITERS = 976_560
FORK_CONSTANT_LR = 1e-5
PAPER_END_STEP = 61_035  # 128B tokens of 1024 x 2048: where every run of the paper's grid ended
PAPER_DEVICES = 8  # one node of 8 GPUs, the device count the paper's schedules were counted on
FORK_SCHEDULERS = ("cosine", "decay", "constant", "wsd")
FORK_ONLY_KEYS = ("init_lr", "initial_sampling_rate", "episode_length", "freeze_sampling_rate", "data_scheduler")
NATIVE_ONLY_KEYS = ("decay_fraction", "lr_warmup_iters", "lr_horizon_iters", "lr_iter_offset", "lr_decay_shape",
                    "steps_from_branch", "tokens_from_branch")
_SCHEDULE_NAMES = {"cosine": "cosine", "decay": "exp_decay", "constant": "constant", "wsd": "warmup_stable"}


def device_count_note(train: Any, schedule: IterationLRSchedule, start: ForkStart, micro_batch_size: int,
                      global_batch_size: int, world_size: int, budget_steps: int | None) -> str | None:
    """The fork's fixed cosine horizon counts micro-iterations, which depend on the device count: the LR range this
    invocation gets here beside the one the paper's 8 GPUs gave (None where they cannot differ)."""
    per_step = micro_batch_size * PAPER_DEVICES
    if (schedule.name != "cosine" or schedule.horizon_iters != FORK_COSINE_HORIZON_ITERS or world_size == PAPER_DEVICES
            or global_batch_size % per_step or schedule.total_steps <= start.step):
        return None
    accum = global_batch_size // per_step
    paper = resolve_fork_schedule(train, accum, ForkStart(start.step, start.step * accum, start.optimizer_lr, None,
                                                          start.configured_lr), budget_steps).schedule

    def span(s: IterationLRSchedule) -> str:
        first, last = s.lr_at(start.step), s.lr_at(s.total_steps - 1)
        return f"{first:.3g} -> {last:.3g} ({100 * first / s.peak_lr:.0f} -> {100 * last / s.peak_lr:.0f} % of peak)"

    return (f"the fork's cosine horizon is {FORK_COSINE_HORIZON_ITERS:,} micro-iterations, so its LR depends on the "
            f"device count: on this run's {world_size} device(s) ({schedule.accumulation_iters} per step) the LR goes "
            f"{span(schedule)} over steps {start.step + 1:,}-{schedule.total_steps:,}; on the {PAPER_DEVICES} GPUs the "
            f"paper ran on ({accum} per step) it went {span(paper)}. Set --devices={PAPER_DEVICES} to run as the "
            "paper did, or --train.max_steps for a horizon in steps.")


def first_end_note(micro_batches: int, accumulation: int) -> str:
    return f"{micro_batches} of {accumulation} micro-batches (its gradient scaled by 1/{accumulation})"


def dialect_of(train: Any) -> tuple[str, str]:
    """(``fork`` or ``midtrain``, why) for a ``TrainArgs``."""
    if train.dialect == "fork":
        return "fork", f"--train.dialect=fork, which a config naming {FORK_CLASS_PATH} gets unless it sets one"
    if train.dialect == "midtrain":
        return "midtrain", "--train.dialect=midtrain"
    fork_keys = [k for k in FORK_ONLY_KEYS if getattr(train, k, None) is not None]
    if fork_keys:
        return "fork", f"it sets the fork's {', '.join('--train.' + k for k in fork_keys)}"
    if train.max_steps is None and train.max_tokens is None and (train.max_iters or train.max_additional_steps):
        return "fork", "its length is given only as --train.max_iters/--train.max_additional_steps, as the fork's"
    return "midtrain", "midtrain's own keys"


def refuse_fork_only_keys(train: Any) -> None:
    """In midtrain's dialect the fork's unused keys are errors (every key is consumed or refused)."""
    found = [k for k in FORK_ONLY_KEYS if getattr(train, k, None) is not None]
    if found:
        raise ConfigError(f"{', '.join('--train.' + k for k in found)} belong to the paper fork's dialect, which never "
                          "used them. Remove them, or set --train.dialect=fork to read the config as the fork did.")


@dataclass(frozen=True)
class ForkStart:
    """Where the run starts: step, micro-iteration and the LR the optimizer holds there (restored from the
    checkpoint, or the configured initial LR for a fresh run). ``saved_schedule``: the schedule an interrupted run
    of this same out_dir recorded, continued unchanged."""

    step: int = 0
    iteration: int = 0
    optimizer_lr: float = 1e-3
    saved_schedule: dict | None = None
    configured_lr: float | None = None
    """The optimizer's lr as configured (or its class default), which the fork's cosine and wsd ignore."""


@dataclass
class ForkSchedule:
    schedule: IterationLRSchedule
    end_step: int
    end_iter: int
    """The fork's ``max_iters`` for this invocation."""
    notices: list[str] = field(default_factory=list)


def resolve_fork_schedule(train: Any, accumulation_iters: int, start: ForkStart,
                          budget_steps: int | None) -> ForkSchedule:
    """``budget_steps``: the horizon from ``max_steps``/``max_tokens`` if the config gives one (midtrain's
    meaning, which replaces the fork's hard-coded cosine horizon)."""
    problems = Problems()
    name, accum = train.lr_scheduler, accumulation_iters
    if name not in FORK_SCHEDULERS:
        problems.add(f"--train.lr_scheduler={name!r} is not one of the fork's ({', '.join(FORK_SCHEDULERS)}). Use one "
                     "of them, or set --train.dialect=midtrain for midtrain's schedulers.")
    for key in NATIVE_ONLY_KEYS:
        if getattr(train, key, None) is not None:
            problems.add(f"--train.{key} is midtrain's, not the fork's. Remove it, or set --train.dialect=midtrain.")
    if name in ("cosine", "wsd") and not train.lr_warmup_fraction and not train.lr_warmup_steps:
        problems.add("the fork required --train.lr_warmup_fraction or --train.lr_warmup_steps. Set one of them.")
    if train.lr_warmup_fraction is not None and not 0 <= train.lr_warmup_fraction <= 1:
        problems.add(f"--train.lr_warmup_fraction={train.lr_warmup_fraction!r} must be between 0 and 1.")
    if name == "wsd" and train.stable_steps is None:
        problems.add("--train.lr_scheduler=wsd needs --train.stable_steps in the fork (its end of the stable phase).")
    if train.max_lr is not None and not (math.isfinite(train.max_lr) and train.max_lr > 0):
        problems.add(f"--train.max_lr={train.max_lr!r} must be a positive, finite number.")
    if train.min_lr is None or not math.isfinite(train.min_lr) or train.min_lr < 0:
        problems.add(f"--train.min_lr={train.min_lr!r} must be 0 or more.")
    problems.raise_if_any(ConfigError)

    notices: list[str] = []
    ignored = [k for k in FORK_ONLY_KEYS if getattr(train, k, None) is not None]
    if name != "wsd" and train.stable_steps is not None:
        ignored.append("stable_steps")
    if ignored:
        online = (" (midtrain's online mixture, exact and resumable, is --data.mix_controller: see docs/data.md)"
                  if "data_scheduler" in ignored else "")
        notices.append(f"{', '.join('--train.' + k for k in ignored)} ignored, as the fork ignored "
                       f"{'it' if len(ignored) == 1 else 'them'} (with lr_scheduler {name}){online}.")

    if start.saved_schedule is not None:
        saved = {k: v for k, v in start.saved_schedule.items() if k != "form"}
        schedule = IterationLRSchedule(**saved)
        end_iter = schedule.start_iter + (schedule.total_steps - schedule.start_step) * accum
        notices.append(f"resumed within this run: it keeps the end (step {schedule.total_steps:,}) and the schedule it "
                       "started with; the fork would have added --train.max_additional_steps again at every restart.")
        return ForkSchedule(schedule, schedule.total_steps, end_iter, notices)

    it0 = start.iteration
    if train.max_additional_steps is not None:
        end_iter = it0 + train.max_additional_steps * accum
        if train.max_iters is not None:
            notices.append(f"--train.max_iters={train.max_iters:,} ignored: --train.max_additional_steps="
                           f"{train.max_additional_steps:,} sets the end, max_iters = {it0:,} + "
                           f"{train.max_additional_steps:,} × {accum} = {end_iter:,} micro-iterations (as the fork).")
    elif train.max_iters is not None:
        end_iter = train.max_iters
    elif budget_steps is not None:
        end_iter = budget_steps * accum
    else:
        raise ConfigError(
            "the run has no length: set --train.max_additional_steps (the fork's way), --train.max_iters, "
            "or --train.max_steps."
        )
    # the fork stepped when its iteration count reached a multiple of the accumulation: count those boundaries
    end_step = start.step + max(0, end_iter // accum - it0 // accum)
    first_step = accum - it0 % accum
    if it0 % accum and end_step > start.step:
        notices.append(f"the checkpoint's micro-iteration {it0:,} is no multiple of this run's {accum} per step (its "
                       f"run had other batch settings), so the first step runs {first_end_note(first_step, accum)}, as "
                       f"the fork's did (it stepped when its iteration count reached a multiple of {accum}); every "
                       "later "
                       "step is whole.")
    if end_iter > it0 and end_iter % accum:
        notices.append(f"max_iters {end_iter:,} leaves {end_iter % accum} micro-iteration(s) short of a whole "
                       f"step of {accum}; they are not run (the fork read them without a step).")
    if train.max_additional_steps is not None and start.step < PAPER_END_STEP != end_step:
        notices.append(f"the run ends at step {end_step:,} (step {start.step:,} + --train.max_additional_steps="
                       f"{train.max_additional_steps:,}), as the file says. The paper's launcher rewrote "
                       f"max_additional_steps to {PAPER_END_STEP:,} minus the latest step before every launch, so its "
                       f"runs all ended at step {PAPER_END_STEP:,}: for that, set --train.max_additional_steps="
                       f"{PAPER_END_STEP - start.step:,}. Rerun once finished, it exits at once (the fork trained "
                       "max_additional_steps more from its last step-N).")
    if train.lr_warmup_fraction and train.lr_warmup_steps:
        notices.append(f"--train.lr_warmup_steps={train.lr_warmup_steps:,} ignored: --train.lr_warmup_fraction="
                       f"{train.lr_warmup_fraction:g} sets the warmup, as in the fork.")

    if train.lr_warmup_fraction:
        warmup_iters = min(end_iter, math.ceil(train.lr_warmup_fraction * end_iter))
        warmup_rule = f"ceil({train.lr_warmup_fraction:g} × max_iters {end_iter:,})"
    elif train.lr_warmup_steps:
        warmup_iters = min(end_iter, train.lr_warmup_steps * accum)
        warmup_rule = f"lr_warmup_steps {train.lr_warmup_steps:,} × {accum}"
    else:
        warmup_iters, warmup_rule = 0, "none"

    peak = FORK_PEAK_LR if train.max_lr is None else float(train.max_lr)
    anchor_lr = anchor_iter = None
    horizon_iters = end_iter
    if name == "cosine":
        if budget_steps is None:
            horizon_iters = FORK_COSINE_HORIZON_ITERS
            notices.append(f"cosine horizon {FORK_COSINE_HORIZON_ITERS:,} micro-iterations "
                           f"(= {FORK_COSINE_HORIZON_ITERS / accum:,.1f} steps at {accum} per step), hard-coded in the "
                           "fork "
                           "whatever the budget. Set --train.max_steps (or --train.max_tokens) to take the horizon "
                           "from "
                           "the budget instead.")
        else:
            horizon_iters = budget_steps * accum
    elif name == "constant":
        peak, warmup_iters, warmup_rule = FORK_CONSTANT_LR, 0, "none"
        notices.append(
            f"constant LR {FORK_CONSTANT_LR:g}, hard-coded in the fork (no warmup; max_lr and the optimizer's lr "
            "unused). Set --train.dialect=midtrain for a constant at the configured peak."
        )
    elif name == "decay":
        anchor_lr, anchor_iter, warmup_iters, warmup_rule = start.optimizer_lr, it0, 0, "none"
        peak = anchor_lr
        notices.append(f"decay: exponential from the LR the {'restored' if start.step else 'new'} optimizer holds "
                       f"({anchor_lr:g}) to a tenth of it at iteration {end_iter:,}; --train.min_lr and --train.max_lr "
                       "are "
                       "unused, as in the fork. Set --train.dialect=midtrain for midtrain's linear decay to min_lr.")
    elif name == "wsd":
        horizon_iters = train.stable_steps * accum
        last_iter = (it0 // accum + end_step - start.step) * accum - 1  # the LR iteration of the last step
        if end_step > start.step and last_iter >= horizon_iters:
            latest = start.step + max(0, horizon_iters // accum - it0 // accum)  # its last step stays before it
            raise ConfigError(
                f"--train.lr_scheduler=wsd: this run would reach micro-iteration {horizon_iters:,} "
                "(--train.stable_steps="
                f"{train.stable_steps:,} × {accum}), where the fork's wsd decay begins; that branch of the fork's code "
                f"could not run (it raised a NameError), so there is no decay to reproduce. End the run at step "
                f"{latest:,} at the latest (--train.max_additional_steps={latest - start.step:,}), raise "
                "--train.stable_steps, or set --train.dialect=midtrain for midtrain's wsd.")
        notices.append(
            f"wsd: warmup, then the peak until micro-iteration {horizon_iters:,} (stable_steps × {accum}, counted "
            "from iteration 0, not from the warmup's end); the fork's decay phase is not available."
        )
    if name in ("cosine", "wsd"):
        if train.max_lr is None:
            ignored_lr = "" if start.configured_lr is None else f" ({start.configured_lr:g})"
            notices.append(
                f"peak LR {FORK_PEAK_LR:g}: the fork's default --train.max_lr; the optimizer's lr{ignored_lr} "
                f"is not used by its {name} schedule. Set --train.max_lr to choose the peak."
            )
    if warmup_iters:
        notices.append(f"warmup {warmup_iters:,} micro-iterations = {warmup_rule}, of this invocation's max_iters "
                       f"(the fork's rule); the LR is set at every micro-iteration and each step uses its last one's.")
    schedule = IterationLRSchedule(
        _SCHEDULE_NAMES[name], peak, float(train.min_lr), warmup_iters=warmup_iters, horizon_iters=horizon_iters,
        accumulation_iters=accum, total_steps=end_step, start_step=start.step, start_iter=it0,
        anchor_lr=anchor_lr, anchor_iter=anchor_iter)
    return ForkSchedule(schedule, end_step, end_iter, notices)
