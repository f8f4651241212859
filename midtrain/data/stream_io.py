"""The mixed stream's saved state: what a checkpoint holds of a ``StreamTracker``, and loading it back into a
stream of another mixture, world size or data root, with the checks that keep the saved cursors meaningful.

Because the state is keyed by shard id, a state saved under one mixture loads into another: shared shards continue
at their cursors, new shards start at 0, dropped shards are carried along. Format 2 calls the constant-mixture
spans *stretches* and records in each only the cursors that moved since the stretch before; format 1 (every
cursor in every record, under ``phases``) is read as well.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from midtrain.distributed import get_logger
from midtrain.errors import ConfigError, DataError
from midtrain.reports import format_table

log = get_logger(__name__)
STATE_FORMAT = "midtrain.mixed_stream/2"
READABLE_FORMATS = ("midtrain.mixed_stream/1", STATE_FORMAT)


_NUMBERED = re.compile(r"^(main/|[a-z]+)(\d+)$")


def encode_mixture(mixture: dict[str, float]) -> list[list]:
    """A stretch's mixture as ``[share, ids]`` groups, the ids of a group written as ranges (``main/1..10000``), so a
    record does not grow with the shard count when a domain's weight is split over many shards."""
    groups: dict[float, list[str]] = {}
    for shard_id, share in mixture.items():
        groups.setdefault(share, []).append(shard_id)
    return [[share, _ranges(ids)] for share, ids in groups.items()]


def decode_mixture(record: dict) -> dict[str, float]:
    """A stretch record's mixture (shard id -> share), whatever its format."""
    if "mixture" in record:
        return dict(record["mixture"])
    mixture = {}
    for share, ranges in record.get("shares", []):
        for item in ranges:
            first, _, last = item.partition("..")
            if not last:
                mixture[first] = share
                continue
            prefix, start = _NUMBERED.match(first).groups()
            mixture.update({f"{prefix}{n}": share for n in range(int(start), int(last) + 1)})
    return mixture


def _ranges(ids: list[str]) -> list[str]:
    numbered: dict[str, list[int]] = {}
    out = []
    for shard_id in ids:
        match = _NUMBERED.match(shard_id)
        if match and not (match.group(2).startswith("0") and len(match.group(2)) > 1):
            numbered.setdefault(match.group(1), []).append(int(match.group(2)))
        else:
            out.append(shard_id)
    for prefix, numbers in numbered.items():
        numbers.sort()
        start = previous = numbers[0]
        for n in [*numbers[1:], None]:
            if n is not None and n == previous + 1:
                previous = n
                continue
            out.append(f"{prefix}{start}" if start == previous else f"{prefix}{start}..{previous}")
            if n is not None:
                start = previous = n
    return out


def is_stream_state(state) -> bool:
    """Whether a saved data loader state is this stream's (not litdata's, as the paper's fork and litgpt save it)."""
    return isinstance(state, dict) and state.get("format") in READABLE_FORMATS


def stretches_of(state: dict) -> list[dict]:
    """A saved state's stretch records, whatever its format."""
    return state["stretches"] if "stretches" in state else state["phases"]


@dataclass(frozen=True)
class Transition:
    shard: str
    domain: str
    status: str  # continued | started | dropped
    cursor: int
    passes: float


def save_state(tracker) -> dict:
    cursors = tracker.cursors
    shards = dict(cursors.carried)
    for i, shard in enumerate(tracker.members):
        if not cursors.consumed(i) and not tracker.weights[i] and shard.id not in cursors.carried:
            continue  # a shard of the data root that no stretch has read yet: at 0, like one never listed
        shards[shard.id] = {
            "consumed": cursors.consumed(i),
            "domain": shard.domain,
            "fingerprint": shard.fingerprint,
            "samples_per_pass": tracker.samples_per_pass[i],
            **({"reorders": [list(r) for r in tracker.reorders[i]]} if tracker.reorders[i] else {}),
            **({"lr_weighted_samples": tracker.lr_samples[i]} if tracker.lr_samples[i] else {}),
        }
    stretches = [{k: dict(v) if isinstance(v, dict) else v for k, v in p.items()} for p in tracker.stretches]
    stretches[-1]["samples_per_rank"] = cursors.position
    return {
        "format": STATE_FORMAT,
        "seed": tracker.seed,
        "block_tokens": tracker.block_tokens,
        "sampling": tracker.sampling,
        "order_seed": tracker.order_seed,
        "world_size": tracker.world_size,
        "mixture": tracker.mixture_key(),
        "position": cursors.position,
        "counts": [cursors.counts[i] for i in tracker.active],  # in the order of "mixture"; inactive shards are at 0
        "shards": shards,
        "stretches": stretches,
        **(tracker.clock.source.state() or {}),  # an online mixture's decisions and settings
    }


