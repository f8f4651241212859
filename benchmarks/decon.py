"""``midtrain decon`` throughput beside ``midtrain prepare``'s on the same text, one process each, and the index's
memory.

    .venv/bin/python benchmarks/decon.py [--megabytes 80] [--items 1000 100000]

Text: the standard library's ``.py`` files as JSONL documents (``benchmarks/prepare.py``'s corpus), a byte-level BPE
of 4,096 tokens trained on part of it. ``prepare`` is the whole command on one process (reading, encoding, writing);
``decon`` is the scan of the prepared shard (reading its documents, decoding them, matching them) against an index
of ``--items`` evaluation items (windows of 20 to 60 words of the corpus's lines, so some are found), also on one
process. Prints each scan's tokens/s and its ratio to prepare's (goal >= 0.5), the index's build time and size, and
the scan of the first quarter of the text against the whole (time per token: the cost grows linearly with the
corpus).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prepare import corpus_and_tokenizer  # noqa: E402 (the same text and tokenizer as the prepare benchmark)


def eval_items(docs: list[str], count: int, seed: int = 0):
    from midtrain.data.decon import Item

    rng = random.Random(seed)
    lines = [line for d in docs[: max(1, len(docs) // 4)] for line in d.splitlines() if len(line.split()) >= 4]
    items = []
    for k in range(count):
        start = rng.randrange(len(lines))
        words = " ".join(lines[start:start + 8]).split()[: rng.randint(20, 60)]
        items.append(Item("bench", k, " ".join(words)))
    return items


def timed_scan(shard_path: Path, tokenizer, index) -> tuple[float, int, int]:
    from midtrain.data.decon_shards import open_shard, scan

    shard, _ = open_shard(shard_path, "--shards")
    start = time.perf_counter()
    result = scan(shard, tokenizer, index)
    return time.perf_counter() - start, result.tokens, len(result.found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=80)
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 100_000])
    measure(parser.parse_args())


def measure(args) -> None:
    from midtrain.commands.prepare import prepare
    from midtrain.data.decon import EvalIndex
    from midtrain.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs, tokenizer_dir = corpus_and_tokenizer(args.megabytes, root)
        tokenizer = load_tokenizer(tokenizer_dir)
        for name, part in (("whole", docs), ("quarter", docs[: len(docs) // 4])):
            (root / f"{name}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
        start = time.perf_counter()
        prepare(output_dir=root / "data" / "train" / "1", tokenizer_dir=tokenizer_dir,
                inputs=[str(root / "whole.jsonl")])
        prepare_seconds = time.perf_counter() - start
        prepare(output_dir=root / "quarter" / "train" / "1", tokenizer_dir=tokenizer_dir,
                inputs=[str(root / "quarter.jsonl")])
        manifest = json.loads((root / "data" / "train" / "1" / "midtrain_manifest.json").read_text())
        prepare_rate = manifest["tokens"] / prepare_seconds
        print(f"{len(docs):,} documents, {sum(len(d.encode()) for d in docs) / 1e6:.1f} MB, {manifest['tokens']:,} "
              f"tokens; prepare (1 process): {prepare_seconds:.1f} s, {prepare_rate / 1e6:.2f} Mtok/s\n")
        print("| items | index build s | index MiB | scan s | Mtok/s | decon/prepare | documents found |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        indexes = {}
        for count in args.items:
            items = eval_items(docs, count)
            start = time.perf_counter()
            index = EvalIndex.build(items)
            built = time.perf_counter() - start
            size = sum(a.nbytes for a in index.arrays().values())
            seconds, tokens, found = timed_scan(root / "data" / "train" / "1", tokenizer, index)
            indexes[count] = index
            print(f"| {count:,} | {built:.1f} | {size / 2**20:.1f} | {seconds:.1f} | {tokens / seconds / 1e6:.2f} | "
                  f"{tokens / seconds / prepare_rate:.2f} | {found:,} |")
        index = indexes[args.items[0]]
        whole_s, whole_tokens, _ = timed_scan(root / "data" / "train" / "1", tokenizer, index)
        part_s, part_tokens, _ = timed_scan(root / "quarter" / "train" / "1", tokenizer, index)
        print(f"\ncorpus growth ({args.items[0]:,} items): a quarter of the text {part_tokens:,} tokens in "
              f"{part_s:.1f} s, the whole {whole_tokens:,} in {whole_s:.1f} s: {whole_s / part_s:.2f}x the time for "
              f"{whole_tokens / part_tokens:.2f}x the tokens")


if __name__ == "__main__":
    main()
