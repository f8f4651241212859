"""Throughput and mixture accuracy of midtrain's mixed stream beside litdata's, measured side by side.

    .venv/bin/python benchmarks/mixed_stream.py [--batches 400] [--total_tokens 24000000]

Writes token shards (shard k holds tokens (k+1)*1e8 + position, so every sample names its source) into a
temporary folder, then reads ``--batches`` batches of 8 x 2049 tokens (warm cache, median of 3) from:
  single    one litdata StreamingDataset over the same total data (the speed ceiling)
  combined  litdata CombinedStreamingDataset over the shards (weighted, iterate_over_all=False)
  ours      midtrain's ShardedMixedDataset over the shards (exact schedule)
with num_workers 0 and 2, and prints tokens/s and the ratios. Then prints the largest deviation of realised from
target fractions over the first 100 / 1,000 / 10,000 samples of each mixed stream. First, the shard-count axis:
samples/s over 4, 100, 1,000 and 10,000 equal shards (cheap linked copies of one) with 0 and 2 workers, and the
time to discover them and plan a budget (``--shard_counts``, ``--only_shard_counts``).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
BLOCK = 2049
BATCH = 8
BASE = 100_000_000


def _tokens(spec):
    import torch

    start, count = spec
    yield torch.arange(start, start + count, dtype=torch.int32)


def write_shard(path: Path, start: int, n_tokens: int) -> None:
    from litdata import TokensLoader, optimize

    piece = 200_000
    inputs = [(start + o, min(piece, n_tokens - o)) for o in range(0, n_tokens, piece)]
    optimize(fn=_tokens, inputs=inputs, output_dir=str(path), chunk_size=BLOCK * 1024, item_loader=TokensLoader(),
             num_workers=1, verbose=False)


def time_loader(make_loader, batches: int) -> float:
    rates = []
    for _ in range(4):  # the first run warms the page cache and is dropped
        loader = make_loader()
        iterator = iter(loader)
        next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rates.append(batches * BATCH * BLOCK / (time.perf_counter() - start))
        del iterator, loader
    return statistics.median(rates[1:])


def litdata_single(root: Path, workers: int):
    from litdata import StreamingDataLoader, StreamingDataset, TokensLoader

    dataset = StreamingDataset(
        str(root / "single"), item_loader=TokensLoader(block_size=BLOCK), shuffle=True, drop_last=True
    )
    return StreamingDataLoader(dataset, batch_size=BATCH, num_workers=workers)


def litdata_combined(root: Path, shards: int, workers: int, weights=None):
    from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset, TokensLoader

    datasets = [StreamingDataset(str(root / f"mix{shards}" / str(k + 1)), item_loader=TokensLoader(block_size=BLOCK),
                                 shuffle=True, drop_last=True) for k in range(shards)]
    weights = weights or [1 / shards] * shards
    combined = CombinedStreamingDataset(datasets, seed=42, iterate_over_all=False, weights=weights)
    return StreamingDataLoader(combined, batch_size=BATCH, num_workers=workers)


def ours(root: Path, shards: int, workers: int, weights=None):
    from midtrain.data.module import ShardedMixedDataset

    weights = weights or [1 / shards] * shards
    literal = ",".join(f"main/{k + 1}:{w}" for k, w in enumerate(weights))
    module = ShardedMixedDataset(
        data_path=root / f"mix{shards}", literal_weights_str=literal, num_workers=workers, max_passes=100
    )
    module.connect(batch_size=BATCH, max_seq_length=BLOCK - 1)
    return module.train_dataloader()


def max_deviation(loader, weights, samples: int) -> float:
    counts = [0] * len(weights)
    iterator = iter(loader)
    seen = 0
    while seen < samples:
        try:
            batch = next(iterator)
        except StopIteration:  # litdata ends the epoch when its first source runs out; training cycles on
            iterator = iter(loader)
            continue
        for row in batch:
            if seen == samples:
                break
            counts[int(row[0]) // BASE - 1] += 1
            seen += 1
    return max(abs(c / samples - w) for c, w in zip(counts, weights, strict=True))


def linked_copies(source: Path, root: Path, copies: int) -> Path:
    """``copies`` main shards that are cheap copies of ``source``: each folder holds its index.json and links to
    the source's chunk files (discovery, planning and reading see ``copies`` real shards)."""
    target = root / f"linked{copies}"
    chunks = [p.name for p in source.glob("chunk-*.bin")]
    for k in range(1, copies + 1):
        folder = target / str(k)
        folder.mkdir(parents=True)
        (folder / "index.json").write_bytes((source / "index.json").read_bytes())
        for name in chunks:
            (folder / name).symlink_to(source / name)
    return target


