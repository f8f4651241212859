"""Tokenize raw text into one litdata token shard (and optionally a held-out shard) with ``litdata.optimize``.

Every document is encoded in batches, followed by EOS. Output is written to a temporary folder next to the
target and renamed into place only when complete, so a failure or Ctrl-C never leaves a half-written shard
where a finished one is expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from midtrain.data.content import CHUNK_HASHES_KEY, MANIFEST_FILE, chunk_hashes
from midtrain.data.decon import DECON_KEY, load_index
from midtrain.data.discovery import INDEX_FILE
from midtrain.data.documents import (
    MIN_PART_BYTES,
    FilePart,
    file_parts,
    input_bytes,
    input_format,
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
    a Hugging Face dataset) that belong to ``split``; writes its counts to ``stats_dir`` when the unit is complete,
    and before each batch where it is (so the parent can name the document a worker died on). Picklable."""

    encoder: EncoderSpec
    text_key: str
    split: str
    val_fraction: float
    batch_size: int
    stats_dir: str
    hf: tuple[str, str, str | None] | None = None
    decon_index: str | None = None
    """An evaluation index file (``midtrain.data.decon``): documents holding one of its items are left out, counted
    and attributed (``prepare --decontaminate``)."""

    def __call__(self, unit: tuple) -> Iterator:
        progress = UnitProgress(Path(self.stats_dir), unit)
        try:
            yield from self._tokenize(unit, progress)
        except DataError as exc:
            # litdata re-raises a worker's error wrapped in its own; the parent reports this message as it is
            progress.fail(str(exc))
            raise
        except MemoryError:
            progress.fail(f"the tokenizer ran out of memory on {progress.describe_batch()}. Split or drop that "
                          "document, or give the workers more memory (fewer --num_workers).")
            raise

    def _tokenize(self, unit: tuple, progress: UnitProgress) -> Iterator:
        import numpy as np
        import torch

        tokenizer = cached_encoder(self.encoder)
        index = None if self.decon_index is None else load_index(self.decon_index)
        key = unit[0]
        counts = UnitCounts()
        batch: list[tuple[int, str]] = []

        def encoded(batch: list[tuple[int, str]]) -> Iterator:
            progress.batch(batch)
            for ids in _encode_checked(tokenizer, batch, progress, counts):
                counts.documents, counts.tokens = counts.documents + 1, counts.tokens + len(ids)
                counts.max_token_id = max(counts.max_token_id, max(ids))
                yield torch.from_numpy(np.asarray(ids, dtype=np.int32))

        for position, text in self._documents(unit):
            if is_held_out(key, position, self.val_fraction) != (self.split == "val"):
                continue
            if text is None:  # no text in this record (a null): skipped, counted and reported, in every format
                counts.null_texts += 1
                counts.first_null = counts.first_null or progress.where(position)
                continue
            found = index.found_in(text) if index is not None else None
            if found:  # an evaluation item inside: left out, and where it was kept for the report
                counts.decon_documents += 1
                counts.decon_found.append([progress.where(position), sorted(found)])
                continue
            batch.append((position, text))
            if len(batch) == self.batch_size:
                yield from encoded(batch)
                batch = []
        if batch:
            yield from encoded(batch)
        progress.done(counts)

    def _documents(self, unit: tuple) -> Iterator[tuple[int, str | None]]:
        if self.hf is None:
            _, path, start, stop, first_position = unit
            yield from read_documents(Path(path), self.text_key, FilePart(start, stop, first_position))
            return
        dataset = _cached_hf_dataset(self.hf)
        name, start, stop = unit
        for position, row in enumerate(dataset.select(range(start, stop))):  # positions key the held-out split
            text = row.get(self.text_key)
            if text is not None and not isinstance(text, str):
                raise DataError(f"{name.rsplit(':', 1)[0]} row {start + position:,}: {self.text_key!r} is "
                                f"{type(text).__name__}, not text. Set --text_key to a text column.")
            yield position, text


