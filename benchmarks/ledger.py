"""What the stream's bookkeeping costs at production size: the state a checkpoint stores, the per-log-step domain
totals and the full ledger, with 10,000 shards and a mixture ramped in 10 segments.

    .venv/bin/python benchmarks/ledger.py [--shards 10000] [--segments 10] [--samples_per_step 1024]

Builds the stream's position (no data is read: the bookkeeping only) over ``--shards`` main shards and 10 code
shards, with a ``mix_schedule`` that ramps code in over ``--segments`` constant segments, runs it through every
segment, then times, side by side in one run:
  log step   the per-domain token totals every log step reports
  ledger     the full ledger (per shard, per domain, per stretch), which every checkpoint writes
  state      the state a checkpoint stores (its size pickled, and the time to build it)
and prints each with its size relative to the shard count.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time


def timed(function, repeats: int = 5) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    from midtrain.data.discovery import Shard
    from midtrain.data.mix_schedule import MixSchedule, parse_phases
    from midtrain.data.stream_state import StreamTracker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--samples_per_step", type=int, default=1024)
    args = parser.parse_args()
    main_shards = [Shard(f"main/{k}", "main", None, ("chunk-0-0.bin",), (1 << 20,), (1,), "no_header_tensor:16",
                         f"m{k}") for k in range(1, args.shards + 1)]
    code_shards = [Shard(f"c{k}", "code", None, ("chunk-0-0.bin",), (1 << 20,), (1,), "no_header_tensor:16", f"c{k}")
                   for k in range(1, 11)]
    members = main_shards + code_shards
    main_weight = {s.id: 1 / args.shards for s in main_shards}
    mixed = {**{i: 0.8 * w for i, w in main_weight.items()}, **{s.id: 0.02 for s in code_shards}}
    steps_per_segment = 4
    ramp = args.segments * steps_per_segment
    source = MixSchedule(parse_phases([{"start_step": 0, "mix_weights_str": "main:1"},
                                       {"start_step": 8, "mix_weights_str": "main:0.8,code:0.2", "ramp_steps": ramp}]),
                         (main_weight, mixed))
    tracker = StreamTracker(members, [main_weight.get(s.id, 0.0) for s in members], 2049, 42, "exact",
                            timeline=source, start_step=0, samples_per_step=args.samples_per_step)
    tracker.advance((8 + ramp + 4) * args.samples_per_step)
    log_s, _ = timed(tracker.domain_tokens)
    ledger_s, ledger = timed(tracker.ledger)
    state_s, state = timed(tracker.state_dict)
    size = len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    stretches = len(state.get("phases") or state.get("stretches") or [])
    print(f"{args.shards:,} main + 10 code shards, {stretches} stretches of constant mixture "
          f"({args.segments} ramp segments), {args.samples_per_step:,} samples per step")
    print(f"{'what':<12} {'ms':>9} {'bytes':>12} {'bytes per shard':>16}")
    print(f"{'log step':<12} {log_s * 1e3:>9.2f} {'-':>12} {'-':>16}")
    print(f"{'ledger':<12} {ledger_s * 1e3:>9.2f} {len(pickle.dumps(ledger)):>12,} "
          f"{len(pickle.dumps(ledger)) / len(members):>16,.0f}")
    print(f"{'state':<12} {state_s * 1e3:>9.2f} {size:>12,} {size / len(members):>16,.0f}")


if __name__ == "__main__":
    main()
