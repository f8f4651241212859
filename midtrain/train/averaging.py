"""Weight averaging in the run (``train.average``): which steps enter the average and the checks a config gets
(pure logic), and the hook that keeps the average beside the weights, carries it in every checkpoint and writes it
as a litgpt checkpoint in ``out_dir/average/`` after every save.

The uniform form sums the weights of the steps it takes (every ``every_steps`` steps of the run's last
``last_steps``) and divides at writing; the EMA form keeps ``d × avg + (1 - d) × weights``. Either is one float32
copy of the weights (each rank its shard under FSDP), updated on the device after the optimizer step: no host sync.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from midtrain.errors import ConfigError, Problems
from midtrain.tokenizer import CHECKPOINT_TOKENIZER_FILES
from midtrain.train import checkpoint_files as files
from midtrain.train.checkpoint_files import AVERAGE
from midtrain.train.hooks import Hook
from midtrain.train.run_dir import write_json_atomic

FLAG = "--train.average"
COPIED_RECORDS = ("model_config.yaml", "hyperparameters.yaml", "ledger.json", *CHECKPOINT_TOKENIZER_FILES)


@dataclass(frozen=True)
class AveragePlan:
    """The steps whose weights enter the average: ``first_step`` to ``end_step``, every ``every_steps``
    (uniform), or every step from ``first_step`` (EMA, ``ema_decay``)."""

    first_step: int
    end_step: int
    every_steps: int = 1
    ema_decay: float | None = None

    @property
    def kind(self) -> str:
        return "uniform" if self.ema_decay is None else "ema"

    def takes(self, step: int) -> bool:
        return self.first_step <= step <= self.end_step and step % self.every_steps == 0

    def record(self) -> dict:
        """What a resume compares, and what the average's ``checkpoint.json`` says of it."""
        return {"kind": self.kind, "first_step": self.first_step, "end_step": self.end_step,
                "every_steps": self.every_steps, "ema_decay": self.ema_decay}

    def describe(self) -> str:
        if self.kind == "ema":
            return (f"Weight average ({FLAG}): EMA with decay {self.ema_decay:g} from step {self.first_step:,}, "
                    f"written to out_dir/{AVERAGE}/ at every save")
        taken = (self.end_step - self.first_step) // self.every_steps + 1
        return (f"Weight average ({FLAG}): uniform over the weights of {taken:,} step(s), every {self.every_steps:,} "
                f"from step {self.first_step:,} to {self.end_step:,}, written to out_dir/{AVERAGE}/ at every save")


def _positive_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def resolve_average(raw, total_steps: int, run_start_step: int) -> AveragePlan | None:
    """``train.average`` for a run from ``run_start_step`` (its branch point, or 0) to ``total_steps``; every problem
    at once, naming the key."""
    if raw is None:
        return None
    problems = Problems()
    uniform, ema = raw.last_steps is not None, raw.ema_decay is not None
    if uniform == ema:
        raise ConfigError(f"{FLAG} needs one form: {FLAG}.last_steps (with every_steps) for the uniform average of the "
                          f"run's last steps, or {FLAG}.ema_decay (with start_step) for an exponential moving average"
                          f"{'; it sets both' if uniform else ''}.")
    length = total_steps - run_start_step
    if uniform:
        if raw.start_step is not None:
            problems.add(f"{FLAG}.start_step={raw.start_step!r} belongs to the EMA ({FLAG}.ema_decay); the uniform "
                         f"average starts {FLAG}.last_steps before the end. Remove it.")
        if not _positive_int(raw.last_steps):
            problems.add(f"{FLAG}.last_steps={raw.last_steps!r} must be a positive number of optimizer steps.")
        elif raw.last_steps > length:
            problems.add(f"{FLAG}.last_steps={raw.last_steps:,} is longer than the run ({length:,} steps, "
                         f"{run_start_step:,} → {total_steps:,}). Set at most {length:,}.")
        if not _positive_int(raw.every_steps):
            problems.add(f"{FLAG}.every_steps={raw.every_steps!r} must be a positive number of optimizer steps.")
        problems.raise_if_any(ConfigError)
        first = total_steps - raw.last_steps + 1
        first += -first % raw.every_steps
        if first > total_steps:
            raise ConfigError(f"{FLAG}.every_steps={raw.every_steps:,}: no step of the last {raw.last_steps:,} "
                              f"(steps {total_steps - raw.last_steps + 1:,} → {total_steps:,}) is a multiple of it, "
                              "so nothing would be averaged. Lower it, or raise last_steps.")
        return AveragePlan(first, total_steps, raw.every_steps)
    decay = raw.ema_decay
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
        problems.add(f"{FLAG}.ema_decay={decay!r} must lie strictly between 0 and 1 (e.g. 0.999).")
    if raw.every_steps != 1:
        problems.add(f"{FLAG}.every_steps={raw.every_steps!r} belongs to the uniform average; the EMA takes every "
                     "step. Remove it.")
    start = run_start_step + 1 if raw.start_step is None else raw.start_step
    if not _positive_int(start) or not run_start_step < start <= total_steps:
        problems.add(f"{FLAG}.start_step={raw.start_step!r} must be a step of the run ({run_start_step + 1:,} → "
                     f"{total_steps:,}): the first step whose weights enter the EMA.")
    problems.raise_if_any(ConfigError)
    return AveragePlan(start, total_steps, 1, float(decay))