@dataclass
class UnitCounts:
    """What one unit gave: written by its worker when the unit is complete, checked and summed by the parent."""

    documents: int = 0
    tokens: int = 0
    max_token_id: int = -1
    null_texts: int = 0
    first_null: str | None = None
    """Where the first record without text was (``line 7 of a.jsonl``)."""
    surrogate_documents: int = 0
    first_surrogate: str | None = None
    decon_documents: int = 0
    """Documents left out because they hold an evaluation item (``--decontaminate``)."""
    decon_found: list = dataclasses.field(default_factory=list)
    """``[where, [item ids]]`` of each of them."""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _encode_checked(tokenizer, batch: list[tuple[int, str]], progress: UnitProgress,
                    counts: UnitCounts) -> list[list[int]]:
    """The batch's token ids. A text holding a lone surrogate (``\\ud800`` in a JSON string, common in web dumps:
    no UTF-8 text can hold it, and the tokenizer refuses it) has each one replaced with U+FFFD, the character a
    UTF-8 decoder puts for what it cannot read; counted and reported. Any other failure names the documents."""
    texts = [text for _, text in batch]
    try:
        return encode_batch(tokenizer, texts)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - the tokenizer's own errors (TypeError from Rust) say little
        cleaned = [_LONE_SURROGATE.sub("\ufffd", text) for text in texts]
        changed = [position for (position, text), new in zip(batch, cleaned, strict=True) if new != text]
        if not changed:
            raise DataError(f"the tokenizer failed on {progress.describe_batch()} ({type(exc).__name__}: {exc}). "
                            "Fix or remove those documents.") from None
        counts.surrogate_documents += len(changed)
        counts.first_surrogate = counts.first_surrogate or progress.where(changed[0])
        return encode_batch(tokenizer, cleaned)


class UnitProgress:
    """A worker's record of one unit in the stats folder: where it is (written before each batch is encoded), why
    it failed, and its counts once complete. A worker that dies without a word (SIGKILL, the OOM killer, an abort in
    the tokenizer) leaves the first without the last, and the parent names the documents from it."""

    def __init__(self, stats_dir: Path, unit: tuple) -> None:
        self.stats_dir, self.unit = stats_dir, unit
        self.name = unit_name(unit)
        self.current: dict = {}

    def where(self, position: int) -> str:
        return describe_position(self.unit, position)

    def batch(self, batch: list[tuple[int, str]]) -> None:
        first, last = batch[0][0], batch[-1][0]
        _, largest = max((len(text), text) for _, text in batch)
        self.current = {"first": first, "last": last,
                        "largest_bytes": len(largest.encode("utf-8", "surrogatepass"))}
        (self.stats_dir / f"{self.name}.progress").write_text(json.dumps(self.current))

    def describe_batch(self) -> str:
        return describe_batch(self.unit, self.current)

    def fail(self, message: str) -> None:
        (self.stats_dir / f"unit-error-{self.name}.txt").write_text(message)

    def done(self, counts: UnitCounts) -> None:
        (self.stats_dir / f"{self.name}.json").write_text(json.dumps(dataclasses.asdict(counts)))


def unit_name(unit: tuple) -> str:
    return hashlib.sha1(repr(unit).encode()).hexdigest()


def describe_position(unit: tuple, position: int) -> str:
    """``line 3 of /data/a.jsonl``, ``row 7 of /data/b.parquet``, ``/data/c.txt``, ``row 12 of hf:name:split``."""
    if len(unit) == 3:  # a range of a Hugging Face dataset's rows: positions count from the range's start
        return f"row {unit[1] + position:,} of {unit[0].rsplit(':', 1)[0]}"
    path = unit[1]
    fmt = input_format(Path(path))
    if fmt == ".txt":
        return path
    return f"{'row' if fmt == '.parquet' else 'line'} {position + (fmt != '.parquet'):,} of {path}"


