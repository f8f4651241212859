"""The training side of ``data.mix_controller``: when a decision is due, the signal it reads (the step's held-out
losses, or each domain's training loss over the interval summed over every rank), the share ``max_passes`` leaves
each domain, the decision taken into the stream, and its metrics and table. The update rule is
``midtrain.data.mix_controller``'s."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from midtrain.data.mix_controller import Decision, MixController, passes_capacity
from midtrain.tables import format_table


class MixControl:
    def __init__(self, fabric, loader, total_steps: int, samples_per_step: int, max_passes: float,
                 prior_weights: dict[str, float]) -> None:
        """``samples_per_step``: over all ranks; ``prior_weights``: the prior's per-shard weights (how a domain's
        share splits over its shards, whatever the share)."""
        self.fabric, self.loader = fabric, loader
        self.tracker = loader.tracker
        self.controller: MixController = self.tracker.clock.controller
        self.total_steps, self.samples_per_step, self.max_passes = total_steps, samples_per_step, max_passes
        self.prior_weights = prior_weights
        moved = self.controller.moved
        self.signal = self.controller.settings.signal
        domain_index = {d: k for k, d in enumerate(moved)}
        self.member_domain = torch.tensor([domain_index.get(s.domain, -1) for s in self.tracker.members])
        self.sums = torch.zeros(len(moved), dtype=torch.float64, device=fabric.device)
        self.counts = torch.zeros(len(moved), dtype=torch.float64, device=fabric.device)
        if self.signal == "train_loss":
            loader.record_members = True
            window = self.controller.signal_window
            if window is not None and fabric.global_rank == 0:  # the saved sums are every rank's: counted once
                self.sums += torch.tensor(window["sums"], dtype=torch.float64, device=fabric.device)
                self.counts += torch.tensor(window["counts"], dtype=torch.float64, device=fabric.device)

    # -- the signal -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """A micro-batch's per-sample training loss, added to its domain's sum (``train_loss`` only)."""
        if self.signal != "train_loss":
            return
        per_sample = per_sample_loss(logits, targets).double()
        domains = self.member_domain[torch.tensor(self.loader.last_members, dtype=torch.long)].to(self.sums.device)
        kept = domains >= 0
        self.sums.index_add_(0, domains[kept], per_sample[kept])
        self.counts.index_add_(0, domains[kept], torch.ones_like(per_sample[kept]))

    def _global_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The interval's per-domain loss sums and sample counts over every rank."""
        return (self.fabric.all_reduce(self.sums.clone(), reduce_op="sum"),
                self.fabric.all_reduce(self.counts.clone(), reduce_op="sum"))

    def _train_losses(self) -> dict[str, float | None]:
        """Each moved domain's mean training loss over the interval; None for one that drew no sample (no signal,
        not a loss of 0)."""
        sums, counts = self._global_sums()
        return {d: (sums[k] / counts[k]).item() if counts[k] > 0 else None
                for k, d in enumerate(self.controller.moved)}

    def before_save(self) -> None:
        """The interval's sums so far (all ranks) into the controller's state, so a resume continues them."""
        if self.signal == "train_loss":
            sums, counts = self._global_sums()
            self.controller.signal_window = {"sums": sums.tolist(), "counts": counts.tolist()}

    # -- decisions --------------------------------------------------------------------------------------------
    def needs_reference(self) -> bool:
        return self.controller.needs_reference()

    def set_reference(self, val_losses: dict[str, float]) -> None:
        self.controller.reference = {d: float(val_losses[d]) for d in self.controller.moved}

    def due(self, step: int) -> bool:
        return step == self.controller.next_due() and step < self.total_steps

    def wants_validation(self, step: int) -> bool:
        return self.due(step) and self.signal == "val_loss"

    def decide(self, step: int, val_losses: dict[str, float] | None) -> Decision:
        """Take the decision due at ``step`` (the stream paused there) and read on under it."""
        signal = self._train_losses() if self.signal == "train_loss" else {d: val_losses[d]
                                                                           for d in self.controller.moved}
        signal = self.fabric.broadcast(signal, src=0)  # every rank decides from the same numbers
        decision = self.controller.decide(step, signal, self._capacity(step))
        self.tracker.take_decision()
        self.sums.zero_()
        self.counts.zero_()
        return decision

    def _capacity(self, step: int) -> dict[str, float]:
        """Per moved domain, the largest share ``max_passes`` allows for the rest of the run."""
        totals: dict[str, float] = {}
        for shard in self.tracker.members:
            totals[shard.domain] = totals.get(shard.domain, 0.0) + self.prior_weights.get(shard.id, 0.0)
        splits: dict[str, list] = {d: [] for d in self.controller.moved}
        for i, shard in enumerate(self.tracker.members):
            if shard.domain in splits and totals[shard.domain] > 0:
                splits[shard.domain].append((self.prior_weights.get(shard.id, 0.0) / totals[shard.domain],
                                             self.tracker.consumed(i), self.tracker.samples_per_pass[i]))
        remaining = (self.total_steps - step) * self.samples_per_step
        return passes_capacity(splits, remaining, self.max_passes)

    def metrics(self, decision: Decision) -> dict[str, float]:
        out = {}
        for d in self.controller.moved:
            out[f"mix/{d}/weight"] = decision.after[d]
            if decision.signal[d] is not None:  # a domain without samples has no signal to log (not 0)
                out[f"mix/{d}/signal"] = decision.signal[d]
                out[f"mix/{d}/score"] = decision.score[d]
        return out


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, chunk_tokens: int = 256) -> torch.Tensor:
    """Each sample's mean next-token loss, computed ``chunk_tokens`` positions at a time: the float32 log-softmax of
    a whole micro-batch (micro-batch x context x vocabulary) would cost as much memory as the logits again, so only
    one chunk's exists at a time (as litgpt's chunked cross-entropy does for the training loss)."""
    flat_logits, flat_targets = logits.flatten(0, 1), targets.flatten()
    losses = torch.empty(flat_targets.shape[0], dtype=torch.float32, device=logits.device)
    for start in range(0, flat_targets.shape[0], chunk_tokens):
        end = start + chunk_tokens
        losses[start:end] = F.cross_entropy(flat_logits[start:end].float(), flat_targets[start:end], reduction="none")
    return losses.view(targets.shape[0], -1).mean(1)


def render_decision(decision: Decision, signal: str) -> str:
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
