"""What a ``data.mix_controller`` decision costs the data loader: its iteration ends at each decision step (the stream
may not run past a mixture it cannot know yet) and starts again after, so the workers restart and refill.

    .venv/bin/python benchmarks/mix_controller.py [--workers 2] [--decisions 20] [--steps_per_decision 25]

Writes three token shards into a temporary folder and reads, side by side in one run (median of 3 rounds), the
same number of batches of 8 x 2049 tokens (one batch per step) with ``--workers`` loader workers:
  static      one mixture, one endless iteration
  controlled  a controller deciding every ``--steps_per_decision`` steps: the iteration ends and restarts there
and prints the time per decision that the restarts add, and what that is as a share of a run that decides every
1,000 steps of 0.5 s (a 1B model on 8 GPUs takes about that per step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
BLOCK = 2049
BATCH = 8


def write_shard(path: Path, start: int, n_tokens: int) -> None:
    import torch
    from litdata import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(path), chunk_size=BLOCK * 256, item_loader=TokensLoader())
    for index, offset in enumerate(range(0, n_tokens, 100_000)):
        writer[index] = torch.arange(start + offset, start + min(offset + 100_000, n_tokens), dtype=torch.int32)
    writer.done()
    writer.merge()


def loader(root: Path, workers: int, controller: dict | None):
    from midtrain.data.module import ShardedMixedDataset

    data = ShardedMixedDataset(data_path=root, mix_weights_str="main:0.6,code:0.2,math:0.2", num_workers=workers,
                               mix_controller=controller, max_passes=100.0)
    data.connect(batch_size=BATCH, max_seq_length=BLOCK - 1)
    return data.train_dataloader(rank=0, world_size=1, start_step=0, samples_per_step=BATCH)


def read_static(root: Path, workers: int, steps: int) -> float:
    batches = iter(loader(root, workers, None))
    started = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return time.perf_counter() - started


def read_controlled(root: Path, workers: int, decisions: int, every: int) -> float:
    stream = loader(root, workers, {"signal": "train_loss", "every_steps": every, "eta": 0.5})
    started = time.perf_counter()
    for k in range(1, decisions + 1):
        batches = iter(stream)
        for _ in range(every):
            next(batches)
        # a decision from made-up losses: the mixture moves, as it would in a run
        stream.decide(k * every, {"main": 2.0, "code": 3.0 + k % 2, "math": 3.5 - k % 2}, 10**9)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--decisions", type=int, default=20)
    parser.add_argument("--steps_per_decision", type=int, default=25)
    args = parser.parse_args()
    steps = args.decisions * args.steps_per_decision
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name, start in (("1", 0), ("c1", 20_000_000), ("m1", 40_000_000)):
            write_shard(root / name, start, 4_000_000)
        read_static(root, args.workers, 50)  # warm the page cache
        static, controlled = [], []
        for _ in range(3):
            static.append(read_static(root, args.workers, steps))
            controlled.append(read_controlled(root, args.workers, args.decisions, args.steps_per_decision))
    s, c = statistics.median(static), statistics.median(controlled)
    per_decision = max(0.0, c - s) / args.decisions
    print(f"{steps:,} batches of {BATCH} x {BLOCK} tokens, {args.workers} loader worker(s), a decision every "
          f"{args.steps_per_decision} batches ({args.decisions} decisions); median of 3")
    print(f"{'static':<12} {s:>8.3f} s")
    print(f"{'controlled':<12} {c:>8.3f} s   ratio {c / s:.3f}")
    print(f"restart cost per decision: {per_decision * 1e3:.1f} ms; at every_steps=1000 of 0.5 s steps: "
          f"{per_decision / (1000 * 0.5) * 100:.4f} % of the run")


if __name__ == "__main__":
    main()