def describe_batch(unit: tuple, current: dict) -> str:
    """The documents a batch held: ``line 1 of /data/b.jsonl (a 30.0 MB document)``, or a range of lines."""
    if not current:
        return f"the start of {describe_position(unit, 0).split(' of ')[-1]}"
    first, last = describe_position(unit, current["first"]), describe_position(unit, current["last"])
    span = first if first == last else f"{first.split(' of ')[0]}–{last.split(' ')[1]} of {first.split(' of ')[-1]}"
    size = current.get("largest_bytes", 0)
    size_text = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
    return span + (f" (the largest document {size_text})" if first != last else f" (a {size_text} document)")


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
) -> tuple[Path, dict, list]:
    """Run ``litdata.optimize`` into a hidden sibling of ``target``; returns (that folder, the split's manifest, the
    documents left out as contaminated: ``[where, [item ids]]``).
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
        counts = unit_counts(units, stats)
        documents = sum(c.documents for c in counts)
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
        written_documents = sum(int(c["chunk_size"]) for c in index["chunks"])
        produced = sum(c.tokens for c in counts)
        if (written_documents, tokens) != (documents, produced):
            raise DataError(
                f"the {fn.split} split's chunks hold {written_documents:,} documents and {tokens:,} tokens, but the "
                f"tokenizer workers produced {documents:,} and {produced:,}: litdata lost part of the output. Nothing "
                "was published; rerun prepare (check free disk space and memory).")
        record = {**manifest, "split": fn.split, "documents": documents, "tokens": tokens,
                  "max_token_id": max(c.max_token_id for c in counts),
                  **skipped_record(counts), **decon_counts(manifest, counts, documents),
                  # what a resume compares a chunk with when its modification time changed (midtrain.data.content)
                  CHUNK_HASHES_KEY: chunk_hashes(partial, [c["filename"] for c in index["chunks"]])}
        (partial / MANIFEST_FILE).write_text(json.dumps(record, indent=2))
        return partial, record, [found for c in counts for found in c.decon_found]
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stats, ignore_errors=True)


def unit_counts(units: list[tuple], stats: Path) -> list[UnitCounts]:
    """Every unit's counts, as its worker wrote them when it completed it. litdata does not report a worker that
    died (killed by a signal or the out-of-memory killer, an abort inside the tokenizer): its units simply never
    complete, and litdata returns as if all were done. A unit without counts fails the split, naming its input and,
    from the worker's last progress record, the documents it was encoding."""
    counts, lost = [], []
    for unit in units:
        name = unit_name(unit)
        try:
            counts.append(UnitCounts(**json.loads((stats / f"{name}.json").read_text())))
        except (OSError, ValueError, TypeError):
            lost.append(unit)
    if not lost:
        return counts
    unit = lost[0]
    try:
        current = json.loads((stats / f"{unit_name(unit)}.progress").read_text())
    except (OSError, ValueError):
        current = {}
    what = (f"while encoding {describe_batch(unit, current)}" if current else
            f"before it tokenized {describe_batch(unit, {})}")
    others = f" ({len(lost)} of {len(units)} parts of the input were not tokenized)" if len(lost) > 1 else ""
    raise DataError(
        f"a tokenizer worker died {what}{others}: killed by a signal, or out of memory (the OOM killer, a ulimit, "
        "an abort inside the tokenizer). Nothing was published and the previous output is as it was. Give the "
        "workers more memory (fewer --num_workers), or split or drop that document, and rerun.")


def skipped_record(counts: list[UnitCounts]) -> dict:
    """What the manifest records of the documents that were skipped or altered, and where the first one was."""
    return {"skipped_null_texts": sum(c.null_texts for c in counts),
            "first_null_text": next((c.first_null for c in counts if c.first_null), None),
            "replaced_lone_surrogates_documents": sum(c.surrogate_documents for c in counts),
            "first_lone_surrogate": next((c.first_surrogate for c in counts if c.first_surrogate), None)}


def decon_counts(manifest: dict, counts: list[UnitCounts], documents: int) -> dict:
    """The manifest's decontamination record of a split (when ``manifest`` carries the check's): its policy and
    sources, and the documents it left out."""
    if DECON_KEY not in manifest:
        return {}
    removed = sum(c.decon_documents for c in counts)
    return {DECON_KEY: {**manifest[DECON_KEY], "from": "prepare", "documents_removed": removed,
                        "documents_before": documents + removed, "tokens_removed": None}}


def describe_skipped(record: dict) -> str:
    """`` (skipped 3 records whose text is null, first: row 7 of b.parquet; …)`` for the summary line, or ''."""
    notes = []
    if record.get("skipped_null_texts"):
        notes.append(f"skipped {record['skipped_null_texts']:,} record(s) whose text is null, first: "
                     f"{record['first_null_text']}")
    if (record.get(DECON_KEY) or {}).get("documents_removed"):
        notes.append(f"left out {record[DECON_KEY]['documents_removed']:,} document(s) holding an evaluation item "
                     "(--decontaminate)")
    if record.get("replaced_lone_surrogates_documents"):
        notes.append(f"replaced lone surrogates (not encodable as UTF-8) with U+FFFD in "
                     f"{record['replaced_lone_surrogates_documents']:,} document(s), first: "
                     f"{record['first_lone_surrogate']}")
    return f" ({'; '.join(notes)})" if notes else ""


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