def steady_rate(loader, batches: int, warm_batches: int) -> float:
    """Samples/s once every shard has been visited (its first pass's order built, its file opened once): what a
    long run sees. Median of three timed stretches of ``batches`` batches."""
    iterator = iter(loader)
    for _ in range(warm_batches):
        next(iterator)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rates.append(batches * BATCH / (time.perf_counter() - start))
    return statistics.median(rates)


def shard_count_axis(root: Path, counts: list[int], batches: int) -> None:
    """Samples/s of the mixed stream over 4 … 10,000 equal shards (mix main:1.0), with 0 and 2 loader workers, in
    steady state, and the time to discover the shards and plan a budget; rates beside the 4-shard figures."""
    from midtrain.data.module import ShardedMixedDataset

    source = root / "source"
    write_shard(source, BASE, 8 * 1024 * BLOCK)
    print(f"\nshard-count axis: mix main:1.0 over N equal shards, {batches} batches of {BATCH} x {BLOCK} tokens")
    print(f"{'shards':>7} {'discover+plan s':>16} {'workers':>7} {'samples/s':>10} {'vs 4 shards':>12}")
    baseline: dict[int, float] = {}
    for count in counts:
        data_root = linked_copies(source, root, count)
        started = time.perf_counter()
        module = ShardedMixedDataset(data_path=data_root, mix_weights_str="main:1.0", max_passes=1000)
        module.connect(batch_size=BATCH, max_seq_length=BLOCK - 1)
        module.plan(count * 1024 * BLOCK)
        planned = time.perf_counter() - started
        for workers in (0, 2):
            module.num_workers = workers
            rate = steady_rate(module.train_dataloader(), batches, warm_batches=max(20, 2 * count // BATCH))
            baseline.setdefault(workers, rate)
            print(
                f"{count:>7,} {planned:>16.2f} {workers:>7} {rate:>10,.0f} {rate / baseline[workers]:>12.2f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=600)
    parser.add_argument("--total_tokens", type=int, default=24_000_000)
    parser.add_argument("--shard_counts", default="4,100,1000,10000", help="the shard-count axis; empty to skip it")
    parser.add_argument("--only_shard_counts", action="store_true", help="run only the shard-count axis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.shard_counts:
            shard_count_axis(root, [int(c) for c in args.shard_counts.split(",")], args.batches)
        if args.only_shard_counts:
            return
        for shards in (4, 10):
            for k in range(shards):
                write_shard(root / f"mix{shards}" / str(k + 1), (k + 1) * BASE, args.total_tokens // shards)
        write_shard(root / "single", BASE, args.total_tokens)
        print(f"tokens/s (millions), {args.batches} batches of {BATCH} x {BLOCK} tokens, median of 3, warm cache")
        print(f"{'shards':>6} {'workers':>7} {'single':>8} {'combined':>9} {'ours':>8} {'ours/single':>12} "
              f"{'combined/single':>16} {'ours/combined':>14}")
        for shards in (4, 10):
            for workers in (0, 2):
                single = time_loader(functools.partial(litdata_single, root, workers), args.batches)
                combined = time_loader(functools.partial(litdata_combined, root, shards, workers), args.batches)
                mine = time_loader(functools.partial(ours, root, shards, workers), args.batches)
                print(f"{shards:>6} {workers:>7} {single / 1e6:>8.1f} {combined / 1e6:>9.1f} {mine / 1e6:>8.1f} "
                      f"{mine / single:>12.2f} {combined / single:>16.2f} {mine / combined:>14.2f}")
        print("\nlargest |realised - target| fraction over the first N samples (weights 0.7/0.2/0.05/0.05, 4 shards)")
        weights = [0.7, 0.2, 0.05, 0.05]
        print(f"{'N':>7} {'litdata combined':>17} {'ours':>10}")
        for n in (100, 1_000, 10_000):
            theirs = max_deviation(litdata_combined(root, 4, 0, weights), weights, n)
            mine = max_deviation(ours(root, 4, 0, weights), weights, n)
            print(f"{n:>7,} {theirs:>17.4f} {mine:>10.4f}")


if __name__ == "__main__":
    main()