def check_resume(plan: AveragePlan | None, saved: dict | None, start_step: int) -> None:
    """A resume keeps the run's average: the same settings, or a new one whose first step is still ahead."""
    if saved is None:
        if plan is not None and plan.first_step <= start_step:
            raise ConfigError(
                f"{FLAG} is set, but the run did not average up to step {start_step:,}, where it resumes, and the "
                f"average starts at step {plan.first_step:,}: it would miss the weights between. Start it after "
                f"step {start_step:,}, or branch (--branch_from) into a new --out_dir.")
        return
    if plan is None:
        raise ConfigError(f"{FLAG} is unset, but the run averaged its weights up to step {start_step:,} "
                          f"({saved['settings']}). A resume keeps its average: set {FLAG} back as it was.")
    changed = [f"{k}={v!r} (the run's: {saved['settings'].get(k)!r})" for k, v in plan.record().items()
               if saved["settings"].get(k) != v]
    if changed:
        raise ConfigError(f"{FLAG} differs from the one the run averaged with up to step {start_step:,}: "
                          f"{'; '.join(changed)}. A resume keeps its average: set it back, or branch into a new "
                          "--out_dir.")


class WeightAverage(Hook):
    """The average over a run, on the device beside the weights; ``saved``: the state a resumed run carried."""

    def __init__(self, fabric, model, plan: AveragePlan, out_dir: Path, saved: dict | None = None) -> None:
        import torch

        self.fabric, self.plan, self.out_dir = fabric, plan, out_dir
        self.module = getattr(model, "module", model)  # Fabric's wrapper holds the model it was given
        # names as the state dict gives them (a block wrapped for activation checkpointing adds a prefix)
        self.params = {n.replace("_checkpoint_wrapped_module.", ""): p for n, p in self.module.named_parameters()}
        self.count, self.first, self.last = 0, None, None
        self.weights: dict | None = None
        self._full: dict | None = None
        if saved is not None:
            self.count, self.first, self.last = saved["count"], saved["first"], saved["last"]
            with torch.no_grad():
                self.weights = {n: _shard_like(p, saved["weights"][n]) for n, p in self.params.items()}

    def stepped(self, loop, val_losses) -> bool:
        import torch

        step = loop.counters.step
        if not self.plan.takes(step):
            return False
        with torch.no_grad():
            if self.weights is None:
                self.weights = {n: p.detach().float().clone() for n, p in self.params.items()}
            else:  # one fused kernel per dtype and device for all tensors, not one launch per parameter
                mine = list(self.weights.values())
                theirs = [p.detach().float() for p in self.params.values()]
                if self.plan.ema_decay is None:
                    torch._foreach_add_(mine, theirs)
                else:
                    torch._foreach_lerp_(mine, theirs, 1.0 - self.plan.ema_decay)
        self.count, self.first, self.last = self.count + 1, self.first or step, step
        return False

    def before_save(self, loop) -> dict:
        """The average's state, gathered whole (a collective under FSDP) onto the host, into the checkpoint."""
        if self.weights is None:
            return {}
        self._full = {n: _whole(w).cpu() for n, w in self.weights.items()}
        return {AVERAGE: {"settings": self.plan.record(), "count": self.count, "first": self.first,
                          "last": self.last, "weights": self._full}}

    def saved(self, loop, target: Path, final: bool) -> None:
        """The checkpoint at ``target`` is published: write the average beside it, as a litgpt checkpoint with that
        checkpoint's records (its ledger: the data seen so far)."""
        if self._full is None:
            return
        error = None
        if self.fabric.global_rank == 0:
            try:
                self._write(target)
            except OSError as exc:
                error = exc
        self._full = None
        if not self.fabric.strategy.reduce_boolean_decision(error is None, all=True):
            from midtrain.train.checkpointer import CheckpointWriteError

            raise CheckpointWriteError(f"writing {self.out_dir / AVERAGE} failed ({error or 'on rank 0'}). The "
                                       "checkpoints are intact: free space and rerun with --resume=auto.")

    def _write(self, target: Path) -> None:
        import torch

        staging = files.partial_dir(self.out_dir, AVERAGE)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        by_id = {id(p): n for n, p in self.params.items()}
        state = {}
        for key, value in self.module.state_dict(keep_vars=True).items():
            name = by_id.get(id(value))
            if name is None:  # a buffer: as it is
                state[key] = _whole(value.detach()).cpu()
                continue
            average = self._full[name] / self.count if self.plan.ema_decay is None else self._full[name]
            state[key] = average.to(value.dtype)
        torch.save({"model": state}, staging / files.MODEL_FILE)
        for name in COPIED_RECORDS:
            if (target / name).is_file():
                shutil.copy2(target / name, staging / name)
        info = json.loads((target / files.INFO_FILE).read_text())
        info[AVERAGE] = {**self.plan.record(), "count": self.count, "first": self.first, "last": self.last,
                         "source": target.name}
        write_json_atomic(staging / files.INFO_FILE, info)
        files.publish(staging, self.out_dir / AVERAGE)


def _whole(tensor):
    """A tensor whole: an FSDP2 shard gathered (a collective), or the tensor itself."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _shard_like(param, whole):
    """``whole`` (a saved average) as ``param`` holds it: on its device, sharded like it under FSDP2."""
    import torch

    value = whole.to(device=param.device, dtype=torch.float32)
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
    return value.clone()
