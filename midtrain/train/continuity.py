"""What a resume or a branch changes against the checkpoint it starts from: the optimizer's hyperparameters (the
config wins, every change listed) and the LR at the first step (a jump against the parent's next LR is announced
with its reasons). Pure logic; the caller reads the checkpoint and resolves the config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Param-group entries that are not hyperparameters of the optimisation: the LR (the schedule's), the parameters,
# and implementation switches that depend on the device (fused on CUDA, foreach…).
NOT_HYPERPARAMETERS = frozenset({"params", "lr", "initial_lr", "foreach", "fused", "capturable", "differentiable"})
LR_JUMP_TOLERANCE = 0.01


def hyperparameters(param_group: dict) -> dict[str, Any]:
    """A param group's hyperparameters, tuples as lists (so saved and configured values compare alike)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in param_group.items() if k not in NOT_HYPERPARAMETERS}


@dataclass(frozen=True)
class OptimizerChange:
    key: str
    checkpoint: Any
    config: Any


def optimizer_changes(saved_group: dict, configured_group: dict, same_class: bool = False,
                      class_defaults: dict | None = None) -> tuple[list[OptimizerChange], bool, list[str]]:
    """(the hyperparameters the config changes, whether the two are different optimizer classes, the keys the
    checkpoint lacks that count as their default). Compared field by field: a key only the configured group has,
    set to the class's default (``class_defaults``), is one a newer torch added (AdamW's ``decoupled_weight_decay``,
    absent from torch 2.3.1's checkpoints, the paper's), and equal to what the older torch did. Without a recorded
    class (``same_class`` False), other differing names mean another class (SGD's momentum against AdamW's betas);
    with it, only the names both have are compared."""
    saved, configured = hyperparameters(saved_group), hyperparameters(configured_group)
    defaults = hyperparameters(class_defaults or {})
    added = sorted(k for k in configured if k not in saved and k in defaults and configured[k] == defaults[k])
    if set(saved) != set(configured) - set(added) and not same_class:
        return [], True, []
    return [OptimizerChange(k, saved[k], configured[k]) for k in configured
            if k in saved and saved[k] != configured[k]], False, added


def render_optimizer_changes(changes: list[OptimizerChange]) -> str:
    width = max(len(c.key) for c in changes)
    return "\n".join(f"  {c.key.ljust(width)}  {c.checkpoint!r} -> {c.config!r}" for c in changes)


@dataclass
class LRJump:
    step: int
    parent_lr_next: float
    lr: float
    reasons: list[str] = field(default_factory=list)
    intentional: str | None = None

    @property
    def relative_change(self) -> float:
        return (self.lr - self.parent_lr_next) / self.parent_lr_next

    def describe(self) -> str:
        head = (f"LR at step {self.step + 1:,}: {self.lr:.4g}, where the checkpoint's run would have used "
                f"{self.parent_lr_next:.4g} next ({100 * self.relative_change:+.1f} %)")
        if self.intentional:
            return f"{head}: {self.intentional}."
        why = "; ".join(self.reasons) or "the schedule differs in a way the checkpoint does not record"
        return f"{head}. Why: {why}."

    def record(self) -> dict:
        return {"step": self.step, "parent_lr_next": self.parent_lr_next, "lr": self.lr,
                "relative_change": self.relative_change, "reasons": self.reasons, "intentional": self.intentional}


_SCHEDULE_FIELDS = (
    ("name", "scheduler"), ("peak_lr", "peak"), ("min_lr", "min_lr"),
    ("warmup_steps", "warmup (steps)"), ("warmup_iters", "warmup (micro-iterations)"),
    ("total_steps", "horizon (steps)"), ("horizon_iters", "horizon (micro-iterations)"),
    ("decay_start_step", "wsd decay start (step)"), ("accumulation_iters", "micro-iterations per step"),
    ("iter_offset", "micro-iteration offset"), ("decay_shape", "decay shape"),
)
_RECORD_DEFAULTS = {"decay_shape": "linear"}  # what a schedule recorded before the field existed


def lr_jump(parent_info: dict, schedule_record: dict, lr_first: float, step: int, global_batch_size: int,
            tokens_per_step: int) -> LRJump | None:
    """An ``LRJump`` when this run's first LR differs from the parent's ``lr_next`` by more than 1 %."""
    parent_next = parent_info.get("lr_next")
    if not isinstance(parent_next, (int, float)) or parent_next <= 0:
        return None
    if abs(lr_first - parent_next) <= LR_JUMP_TOLERANCE * parent_next:
        return None
    jump = LRJump(step, float(parent_next), float(lr_first))
    name = schedule_record.get("name")
    if schedule_record.get("rewarm_steps") and schedule_record.get("rewarm_start") == step:
        jump.intentional = (f"intentional — --train.rewarm_steps={schedule_record['rewarm_steps']} raises the LR "
                            "from 0 after the branch point, where the optimizer starts fresh")
        return jump
    if name in ("decay", "exp_decay"):
        jump.intentional = (
            f"intentional — '{'decay' if name == 'decay' else 'the fork dialect’s decay'}' restarts the "
            "schedule from the LR in effect at the checkpoint"
        )
        return jump
    parent = parent_info.get("lr_schedule")
    if not isinstance(parent, dict):
        jump.reasons.append("the checkpoint does not record the schedule it was on (written before midtrain recorded "
                            "it, or by litgpt)")
    else:
        old_form, new_form = parent.get("form"), schedule_record.get("form")
        if old_form != new_form:  # the fields of two forms do not compare one by one
            jump.reasons.append(f"LR computed per {'micro-iteration' if new_form == 'iteration' else 'step'} "
                                f"(was per {'micro-iteration' if old_form == 'iteration' else 'step'})")
        else:
            for key, label in _SCHEDULE_FIELDS:
                old, new = (record.get(key, _RECORD_DEFAULTS.get(key)) for record in (parent, schedule_record))
                if old != new:
                    jump.reasons.append(f"{label} {_show(old)} -> {_show(new)}")
    for key, value in (("global_batch_size", global_batch_size), ("tokens_per_step", tokens_per_step)):
        old = parent_info.get(key)
        if old is not None and old != value:
            jump.reasons.append(f"{key.replace('_', ' ')} {old:,} -> {value:,}")
    return jump


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# The data module's keys that say what a run reads; a run folder holds one run, so a config that changes them is
# another experiment (two configs sharing an out_dir), not a resume. Schedules compare phase by phase elsewhere.
MIXTURE_KEYS = ("mix_weights_str", "mix_weights", "literal_weights_str", "mix_config_path", "proportional_sampling",
                "domain_split")


def mixture_changes(previous: dict, current: dict) -> list[str]:
    """``key old -> new`` for each mixture key two configs (as recorded in a run folder) give differently."""
    def init_args(config: dict) -> dict:
        return ((config or {}).get("data") or {}).get("init_args") or {}

    old, new = init_args(previous), init_args(current)
    if bool(old.get("mix_schedule")) != bool(new.get("mix_schedule")):
        return [f"mix_schedule {'set' if old.get('mix_schedule') else 'unset'} -> "
                f"{'set' if new.get('mix_schedule') else 'unset'}"]
    return [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in MIXTURE_KEYS
            if (old.get(key) or None) != (new.get(key) or None)]
