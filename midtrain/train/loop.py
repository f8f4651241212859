"""The training loop: optimizer steps of gradient-accumulated micro-batches, with logging, validation,
checkpointing and the stop criteria. It knows nothing of configs, files or schedulers' signals beyond what it is
handed; ``midtrain.train.run`` assembles it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from litgpt.utils import chunked_cross_entropy
from torch.utils.data import Dataset

from midtrain.distributed import get_logger
from midtrain.progress import StepProgress
from midtrain.train.budget import Budget
from midtrain.train.lr_schedule import LRSchedule
from midtrain.train.mix_control import render_decision
from midtrain.train.preemption import StopReason, StopRequest
from midtrain.train.validation import validate

log = get_logger(__name__)


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


class Diverged(Exception):
    """A non-finite loss or gradient norm: the run stops without saving anything from that step on."""

    def __init__(self, step: int, metric: str, value: float | None = None) -> None:
        super().__init__(f"{metric} is {value} at step {step:,}" if value is not None else
                         f"{metric} after step {step:,}")
        self.step, self.metric, self.value = step, metric, value


class Trainer:
    def __init__(
        self,
        fabric,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loader,
        budget: Budget,
        schedule: LRSchedule,
        settings: LoopSettings,
        val_sets: Mapping[str, Dataset],
        save: Callable[[Counters, bool, dict], None],
        domain_tokens: Callable[[], dict[str, int]],
        metrics,
        log_window: Sequence[float] = (),
        flops_per_step: float | None = None,
        peak_flops: float | None = None,
        control=None,
    ) -> None:
        self.fabric, self.model, self.optimizer, self.loader = fabric, model, optimizer, loader
        self.budget, self.schedule, self.settings = budget, schedule, settings
        self.val_sets, self.save, self.domain_tokens = val_sets, save, domain_tokens
        self.metrics = metrics  # has log_dict(metrics, step)
        self.log_window = list(log_window)
        """The losses of the steps since the last log step, saved with a checkpoint (a resume logs the same means)."""
        self.flops_per_step, self.peak_flops = flops_per_step, peak_flops
        """The model's FLOPs per optimizer step (forward and backward, all ranks) and the devices' peak, for MFU."""
        self.data_wait_s = 0.0
        self.progress = StepProgress(budget.total_steps, 0, show=fabric.global_rank == 0, bar=False)
        self.control = control
        """A ``MixControl`` (``data.mix_controller``): takes the mixture decisions at their steps."""

    def fit(self, counters: Counters, stop_request: StopRequest) -> StopReason:
        """Train from ``counters`` until a stop criterion; returns why it stopped (``finished`` if the horizon was
        reached, else the criterion). A checkpoint is saved whenever it stops."""
        budget = self.budget
        start_step = counters.step
        stop_step = budget.stop_step(start_step)
        self.progress = StepProgress(budget.total_steps, start_step, show=self.fabric.global_rank == 0)
        try:
            return self._fit(counters, stop_request, start_step, stop_step)
        finally:
            self.progress.close()

    def _fit(self, counters: Counters, stop_request: StopRequest, start_step: int, stop_step: int) -> StopReason:
        budget, settings = self.budget, self.settings
        initial = self.log_validation(counters.step) if settings.initial_validation and self.val_sets else None
        if self.control is not None:
            self.start_control(counters.step, initial)
        batches = iter(self.loader)
        started = self.fit_started = time.perf_counter()
        window = _Window(started, counters.step, self.fabric.device)
        window.restore(self.log_window, counters.step)
        saved_step = None
        # a stop requested during start-up ends the run here, before its first step, with nothing to save
        reason = (StopReason.FINISHED if counters.step >= budget.total_steps
                  else self.stop_reason(counters, stop_request, started))
        while reason is None:
            if counters.step >= stop_step:
                reason = budget.stop_reason(stop_step, start_step)
                break
            lr = self.schedule.lr_at(counters.step)
            micro_batches = budget.micro_batches(counters.iter_num)
            loss, grad_norm = self.optimizer_step(batches, lr, micro_batches)
            counters.step += 1
            counters.iter_num += micro_batches
            window.add(loss, grad_norm)
            if counters.step % settings.log_interval == 0:
                self.log_training(counters, lr, window)
            else:
                self.progress.advance(counters.step)
            val_losses = None
            if self.val_sets and counters.step % settings.eval_interval == 0 and counters.step < budget.total_steps:
                val_losses = self.log_validation(counters.step)
            if self.control is not None and self.control.due(counters.step):
                self.take_decision(counters.step, val_losses)
                batches = iter(self.loader)  # its iteration ended at this step, where the stream paused
            if counters.step >= budget.total_steps:
                reason = StopReason.FINISHED
            elif self.stop_check_due(counters.step, stop_step):
                reason = self.stop_reason(counters, stop_request, started)
            if settings.saves_at(counters.step) and reason is not StopReason.FINISHED:
                self.checked_save(counters, False, window)
                saved_step = counters.step
        if reason is StopReason.FINISHED and settings.final_validation and self.val_sets:
            self.log_validation(counters.step)
        # a run already at its cap (e.g. max_iters) has nothing new to save; a finished one always writes final/,
        # and its step folder too when the save grid or keep_checkpoint_steps asks for that step (a branch point)
        if reason is StopReason.FINISHED and settings.saves_at(counters.step) and saved_step != counters.step:
            self.checked_save(counters, False, window)
        if reason is StopReason.FINISHED or (counters.step > start_step and saved_step != counters.step):
            self.checked_save(counters, reason is StopReason.FINISHED, window)
        return reason

    def start_control(self, step: int, val_losses: dict[str, float] | None) -> None:
        """The controller's reference (``start``: this run's first evaluation), and a decision that was due when the
        checkpoint was saved (a finished run extended from its decision step)."""
        control = self.control
        if control.needs_reference() or control.wants_validation(step):
            val_losses = val_losses or self.log_validation(step)
            if control.needs_reference():
                control.set_reference(val_losses)
        if control.due(step):
            self.take_decision(step, val_losses)

    def take_decision(self, step: int, val_losses: dict[str, float] | None) -> None:
        decision = self.control.decide(step, val_losses)
        self.metrics.log_dict(self.control.metrics(decision), step=step)
        self.progress.write(render_decision(decision, self.control.signal))

    def checked_save(self, counters: Counters, final: bool, window: _Window) -> None:
        """Save only what can be trusted: every loss and gradient norm since the last check finite, and the weights."""
        values = self.check_finite(window)
        # each rank checks its own shard of the weights (all of them, unsharded); the minimum is every rank's verdict
        finite = torch.stack([torch.isfinite(_local(p)).all() for p in self.model.parameters()]).all().float()
        if self.fabric.all_reduce(finite, reduce_op="min").item() < 1:
            raise Diverged(counters.step, "the weights hold non-finite values")
        if self.control is not None:
            self.control.before_save()
        self.save(counters, final, {"log_window": values, "log_window_end": counters.step})

    def check_finite(self, window: _Window) -> list[float]:
        """The window's per-step losses over all ranks (one device sync), checked by ``check_finite_values``."""
        if not window.losses:
            return []
        losses, norms = window.global_values(self.fabric)
        self.check_finite_values(window, losses, norms)
        return losses

    @staticmethod
    def check_finite_values(window: _Window, losses: list[float], norms: list[float] | None) -> None:
        """``Diverged`` at the first step of the window whose loss or gradient norm is not finite."""
        for k, loss in enumerate(losses):
            step = window.start_step + k + 1
            if not math.isfinite(loss):
                raise Diverged(step, "train/loss", loss)
            if norms is not None and not math.isfinite(norms[k]):
                raise Diverged(step, "the gradient norm", norms[k])

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
            self.data_wait_s += time.perf_counter() - waited  # host time spent waiting for the loader
            batch = batch.to(fabric.device, non_blocking=True).long()
            with fabric.no_backward_sync(model, enabled=i < micro_batches - 1):
                # contiguous inputs and targets, as litgpt's loop feeds them (a strided view costs the compiled model)
                logits = model(batch[:, :-1].contiguous())
                loss = chunked_cross_entropy(logits, batch[:, 1:].contiguous())
                if self.control is not None:
                    self.control.observe(logits, batch[:, 1:])
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

    def stop_reason(self, counters: Counters, stop_request: StopRequest, started: float) -> StopReason | None:
        if counters.step >= self.budget.total_steps:
            return StopReason.FINISHED
        out_of_time = self.budget.max_time_s is not None and time.perf_counter() - started >= self.budget.max_time_s
        local = stop_request.signal_name is not None or out_of_time
        # every rank must agree, or one would wait forever in the next collective
        if not self.fabric.strategy.reduce_boolean_decision(local, all=False):
            return None
        if stop_request.signal_name is not None:
            return StopReason.SIGNAL
        return StopReason.MAX_TIME if out_of_time else StopReason.SIGNAL_ON_ANOTHER_RANK

    def log_training(self, counters: Counters, lr: float, window: _Window) -> None:
        losses, norms = window.global_values(self.fabric)
        loss = math.fsum(losses) / len(losses)
        now = time.perf_counter()
        steps = counters.step - window.start_step
        elapsed = max(now - window.start_time, 1e-9)
        tokens_per_s = steps * self.budget.tokens_per_step / elapsed
        metrics = {
            "train/loss": loss,
            "train/lr": lr,
            "train/tokens_per_s": tokens_per_s,
            "train/tokens_per_s_per_device": tokens_per_s / self.fabric.world_size,
            "train/tokens": counters.step * self.budget.tokens_per_step,
            "train/iter": counters.iter_num,
            "train/time_s": now - self.fit_started,
            "train/data_wait_share": (self.data_wait_s - window.data_wait_s) / elapsed,
        }
        if norms is not None:
            metrics["train/grad_norm"] = norms[-1]
        if self.flops_per_step and self.peak_flops:
            metrics["train/mfu"] = steps * self.flops_per_step / elapsed / (self.peak_flops * self.fabric.world_size)
        metrics.update({f"data/{domain}/tokens": tokens for domain, tokens in self.domain_tokens().items()})
        self.metrics.log_dict(metrics, step=counters.step)
        self.check_finite_values(window, losses, norms)
        self.progress.write(
            f"step {counters.step:,}/{self.budget.total_steps:,} | loss {loss:.4f} | lr {lr:.3e} | "
            f"{tokens_per_s:,.0f} tok/s"
        )
        self.progress.advance(counters.step, loss)
        window.reset(now, counters.step, self.data_wait_s)

    def log_validation(self, step: int) -> dict[str, float]:
        started = time.perf_counter()
        losses = validate(self.fabric, self.model, self.val_sets, self.budget.micro_batch_size)
        self.metrics.log_dict({f"val/{domain}/loss": value for domain, value in losses.items()}, step=step)
        shown = ", ".join(f"{domain} {value:.4f}" for domain, value in losses.items())
        self.progress.write(f"step {step:,} | validation loss: {shown} ({time.perf_counter() - started:.1f} s)")
        return losses


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: an FSDP2 parameter's shard, or the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class _Window:
    """Losses (and gradient norms) and time since the last log line, kept on the device until they are read."""

    def __init__(self, start_time: float, start_step: int, device: torch.device) -> None:
        self.device = device
        self.reset(start_time, start_step, 0.0)

    def reset(self, start_time: float, start_step: int, data_wait_s: float) -> None:
        self.start_time, self.start_step, self.data_wait_s = start_time, start_step, data_wait_s
        self.losses: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []

    def restore(self, losses: Sequence[float], step: int) -> None:
        """Continue a window a checkpoint saved at ``step`` (its losses are already means over every rank)."""
        self.losses = [torch.tensor(float(v), device=self.device) for v in losses]
        self.start_step = step - len(self.losses)

    def add(self, loss: torch.Tensor, norm: torch.Tensor | None) -> None:
        self.losses.append(loss)
        if norm is not None:
            self.norms.append(norm)

    def global_values(self, fabric) -> tuple[list[float], list[float] | None]:
        """Each step's loss, averaged over the ranks, and its gradient norm (the same on every rank), in one
        all-reduce and one device-to-host copy."""
        losses = torch.stack([loss.float() for loss in self.losses])
        count = len(self.norms)
        if count:  # a resumed window's first steps have no norms on record: those are checked already
            losses = torch.cat([losses, torch.stack([n.float() for n in self.norms])])
        values = fabric.all_reduce(losses, reduce_op="mean").tolist()
        steps = len(self.losses)
        norms = values[steps:] if count else None
        if norms is not None and len(norms) < steps:
            norms = [0.0] * (steps - len(norms)) + norms
        return values[:steps], norms
