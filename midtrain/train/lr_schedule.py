"""Learning-rate schedules as a function of the optimizer step (pure logic, no torch).

``lr_at(step)`` is the LR used for the optimizer step that takes the counter from ``step`` to ``step + 1``.
Warmup is linear from ``peak / warmup_steps`` to the peak, so no step is spent at LR 0. The decay of ``wsd`` and
``decay`` has a shape (``DECAY_SHAPES``): the share of the way from its start LR to ``min_lr`` still ahead after a
fraction ``p`` of it is ``1 - p`` (linear), ``1 - sqrt(p)`` (sqrt: most of the drop early, Hägele et al. 2024) or
``(1 + cos(pi p)) / 2`` (cosine).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from midtrain.errors import ConfigError, Problems

SCHEDULERS = ("cosine", "wsd", "linear", "constant", "decay")
DECAY_SHAPES = ("linear", "sqrt", "cosine")
SHAPED_SCHEDULERS = ("wsd", "decay")
DEFAULT_WSD_DECAY_FRACTION = 0.1
DEFAULT_WARMUP_STEPS = 2000  # litgpt pretrain's default


@dataclass(frozen=True)
class LRSchedule:
    name: str
    peak_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    decay_start_step: int | None = None
    """``wsd``: the first step of the decay."""
    anchor_step: int | None = None
    """``decay``: the step this run started at (e.g. the branch point) and the LR in effect there."""
    anchor_lr: float | None = None
    decay_shape: str = "linear"
    """The shape of the decay of ``wsd`` and ``decay`` (``DECAY_SHAPES``)."""
    rewarm_start: int | None = None
    """``train.rewarm_steps``: the branch point the LR rises from 0 at, over ``rewarm_steps`` steps."""
    rewarm_steps: int = 0

    def anchored(self, step: int, lr: float) -> LRSchedule:
        return replace(self, anchor_step=step, anchor_lr=lr)

    def rewarmed(self, start: int, steps: int) -> LRSchedule:
        return replace(self, rewarm_start=start, rewarm_steps=steps)

    def lr_at(self, step: int) -> float:
        lr = self._scheduled(step)
        if self.rewarm_steps and self.rewarm_start is not None and 0 <= step - self.rewarm_start < self.rewarm_steps:
            return lr * (step - self.rewarm_start + 1) / self.rewarm_steps
        return lr

    def _scheduled(self, step: int) -> float:
        total = self.total_steps
        if self.name == "decay" and self.anchor_step is not None and step >= self.anchor_step and self.anchor_step > 0:
            return _decay(self.anchor_lr, self.min_lr, step - self.anchor_step, total - self.anchor_step,
                          self.decay_shape)
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.name == "constant":
            return self.peak_lr
        if self.name == "cosine":
            progress = _fraction(step - self.warmup_steps, total - self.warmup_steps)
            return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.peak_lr - self.min_lr)
        if self.name == "wsd":
            if step < self.decay_start_step:
                return self.peak_lr
            return _decay(self.peak_lr, self.min_lr, step - self.decay_start_step, total - self.decay_start_step,
                          self.decay_shape)
        # linear, and decay from the start of a fresh run
        shape = self.decay_shape if self.name == "decay" else "linear"
        return _decay(self.peak_lr, self.min_lr, step - self.warmup_steps, total - self.warmup_steps, shape)


    def record(self) -> dict:
        """What a checkpoint records of the schedule it was on."""
        return {"form": "step", **asdict(self)}


@dataclass(frozen=True)
class IterationLRSchedule:
    """An LR computed per micro-iteration, as litgpt's ``pretrain`` and the paper's fork compute it: the optimizer step
    that takes the counter from ``k`` to ``k + 1`` uses the LR of its last micro-iteration (``iteration_of``).

    ``cosine``: ``peak × it / warmup_iters`` during warmup, then cosine to ``min_lr`` at ``horizon_iters`` and
    ``min_lr`` past it. ``constant``: warmup, then the peak. ``warmup_stable`` (the fork's ``wsd`` up to its decay):
    warmup, then the peak before iteration ``horizon_iters``; never evaluated past it (a run that would is refused
    at start-up). ``exp_decay`` (the fork's ``decay``): ``anchor_lr × 0.1^((it - anchor_iter) / (horizon_iters -
    anchor_iter))``.
    """

    name: str
    peak_lr: float
    min_lr: float
    warmup_iters: int
    horizon_iters: int
    accumulation_iters: int
    total_steps: int
    """The step this run ends at."""
    start_step: int = 0
    start_iter: int = 0
    anchor_lr: float | None = None
    anchor_iter: int | None = None
    iter_offset: int = 0
    """Added to every step's micro-iteration (``train.lr_iter_offset``, what ``midtrain port`` writes)."""

    decay_start_step = None

    @property
    def warmup_steps(self) -> float:
        return self.warmup_iters / self.accumulation_iters

    @property
    def horizon_steps(self) -> float:
        return self.horizon_iters / self.accumulation_iters

    def anchored(self, step: int, lr: float) -> IterationLRSchedule:
        return self  # the anchor of exp_decay is resolved before the run starts

    def iteration_of(self, step: int) -> int:
        """The micro-iteration whose LR the optimizer step ``step -> step + 1`` uses. Steps end where the iteration
        count reaches a multiple of ``accumulation_iters`` (the fork's rule, litgpt's too), so from a
        ``start_iter`` that is none the first step is shorter; from one that is, every step is whole."""
        first_end = (self.start_iter // self.accumulation_iters + 1) * self.accumulation_iters
        return first_end + (step - self.start_step) * self.accumulation_iters - 1 + self.iter_offset

    def lr_at(self, step: int) -> float:
        return self.lr_at_iteration(self.iteration_of(step))

    def lr_at_iteration(self, it: int) -> float:
        if self.name == "exp_decay":
            if it < self.anchor_iter:
                return self.anchor_lr
            return self.anchor_lr * 0.1 ** ((it - self.anchor_iter) / (self.horizon_iters - self.anchor_iter))
        if it < self.warmup_iters:
            return self.peak_lr * it / self.warmup_iters
        if self.name == "cosine":
            if it > self.horizon_iters:
                return self.min_lr
            progress = (it - self.warmup_iters) / max(1, self.horizon_iters - self.warmup_iters)
            return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.peak_lr - self.min_lr)
        if self.name == "warmup_stable" and it >= self.horizon_iters:
            raise ValueError(
                f"iteration {it:,} is past the stable phase ({self.horizon_iters:,}); the fork's wsd decay "
                "is not defined"
            )
        return self.peak_lr  # constant, and warmup_stable's stable phase

    def record(self) -> dict:
        return {"form": "iteration", **asdict(self)}


