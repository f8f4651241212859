"""The mixed stream's position: per-shard cursors keyed by shard id, the schedule's place, and the ledger.

Pure logic (no torch): the DataLoader's main process advances a ``StreamTracker`` with every batch it hands out,
and workers rebuild the same schedule from a snapshot of it. A shard's cursor is its *global* stream position
(samples taken from it by all ranks together); rank r's d-th draw from a shard in the current phase is position
``base + d * world_size + r``. Because the state is keyed by shard id, a state saved under one mixture loads into
another: shared shards continue at their cursors, new shards start at 0, dropped shards are carried along.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

from midtrain.data.discovery import Shard
from midtrain.data.plan import format_table
from midtrain.data.mix_schedule import ScheduleSource, Segment, mixture_before, segment_index_at
from midtrain.data.schedule import make_schedule, quantise
from midtrain.errors import ConfigError, DataError
from midtrain.distributed import get_logger

log = get_logger(__name__)
STATE_FORMAT = "midtrain.mixed_stream/1"


def is_stream_state(state) -> bool:
    """Whether a saved data loader state is this stream's (not litdata's, as the paper's fork and litgpt save it)."""
    return isinstance(state, dict) and state.get("format") == STATE_FORMAT


@dataclass(frozen=True)
class Transition:
    shard: str
    domain: str
    status: str  # continued | started | dropped
    cursor: int
    passes: float


