"""The ledger: samples, tokens and passes per shard and per domain over a run's whole lineage, and the tokens of
each stretch of constant mixture, as a pure function of a saved stream state (``midtrain.data.stream_io``).

Where the run told the stream its LR schedule (``midtrain pretrain``), each entry also has ``lr_weighted_tokens``:
the sum over steps of the step's LR times the tokens it trained from that shard, domain or stretch (how much the
data moved the weights, not only how much of it was read)."""

from __future__ import annotations

from midtrain.data.stream_io import decode_mixture, stretches_of


def ledger(state: dict) -> dict:
    """Per shard and per domain (``block_tokens - 1`` trained tokens per sample), plus the per-stretch split."""
    tokens_per_sample = state["block_tokens"] - 1
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
        if "lr_weighted_samples" in info:
            shards[shard_id]["lr_weighted_tokens"] = info["lr_weighted_samples"] * tokens_per_sample
            entry["lr_weighted_tokens"] = entry.get("lr_weighted_tokens", 0.0) + shards[shard_id]["lr_weighted_tokens"]
    records = stretches_of(state)
    stretches, cursors, open_stretch = [], {}, None  # cursors: every cursor as the current record began
    for record in [*records, None]:
        if record is not None:
            cursors.update(record.get("start", {}))  # each record holds the cursors that moved since the one before
        else:
            cursors = {i: v["consumed"] for i, v in state["shards"].items()}
        if open_stretch is not None:  # the stretch before ends where this one begins
            entry, starts = open_stretch
            entry["tokens"] = {i: (cursors.get(i, 0) - start) * tokens_per_sample for i, start in starts.items()}
            stretches.append(entry)
        if record is None:
            break
        mixture = decode_mixture(record)
        entry = {"index": record["index"]}
        if "start_step" in record:
            entry["start_step"] = record["start_step"]
        if "segment" in record or "schedule" in record:
            entry["segment"] = record.get("segment", record.get("schedule"))
        if "lr_weighted_samples" in record:
            entry["lr_weighted_tokens"] = {d: v * tokens_per_sample for d, v in record["lr_weighted_samples"].items()}
        if "order_seed" in record:
            entry["order_seed"] = record["order_seed"]
        if "decision" in record:  # a decided segment's: step, signal, score, weights before -> after, capped
            entry["decision"] = record["decision"]
        entry["shares"] = record.get("shares") or [[share, [i]] for i, share in mixture.items()]
        open_stretch = (entry, {i: cursors.get(i, 0) for i in mixture})
    return {"shards": shards, "domains": domains, "stretches": stretches}
