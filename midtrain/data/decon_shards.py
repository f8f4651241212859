"""Decontaminating shards: their documents read back as ``prepare`` wrote them (one litdata item per document, in
order), decoded with the shard's tokenizer and matched against an evaluation index; clean copies written without
the contaminated documents, in the same layout, with the decontamination in each manifest.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from midtrain.data.content import CHUNK_HASHES_KEY, MANIFEST_FILE, chunk_hashes
from midtrain.data.decon import DECON_KEY, EvalIndex
from midtrain.data.discovery import INDEX_FILE, Shard, read_shard
from midtrain.errors import ConfigError, DataError
from midtrain.tokenizer import decode_texts

DECODE_BATCH = 256
DEFAULT_CHUNK_TOKENS = 1 << 24


@dataclass
class ShardResult:
    shard: Shard
    documents: int = 0
    tokens: int = 0
    found: dict[int, dict[int, float]] = field(default_factory=dict)
    """document index -> {item id: overlap} for every contaminated document."""
    removed_tokens: int = 0
    examples: list[tuple[int, int, str]] = field(default_factory=list)
    """(document index, item id, the document's text) of the first contaminated documents, for the report."""


def open_shard(path: Path, flag: str) -> tuple[Shard, dict]:
    """A shard folder and its manifest; ``ConfigError`` naming ``flag`` for a folder that is no shard, or one whose
    items are not documents (written by another tool than ``prepare``)."""
    path = Path(path)
    if not (path / INDEX_FILE).is_file():
        raise ConfigError(f"{flag}: {path} is not a shard (no {INDEX_FILE}). Name shard folders such as "
                          "DATA/train/q1.")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{flag}: {path} has no readable {MANIFEST_FILE}, so its document boundaries and tokenizer "
                          "are unknown (a shard written by another tool). Prepare it with 'midtrain prepare'.") \
            from None
    if not manifest.get("eos_after_every_document"):
        raise ConfigError(f"{flag}: {path}'s manifest does not say each item is one document. Prepare it again with "
                          "'midtrain prepare'.")
    shard = read_shard(path, path.name, path.name)
    if shard.data_format.split(":")[0] != "no_header_tensor":
        raise ConfigError(f"{flag}: {path} stores {shard.data_format} items, not token documents. Prepare it with "
                          "'midtrain prepare'.")
    return shard, manifest


