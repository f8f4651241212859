"""The run's length and its stop criteria, resolved from the ``train`` keys (pure logic, no torch).

The horizon (``total_steps``) is absolute: a branch from step 40,000 of a 61,035-step trunk ends at 61,035 like
the trunk, so restarts never edit "steps remaining" into a config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from midtrain.errors import ConfigError, Problems
from midtrain.train.preemption import StopReason


@dataclass(frozen=True)
class Budget:
    total_steps: int
    """The horizon: optimizer steps of the whole run (over its lineage), the LR schedule's length."""
    accumulation_iters: int
    """Micro-batches per rank per optimizer step."""
    micro_batch_size: int
    global_batch_size: int
    world_size: int
    seq_length: int
    max_iters: int | None
    """Stop at this many micro-batch iterations (the paper fork's cap), if given."""
    max_additional_steps: int | None
    max_time_s: float | None
    steps_from_branch: int | None = None
    """``train.steps_from_branch``/``tokens_from_branch`` in steps: the horizon is the branch point plus this
    (``total_steps`` is set by ``from_branch`` once the branch point is known)."""
    steps_end_at_iteration_multiples: bool = False
    """The paper fork's rule (``iter_num % accumulation == 0`` steps): a run that starts at an iteration count that
    is no multiple of ``accumulation_iters`` (a parent trained with other batch settings) makes its first step
    shorter, so every later step ends at a multiple. Otherwise every step is ``accumulation_iters`` micro-batches."""

    def micro_batches(self, iter_num: int) -> int:
        """Micro-batches of the optimizer step that starts at micro-iteration ``iter_num`` (per rank)."""
        if self.steps_end_at_iteration_multiples:
            return self.accumulation_iters - iter_num % self.accumulation_iters
        return self.accumulation_iters

    def from_branch(self, branch_step: int | None) -> Budget:
        """The horizon of a length counted from the branch point (``branch_step``, None where the run has none)."""
        if self.steps_from_branch is None:
            return self
        if branch_step is None:
            raise ConfigError(
                "--train.steps_from_branch/--train.tokens_from_branch count the run's length from its branch point, "
                "but this run branches from nothing (no --branch_from, and --out_dir holds no branch). Set "
                "--branch_from, or give the length as --train.max_steps/--train.max_tokens.")
        return dataclasses.replace(self, total_steps=branch_step + self.steps_from_branch)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_length

    def stop_step(self, start_step: int) -> int:
        """The last step this invocation may reach, from the horizon and the per-invocation caps."""
        stop = self.total_steps
        if self.max_additional_steps is not None:
            stop = min(stop, start_step + self.max_additional_steps)
        if self.max_iters is not None:
            stop = min(stop, self.max_iters // self.accumulation_iters)
        return stop

    def stop_reason(self, stop_step: int, start_step: int) -> StopReason:
        """Which per-invocation cap ``stop_step`` came from."""
        if self.max_additional_steps is not None and stop_step == start_step + self.max_additional_steps:
            return StopReason.MAX_ADDITIONAL_STEPS
        return StopReason.MAX_ITERS


def _positive_int(problems: Problems, flag: str, value: Any, allow_none: bool = True) -> bool:
    if value is None:
        return allow_none
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.add(f"--{flag}={value!r} must be a positive integer.")
        return False
    return True


def resolve_budget(train: Any, world_size: int, seq_length: int, fork_dialect: bool = False) -> Budget:
    """``train`` is a ``TrainArgs``; every inconsistency is reported at once, naming the flags.

    In the fork's dialect the run's end comes from ``midtrain.train.fork_dialect`` once the starting checkpoint is
    known: ``total_steps`` is then the horizon of ``max_steps``/``max_tokens`` if given, else 0, and ``max_iters``/
    ``max_additional_steps`` are not stop caps here."""
    problems = Problems()
    for name in ("micro_batch_size", "global_batch_size", "log_interval"):
        _positive_int(problems, f"train.{name}", getattr(train, name), allow_none=False)
    for name in ("save_interval", "max_steps", "max_tokens", "max_iters", "max_additional_steps", "steps_from_branch",
                 "tokens_from_branch"):
        _positive_int(problems, f"train.{name}", getattr(train, name))
    if train.epochs is not None:
        problems.add(
            f"--train.epochs={train.epochs!r} is not used by pretraining: the length comes from the token budget. "
            "Remove it and set --train.max_tokens (or --train.max_steps)."
        )
    keep_last = getattr(train, "keep_last_checkpoints", None)
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        problems.add(
            f"--train.keep_last_checkpoints={keep_last!r} must be at least 1: the newest checkpoint is the one "
            "a stopped run resumes from. Leave it unset to keep every checkpoint."
        )
    bad_steps = [s for s in getattr(train, "keep_checkpoint_steps", None) or []
                 if isinstance(s, bool) or not isinstance(s, int) or s < 1]
    if bad_steps:
        problems.add(f"--train.keep_checkpoint_steps has {bad_steps!r}; steps must be positive integers.")
    if train.max_time is not None and not train.max_time > 0:
        problems.add(f"--train.max_time={train.max_time!r} must be a positive number of seconds.")
    if train.max_norm is not None and not train.max_norm > 0:
        problems.add(f"--train.max_norm={train.max_norm!r} must be positive (or unset for no gradient clipping).")
    problems.raise_if_any(ConfigError)

    per_step = train.micro_batch_size * world_size
    if train.global_batch_size % per_step:
        raise ConfigError(
            f"--train.global_batch_size={train.global_batch_size} is not a multiple of --train.micro_batch_size="
            f"{train.micro_batch_size} × {world_size} rank(s) = {per_step}. Set it to a multiple of {per_step}, e.g. "
            f"{max(per_step, train.global_batch_size // per_step * per_step)}."
        )
    accumulation = train.global_batch_size // per_step
    tokens_per_step = train.global_batch_size * seq_length

    horizons = {}
    if train.max_steps is not None:
        horizons["--train.max_steps"] = train.max_steps
    if train.max_tokens is not None:
        if train.max_tokens < tokens_per_step:
            raise ConfigError(
                f"--train.max_tokens={train.max_tokens:,} is less than one optimizer step ({tokens_per_step:,} tokens "
                "= "
                f"global_batch_size {train.global_batch_size} × {seq_length} tokens). Raise it."
            )
        horizons["--train.max_tokens"] = train.max_tokens // tokens_per_step
    from_branch = {k: v for k in ("steps_from_branch", "tokens_from_branch")
                   if (v := getattr(train, k, None)) is not None}
    if from_branch and (horizons or len(from_branch) > 1):
        given = [*horizons, *(f"--train.{k}" for k in from_branch)]
        raise ConfigError(f"{' and '.join(given)} all give the run's length. Set one: --train.max_steps/max_tokens "
                          "for the whole lineage's horizon (a branch ends with its trunk), --train.steps_from_branch/"
                          "tokens_from_branch for a length counted from the branch point (an anneal).")
    steps_from_branch = from_branch.get("steps_from_branch")
    if "tokens_from_branch" in from_branch:
        if from_branch["tokens_from_branch"] < tokens_per_step:
            raise ConfigError(
                f"--train.tokens_from_branch={from_branch['tokens_from_branch']:,} is less than one optimizer step "
                f"({tokens_per_step:,} tokens = global_batch_size {train.global_batch_size} × {seq_length} tokens). "
                "Raise it.")
        steps_from_branch = from_branch["tokens_from_branch"] // tokens_per_step
    if len(set(horizons.values())) > 1:
        raise ConfigError(
            f"--train.max_steps={train.max_steps:,} and --train.max_tokens={train.max_tokens:,} "
            f"({train.max_tokens // tokens_per_step:,} steps of {tokens_per_step:,} tokens) give different run "
            "lengths. "
            "Set only one of them."
        )
    if horizons:
        total_steps = next(iter(horizons.values()))
    elif steps_from_branch is not None:
        total_steps = 0  # known from the branch point (``Budget.from_branch``)
    elif fork_dialect:
        total_steps = 0
    elif train.max_iters is not None:
        if train.max_iters % accumulation:
            raise ConfigError(
                f"--train.max_iters={train.max_iters:,} micro-batch iterations is not a whole number of optimizer "
                "steps "
                f"({accumulation} iterations each). Set it to a multiple of {accumulation}, or set --train.max_steps."
            )
        total_steps = train.max_iters // accumulation
    else:
        raise ConfigError(
            "the run has no length: set --train.max_tokens (total tokens, as litgpt) or --train.max_steps (optimizer "
            "steps). It is the LR schedule's horizon; a branch uses the trunk's, so both end at the same step."
        )
    return Budget(
        total_steps=total_steps,
        accumulation_iters=accumulation,
        micro_batch_size=train.micro_batch_size,
        global_batch_size=train.global_batch_size,
        world_size=world_size,
        seq_length=seq_length,
        max_iters=None if fork_dialect else train.max_iters,
        max_additional_steps=None if fork_dialect else train.max_additional_steps,
        max_time_s=train.max_time,
        steps_from_branch=steps_from_branch,
    )
