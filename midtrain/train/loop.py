"""The training loop: optimizer steps of gradient-accumulated micro-batches, with logging, validation,
checkpointing and the stop criteria; the rest rides along as hooks (``midtrain.train.hooks``). ``run`` assembles it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from litgpt.utils import chunked_cross_entropy

from midtrain.progress import StepProgress
from midtrain.train.budget import Budget
from midtrain.train.hooks import Hook
from midtrain.train.log_window import Diverged, LogWindow
from midtrain.train.losses import token_losses
from midtrain.train.lr_schedule import LRSchedule
from midtrain.train.preemption import StopReason, StopRequest
from midtrain.train.validation import bits_per_byte, validate


@dataclass
class Counters:
    """What the loop advances; saved in every checkpoint (``step_count``/``iter_num`` as litgpt names them)."""

    step: int = 0
    iter_num: int = 0


@dataclass(frozen=True)
class LoopSettings:
    log_interval: int
    eval_interval: int
    save_interval: int | None
    max_norm: float | None
    initial_validation: bool
    final_validation: bool
    keep_steps: frozenset[int] = frozenset()
    """Steps always saved (and kept), on the ``save_interval`` grid or not: the branch points."""

    def saves_at(self, step: int) -> bool:
        return bool(self.save_interval and step % self.save_interval == 0) or step in self.keep_steps


@dataclass
class Trainer:
    """The run's parts, reached by name: what the loop works on, and the hooks it calls."""

    fabric: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: object
    """A ``MixedStreamLoader``: batches, and ``domain_tokens()``; its iteration ends where the mixture pauses."""
    budget: Budget
    schedule: LRSchedule
    settings: LoopSettings
    val_sets: Mapping
    save: Callable[[Counters, bool, dict], object]
    """Saves a checkpoint (counters, final, midtrain's entries); returns its folder."""
    metrics: object
    """Has ``log_dict(metrics, step)``."""
    hooks: Sequence[Hook] = ()
    log_window: Sequence[float] = ()
    """The losses of the steps since the last log step, saved with a checkpoint (a resume logs the same means)."""
    counters: Counters = field(default_factory=Counters)
    data_wait_s: float = 0.0
    """Host time spent waiting for the loader."""
    val_tokens_per_byte: Mapping = field(default_factory=dict)
    """Each validation set's scored tokens per byte of their text: its loss in bits per byte (none without a
    tokenizer)."""

    def __post_init__(self) -> None:
        self.progress = StepProgress(self.budget.total_steps, 0, show=False, bar=False)
        self.sample_losses = any(h.sample_losses for h in self.hooks)
        self.evaluates = bool(self.val_sets) or any(h.evaluates for h in self.hooks)

    def fit(self, stop_request: StopRequest) -> StopReason:
        """Train from ``counters`` until a stop criterion; returns why it stopped (``finished`` if the horizon was
        reached, else the criterion). A checkpoint is saved whenever it stops."""
        counters, budget, settings = self.counters, self.budget, self.settings
        start_step = counters.step
        stop_step = budget.stop_step(start_step)
        self.progress = StepProgress(budget.total_steps, start_step, show=self.fabric.global_rank == 0)
        try:
            initial = self.validate(counters.step) if settings.initial_validation and self.evaluates else None
            for hook in self.hooks:
                hook.started(self, initial)
            batches = iter(self.loader)
            started = time.perf_counter()
            window = LogWindow(counters.step, self.fabric.device, self.log_window)
            saved_step = None
            # a stop requested during start-up ends the run here, before its first step, with nothing to save
            reason = (StopReason.FINISHED if counters.step >= budget.total_steps
                      else self.stop_reason(stop_request, started))
            while reason is None:
                if counters.step >= stop_step:
                    reason = budget.stop_reason(stop_step, start_step)
                    break
                lr = self.schedule.lr_at(counters.step)
                micro_batches = budget.micro_batches(counters.iter_num)
                window.add(*self.optimizer_step(batches, lr, micro_batches))
                counters.step += 1
                counters.iter_num += micro_batches
                if counters.step % settings.log_interval == 0:
                    self.log_training(lr, window)
                else:
                    self.progress.advance(counters.step)
                val_losses = None
                due = counters.step % settings.eval_interval == 0 and counters.step < budget.total_steps  # final: below
                if self.evaluates and due:
                    val_losses = self.validate(counters.step)
                if any([hook.stepped(self, val_losses) for hook in self.hooks]):
                    batches = iter(self.loader)  # the stream paused at this step: its iteration starts again
                if counters.step >= budget.total_steps:
                    reason = StopReason.FINISHED
                elif self.stop_check_due(counters.step, stop_step):
                    reason = self.stop_reason(stop_request, started)
                if settings.saves_at(counters.step) and reason is not StopReason.FINISHED:
                    self.checked_save(False, window)
                    saved_step = counters.step
            if reason is StopReason.FINISHED and settings.final_validation and self.evaluates:
                self.validate(counters.step)
            # a run already at its cap (e.g. max_iters) has nothing new to save; a finished one always writes final/,
            # and its step folder too when the save grid or keep_checkpoint_steps asks for that step (a branch point)
            if reason is StopReason.FINISHED and settings.saves_at(counters.step) and saved_step != counters.step:
                self.checked_save(False, window)
            if reason is StopReason.FINISHED or (counters.step > start_step and saved_step != counters.step):
                self.checked_save(reason is StopReason.FINISHED, window)
            return reason
        finally:
            self.progress.close()

    def checked_save(self, final: bool, window: LogWindow) -> None:
        """Save only what can be trusted: every loss and gradient norm since the last check finite, and the weights."""
        values, _ = window.checked(self.fabric)
        # each rank checks its own shard of the weights (all of them, unsharded); the minimum is every rank's verdict
        finite = torch.stack([torch.isfinite(_local(p)).all() for p in self.model.parameters()]).all().float()
        if self.fabric.all_reduce(finite, reduce_op="min").item() < 1:
            raise Diverged(self.counters.step, "the weights hold non-finite values")
        entries = {"log_window": values, "log_window_end": self.counters.step}
        for hook in self.hooks:
            entries.update(hook.before_save(self) or {})
        target = self.save(self.counters, final, entries)
        for hook in self.hooks:
            hook.saved(self, target, final)

    def optimizer_step(self, batches: Iterator[torch.Tensor], lr: float,
                       micro_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step over ``micro_batches`` micro-batches (default a whole step's); each one's gradient is
        scaled by the whole step's count, as the fork and litgpt scale it, also in a shorter first step."""
        fabric, model, accumulation = self.fabric, self.model, self.budget.accumulation_iters
        micro_batches = accumulation if micro_batches is None else micro_batches
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=fabric.device)
        for i in range(micro_batches):
            waited = time.perf_counter()
            batch = next(batches)
            self.data_wait_s += time.perf_counter() - waited
            batch = batch.to(fabric.device, non_blocking=True).long()
            with fabric.no_backward_sync(model, enabled=i < micro_batches - 1):
                # contiguous inputs and targets, as litgpt's loop feeds them (a strided view costs the compiled model)
                logits = model(batch[:, :-1].contiguous())
                targets = batch[:, 1:].contiguous()
                if self.sample_losses:  # one per-token computation gives the loss and each sample's
                    loss, per_sample = token_losses(logits, targets)
                    for hook in self.hooks:
                        hook.micro_batch(self, per_sample)
                else:
                    loss = chunked_cross_entropy(logits, targets)
                fabric.backward(loss / accumulation)
            total += loss.detach()
        grad_norm = None
        if self.settings.max_norm is not None:
            # the norm stays on the device: a non-finite one is found at the next log or save step, not here
            grad_norm = fabric.clip_gradients(model, self.optimizer, max_norm=self.settings.max_norm,
                                              error_if_nonfinite=False)
            if hasattr(grad_norm, "full_tensor"):  # FSDP2's is a DTensor (replicated: no communication here)
                grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total / micro_batches, grad_norm

    def stop_check_due(self, step: int, stop_step: int) -> bool:
        """Whether to look for a stop request after ``step``. With several ranks, agreeing on it is a collective (a
        device sync), so it happens at log and save steps only, not every step; alone, every step."""
        return (self.fabric.world_size == 1 or step % self.settings.log_interval == 0
                or self.settings.saves_at(step) or step >= stop_step)

    def stop_reason(self, stop_request: StopRequest, started: float) -> StopReason | None:
        if self.counters.step >= self.budget.total_steps:
            return StopReason.FINISHED
        out_of_time = self.budget.max_time_s is not None and time.perf_counter() - started >= self.budget.max_time_s
        local = stop_request.signal_name is not None or out_of_time
        # every rank must agree, or one would wait forever in the next collective
        if not self.fabric.strategy.reduce_boolean_decision(local, all=False):
            return None
        if stop_request.signal_name is not None:
            return StopReason.SIGNAL
        return StopReason.MAX_TIME if out_of_time else StopReason.SIGNAL_ON_ANOTHER_RANK

    def log_training(self, lr: float, window: LogWindow) -> None:
        losses, norms = window.checked(self.fabric)
        loss, steps = math.fsum(losses) / len(losses), len(losses)
        metrics = {"train/loss": loss, "train/lr": lr, **({"train/grad_norm": norms[-1]} if norms else {})}
        for hook in self.hooks:
            metrics.update(hook.log(self, steps))
        self.metrics.log_dict(metrics, step=self.counters.step)
        shown = metrics.get("train/tokens_per_s")
        self.progress.write(f"step {self.counters.step:,}/{self.budget.total_steps:,} | loss {loss:.4f} | lr {lr:.3e}"
                            + (f" | {shown:,.0f} tok/s" if shown is not None else ""))
        self.progress.advance(self.counters.step, loss)
        window.reset(self.counters.step)

    def validate(self, step: int) -> dict[str, float] | None:
        """The held-out losses per domain (None without held-out sets), and what the evaluating hooks measure."""
        started = time.perf_counter()
        losses = validate(self.fabric, self.model, self.val_sets, self.budget.micro_batch_size) if self.val_sets else {}
        bpb = bits_per_byte(losses, self.val_tokens_per_byte)
        logged = {**{f"val/{domain}/loss": value for domain, value in losses.items()},
                  **{f"val/{domain}/bpb": value for domain, value in bpb.items()}}
        parts = [f"validation loss: {', '.join(f'{domain} {value:.4f}' for domain, value in losses.items())}"] \
            if losses else []
        for hook in self.hooks:
            measured = hook.evaluated(self, step) if hook.evaluates else None
            if measured is not None:
                logged.update(measured[0])
                parts.append(measured[1])
        self.metrics.log_dict(logged, step=step)
        self.progress.write(f"step {step:,} | {' | '.join(parts)} ({time.perf_counter() - started:.1f} s)")
        return losses if self.val_sets else None


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: an FSDP2 parameter's shard, or the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
