"""What checking a checkpoint's data identity costs at resume, beside what discovery costs anyway, at production size.

    .venv/bin/python benchmarks/resume_check.py [--shards 10000] [--chunks 100]

Writes a data root of ``--shards`` main shards of ``--chunks`` chunk files each (sparse files of a real chunk's
size, with an ``index.json`` and a ``midtrain_manifest.json`` holding each chunk's SHA-256, as ``midtrain prepare``
writes them), then times, side by side in one run:
  discover   finding the shards and reading every index.json (one stat per chunk): what every resume does anyway
  record     the identity a checkpoint stores of every shard read (manifest hashes, chunk modification times)
  check      comparing that record with the data root at resume, nothing changed
  touched    the same after 1 % of the shards had one chunk rewritten with equal bytes (those chunks re-hashed)
and prints each time, its ratio to (warm) discovery, and the record's size in the checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import tempfile
import time
from pathlib import Path

CHUNK_TOKENS = 4096
ITEMS = 4


def write_root(root: Path, shards: int, chunks: int) -> None:
    size = (ITEMS + 2) * 4 + CHUNK_TOKENS * 4
    digest = hashlib.sha256(bytes(size)).hexdigest()  # every chunk is all zeros: one hash for all of them
    names = [f"chunk-0-{i}.bin" for i in range(chunks)]
    index = json.dumps({"chunks": [{"chunk_bytes": size, "chunk_size": ITEMS, "dim": CHUNK_TOKENS, "filename": n}
                                   for n in names],
                        "config": {"chunk_size": CHUNK_TOKENS, "compression": None,
                                   "data_format": ["no_header_tensor:16"], "item_loader": "TokensLoader"}})
    manifest = json.dumps({"split": "train", "chunk_sha256": dict.fromkeys(names, digest)})
    for k in range(1, shards + 1):
        folder = root / str(k)
        folder.mkdir(parents=True)
        (folder / "index.json").write_text(index)
        (folder / "midtrain_manifest.json").write_text(manifest)
        for name in names:
            with open(folder / name, "wb") as handle:
                handle.truncate(size)


def timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    from midtrain.data.content import compare, identity_record, shard_identity
    from midtrain.data.discovery import discover_shards
    from midtrain.data.domains import DomainRegistry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made, _ = timed(lambda: write_root(root, args.shards, args.chunks))
        print(f"{args.shards:,} shards x {args.chunks} chunks = {args.shards * args.chunks:,} chunk files "
              f"(written in {made:.0f} s)")
        registry = DomainRegistry.with_extra({})
        discover_s, shards = timed(lambda: discover_shards(root, registry))
        record_s, record = timed(lambda: identity_record({s.id: shard_identity(s) for s in shards},
                                                         [s.id for s in shards]))
        state = {"data_identity": record}
        ids = [s.id for s in shards]
        again_s, again = timed(lambda: discover_shards(root, registry))  # the resume's own discovery, warm cache
        check_s, changes = timed(lambda: compare(state, again, ids))
        assert not changes and not changes.unchecked
        touched = shards[:: 100]
        for shard in touched:  # rewritten with equal bytes: a new modification time, the same content
            path = shard.path / shard.chunk_files[0]
            data = path.read_bytes()
            path.write_bytes(data)
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
        after = discover_shards(root, registry)
        touched_s, changes = timed(lambda: compare(state, after, ids))
        assert not changes, changes.lines()[:3]
        size = len(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
        print(f"{'step':<10} {'seconds':>8} {'vs discover':>12}")
        for name, seconds in (("discover", again_s), ("record", record_s), ("check", check_s),
                              ("touched", touched_s)):
            print(f"{name:<10} {seconds:>8.2f} {seconds / again_s:>12.2f}")
        print(f"(first, cold discovery {discover_s:.2f} s; 'touched' re-hashed {len(touched):,} chunks)")
        print(f"identity record in each checkpoint: {size / 1e6:.1f} MB pickled ({size / len(shards):,.0f} bytes a "
              "shard)")


if __name__ == "__main__":
    main()
