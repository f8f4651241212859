"""The mixed stream's position: per-shard cursors keyed by shard id, the schedule's place, and the ledger.

Pure logic (no torch): the DataLoader's main process advances a ``StreamTracker`` with every batch it hands out,
and workers rebuild the same schedule from a snapshot of it. A shard's cursor is its *global* stream position
(samples taken from it by all ranks together); rank r's d-th draw from a shard in the current phase is position
``base + d * world_size + r``. Because the state is keyed by shard id, a state saved under one mixture loads into
another: shared shards continue at their cursors, new shards start at 0, dropped shards are carried along.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from midtrain.data.discovery import Shard
from midtrain.data.plan import format_table
from midtrain.data.schedule import make_schedule, quantise
from midtrain.errors import ConfigError, DataError
from midtrain.distributed import get_logger

log = get_logger(__name__)
STATE_FORMAT = "midtrain.mixed_stream/1"


@dataclass(frozen=True)
class Transition:
    shard: str
    domain: str
    status: str  # continued | started | dropped
    cursor: int
    passes: float


class StreamTracker:
    """Where a rank's mixed stream stands; replayable by workers from ``snapshot()``."""

    def __init__(
        self,
        members: Sequence[Shard],
        weights: Sequence[float],
        block_tokens: int,
        seed: int,
        sampling: str,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not members:
            raise ValueError("a mixed stream needs at least one shard with positive weight")
        self.members = list(members)
        self.ids = [s.id for s in members]
        self.int_weights = quantise(weights)
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
        self.phases: list[dict] = [self._new_phase_record(0)]
        self.announce_transitions = True
        """Log the cursor table when a loaded state starts a new phase (off where the caller prints it itself)."""
        self._schedule = make_schedule(sampling, self.int_weights, seed, 0)

    # -- the schedule -------------------------------------------------------------------------------------
    @property
    def phase_index(self) -> int:
        return len(self.phases) - 1

    def mixture_key(self) -> list:
        return [[i, w] for i, w in zip(self.ids, self.int_weights)]

    def _new_phase_record(self, index: int) -> dict:
        return {
            "index": index,
            "mixture": {i: w / sum(self.int_weights) for i, w in zip(self.ids, self.int_weights)},
            "sampling": self.sampling,
            "world_size": self.world_size,
            "start": {i: b for i, b in zip(self.ids, self.bases)},
        }

    def advance(self, length: int) -> list[int]:
        """Member indices of the next ``length`` samples of this rank's stream."""
        chosen = self._schedule.run(self.position, self.counts, length)
        self.position += length
        return chosen

    def snapshot(self) -> dict:
        return {"position": self.position, "counts": list(self.counts), "bases": list(self.bases), "phase": self.phase_index}

    def replay(self, snapshot: dict):
        """A fresh schedule and counters at ``snapshot``, for a worker to run independently."""
        schedule = make_schedule(self.sampling, self.int_weights, self.seed, snapshot["phase"])
        return schedule, snapshot["position"], list(snapshot["counts"])

    def stream_position(self, draw: int, base: int) -> int:
        """This rank's ``draw``-th sample (in the current phase) of a shard whose phase started at ``base``."""
        return base + draw * self.world_size + self.rank

    def consumed(self, member: int) -> int:
        return self.bases[member] + self.counts[member] * self.world_size

    # -- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        shards = dict(self.carried)
        for i, shard in enumerate(self.members):
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
            "counts": list(self.counts),
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
        if changed:
            raise DataError(
                f"shard contents changed since the checkpoint was saved: {'; '.join(changed)}. The saved cursors "
                "would point at different samples. Restore the original shards, or give the new data a new shard id "
                "(e.g. a new folder number)."
            )
        same_phase = (
            state["mixture"] == self.mixture_key()
            and state["world_size"] == self.world_size
            and state["sampling"] == self.sampling
        )
        consumed = [saved.get(i, {}).get("consumed", 0) for i in self.ids]
        self.phases = [dict(p) for p in state["phases"]]
        if same_phase:
            self.position = state["position"]
            self.counts = list(state["counts"])
            self.bases = [c - n * self.world_size for c, n in zip(consumed, self.counts)]
        else:
            self.position, self.counts, self.bases = 0, [0] * len(self.ids), consumed
            record = self._new_phase_record(len(self.phases))
            # every shard's cursor at the switch, so the previous phase's per-shard totals can be read off
            record["start"] = {**{i: v["consumed"] for i, v in saved.items()}, **record["start"]}
            self.phases.append(record)
        self.carried = {i: dict(v) for i, v in saved.items() if i not in self.ids}
        self._schedule = make_schedule(self.sampling, self.int_weights, self.seed, self.phase_index)
        transitions = self.transitions(saved)
        if not same_phase and self.announce_transitions:
            log.info("Data mixture changed; shard cursors carried over by id:\n%s", render_transitions(transitions))
        return transitions

    def transitions(self, saved: dict) -> list[Transition]:
        rows = []
        for i, shard in enumerate(self.members):
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
