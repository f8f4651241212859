"""The optimizer, one concept from config to a restored instance: the spec a config gives (a name or
``{class_path, init_args}``), its peak LR, its hyperparameters against a checkpoint's, building it on a model and
giving every param group the config's settings after a restore."""

from __future__ import annotations

import copy
import importlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from midtrain.errors import ConfigError
from midtrain.train.continuity import OptimizerChange, hyperparameters, optimizer_changes

# init args that are numbers: a value YAML read as a string ("1e-4") is one; one that is none ("abc") is refused
_NUMERIC_ARGS = ("lr", "weight_decay", "eps", "momentum", "dampening", "alpha", "lr_decay")


def optimizer_spec(optimizer: str | dict) -> dict:
    """``{class_path, init_args}`` with a full class path, from a name (``AdamW``) or a (partial) mapping. Numbers
    written so that YAML reads them as strings (``lr: 1e-4``, a placeholder's value) are numbers here; a value meant
    as a number that is none (``lr: abc``) is refused naming the key."""
    spec = dict(optimizer) if isinstance(optimizer, dict) else {"class_path": optimizer}
    class_path = spec.get("class_path")
    if not isinstance(class_path, str) or not class_path:
        raise ConfigError(f"--optimizer={optimizer!r} needs a class, e.g. AdamW or torch.optim.AdamW.")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ConfigError(f"--optimizer.init_args={init_args!r} must be a mapping of the optimizer's arguments, e.g. "
                          "{lr: 3.0e-4, weight_decay: 0.1}.")
    return {"class_path": class_path if "." in class_path else f"torch.optim.{class_path}",
            "init_args": {k: _number_if_numeric(k, v) for k, v in copy.deepcopy(dict(init_args)).items()}}


