"""Tokenize raw text into one litdata token shard (and optionally a held-out shard) with ``litdata.optimize``.

Every document is encoded in batches, followed by EOS. Output is written to a temporary folder next to the
target and renamed into place only when complete, so a failure or Ctrl-C never leaves a half-written shard
where a finished one is expected.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from midtrain.data.documents import (MIN_PART_BYTES, FilePart, expand_inputs, file_parts, input_bytes,
                                     load_hf_dataset, part_bytes, read_documents)
from midtrain.data.discovery import INDEX_FILE
from midtrain.data.encoding import EncoderSpec, cached_encoder, encode_batch, tokenizer_fingerprint
from midtrain.data.content import CHUNK_HASHES_KEY, MANIFEST_FILE, chunk_hashes
from midtrain.distributed import get_logger
from midtrain.errors import ConfigError, DataError, Interrupted
from midtrain.folder_lock import FolderLock

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
            for path, key in zip(files, split_keys(files)) for part in file_parts(path, target)]


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
                + ("Raise --val_fraction or give more documents." if fn.split == "val" else "Check --inputs and --text_key.")
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


def run_optimize(arguments: dict, stats: Path) -> None:
    """``litdata.optimize`` in a child process with a process group of its own. litdata installs a SIGINT handler
    that ends the process with status 0; in a child, that cannot hide an interruption from us, and a stop request
    (Ctrl-C, SIGTERM) kills the child's whole group, litdata's workers included, so nothing is left running."""
    error_file = stats / "optimize-error.txt"
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    child = context.Process(target=_optimize_in_child, args=(arguments, str(error_file)), daemon=False)
    child.start()
    try:
        child.join()
    except BaseException:
        _kill_group(child)
        raise
    if child.exitcode != 0:
        unit_errors = sorted(stats.glob("unit-error-*.txt"))
        if unit_errors:  # our own message, from the worker that met the bad input
            raise DataError(unit_errors[0].read_text())
        detail = error_file.read_text().strip() if error_file.is_file() else f"exit status {child.exitcode}"
        raise DataError(f"tokenizing and writing the shard failed: {detail.splitlines()[-1] if detail else detail}")


def _optimize_in_child(arguments: dict, error_file: str) -> None:
    os.setpgid(0, 0)  # our own group: the parent stops us and every worker we start with one killpg
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(os.getppid())
    try:
        from litdata import TokensLoader, optimize

        optimize(**arguments, item_loader=TokensLoader(), reorder_files=False, start_method="spawn",
                 verbose=False)  # litdata's bar moves only when a worker ends; we print a summary per split
    except BaseException as exc:
        Path(error_file).write_text(f"{type(exc).__name__}: {exc}")
        os._exit(1)
    os._exit(0)


def _die_with_parent(parent: int) -> None:
    """A parent killed with SIGKILL cannot stop us: a watcher thread ends our whole group (litdata's workers too)
    as soon as the parent is gone, so nothing keeps working, or holding files, for a prepare that no longer exists."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="midtrain-prepare-parent-watch", daemon=True).start()


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Hidden folders an earlier prepare of ``target`` left behind when it was killed (``.NAME.partial-PID``,
    ``.NAME.stats-PID``, ``.NAME.old-PID``). The caller holds ``target``'s lock, so no live prepare writes them."""
    removed = []
    if target.parent.is_dir():
        mine = str(os.getpid())
        for child in target.parent.iterdir():
            kind, _, pid = child.name.rpartition("-")
            if kind in (f".{target.name}.partial", f".{target.name}.stats", f".{target.name}.old") and pid != mine:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def _kill_group(child) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.join()


class _stop_signals_raise:
    """While active, SIGTERM (and SIGINT) raise ``Interrupted`` in the main thread, so the caller cleans up."""

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._raise) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted(signum, f"{signal.Signals(signum).name} while preparing: the temporary folders were removed; "
                                  "a shard is published only once all its splits are complete.")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def publish_splits(written: list[tuple[Path, Path]]) -> None:
    """Rename every complete split into place, with stop signals held back meanwhile: all published, or none."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        for partial, target in written:
            if target.exists():
                retired = target.parent / f".{target.name}.old-{os.getpid()}"
                os.rename(target, retired)
                os.rename(partial, target)
                shutil.rmtree(retired)
            else:
                os.rename(partial, target)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)


def prepare_shard(
    output_dir: Path,
    tokenizer_dir: Path,
    inputs: list[str] | str | None = None,
    hf_dataset: str | None = None,
    hf_split: str = "train",
    hf_subset: str | None = None,
    text_key: str = "text",
    val_fraction: float = 0.0,
    val_output_dir: Path | None = None,
    num_workers: int = 1,
    batch_size: int = 256,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overwrite: bool = False,
    min_part_bytes: int = MIN_PART_BYTES,
) -> list[dict]:
    """Tokenize raw text into one shard (EOS after every document), with an optional held-out shard.

    Returns the manifest of each split written.

    Args:
        output_dir: The shard folder to write, e.g. ``data/train/c1`` (refused if not empty, unless ``overwrite``).
        tokenizer_dir: A litgpt checkpoint or tokenizer folder (``tokenizer.json`` or ``tokenizer.model``).
        inputs: Files, globs or folders of ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet`` or ``.txt``.
        hf_dataset: Instead of ``inputs``: a Hugging Face dataset name or a local ``save_to_disk`` folder.
        hf_split: Split of ``hf_dataset``.
        hf_subset: Config (subset) name of ``hf_dataset``.
        text_key: The JSON key or column holding the text (``.txt`` files are one document each).
        val_fraction: Share of documents held out into ``val_output_dir`` (chosen by a hash of each document's place:
            its file below the inputs' common folder and its position, wherever the files are).
        val_output_dir: Where the held-out shard goes; default: ``<root>/val/<name>`` for ``<root>/train/<name>``.
        num_workers: Tokenizer processes.
        batch_size: Documents encoded per batch.
        chunk_tokens: Tokens per chunk file.
        overwrite: Replace a non-empty ``output_dir`` (atomically, once the new shard is complete).
        min_part_bytes: A ``.jsonl`` or ``.parquet`` file bigger than its share of the work is cut into parts of at
            least this many bytes, read by several workers (the held-out split is the same however it is cut).
    """
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    output_dir = Path(output_dir)
    tokenizer_dir = Path(tokenizer_dir)
    if not (tokenizer_dir / "tokenizer.json").is_file() and not (tokenizer_dir / "tokenizer.model").is_file():
        raise ConfigError(
            f"--tokenizer_dir={str(tokenizer_dir)!r} has no tokenizer.json or tokenizer.model. Point it at a litgpt "
            "checkpoint or tokenizer folder."
        )
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"--val_fraction={val_fraction!r} must be at least 0 and below 1, e.g. 0.01.")
    for flag, value in (("--num_workers", num_workers), ("--batch_size", batch_size), ("--chunk_tokens", chunk_tokens),
                        ("--min_part_bytes", min_part_bytes)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{flag}={value!r} must be a positive integer.")
    if bool(inputs) == bool(hf_dataset):
        raise ConfigError("give exactly one of --inputs (files, globs, folders) and --hf_dataset.")
    if hf_dataset:
        dataset = load_hf_dataset(hf_dataset, hf_split, hf_subset)
        if text_key not in dataset.column_names:
            raise ConfigError(f"--text_key={text_key!r} is not a column of {hf_dataset} (columns: {', '.join(dataset.column_names)}).")
        units = [(f"{hf_dataset}:{hf_split}:{i}", i, min(i + HF_ROWS_PER_UNIT, len(dataset))) for i in range(0, len(dataset), HF_ROWS_PER_UNIT)]
        hf = (hf_dataset, hf_split, hf_subset)
        described_inputs = [f"hf:{hf_dataset}:{hf_split}" + (f":{hf_subset}" if hf_subset else "")]
    else:
        files = expand_inputs(inputs)
        units = file_units(files, num_workers, min_part_bytes)
        hf = None
        described_inputs = [str(p) for p in files]
    targets = [("train", output_dir, "--output_dir")]
    if val_fraction > 0:
        val_output_dir = Path(val_output_dir) if val_output_dir is not None else default_val_output(output_dir)
        train_at, val_at = output_dir.absolute(), val_output_dir.absolute()
        if train_at == val_at or train_at in val_at.parents or val_at in train_at.parents:
            raise ConfigError(f"--val_output_dir={str(val_output_dir)!r} is --output_dir={str(output_dir)!r} or inside "
                              "it (or it inside the other): the held-out shard needs a folder of its own, e.g. "
                              "data/val/c1 beside data/train/c1.")
        targets.append(("val", val_output_dir, "--val_output_dir"))
    for _, target, flag in targets:
        check_output(target, flag, overwrite)
    encoder = EncoderSpec.from_tokenizer_dir(tokenizer_dir)
    manifest = {
        "inputs": described_inputs,
        "text_key": text_key,
        "tokenizer_dir": str(tokenizer_dir),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer_dir),
        "vocab_size": encoder.vocab_size,
        "val_fraction": val_fraction,
        "eos_after_every_document": True,
        # which documents are held out: a hash of (file below the inputs' common folder, position in the file), the
        # position being the 0-based line (JSONL) or row (Parquet) number; earlier versions counted documents
        "held_out_key": "file and line/row number",
    }
    records: list[dict] = []
    locks = [FolderLock(target.parent / f".{target.name}.lock", flag, target, "prepare") for _, target, flag in targets]
    written: list[tuple[Path, Path]] = []
    with _stop_signals_raise():  # Ctrl-C or SIGTERM: the temporary folders go, nothing half-done is published
        try:
            for lock in locks:
                lock.acquire()
            for _, target, _ in targets:
                for stale in remove_stale_temporaries(target):
                    log.info("Removed %s, left behind by an earlier prepare that was killed", stale)
            for split, target, _ in targets:
                fn = TokenizeUnit(encoder, text_key, split, val_fraction, batch_size,
                                  str(target.parent / f".{target.name}.stats-{os.getpid()}"), hf)
                partial, record = write_split(units, fn, target, num_workers, chunk_tokens, manifest)
                written.append((partial, target))
                records.append(record)
            publish_splits(written)
        except BaseException:
            for partial, _ in written:
                shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            for lock in locks:
                lock.release()
    for (split, target, _), record in zip(targets, records):
        log.info("Wrote %s split: %s documents, %s tokens -> %s", split, f"{record['documents']:,}",
                 f"{record['tokens']:,}", target)
    return records
