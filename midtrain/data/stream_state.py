"""The mixed stream's position: which shard each next sample comes from, every shard's cursor, and where the stream
is on the mixture schedule's clock.

Pure logic (no torch): the DataLoader's main process advances a ``StreamTracker`` with every batch it hands out,
and workers rebuild the same order from a snapshot of it. The stream is a sequence of *stretches*, each read under
one constant mixture (a run's start, a branch's new mixture, a world-size change, each segment of a
``mix_schedule``): within a stretch the order is exact from its start, and every cursor carries over from one
stretch to the next. Saving and loading the position is ``midtrain.data.stream_io``'s; the ledger is a function of
the saved state (``midtrain.data.ledger``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from midtrain.data.discovery import Shard
from midtrain.data.mix_schedule import ConstantMixture, MixTimeline, Segment, segment_index_at
from midtrain.data.sample_order import make_order, quantise
from midtrain.data.stream_cursors import Cursors
from midtrain.data.stream_io import encode_mixture, load_state, save_state
from midtrain.errors import ConfigError


class MixClock:
    """Where the stream is on its ``MixTimeline``, counted in optimizer steps: ``samples_per_step`` of this rank's
    samples make a step, and the stream is at step ``start_step`` when it starts (or is loaded)."""

    def __init__(self, source: MixTimeline, start_step: int, samples_per_step: int | None) -> None:
        self.source, self.start_step, self.samples_per_step = source, start_step, samples_per_step
        self.rank_samples = 0
        """This rank's samples since ``start_step``."""
        self.timeline: list[Segment] | None = None
        self.segment = 0
        if source.ready():  # a ramp into a schedule's first phase needs the mixture a loaded state was reading
            self.set_timeline()

    def set_timeline(self) -> None:
        """The source's segments as they stand, at the segment holding ``start_step``."""
        self.timeline = self.source.segments()
        self.segment, self.rank_samples = segment_index_at(self.timeline, self.start_step), 0

    def paused(self) -> bool:
        """At the end of the last known segment, where a segment not known yet (a decision not taken) starts the
        next: the stream may not run on."""
        return (self.timeline is not None and self.segment + 1 == len(self.timeline)
                and self.timeline[-1].end_step is not None and self.rank_samples >= self.boundary())

    def require_timeline(self) -> None:
        """A timeline that cannot be read yet (a first phase that ramps, in a fresh run): refused up front."""
        if self.timeline is None:
            self.source.segments()  # raises, naming the key and the fix

    @property
    def current(self) -> Segment | None:
        return None if self.timeline is None else self.timeline[self.segment]

    def step(self) -> int | None:
        """The step the stream is at, where its clock is known (midtrain pretrain gives it; plain litgpt does not)."""
        if self.samples_per_step is None:
            return None
        return self.start_step + self.rank_samples // self.samples_per_step

    def boundary(self) -> int | None:
        """This rank's sample count (since ``start_step``) at which the current segment ends, if it does."""
        if self.timeline is None or self.timeline[self.segment].end_step is None:
            return None
        return (self.timeline[self.segment].end_step - self.start_step) * self.samples_per_step


