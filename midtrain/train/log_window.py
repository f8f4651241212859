"""The training losses (and gradient norms) since the last log line, kept on the device until they are read, and
the check that stops a run at its first non-finite one."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class Diverged(Exception):
    """A non-finite loss or gradient norm: the run stops without saving anything from that step on."""

    def __init__(self, step: int, metric: str, value: float | None = None) -> None:
        super().__init__(f"{metric} is {value} at step {step:,}" if value is not None else
                         f"{metric} after step {step:,}")
        self.step, self.metric, self.value = step, metric, value


class LogWindow:
    """Losses (and gradient norms) since the last log line, kept on the device until they are read; starts with the
    losses a checkpoint saved (already means over every rank) when a resume continues its window."""

    def __init__(self, step: int, device: torch.device, restored: Sequence[float] = ()) -> None:
        self.device = device
        self.reset(step)
        self.losses = [torch.tensor(float(v), device=device) for v in restored]
        self.start_step = step - len(self.losses)

    def reset(self, step: int) -> None:
        self.start_step = step
        self.losses: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, norm: torch.Tensor | None) -> None:
        self.losses.append(loss)
        if norm is not None:
            self.norms.append(norm)

    def checked(self, fabric) -> tuple[list[float], list[float] | None]:
        """Each step's loss, averaged over the ranks, and its gradient norm (the same on every rank), in one
        all-reduce and one device-to-host copy; ``Diverged`` at the first step whose loss or norm is not finite."""
        if not self.losses:
            return [], None
        losses = torch.stack([loss.float() for loss in self.losses])
        count = len(self.norms)
        if count:  # a resumed window's first steps have no norms on record: those are checked already
            losses = torch.cat([losses, torch.stack([n.float() for n in self.norms])])
        values = fabric.all_reduce(losses, reduce_op="mean").tolist()
        steps = len(self.losses)
        norms = values[steps:] if count else None
        if norms is not None and len(norms) < steps:
            norms = [0.0] * (steps - len(norms)) + norms
        for k, loss in enumerate(values[:steps]):
            if not math.isfinite(loss):
                raise Diverged(self.start_step + k + 1, "train/loss", loss)
            if norms is not None and not math.isfinite(norms[k]):
                raise Diverged(self.start_step + k + 1, "the gradient norm", norms[k])
        return values[:steps], norms
