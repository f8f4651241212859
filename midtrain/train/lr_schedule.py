"""Learning-rate schedules as a function of the optimizer step (pure logic, no torch).

``lr_at(step)`` is the LR used for the optimizer step that takes the counter from ``step`` to ``step + 1``.
Warmup is linear from ``peak / warmup_steps`` to the peak, so no step is spent at LR 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from midtrain.errors import ConfigError, Problems

SCHEDULERS = ("cosine", "wsd", "linear", "constant", "decay")
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

    def anchored(self, step: int, lr: float) -> LRSchedule:
        return replace(self, anchor_step=step, anchor_lr=lr)

    def lr_at(self, step: int) -> float:
        total = self.total_steps
        if self.name == "decay" and self.anchor_step is not None and step >= self.anchor_step and self.anchor_step > 0:
            return _linear(self.anchor_lr, self.min_lr, step - self.anchor_step, total - self.anchor_step)
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
            return _linear(self.peak_lr, self.min_lr, step - self.decay_start_step, total - self.decay_start_step)
        # linear, and decay from the start of a fresh run
        return _linear(self.peak_lr, self.min_lr, step - self.warmup_steps, total - self.warmup_steps)


def _fraction(done: int, length: int) -> float:
    return 1.0 if length <= 0 else min(1.0, max(0.0, done / length))


def _linear(start: float, end: float, done: int, length: int) -> float:
    return start + (end - start) * _fraction(done, length)


def resolve_lr_schedule(train: Any, peak_lr: float, total_steps: int) -> LRSchedule:
    """From the ``train`` keys (``TrainArgs``), the peak LR and the horizon; all problems are reported at once."""
    problems = Problems()
    name = train.lr_scheduler
    if name not in SCHEDULERS:
        problems.add(f"--train.lr_scheduler={name!r} is not one of {', '.join(SCHEDULERS)}. Use one of them.")
    if train.lr_warmup_steps is not None and train.lr_warmup_fraction is not None:
        problems.add(
            f"--train.lr_warmup_steps={train.lr_warmup_steps} and --train.lr_warmup_fraction={train.lr_warmup_fraction} "
            "both set the warmup. Set only one of them."
        )
    if train.lr_warmup_fraction is not None and not 0 <= train.lr_warmup_fraction <= 1:
        problems.add(f"--train.lr_warmup_fraction={train.lr_warmup_fraction!r} must be between 0 and 1 (of the total steps).")
    if train.lr_warmup_steps is not None and (not isinstance(train.lr_warmup_steps, int) or train.lr_warmup_steps < 0):
        problems.add(f"--train.lr_warmup_steps={train.lr_warmup_steps!r} must be 0 or a positive integer.")
    if not peak_lr > 0:
        problems.add(f"the peak LR is {peak_lr!r}; set --train.max_lr (or the optimizer's lr) to a positive number.")
    if train.min_lr is None or train.min_lr < 0 or train.min_lr > peak_lr:
        problems.add(f"--train.min_lr={train.min_lr!r} must be between 0 and the peak LR ({peak_lr:g}).")
    if name != "wsd":
        for key in ("stable_steps", "decay_fraction"):
            if getattr(train, key) is not None:
                problems.add(f"--train.{key}={getattr(train, key)!r} only applies to --train.lr_scheduler=wsd (it is {name!r}). "
                             "Remove it or use wsd.")
    elif train.stable_steps is not None and train.decay_fraction is not None:
        problems.add("--train.stable_steps and --train.decay_fraction both place the wsd decay. Set only one of them.")
    elif train.decay_fraction is not None and not 0 < train.decay_fraction <= 1:
        problems.add(f"--train.decay_fraction={train.decay_fraction!r} must be in (0, 1].")
    elif train.stable_steps is not None and (not isinstance(train.stable_steps, int) or train.stable_steps < 0):
        problems.add(f"--train.stable_steps={train.stable_steps!r} must be 0 or a positive integer.")
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
    return LRSchedule(name, float(peak_lr), float(train.min_lr), warmup, total_steps, decay_start)