class StreamTracker:
    """Where a rank's mixed stream stands; workers run a copy of it from ``snapshot()``."""

    def __init__(
        self,
        members: Sequence[Shard],
        weights: Sequence[float],
        block_tokens: int,
        seed: int,
        sampling: str,
        rank: int = 0,
        world_size: int = 1,
        timeline: MixTimeline | None = None,
        start_step: int = 0,
        samples_per_step: int | None = None,
        order_seed: int | None = None,
    ) -> None:
        """``timeline``: the mixture over the run's steps (default: ``weights`` throughout); ``order_seed``: this run's
        data-order seed (``data.order_seed``)."""
        if not members:
            raise ValueError("a mixed stream needs at least one shard with positive weight")
        self.members = list(members)
        self.ids = [s.id for s in members]
        self.block_tokens = block_tokens
        self.seed = seed
        self.sampling = sampling
        self.rank = rank
        self.world_size = world_size
        self.samples_per_pass = [s.samples(block_tokens) for s in members]
        self.cursors = Cursors(self.ids, rank, world_size)
        self.configured_order_seed = self.order_seed = order_seed
        """The configured data-order seed, and the one in effect (a branch without one keeps its parent's)."""
        self.reorders: list[list[tuple[int, int]]] = [[] if order_seed is None else [(0, order_seed)] for _ in members]
        """Per member, the reorders of its samples (``midtrain.data.shard_reader``): (from cursor, order seed)."""
        self.lr_at: Callable[[int], float] | None = None
        """The LR of each optimizer step (``midtrain pretrain`` gives it): with it, every sample is weighted by the LR
        of the step that trains it, per shard and per stretch (``lr_weighted_samples``, all ranks)."""
        self.lr_samples = [0.0] * len(members)
        self._step_draws: dict[int, int] = {}
        if timeline is None:
            timeline = ConstantMixture({s.id: w for s, w in zip(members, weights, strict=True)})
        self.clock = MixClock(timeline, start_step, samples_per_step)
        if self.clock.current is not None:
            weights = self.member_weights(self.clock.current.weights)
        self.stretches: list[dict] = []
        self.set_weights(weights, stretch=0)
        self.stretches.append(self.new_stretch_record(self.clock.step()))
        self.announce_transitions = True
        """Log the cursor table when a loaded state starts a new stretch (off where the caller prints it itself)."""
        self.allow_data_change = False
        """Load a state although a shard's layout changed since it was saved (``--data.allow_data_change``)."""

    # -- the mixture of the current stretch, and the order it reads in ---------------------------------------
    def set_weights(self, weights: Sequence[float], stretch: int) -> None:
        """The mixture of stretch number ``stretch`` (which also seeds the ``random`` order)."""
        self.weights = list(weights)
        self.active = [i for i, w in enumerate(self.weights) if w > 0]
        self.int_weights = [0] * len(self.weights)
        for i, w in zip(self.active, quantise([self.weights[i] for i in self.active]), strict=True):
            self.int_weights[i] = w
        self._order = make_order(self.sampling, [self.int_weights[i] for i in self.active], self.seed, stretch)
        self._active_counts: list[int] | None = None

    def member_weights(self, shares: dict[str, float]) -> list[float]:
        missing = sorted(set(shares) - set(self.ids))
        if missing:
            raise ConfigError(
                f"--data.mix_schedule reads shard(s) {', '.join(missing)} (the mixture a ramp starts from, the "
                "checkpoint's), which are not under --data.data_path. Restore them, or start the first phase without a "
                "ramp.")
        return [shares.get(i, 0.0) for i in self.ids]

    def mixture(self) -> dict[str, float]:
        """The current stretch's mixture: shard id -> share (of the quantised weights, as read)."""
        total = sum(self.int_weights)
        return {i: w / total for i, w in zip(self.ids, self.int_weights, strict=True) if w > 0}

    def mixture_key(self) -> list:
        return [[i, w] for i, w in zip(self.ids, self.int_weights, strict=True) if w > 0]

    @property
    def stretch_index(self) -> int:
        return len(self.stretches) - 1

    @property
    def timeline(self) -> list[Segment] | None:
        return self.clock.timeline

    def require_timeline(self) -> None:
        self.clock.require_timeline()

    def new_stretch_record(self, start_step: int | None) -> dict:
        """The record of the stretch starting now: its mixture, and the cursors that moved since the last one began
        (the first holds every cursor that is not 0), so records do not grow with shards x stretches."""
        record = {
            "index": len(self.stretches),
            "shares": encode_mixture(self.mixture()),
            "sampling": self.sampling,
            "world_size": self.world_size,
            "start": self.cursors.moved_since_mark(),
        }
        if start_step is not None:
            record["start_step"] = start_step
        if self.order_seed is not None:
            record["order_seed"] = self.order_seed
        segment = self.clock.current
        if segment is not None and segment.label():
            record["segment"] = segment.label()
            if segment.detail is not None:
                record["decision"] = segment.detail
        return record

    def _enter_next_segment(self) -> None:
        self.cursors.new_stretch()
        self.clock.segment += 1
        self.set_weights(self.member_weights(self.clock.current.weights), stretch=len(self.stretches))
        self.stretches.append(self.new_stretch_record(self.clock.current.start_step))

    def extend(self) -> None:
        """The timeline has just grown a segment from the step where the stream paused (a decision was taken): read
        it from here (a new stretch, every cursor carried)."""
        if not self.clock.paused():
            raise RuntimeError(f"the mixture changed while the stream is not at its step ({self.clock.step()})")
        self.clock.timeline = self.clock.source.segments()
        self._enter_next_segment()

    def advance(self, length: int, positions: bool = False, members: bool = False) -> list:
        """Move this rank's stream on by ``length`` samples; with ``positions``, return (member index, global stream
        position) of each (a worker's own batches), with ``members`` the member index of each (the loader's record
        for per-domain training losses), else nothing (the loader's count of what it handed out)."""
        self.clock.require_timeline()
        cursors, out = self.cursors, []
        while length > 0:
            if self.clock.paused():
                raise RuntimeError(f"the stream reached step {self.clock.step()}, whose mixture decision is not taken")
            boundary = self.clock.boundary()
            span = length if boundary is None else min(length, boundary - self.clock.rank_samples)
            weighing = self.lr_at is not None and self.clock.samples_per_step
            if weighing:  # a span within one step: its samples share that step's LR
                span = min(span, self.clock.samples_per_step - self.clock.rank_samples % self.clock.samples_per_step)
            if span > 0:
                if len(self.active) == len(self.ids):  # every member in play: the order counts in place
                    drawn = self._order.run(cursors.position, cursors.counts, span)
                else:
                    if self._active_counts is None:
                        self._active_counts = [cursors.counts[m] for m in self.active]
                    drawn = [self.active[a] for a in self._order.run(cursors.position, self._active_counts, span)]
                    for member in drawn:
                        cursors.counts[member] += 1
                if positions:
                    out += cursors.positions(drawn)
                elif members:
                    out += drawn
                cursors.position += span
                self.clock.rank_samples += span
                length -= span
                if weighing:
                    self._weigh(drawn)
            if boundary is not None and self.clock.rank_samples >= boundary and not self.clock.paused():
                self._enter_next_segment()
        return out

    def _weigh(self, drawn: list[int]) -> None:
        """Count a span's draws; at the end of a step, add each member's draws (all ranks: every rank draws the same
        members) times the step's LR, in member order, so the sums are the same however the step was batched."""
        for member in drawn:
            self._step_draws[member] = self._step_draws.get(member, 0) + 1
        if self.clock.rank_samples % self.clock.samples_per_step:
            return
        lr = self.lr_at(self.clock.step() - 1)
        by_domain = self.stretches[-1].setdefault("lr_weighted_samples", {})
        for member in sorted(self._step_draws):
            weighted = lr * (self._step_draws[member] * self.world_size)
            self.lr_samples[member] += weighted
            domain = self.members[member].domain
            by_domain[domain] = by_domain.get(domain, 0.0) + weighted
        self._step_draws.clear()

    def reorder_unread(self, saved: dict, saved_order_seed: int | None) -> None:
        """A loaded state's reorders per member, and this run's data-order seed applied from each cursor where the
        order in effect is another."""
        self.reorders = [[(int(f), int(seed)) for f, seed in saved.get(i, {}).get("reorders", [])] for i in self.ids]
        seed = self.configured_order_seed
        self.order_seed = saved_order_seed if seed is None else seed
        if seed is None:
            return
        for member, reorders in enumerate(self.reorders):
            if (reorders[-1][1] if reorders else None) != seed:
                reorders.append((self.consumed(member), seed))

    def consumed(self, member: int) -> int:
        return self.cursors.consumed(member)

    @property
    def position(self) -> int:
        return self.cursors.position

    @property
    def counts(self) -> list[int]:
        return self.cursors.counts

    # -- copies for workers -------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"cursors": self.cursors.snapshot(), "stretches": [dict(p) for p in self.stretches],
                "segment": self.clock.segment, "rank_samples": self.clock.rank_samples, "weights": list(self.weights)}

    def at(self, snapshot: dict) -> StreamTracker:
        """A copy of this tracker at ``snapshot``, for a worker to run on its own."""
        clone = copy.copy(self)
        clone.lr_at = None  # the main process weighs what it hands out; a worker's copy only reads
        clone.cursors = self.cursors.at(snapshot["cursors"])
        clone.clock = copy.copy(self.clock)
        clone.clock.segment, clone.clock.rank_samples = snapshot["segment"], snapshot["rank_samples"]
        clone.stretches = [dict(p) for p in snapshot["stretches"]]
        clone.set_weights(snapshot["weights"], stretch=len(clone.stretches) - 1)
        return clone

    # -- the saved state and the ledger (midtrain.data.stream_io, midtrain.data.ledger) -------------------
    def state_dict(self) -> dict:
        return save_state(self)

    def load_state_dict(self, state: dict):
        """Continue from ``state``; returns (and logs) what happened to each shard."""
        return load_state(self, state)

    def ledger(self) -> dict:
        from midtrain.data.ledger import ledger

        return ledger(self.state_dict())

    def domain_tokens(self) -> dict[str, int]:
        """Tokens read per domain over the whole lineage (what every log step reports): a sum over the shards,
        without building the ledger."""
        per_sample, totals = self.block_tokens - 1, {}
        carried = self.cursors.carried
        for i, shard in enumerate(self.members):
            if self.consumed(i) or self.weights[i] or shard.id in carried:
                totals[shard.domain] = totals.get(shard.domain, 0) + self.consumed(i) * per_sample
        for info in carried.values():
            totals[info["domain"]] = totals.get(info["domain"], 0) + info["consumed"] * per_sample
        return totals
