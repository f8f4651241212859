"""The training side of an online mixture (``data.mix_controller``), as a loop hook: the signal a decision reads
(the step's held-out losses, or each domain's training loss over the interval summed over every rank), the decision
taken into the stream when due, its metrics and its table. The update rule and the state are the data's
(``midtrain.data.mix_controller``); the stream is reached through the loader's ``decisions``, ``batch_domains``
and ``decide``."""

from __future__ import annotations

import torch

from midtrain.reports import format_table
from midtrain.train.hooks import Hook


class MixControl(Hook):
    def __init__(self, fabric, loader, total_steps: int, samples_per_step: int) -> None:
        """``samples_per_step``: over all ranks."""
        self.fabric, self.total_steps, self.samples_per_step = fabric, total_steps, samples_per_step
        self.decisions = loader.decisions
        self.signal = self.decisions.settings.signal
        self.sample_losses = self.signal == "train_loss"
        self.index = {d: k for k, d in enumerate(self.decisions.moved)}
        self.sums = torch.zeros(len(self.index), dtype=torch.float64, device=fabric.device)
        self.counts = torch.zeros(len(self.index), dtype=torch.float64, device=fabric.device)
        window = self.decisions.signal_window
        if self.sample_losses and window is not None and fabric.global_rank == 0:  # every rank's sums: counted once
            self.sums += torch.tensor(window["sums"], dtype=torch.float64, device=fabric.device)
            self.counts += torch.tensor(window["counts"], dtype=torch.float64, device=fabric.device)

    def due(self, step: int) -> bool:
        return step == self.decisions.next_due() and step < self.total_steps

    def started(self, loop, val_losses) -> None:
        """The reference (``start``: this run's first evaluation), and a decision that was due when the checkpoint
        was saved (a finished run extended from its decision step)."""
        step = loop.counters.step
        needs_reference = self.decisions.needs_reference()
        if needs_reference or (self.due(step) and self.signal == "val_loss"):
            val_losses = val_losses or loop.validate(step)
            if needs_reference:
                self.decisions.reference = {d: float(val_losses[d]) for d in self.decisions.moved}
        if self.due(step):
            self.take(loop, val_losses)

    def micro_batch(self, loop, sample_losses) -> None:
        domains = torch.tensor([self.index.get(d, -1) for d in loop.loader.batch_domains()], device=self.sums.device)
        kept = domains >= 0
        self.sums.index_add_(0, domains[kept], sample_losses.double()[kept])
        self.counts.index_add_(0, domains[kept], torch.ones_like(self.sums[domains[kept]]))

    def stepped(self, loop, val_losses) -> bool:
        if not self.due(loop.counters.step):
            return False
        self.take(loop, val_losses)
        return True  # the stream paused at this step: it starts again under the decision

    def before_save(self, loop) -> None:
        """The interval's sums so far (all ranks) into the controller's state, so a resume continues them."""
        if self.sample_losses:
            sums, counts = self._global_sums()
            self.decisions.signal_window = {"sums": sums.tolist(), "counts": counts.tolist()}

    def _global_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The interval's per-domain loss sums and sample counts over every rank (one all-reduce)."""
        both = self.fabric.all_reduce(torch.cat([self.sums, self.counts]), reduce_op="sum")
        return both[: len(self.index)], both[len(self.index):]

    def take(self, loop, val_losses) -> None:
        """Take the decision due now (the stream paused here), from the same numbers on every rank."""
        step = loop.counters.step
        if self.sample_losses:  # no sample in the interval: no signal (not a loss of 0); the weight is kept
            sums, counts = self._global_sums()
            signal = {d: (sums[k] / counts[k]).item() if counts[k] > 0 else None for d, k in self.index.items()}
        else:
            signal = {d: val_losses[d] for d in self.decisions.moved}
        signal = self.fabric.broadcast(signal, src=0)
        decision = loop.loader.decide(step, signal, (self.total_steps - step) * self.samples_per_step)
        self.sums.zero_()
        self.counts.zero_()
        metrics = {}
        for d in self.decisions.moved:
            metrics[f"mix/{d}/weight"] = decision.after[d]
            if decision.signal[d] is not None:  # a domain without samples has no signal to log (not 0)
                metrics.update({f"mix/{d}/signal": decision.signal[d], f"mix/{d}/score": decision.score[d]})
        loop.metrics.log_dict(metrics, step=step)
        loop.progress.write(render_decision(decision, self.signal))


def render_decision(decision, signal: str) -> str:
    """The table printed at each decision, like the mixture-transition table."""
    rows = []
    for d, before in decision.before.items():
        moved = d in decision.signal
        heard = moved and decision.signal[d] is not None
        notes = ["no samples in the interval: weight kept" if moved and not heard else "",
                 "capped by max_passes" if d in decision.capped else "at a bound" if d in decision.clamped else ""]
        note = "; ".join(n for n in notes if n)
        rows.append([d, f"{decision.signal[d]:.4f}" if heard else "no samples" if moved else "-",
                     f"{decision.reference[d]:.4f}" if moved else "-", f"{decision.score[d]:.3f}" if heard else "-",
                     f"{before:.4f}", f"{decision.after[d]:.4f}", note if moved else "not moved"])
    table = format_table(["domain", signal, "reference", "score", "weight before", "weight after", "note"], rows,
                         [False, True, True, True, True, True, False])
    return f"Mixture decision {decision.index} at step {decision.step:,} (read from this step on):\n{table}"