def _fraction(done: int, length: int) -> float:
    return 1.0 if length <= 0 else min(1.0, max(0.0, done / length))


def _decay(start: float, end: float, done: int, length: int, shape: str) -> float:
    progress = _fraction(done, length)
    if shape == "sqrt":
        ahead = 1.0 - math.sqrt(progress)
    elif shape == "cosine":
        ahead = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        ahead = 1.0 - progress
    return end + (start - end) * ahead


ITERATION_SCHEDULERS = ("cosine", "constant")


def resolve_lr_schedule(
    train: Any, peak_lr: float, total_steps: int, accumulation_iters: int = 1
) -> LRSchedule | IterationLRSchedule:
    """From the ``train`` keys (``TrainArgs``), the peak LR and the horizon; all problems are reported at once.
    ``lr_warmup_iters``/``lr_horizon_iters`` select the per-micro-iteration form (what ``midtrain port`` writes for
    the paper fork's schedules)."""
    problems = Problems()
    warmup_iters, horizon_iters = getattr(train, "lr_warmup_iters", None), getattr(train, "lr_horizon_iters", None)
    iter_offset = getattr(train, "lr_iter_offset", None)
    per_iteration = warmup_iters is not None or horizon_iters is not None
    if iter_offset is not None and not per_iteration:
        problems.add(f"--train.lr_iter_offset={iter_offset!r} applies to the per-micro-iteration LR "
                     "(--train.lr_warmup_iters/--train.lr_horizon_iters), which is not set. Remove it.")
    elif iter_offset is not None and (isinstance(iter_offset, bool) or not isinstance(iter_offset, int)):
        problems.add(f"--train.lr_iter_offset={iter_offset!r} must be an integer (micro-iterations).")
    if per_iteration:
        if train.lr_scheduler not in ITERATION_SCHEDULERS:
            problems.add(
                f"--train.lr_warmup_iters/--train.lr_horizon_iters apply to --train.lr_scheduler "
                f"{' or '.join(ITERATION_SCHEDULERS)} (it is {train.lr_scheduler!r}). "
                "Remove them or change the scheduler."
            )
        if warmup_iters is not None and (train.lr_warmup_steps is not None or train.lr_warmup_fraction is not None):
            problems.add("--train.lr_warmup_iters and --train.lr_warmup_steps/--train.lr_warmup_fraction all set the "
                         "warmup. Set only one of them.")
        for key, value, least in (("lr_warmup_iters", warmup_iters, 0), ("lr_horizon_iters", horizon_iters, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                problems.add(f"--train.{key}={value!r} must be an integer of at least {least} (micro-iterations).")
    name = train.lr_scheduler
    if name not in SCHEDULERS:
        problems.add(f"--train.lr_scheduler={name!r} is not one of {', '.join(SCHEDULERS)}. Use one of them.")
    if train.lr_warmup_steps is not None and train.lr_warmup_fraction is not None:
        problems.add(
            f"--train.lr_warmup_steps={train.lr_warmup_steps} and "
            f"--train.lr_warmup_fraction={train.lr_warmup_fraction} "
            "both set the warmup. Set only one of them."
        )
    if train.lr_warmup_fraction is not None and not 0 <= train.lr_warmup_fraction <= 1:
        problems.add(f"--train.lr_warmup_fraction={train.lr_warmup_fraction!r} must be between 0 and 1 (of the total "
                     "steps).")
    if train.lr_warmup_steps is not None and (not isinstance(train.lr_warmup_steps, int) or train.lr_warmup_steps < 0):
        problems.add(f"--train.lr_warmup_steps={train.lr_warmup_steps!r} must be 0 or a positive integer.")
    if not (peak_lr > 0 and math.isfinite(peak_lr)):
        problems.add(f"the peak LR is {peak_lr!r}; set --train.max_lr (or the optimizer's lr) to a positive number.")
    if train.min_lr is None or not math.isfinite(train.min_lr) or train.min_lr < 0 or train.min_lr > peak_lr:
        problems.add(f"--train.min_lr={train.min_lr!r} must be between 0 and the peak LR ({peak_lr:g}).")
    if name != "wsd":
        for key in ("stable_steps", "decay_fraction"):
            if getattr(train, key) is not None:
                problems.add(
                    f"--train.{key}={getattr(train, key)!r} only applies to --train.lr_scheduler=wsd (it is {name!r}). "
                    "Remove it or use wsd."
                )
    elif train.stable_steps is not None and train.decay_fraction is not None:
        problems.add("--train.stable_steps and --train.decay_fraction both place the wsd decay. Set only one of them.")
    elif train.decay_fraction is not None and not 0 < train.decay_fraction <= 1:
        problems.add(f"--train.decay_fraction={train.decay_fraction!r} must be in (0, 1].")
    elif train.stable_steps is not None and (not isinstance(train.stable_steps, int) or train.stable_steps < 0):
        problems.add(f"--train.stable_steps={train.stable_steps!r} must be 0 or a positive integer.")
    shape = getattr(train, "lr_decay_shape", None)
    if shape is not None and shape not in DECAY_SHAPES:
        problems.add(f"--train.lr_decay_shape={shape!r} is not one of {', '.join(DECAY_SHAPES)}.")
    elif shape is not None and (name not in SHAPED_SCHEDULERS or per_iteration):
        problems.add(f"--train.lr_decay_shape={shape} shapes the decay of --train.lr_scheduler wsd or decay (it is "
                     f"{name!r}{', per micro-iteration' if per_iteration else ''}). Remove it, or use wsd or decay.")
    problems.raise_if_any(ConfigError)

    if train.lr_warmup_fraction is not None:
        warmup = math.ceil(train.lr_warmup_fraction * total_steps)
    elif train.lr_warmup_steps is not None:
        warmup = train.lr_warmup_steps
    else:
        warmup = DEFAULT_WARMUP_STEPS
    warmup = min(warmup, total_steps)
    decay_start = None
    if name == "wsd":
        if train.stable_steps is not None:
            decay_start = min(total_steps, warmup + train.stable_steps)
        else:
            fraction = DEFAULT_WSD_DECAY_FRACTION if train.decay_fraction is None else train.decay_fraction
            decay_start = max(warmup, total_steps - math.ceil(fraction * total_steps))
    if per_iteration:
        return IterationLRSchedule(
            name, float(peak_lr), float(train.min_lr),
            warmup_iters=warmup * accumulation_iters if warmup_iters is None else warmup_iters,
            horizon_iters=total_steps * accumulation_iters if horizon_iters is None else horizon_iters,
            accumulation_iters=accumulation_iters, total_steps=total_steps, iter_offset=iter_offset or 0)
    return LRSchedule(name, float(peak_lr), float(train.min_lr), warmup, total_steps, decay_start,
                      decay_shape=shape or "linear")