def _check_compatible(tracker, state: dict) -> None:
    if not is_stream_state(state):
        raise DataError(
            f"the checkpoint's data loader state is not a midtrain mixed-stream state (format "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}). It was saved by another "
            "data module; start the run without resuming the loader, or use the data module it was saved with."
        )
    if state["seed"] != tracker.seed:
        raise ConfigError(
            f"--data.seed={tracker.seed} differs from the checkpoint's seed {state['seed']}: the saved cursors index "
            f"into seed-{state['seed']} shuffles. Set --data.seed={state['seed']}."
        )
    if state["block_tokens"] != tracker.block_tokens:
        raise ConfigError(
            f"the sequence length ({tracker.block_tokens - 1}) differs from the checkpoint's "
            f"({state['block_tokens'] - 1}); the saved cursors count samples of that length. Set "
            f"--train.max_seq_length={state['block_tokens'] - 1}."
        )
    saved = state["shards"]
    changed = [f"{s.id} (checkpoint {saved[s.id]['fingerprint']}, now {s.fingerprint} at {s.path})"
               for s in tracker.members if s.id in saved and saved[s.id]["fingerprint"] != s.fingerprint]
    if changed and not tracker.allow_data_change:
        raise DataError(
            f"shard contents changed since the checkpoint was saved: {'; '.join(changed)}. The saved cursors "
            "would point at different samples. Restore the original shards, give the new data a new shard id "
            "(e.g. a new folder number), or set --data.allow_data_change=true to continue anyway."
        )


def load_state(tracker, state: dict) -> list[Transition]:
    """Continue ``tracker`` from ``state``; returns (and logs) what happened to each shard."""
    _check_compatible(tracker, state)
    saved, cursors, clock = state["shards"], tracker.cursors, tracker.clock
    stretches = [dict(p) for p in stretches_of(state)]
    cursors.carried = {i: dict(v) for i, v in saved.items() if i not in tracker.ids}
    # the timeline as it stands from this state: a ramp into a schedule's first phase starts from the mixture the
    # state was reading; a resumed online mixture continues its decisions
    decoded = [{**{k: v for k, v in r.items() if k == "start_step"}, "mixture": decode_mixture(r)} for r in stretches]
    clock.source.restore(decoded, state, clock.start_step)
    clock.set_timeline()
    tracker.set_weights(tracker.member_weights(clock.current.weights), stretch=len(stretches))
    consumed = [saved.get(i, {}).get("consumed", 0) for i in tracker.ids]
    cursors.set(consumed)
    tracker.reorder_unread(saved, state.get("order_seed"))
    tracker.lr_samples = [saved.get(i, {}).get("lr_weighted_samples", 0.0) for i in tracker.ids]
    same_stretch = (state["mixture"] == tracker.mixture_key() and state["world_size"] == tracker.world_size
                    and state["sampling"] == tracker.sampling and state.get("order_seed") == tracker.order_seed)
    cursors.mark = {}
    for record in stretches:  # every cursor as the last saved stretch began
        cursors.mark.update(record.get("start", {}))
    tracker.stretches = stretches
    if same_stretch:
        index = {shard_id: k for k, shard_id in enumerate(tracker.ids)}
        counts = [0] * len(tracker.ids)
        for (shard_id, _), count in zip(state["mixture"], state["counts"], strict=True):
            counts[index[shard_id]] = count
        cursors.set(consumed, counts, state["position"])
    else:
        tracker.stretches.append(tracker.new_stretch_record(clock.step()))
    tracker.set_weights(tracker.weights, stretch=len(tracker.stretches) - 1)  # its index seeds the 'random' order
    rows = transitions(tracker, saved)
    if not same_stretch and tracker.announce_transitions:
        log.info("Data mixture changed; shard cursors carried over by id:\n%s", render_transitions(rows))
    return rows


def transitions(tracker, saved: dict) -> list[Transition]:
    rows = []
    for i, shard in enumerate(tracker.members):
        consumed = tracker.consumed(i)
        if not tracker.weights[i] and not consumed:
            continue  # in the data root, read by no stretch so far
        status = "continued" if saved.get(shard.id, {}).get("consumed", 0) > 0 else "started"
        rows.append(Transition(shard.id, shard.domain, status, consumed, consumed / tracker.samples_per_pass[i]))
    for shard_id, info in tracker.cursors.carried.items():
        rows.append(Transition(shard_id, info["domain"], "dropped", info["consumed"],
                               info["consumed"] / info["samples_per_pass"]))
    return rows


def render_transitions(rows: Sequence[Transition]) -> str:
    return format_table(
        ["shard", "domain", "status", "cursor (samples)", "passes"],
        [[r.shard, r.domain, r.status, f"{r.cursor:,}", f"{r.passes:.3f}"] for r in rows],
        [False, False, False, True, True],
    )
