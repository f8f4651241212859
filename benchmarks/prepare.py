"""``midtrain prepare`` throughput beside the raw ``tokenizers`` batch-encode rate, same text, same processes.

    .venv/bin/python benchmarks/prepare.py [--megabytes 80] [--processes 1 2]

Text: the CPython standard library's ``.py`` files (real code, present on any machine with Python), as JSONL
documents. Tokenizer: a byte-level BPE of 4,096 tokens trained on part of it. ``raw`` is ``encode_batch`` over
the same documents split across the same number of processes (encode time only, no I/O); ``prepare`` is the
whole command end to end (reading, encoding, writing chunks with litdata.optimize, manifest). Prints the ratio,
for eight input files and for the same text as one file (which prepare cuts into line-aligned parts per worker),
and each case's speed-up over one process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per process on both sides


def corpus(megabytes: float) -> list[str]:
    docs, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        docs.append(text)
        size += len(text.encode())
        if size >= megabytes * 1e6:
            break
    return docs


def corpus_and_tokenizer(megabytes: float, root: Path) -> tuple[list[str], Path]:
    """The benchmark's documents and a byte-level BPE of 4,096 tokens trained on the first eighth of them."""
    from midtrain.tokenizer import train_bpe_tokenizer

    docs = corpus(megabytes)
    return docs, train_bpe_tokenizer(docs[: max(1, len(docs) // 8)], root / "tokenizer", vocab_size=4096)


def _encode_share(args) -> tuple[int, float]:
    from tokenizers import Tokenizer

    tokenizer_path, docs = args
    tokenizer = Tokenizer.from_file(tokenizer_path)
    start = time.perf_counter()
    tokens = sum(len(e.ids) + 1 for i in range(0, len(docs), 256) for e in tokenizer.encode_batch(docs[i : i + 256]))
    return tokens, time.perf_counter() - start


def raw_rate(tokenizer_path: str, docs: list[str], processes: int) -> float:
    shares = [docs[i::processes] for i in range(processes)]
    with mp.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_encode_share, [(tokenizer_path, share) for share in shares])
    return sum(t for t, _ in results) / max(s for _, s in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # large enough that the one file is cut into parts (of at least 32 MiB each) for 2 processes
    parser.add_argument("--megabytes", type=float, default=80)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from midtrain.commands.prepare import prepare as prepare_shard
    from midtrain.data.prepare import file_units

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs, tokenizer_dir = corpus_and_tokenizer(args.megabytes, root)
        # eight input files, and the same text as one file (which prepare cuts into parts, one share per worker)
        files = [root / f"part{i}.jsonl" for i in range(8)]
        for i, path in enumerate(files):
            path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[i::8]))
        one_file = root / "whole.jsonl"
        one_file.write_text("".join(path.read_text() for path in files))
        print(f"{len(docs):,} documents, {sum(len(d.encode()) for d in docs) / 1e6:.1f} MB of Python source")
        # the fixed cost of one prepare (litgpt's tokenizer in this process, litdata's worker start-up), paid once
        # per shard whatever its size; the first call also pays this process's imports, kept out of the table
        (root / "tiny.jsonl").write_text(json.dumps({"text": docs[0]}) + "\n")
        for attempt in range(2):
            start = time.perf_counter()
            prepare_shard(root / f"tiny{attempt}", tokenizer_dir, [str(root / "tiny.jsonl")])
        print(f"fixed start-up of one prepare: {time.perf_counter() - start:.1f} s (in every row below)")
        print(f"{'inputs':>8} {'processes':>9} {'parts':>6} {'raw Mtok/s':>11} {'prepare Mtok/s':>15} "
              f"{'prepare/raw':>12} {'vs 1 process':>13}")
        raw = {
            processes: raw_rate(str(tokenizer_dir / "tokenizer.json"), docs, processes) for processes in args.processes
        }
        for label, inputs in (("8 files", files), ("1 file", [one_file])):
            single = None
            for processes in args.processes:
                start = time.perf_counter()
                record = prepare_shard(root / f"out-{label[0]}-{processes}", tokenizer_dir, [str(p) for p in inputs],
                                       num_workers=processes)[0]
                ours = record["tokens"] / (time.perf_counter() - start)
                single = single or ours
                parts = len(file_units(inputs, processes))
                print(f"{label:>8} {processes:>9} {parts:>6} {raw[processes] / 1e6:>11.2f} {ours / 1e6:>15.2f} "
                      f"{ours / raw[processes]:>12.2f} {ours / single:>13.2f}")

if __name__ == "__main__":
    main()