class StreamTracker:
    """Where a rank's mixed stream stands; workers run a copy of it from ``snapshot()``.

    With a mixture schedule (``source``, a ``ScheduleSource``), the weights change at the timeline's segment
    boundaries, counted in optimizer steps: ``samples_per_step`` of this rank's samples make a step, and the stream
    is at step ``start_step`` when it starts (or is loaded). Each segment is a phase of the stream: the cursors
    carry over, the counts start again (exact within each phase), and the phase is recorded for the ledger."""

    def __init__(
        self,
        members: Sequence[Shard],
        weights: Sequence[float],
        block_tokens: int,
        seed: int,
        sampling: str,
        rank: int = 0,
        world_size: int = 1,
        source: ScheduleSource | None = None,
        start_step: int = 0,
        samples_per_step: int | None = None,
    ) -> None:
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
        self.position = 0
        self.counts = [0] * len(members)
        self.bases = [0] * len(members)
        self.carried: dict[str, dict] = {}
        self.source = source
        self.start_step = start_step
        self.samples_per_step = samples_per_step
        self.rank_samples = 0
        """This rank's samples since ``start_step``: where the stream is on the schedule's clock."""
        self.timeline: list[Segment] | None = None
        self.segment = 0
        if source is not None:
            # a ramp into the first phase starts from a checkpoint's mixture: known once a state is loaded
            self.timeline = source.timeline(None) if not source.phases[0].ramp_steps else None
            if self.timeline is not None:
                self.segment = segment_index_at(self.timeline, start_step)
                weights = self._member_weights(self.timeline[self.segment].weights)
        self._set_weights(weights)
        self.phases: list[dict] = [self._new_phase_record(0, self._clock_step())]
        self.announce_transitions = True
        """Log the cursor table when a loaded state starts a new phase (off where the caller prints it itself)."""
        self.allow_data_change = False
        """Load a state although a shard's layout changed since it was saved (``--data.allow_data_change``)."""

    # -- the schedule -------------------------------------------------------------------------------------
    def _set_weights(self, weights: Sequence[float]) -> None:
        self.weights = list(weights)
        self.active = [i for i, w in enumerate(self.weights) if w > 0]
        self.int_weights = [0] * len(self.weights)
        for i, w in zip(self.active, quantise([self.weights[i] for i in self.active])):
            self.int_weights[i] = w
        self._schedule = make_schedule(self.sampling, [self.int_weights[i] for i in self.active], self.seed,
                                       len(getattr(self, "phases", [None])) - 1)
        self._active_counts: list[int] | None = None

    def _member_weights(self, shares: dict[str, float]) -> list[float]:
        missing = sorted(set(shares) - set(self.ids))
        if missing:
            raise ConfigError(
                f"--data.mix_schedule reads shard(s) {', '.join(missing)} (the mixture a ramp starts from, the "
                "checkpoint's), which are not under --data.data_path. Restore them, or start the first phase without a "
                "ramp.")
        return [shares.get(i, 0.0) for i in self.ids]

    def require_timeline(self) -> None:
        """A schedule whose first phase ramps needs the mixture before it: refuse a fresh start up front."""
        if self.source is not None and self.timeline is None:
            self.source.timeline(None)  # raises, naming the key and the fix

    @property
    def phase_index(self) -> int:
        return len(self.phases) - 1

    def mixture_key(self) -> list:
        return [[i, w] for i, w in zip(self.ids, self.int_weights) if w > 0]

    def _new_phase_record(self, index: int, start_step: int | None) -> dict:
        total = sum(self.int_weights)
        record = {
            "index": index,
            "mixture": {i: w / total for i, w in zip(self.ids, self.int_weights) if w > 0},
            "sampling": self.sampling,
            "world_size": self.world_size,
            # every shard's cursor when the phase began (a long list of unused shards is left out: they are at 0)
            "start": {**{i: v["consumed"] for i, v in self.carried.items()},
                      **{i: b for k, (i, b) in enumerate(zip(self.ids, self.bases)) if b or self.weights[k] > 0}},
        }
        if start_step is not None:
            record["start_step"] = start_step
        if self.timeline is not None:
            record["schedule"] = self.timeline[self.segment].label()
        return record

    def _clock_step(self) -> int | None:
        """The step the stream is at, where its clock is known (midtrain pretrain gives it; plain litgpt does not)."""
        if self.samples_per_step is None:
            return None
        return self.start_step + self.rank_samples // self.samples_per_step

    def _boundary(self) -> int | None:
        """This rank's sample count (since ``start_step``) at which the current segment ends, if it does."""
        if self.timeline is None or self.timeline[self.segment].end_step is None:
            return None
        return (self.timeline[self.segment].end_step - self.start_step) * self.samples_per_step

    def _enter_next_segment(self) -> None:
        self.bases = [self.consumed(i) for i in range(len(self.ids))]
        self.position, self.counts = 0, [0] * len(self.ids)
        self.segment += 1
        self.phases.append({})  # the new phase's index, for the schedule's seed
        self._set_weights(self._member_weights(self.timeline[self.segment].weights))
        self.phases[-1] = self._new_phase_record(len(self.phases) - 1, self.timeline[self.segment].start_step)

    def advance(self, length: int, positions: bool = False) -> list[tuple[int, int]]:
        """Move this rank's stream on by ``length`` samples; with ``positions``, return (member index, global stream
        position) of each (a worker's own batches), else nothing (the loader's count of what it handed out)."""
        if self.source is not None and self.timeline is None:
            self.require_timeline()
        out: list[tuple[int, int]] = []
        while length > 0:
            boundary = self._boundary()
            span = length if boundary is None else min(length, boundary - self.rank_samples)
            if span > 0:
                if len(self.active) == len(self.ids):  # every member in play: the schedule counts in place
                    members = self._schedule.run(self.position, self.counts, span)
                else:
                    if self._active_counts is None:
                        self._active_counts = [self.counts[m] for m in self.active]
                    members = [self.active[a] for a in self._schedule.run(self.position, self._active_counts, span)]
                    for member in members:
                        self.counts[member] += 1
                if positions:
                    out += self._positions(members)
                self.position += span
                self.rank_samples += span
                length -= span
            if boundary is not None and self.rank_samples >= boundary:
                self._enter_next_segment()
        return out

    def _positions(self, members: list[int]) -> list[tuple[int, int]]:
        """Stream positions of samples just drawn (``self.counts`` already counts them): the last draw of a member
        is its count minus one, the one before minus two, and so on."""
        later: dict[int, int] = {}
        draws = [0] * len(members)
        for k in range(len(members) - 1, -1, -1):
            member = members[k]
            later[member] = later.get(member, 0) + 1
            draws[k] = self.counts[member] - later[member]
        return [(m, self.bases[m] + d * self.world_size + self.rank) for m, d in zip(members, draws)]

    def snapshot(self) -> dict:
        return {"position": self.position, "counts": list(self.counts), "bases": list(self.bases),
                "phases": [dict(p) for p in self.phases], "segment": self.segment, "rank_samples": self.rank_samples,
                "weights": list(self.weights)}

    def at(self, snapshot: dict) -> StreamTracker:
        """A copy of this tracker at ``snapshot``, for a worker to run on its own."""
        clone = copy.copy(self)
        clone.position, clone.counts, clone.bases = snapshot["position"], list(snapshot["counts"]), list(snapshot["bases"])
        clone.phases, clone.segment = [dict(p) for p in snapshot["phases"]], snapshot["segment"]
        clone.rank_samples = snapshot["rank_samples"]
        clone._set_weights(snapshot["weights"])
        return clone

    def consumed(self, member: int) -> int:
        return self.bases[member] + self.counts[member] * self.world_size

    # -- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        shards = dict(self.carried)
        for i, shard in enumerate(self.members):
            if not self.consumed(i) and not self.weights[i] and shard.id not in self.carried:
                continue  # a shard of the data root that no phase has read yet: at 0, like one never listed
            shards[shard.id] = {
                "consumed": self.consumed(i),
                "domain": shard.domain,
                "fingerprint": shard.fingerprint,
                "samples_per_pass": self.samples_per_pass[i],
            }
        phases = [dict(p) for p in self.phases]
        phases[-1]["samples_per_rank"] = self.position
        return {
            "format": STATE_FORMAT,
            "seed": self.seed,
            "block_tokens": self.block_tokens,
            "sampling": self.sampling,
            "world_size": self.world_size,
            "mixture": self.mixture_key(),
            "position": self.position,
            "counts": [self.counts[i] for i in self.active],  # in the order of "mixture"; inactive shards are at 0
            "shards": shards,
            "phases": phases,
        }

    def load_state_dict(self, state: dict) -> list[Transition]:
        """Continue from ``state``; returns (and logs) what happened to each shard."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DataError(
                f"the checkpoint's data loader state is not a midtrain mixed-stream state (format "
                f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}). It was saved by another "
                "data module; start the run without resuming the loader, or use the data module it was saved with."
            )
        if state["seed"] != self.seed:
            raise ConfigError(
                f"--data.seed={self.seed} differs from the checkpoint's seed {state['seed']}: the saved cursors index "
                f"into seed-{state['seed']} shuffles. Set --data.seed={state['seed']}."
            )
        if state["block_tokens"] != self.block_tokens:
            raise ConfigError(
                f"the sequence length ({self.block_tokens - 1}) differs from the checkpoint's "
                f"({state['block_tokens'] - 1}); the saved cursors count samples of that length. Set "
                f"--train.max_seq_length={state['block_tokens'] - 1}."
            )
        saved = state["shards"]
        changed = [
            f"{s.id} (checkpoint {saved[s.id]['fingerprint']}, now {s.fingerprint} at {s.path})"
            for s in self.members
            if s.id in saved and saved[s.id]["fingerprint"] != s.fingerprint
        ]
        if changed and not self.allow_data_change:
            raise DataError(
                f"shard contents changed since the checkpoint was saved: {'; '.join(changed)}. The saved cursors "
                "would point at different samples. Restore the original shards, give the new data a new shard id "
                "(e.g. a new folder number), or set --data.allow_data_change=true to continue anyway."
            )
        self.carried = {i: dict(v) for i, v in saved.items() if i not in self.ids}
        if self.source is not None:  # the timeline as it stands from this state (a first ramp starts from its mixture)
            self.timeline = self.source.timeline(mixture_before(state["phases"], self.source.phases[0].start_step))
            self.segment, self.rank_samples = segment_index_at(self.timeline, self.start_step), 0
            self._set_weights(self._member_weights(self.timeline[self.segment].weights))
        same_phase = (
            state["mixture"] == self.mixture_key()
            and state["world_size"] == self.world_size
            and state["sampling"] == self.sampling
        )
        consumed = [saved.get(i, {}).get("consumed", 0) for i in self.ids]
        self.phases = [dict(p) for p in state["phases"]]
        if same_phase:
            self.position = state["position"]
            index = {shard_id: k for k, shard_id in enumerate(self.ids)}
            self.counts = [0] * len(self.ids)
            for (shard_id, _), count in zip(state["mixture"], state["counts"]):
                self.counts[index[shard_id]] = count
            self.bases = [c - n * self.world_size for c, n in zip(consumed, self.counts)]
        else:
            self.position, self.counts, self.bases = 0, [0] * len(self.ids), consumed
            self.phases.append({})
            record = self._new_phase_record(len(self.phases) - 1, self._clock_step())
            # every shard's cursor at the switch, so the previous phase's per-shard totals can be read off
            record["start"] = {**{i: v["consumed"] for i, v in saved.items()}, **record["start"]}
            self.phases[-1] = record
        self._set_weights(self.weights)  # the schedule for this phase (its index seeds 'random')
        transitions = self.transitions(saved)
        if not same_phase and self.announce_transitions:
            log.info("Data mixture changed; shard cursors carried over by id:\n%s", render_transitions(transitions))
        return transitions

    def transitions(self, saved: dict) -> list[Transition]:
        rows = []
        for i, shard in enumerate(self.members):
            if not self.weights[i] and not self.consumed(i):
                continue  # in the data root, read by no phase so far
            status = "continued" if saved.get(shard.id, {}).get("consumed", 0) > 0 else "started"
            rows.append(Transition(shard.id, shard.domain, status, self.consumed(i), self.consumed(i) / self.samples_per_pass[i]))
        for shard_id, info in self.carried.items():
            rows.append(Transition(shard_id, info["domain"], "dropped", info["consumed"], info["consumed"] / info["samples_per_pass"]))
        return rows

    # -- ledger -------------------------------------------------------------------------------------------
    def ledger(self) -> dict:
        """Samples, tokens (``block_tokens - 1`` trained per sample) and passes per shard and per domain, over the
        whole lineage, plus the per-phase split."""
        tokens_per_sample = self.block_tokens - 1
        state = self.state_dict()
        shards, domains = {}, {}
        for shard_id, info in state["shards"].items():
            samples = info["consumed"]
            shards[shard_id] = {
                "domain": info["domain"],
                "samples": samples,
                "tokens": samples * tokens_per_sample,
                "passes": samples / info["samples_per_pass"],
                "completed_passes": samples // info["samples_per_pass"],
            }
            entry = domains.setdefault(info["domain"], {"samples": 0, "tokens": 0})
            entry["samples"] += samples
            entry["tokens"] += samples * tokens_per_sample
        phases = []
        for k, phase in enumerate(state["phases"]):
            end = state["phases"][k + 1]["start"] if k + 1 < len(state["phases"]) else {i: v["consumed"] for i, v in state["shards"].items()}
            phases.append({
                "index": phase["index"],
                **{key: phase[key] for key in ("start_step", "schedule") if key in phase},
                "mixture": phase["mixture"],
                "tokens": {i: (end.get(i, 0) - phase["start"].get(i, 0)) * tokens_per_sample
                           for i in phase["mixture"]},
            })
        return {"shards": shards, "domains": domains, "phases": phases}


def render_transitions(rows: Sequence[Transition]) -> str:
    return format_table(
        ["shard", "domain", "status", "cursor (samples)", "passes"],
        [[r.shard, r.domain, r.status, f"{r.cursor:,}", f"{r.passes:.3f}"] for r in rows],
        [False, False, False, True, True],
    )
