"""Tokenize raw text into one litdata token shard (and optionally a held-out shard) with ``litdata.optimize``.

Every document is encoded in batches, followed by EOS. Output is written to a temporary folder next to the
target and renamed into place only when complete, so a failure or Ctrl-C never leaves a half-written shard
where a finished one is expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from midtrain.data.content import CHUNK_HASHES_KEY, MANIFEST_FILE, chunk_hashes
from midtrain.data.discovery import INDEX_FILE
from midtrain.data.documents import (
    MIN_PART_BYTES,
    FilePart,
    file_parts,
    input_bytes,
    load_hf_dataset,
    part_bytes,
    read_documents,
)
from midtrain.data.encoding import EncoderSpec, cached_encoder, encode_batch
from midtrain.data.litdata_child import run_optimize
from midtrain.distributed import get_logger
from midtrain.errors import ConfigError, DataError
from midtrain.publish import publish

log = get_logger(__name__)
DEFAULT_CHUNK_TOKENS = 1 << 24  # ~64 MB of int32 per chunk file; a chunk loses < one block to its tail
HF_ROWS_PER_UNIT = 10_000


def is_held_out(unit_key: str, position: int, val_fraction: float) -> bool:
    """Deterministic per-document split by the document's position in its file, independent of the worker count,
    of how a file is cut into parts, and (through ``unit_key``) of where the input files are: see ``split_keys``."""
    if val_fraction <= 0:
        return False
    digest = hashlib.blake2b(f"{unit_key}#{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < val_fraction


@dataclass
class TokenizeUnit:
    """The ``fn`` given to ``litdata.optimize``: tokenizes the documents of one unit (a file, or a range of rows of
    a Hugging Face dataset) that belong to ``split``; writes its counts to ``stats_dir``. Picklable for workers."""

    encoder: EncoderSpec
    text_key: str
    split: str
    val_fraction: float
    batch_size: int
    stats_dir: str
    hf: tuple[str, str, str | None] | None = None

    def __call__(self, unit: tuple) -> Iterator:
        try:
            yield from self._tokenize(unit)
        except DataError as exc:
            # litdata re-raises a worker's error wrapped in its own; the parent reports this message as it is
            Path(self.stats_dir, f"unit-error-{_unit_name(unit)}.txt").write_text(str(exc))
            raise

    def _tokenize(self, unit: tuple) -> Iterator:
        import numpy as np
        import torch

        tokenizer = cached_encoder(self.encoder)
        key = unit[0]
        documents = tokens = 0
        largest = -1
        batch: list[str] = []
        for position, text in self._documents(unit):
            if is_held_out(key, position, self.val_fraction) != (self.split == "val"):
                continue
            batch.append(text)
            if len(batch) == self.batch_size:
                for ids in encode_batch(tokenizer, batch):
                    documents, tokens, largest = documents + 1, tokens + len(ids), max(largest, max(ids))
                    yield torch.from_numpy(np.asarray(ids, dtype=np.int32))
                batch = []
        if batch:
            for ids in encode_batch(tokenizer, batch):
                documents, tokens, largest = documents + 1, tokens + len(ids), max(largest, max(ids))
                yield torch.from_numpy(np.asarray(ids, dtype=np.int32))
        Path(self.stats_dir, f"{_unit_name(unit)}.json").write_text(json.dumps(
            {"documents": documents, "tokens": tokens, "max_token_id": largest}))

    def _documents(self, unit: tuple) -> Iterator[tuple[int, str]]:
        if self.hf is None:
            _, path, start, stop, first_position = unit
            yield from read_documents(Path(path), self.text_key, FilePart(start, stop, first_position))
            return
        dataset = _cached_hf_dataset(self.hf)
        _, start, stop = unit
        for position, row in enumerate(dataset.select(range(start, stop))):
            text = row.get(self.text_key)
            if isinstance(text, str):
                yield position, text


def _unit_name(unit: tuple) -> str:
    return hashlib.sha1(repr(unit).encode()).hexdigest()


_HF_DATASETS: dict = {}


def _cached_hf_dataset(hf: tuple[str, str, str | None]):
    if hf not in _HF_DATASETS:
        _HF_DATASETS[hf] = load_hf_dataset(*hf)
    return _HF_DATASETS[hf]


def split_keys(files: list[Path]) -> list[str]:
    """Each file's path below the inputs' deepest common folder: the same files prepared from another location
    hold out the same documents (the absolute path would tie the split to where the data happens to live)."""
    resolved = [Path(f).resolve() for f in files]
    if len(resolved) == 1:
        return [resolved[0].name]
    common = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return [str(p.relative_to(common)) for p in resolved]


def file_units(files: list[Path], num_workers: int, min_part_bytes: int = MIN_PART_BYTES) -> list[tuple]:
    """The work list for litdata's workers: ``(split key, path, start, stop, first position)`` per part of a file.
    A large JSONL or Parquet file is cut into parts so that every worker has a share of it; which documents are
    held out does not depend on the cut (it is keyed by each document's position in its file)."""
    target = part_bytes(sum(input_bytes(p) for p in files), num_workers, min_part_bytes)
    return [(key, str(path), part.start, part.stop, part.first_position)
            for path, key in zip(files, split_keys(files), strict=True) for part in file_parts(path, target)]


def check_output(path: Path, flag: str, overwrite: bool) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise ConfigError(
            f"{flag}={str(path)!r} is not empty. Choose another folder, or pass --overwrite true to replace it."
        )


def default_val_output(output_dir: Path) -> Path:
    if output_dir.parent.name == "train":
        return output_dir.parent.parent / "val" / output_dir.name
    raise ConfigError(
        f"--val_fraction is set but --val_output_dir is not, and --output_dir={str(output_dir)!r} is not inside a "
        "'train' folder (where the held-out shard would go to the sibling 'val' folder). Set --val_output_dir."
    )


def write_split(
    units: list[tuple], fn: TokenizeUnit, target: Path, num_workers: int, chunk_tokens: int, manifest: dict
) -> tuple[Path, dict]:
    """Run ``litdata.optimize`` into a hidden sibling of ``target``; returns (that folder, the split's manifest).
    Publishing is the caller's, once every split is complete. The folder is removed if anything goes wrong."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    stats = Path(fn.stats_dir)
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(stats, ignore_errors=True)
    stats.mkdir(parents=True)
    try:
        run_optimize(dict(fn=fn, inputs=units, output_dir=str(partial), chunk_size=chunk_tokens,
                          num_workers=max(1, min(num_workers, len(units)))), stats)
        counts = [json.loads(p.read_text()) for p in stats.glob("*.json")]
        documents = sum(c["documents"] for c in counts)
        if documents == 0 or not (partial / INDEX_FILE).is_file():
            raise DataError(
                f"no documents went to the {fn.split} split for {target}. "
                + (
                    "Raise --val_fraction or give more documents."
                    if fn.split == "val"
                    else "Check --inputs and --text_key."
                )
            )
        index = json.loads((partial / INDEX_FILE).read_text())
        tokens = sum(int(c["dim"]) for c in index["chunks"])
        record = {**manifest, "split": fn.split, "documents": documents, "tokens": tokens,
                  "max_token_id": max(c.get("max_token_id", -1) for c in counts),
                  # what a resume compares a chunk with when its modification time changed (midtrain.data.content)
                  CHUNK_HASHES_KEY: chunk_hashes(partial, [c["filename"] for c in index["chunks"]])}
        (partial / MANIFEST_FILE).write_text(json.dumps(record, indent=2))
        return partial, record
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stats, ignore_errors=True)


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Hidden folders an earlier prepare of ``target`` left behind when it was killed (``.NAME.partial-PID``,
    ``.NAME.stats-PID``, ``.NAME.retired``). The caller holds ``target``'s lock, so no live prepare writes them."""
    removed = []
    if target.parent.is_dir():
        mine = str(os.getpid())
        for child in target.parent.iterdir():
            kind, _, pid = child.name.rpartition("-")
            if child.name == f".{target.name}.retired" and not target.exists():
                os.replace(child, target)  # killed between the two renames of a publication: the old one stands
            elif child.name == f".{target.name}.retired" or (
                    kind in (f".{target.name}.partial", f".{target.name}.stats") and pid != mine):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def publish_splits(written: list[tuple[Path, Path]]) -> None:
    """Publish every complete split (synced, renamed into place), with stop signals held back meanwhile: all
    published, or none."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        for partial, target in written:
            publish(partial, target)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