def documents(shard: Shard) -> Iterator[np.ndarray]:
    """The shard's documents in order: each litdata item of its chunk files (the chunk's header holds the item
    count and each item's byte offset)."""
    from midtrain.data.shard_reader import _numpy_dtype

    dtype = _numpy_dtype(shard.data_format)
    for name, expected in zip(shard.chunk_files, shard.chunk_items, strict=True):
        raw = np.fromfile(shard.path / name, dtype=np.uint8)
        count = int(np.frombuffer(raw, dtype=np.uint32, count=1)[0]) if len(raw) >= 4 else -1
        if count != expected:
            raise DataError(f"{shard.path / name}: its header says {count} items where index.json says {expected}; "
                            "the chunk is damaged. Prepare the shard again.")
        offsets = np.frombuffer(raw, dtype=np.uint32, count=count + 1, offset=4)
        for start, end in zip(offsets[:-1], offsets[1:], strict=True):
            yield np.frombuffer(raw, dtype=dtype, count=(int(end) - int(start)) // dtype.itemsize, offset=int(start))


def scan(shard: Shard, tokenizer, index: EvalIndex, examples: int = 5) -> ShardResult:
    """Every document of the shard matched against the index (the texts of the first ``examples`` found kept)."""
    result = ShardResult(shard)
    batch: list[np.ndarray] = []

    def flush() -> None:
        for document, text in zip(batch, decode_texts(tokenizer, batch), strict=True):
            found = index.found_in(text)
            if found:
                result.found[result.documents] = found
                result.removed_tokens += len(document)
                if len(result.examples) < examples:
                    result.examples.append((result.documents, max(found, key=found.get), text))
            result.documents += 1
            result.tokens += len(document)
        batch.clear()

    for document in documents(shard):
        batch.append(document)
        if len(batch) == DECODE_BATCH:
            flush()
    flush()
    return result


def clean_path(shard_path: Path, clean_root: Path) -> Path:
    """Where a shard's clean copy goes: ``CLEAN_ROOT/train/q1`` for ``DATA/train/q1`` (the split folder kept, so the
    clean root is a data root), else ``CLEAN_ROOT/q1``."""
    parent = shard_path.resolve().parent.name
    return clean_root / parent / shard_path.name if parent in ("train", "val") else clean_root / shard_path.name


def write_clean(result: ShardResult, manifest: dict, target: Path, record: dict) -> dict:
    """The shard without its contaminated documents, as litdata's writer lays out tokens, with its manifest (the
    original's, counts updated, ``decontamination`` added). Returns the manifest written."""
    import torch
    from litdata import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    target.mkdir(parents=True)
    writer = BinaryWriter(str(target), chunk_size=DEFAULT_CHUNK_TOKENS, item_loader=TokensLoader())
    kept, tokens, largest = 0, 0, 0
    for k, document in enumerate(documents(result.shard)):
        if k in result.found:
            continue
        writer[kept] = torch.from_numpy(document.astype(np.int32, copy=False))
        kept += 1
        tokens += len(document)
        largest = max(largest, int(document.max()) if len(document) else 0)
    if kept == 0:
        raise DataError(f"every document of {result.shard.path} is contaminated: a clean copy would be empty. Drop the "
                        "shard from the mixture instead.")
    writer.done()
    writer.merge()
    index = json.loads((target / INDEX_FILE).read_text())
    written = {**manifest, "documents": kept, "tokens": tokens, "max_token_id": largest,
               CHUNK_HASHES_KEY: chunk_hashes(target, [c["filename"] for c in index["chunks"]]),
               DECON_KEY: {**record, "from": str(result.shard.path.resolve()),
                           "documents_removed": len(result.found), "tokens_removed": result.removed_tokens,
                           "documents_before": result.documents}}
    (target / MANIFEST_FILE).write_text(json.dumps(written, indent=2))
    return written


def check_clean_root(clean_root: Path, shard_paths: list[Path], flag: str = "--write_clean") -> Path:
    """A new folder, outside every input shard's data root: a clean root overwrites nothing and is never read as
    its own input."""
    clean_root = Path(clean_root)
    if clean_root.exists() and (not clean_root.is_dir() or any(clean_root.iterdir())):
        raise ConfigError(f"{flag}={str(clean_root)!r} exists and is not empty; clean shards go to a new data root "
                          "and overwrite nothing. Name a new folder.")
    real = clean_root.resolve()
    for path in shard_paths:
        root = Path(path).resolve().parent
        root = root.parent if root.name in ("train", "val") else root
        if real == root or root in real.parents:
            raise ConfigError(f"{flag}={str(clean_root)!r} lies inside the data root {root} of {path}: the clean "
                              "shards would be discovered as more data of that root. Name a folder outside it.")
    return clean_root


def publish_clean(staging: Path, clean_root: Path) -> None:
    """All clean shards at once, or none (the staging folder renamed into place)."""
    from midtrain.publish import publish

    clean_root.parent.mkdir(parents=True, exist_ok=True)
    if clean_root.exists():
        clean_root.rmdir()  # empty (checked before)
    try:
        publish(staging, clean_root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def decontamination_record(shards) -> dict[str, dict | None]:
    """Per shard id: what its manifest says it was decontaminated against (sources with their hashes, the rule's
    index, documents removed), None for a shard never decontaminated. What ``run.json`` keeps of the shards a run
    read, and what ``analyze`` and ``recommend`` check a target against."""
    out = {}
    for shard in shards:
        try:
            record = json.loads((shard.path / MANIFEST_FILE).read_text()).get(DECON_KEY)
        except (OSError, ValueError, AttributeError):
            record = None
        out[shard.id] = None if not isinstance(record, dict) else {
            "sources": [{"name": s.get("name"), "sha256": s.get("sha256")} for s in record.get("sources", [])],
            "index": record.get("index"), "policy": record.get("policy"),
            "documents_removed": record.get("documents_removed")}
    return out