def _number_if_numeric(key: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            if key in _NUMERIC_ARGS:
                raise ConfigError(
                    f"--optimizer.init_args.{key}={value!r} is not a number. Write it as one, e.g. "
                    f"{key}: 3.0e-4 (a comment after a value read from a ${{VAR}} stays part of it)."
                ) from None
    return value


def configured_lr(optimizer: str | dict) -> float | None:
    """The ``lr`` a config gives its optimizer, if any."""
    return optimizer_spec(optimizer)["init_args"].get("lr")


def optimizer_class(spec: dict):
    module_name, _, class_name = spec["class_path"].rpartition(".")
    try:
        return getattr(importlib.import_module(module_name or "torch.optim"), class_name)
    except (ImportError, AttributeError):
        raise ConfigError(f"--optimizer={spec['class_path']!r} is not an optimizer class (e.g. AdamW, "
                          "torch.optim.SGD).") from None


def peak_lr(optimizer: str | dict, max_lr: float | None) -> float:
    """The peak LR: ``train.max_lr`` if given, else the optimizer config's ``lr``, else the class default."""
    spec = optimizer_spec(optimizer)
    cls = optimizer_class(spec)
    if max_lr is not None:
        peak, flag = float(max_lr), "--train.max_lr"
    elif "lr" in spec["init_args"]:
        peak, flag = spec["init_args"]["lr"], "--optimizer.init_args.lr"
    else:
        default = inspect.signature(cls).parameters.get("lr")
        if default is None or default.default is inspect.Parameter.empty:
            raise ConfigError(f"--optimizer={spec['class_path']} has no default lr; set --train.max_lr or "
                              "--optimizer.init_args.lr.")
        peak, flag = default.default, f"the default lr of {spec['class_path']}"
    if isinstance(peak, bool) or not isinstance(peak, (int, float)) or not math.isfinite(peak) or peak <= 0:
        raise ConfigError(f"{flag}={peak!r}: the peak LR must be a positive, finite number, e.g. 3.0e-4.")
    return float(peak)


def configured_group(optimizer: str | dict, lr: float, defaults_only: bool = False) -> dict:
    """The optimizer's param group as configured: its init args over the class defaults (built on one tensor); with
    ``defaults_only``, the class's defaults alone."""
    import torch
    from litgpt.utils import instantiate_torch_optimizer

    spec = optimizer_spec(optimizer)
    if defaults_only:
        spec = {**spec, "init_args": {}}
    try:
        instance = instantiate_torch_optimizer(spec, [torch.nn.Parameter(torch.zeros(1))], lr=lr)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--optimizer={optimizer!r} cannot be built ({exc}). Fix its init_args.") from None
    return {k: v for k, v in instance.param_groups[0].items() if k != "params"}


def saved_lr(optimizer_state: Any) -> float | None:
    """The LR a saved optimizer holds (its first param group's), if the state says."""
    try:
        return float(optimizer_state["param_groups"][0]["lr"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class OptimizerSetup:
    """What the run's optimizer is, and what a restore changes in it."""

    spec: dict
    """``{class_path, init_args}`` as built."""
    peak_lr: float
    configured_lr: float
    """The optimizer's own ``lr`` (or its class default): the fork's dialect ignores it, and says so."""
    settings: dict
    """The configured hyperparameters (all but the LR), applied to every param group after a restore."""
    changes: tuple[OptimizerChange, ...] = ()
    """Hyperparameters this config changes against the starting checkpoint's optimizer."""
    reset: bool = False
    """Start with fresh moments (``train.reset_optimizer`` at a branch)."""
    notices: tuple[str, ...] = field(default=())

    @property
    def class_path(self) -> str:
        return self.spec["class_path"]


def setup_optimizer(optimizer: str | dict, max_lr: float | None) -> OptimizerSetup:
    """The optimizer as configured, before any checkpoint is known."""
    spec = optimizer_spec(optimizer)
    peak = peak_lr(optimizer, max_lr)
    group = configured_group(optimizer, peak)
    settings = {k: v for k, v in group.items() if k in hyperparameters(group)}
    return OptimizerSetup(spec, peak, peak_lr(optimizer, None), settings)


def against_checkpoint(setup: OptimizerSetup, saved_state: Any, info: dict, reset_requested: bool, branch: bool,
                       where) -> OptimizerSetup:
    """The setup for a run that continues a checkpoint: the config's hyperparameters against the saved ones, another
    class refused unless the optimizer is reset (at a branch only)."""
    import dataclasses

    changes, other_class, added = _compare(saved_state, setup.settings, setup.spec, info)
    reset = reset_requested and branch
    notices = []
    if added and not reset:
        notices.append(f"the checkpoint's optimizer state has no {', '.join(added)} (written by an older torch, as the "
                       f"paper's torch 2.3.1 checkpoints are): taken as {setup.class_path}'s default "
                       f"({', '.join(f'{k}={setup.settings[k]!r}' for k in added)}), what that torch did.")
    if reset:
        notices.append("--train.reset_optimizer=true: the optimizer's state (its moments and step counts) is not "
                       "restored: it begins empty at this branch. The weights, the step counter, the LR schedule's "
                       "position (no new warmup) and the data cursors are the checkpoint's.")
    elif reset_requested:
        notices.append("--train.reset_optimizer=true applies where a branch starts; resuming this run's own "
                       "checkpoint restores its optimizer as saved.")
    if other_class and not reset:
        raise ConfigError(
            f"--optimizer: {setup.class_path} is another optimizer class than the one in {where} ({other_class}), so "
            "its state cannot be restored. Use the checkpoint's optimizer, or set --train.reset_optimizer=true to "
            "start the new one fresh when branching.")
    return dataclasses.replace(setup, changes=() if reset else tuple(changes), reset=reset, notices=tuple(notices))


def _compare(saved_state: Any, settings: dict, spec: dict,
             info: dict) -> tuple[list[OptimizerChange], str | None, list[str]]:
    """(hyperparameter changes, the checkpoint's optimizer class when it is another one, the keys the checkpoint
    lacks that count as the class's default)."""
    try:
        saved_group = saved_state["param_groups"][0]
    except (KeyError, IndexError, TypeError):
        return [], None, []
    recorded = (info.get("optimizer") or {}).get("class_path")
    if recorded and recorded != spec["class_path"]:
        return [], recorded, []
    changes, other, added = optimizer_changes(saved_group, settings, same_class=bool(recorded),
                                              class_defaults=configured_group(spec, 1.0, defaults_only=True))
    if other:
        return [], "a class with the hyperparameters " + ", ".join(sorted(hyperparameters(saved_group))), []
    return changes, None, added


def build_optimizer(fabric, model, setup: OptimizerSetup):
    """The optimizer on the set-up model, Fabric-wrapped (fused on CUDA)."""
    from litgpt.utils import instantiate_torch_optimizer

    optimizer = instantiate_torch_optimizer(setup.spec, model.parameters(), fused=fabric.device.type == "cuda",
                                            lr=setup.peak_lr)
    return fabric.setup_optimizers(optimizer)


def apply_settings(optimizer, setup: OptimizerSetup) -> None:
    """Every param group gets the config's hyperparameters after a restore (the LR stays the schedule's)."""
    for group in optimizer.param_groups:
        group.update(copy.deepcopy(setup.settings))
