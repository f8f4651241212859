"""Are the shards a checkpoint read still the ones it read? (pure file logic, no torch)

A run's cursors index into each shard's samples, so a shard re-prepared with the same sizes (documents reordered)
or a chunk rewritten in place would silently point them at other documents. Every checkpoint therefore records,
for each shard read so far, its *identity*: the layout fingerprint (file names, dims, items), the SHA-256 of its
``midtrain_manifest.json`` (which ``midtrain prepare`` writes with every chunk's SHA-256) and every chunk file's
modification time. Checking it at resume costs what discovery already does (one ``stat`` per chunk) plus one small
read per shard: only a chunk whose modification time changed is hashed again and compared with the manifest, so a
data root copied or moved with equal contents resumes normally, and one that changed is named.
"""

from __future__ import annotations

import array
import datetime
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from midtrain.data.discovery import Shard

MANIFEST_FILE = "midtrain_manifest.json"
CHUNK_HASHES_KEY = "chunk_sha256"
IDENTITY_FORMAT = "midtrain.data_identity/1"
_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def chunk_hashes(folder: Path, files: Iterable[str]) -> dict[str, str]:
    """SHA-256 of each chunk file, for the manifest ``midtrain prepare`` writes."""
    return {name: file_sha256(folder / name) for name in files}


def _manifest_bytes(shard: Shard) -> bytes | None:
    try:
        return (shard.path / MANIFEST_FILE).read_bytes()
    except OSError:
        return None


def shard_identity(shard: Shard) -> dict:
    """What a checkpoint records of one shard it has read."""
    raw = _manifest_bytes(shard)
    return {"fingerprint": shard.fingerprint,
            "manifest_sha256": None if raw is None else hashlib.sha256(raw).hexdigest(),
            "mtime_ns": array.array("q", shard.chunk_mtimes_ns).tobytes(),
            "ctime_ns": array.array("q", shard.chunk_ctimes_ns).tobytes()}


def _when(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).isoformat(timespec="seconds")


def what_changed(shard: Shard, record: Mapping) -> str | None:
    """How ``shard`` differs from the identity a checkpoint recorded of it, or None if it holds the same tokens."""
    if record.get("fingerprint") != shard.fingerprint:
        return "its layout changed (chunk files, token counts or format differ from the checkpoint's)"
    raw = _manifest_bytes(shard)
    now = None if raw is None else hashlib.sha256(raw).hexdigest()
    if now != record.get("manifest_sha256"):
        return ("its manifest changed (the shard was prepared again)" if now and record.get("manifest_sha256")
                else f"its {MANIFEST_FILE} was {'added' if now else 'removed'}")
    saved, saved_ctimes = array.array("q"), array.array("q")
    saved.frombytes(record.get("mtime_ns") or b"")
    saved_ctimes.frombytes(record.get("ctime_ns") or b"")  # absent in checkpoints written before it was recorded
    touched = [k for k, (old, new) in enumerate(zip(saved, shard.chunk_mtimes_ns, strict=False)) if old != new]
    hashes = {}
    if raw is not None:
        try:
            hashes = json.loads(raw).get(CHUNK_HASHES_KEY) or {}
        except (ValueError, AttributeError):
            hashes = {}
    if hashes:  # a write since the checkpoint, whatever the modification time says: verified against the manifest
        touched += [k for k, (old, new) in enumerate(zip(saved_ctimes, shard.chunk_ctimes_ns, strict=False))
                    if old != new and k not in touched]
    if not touched:
        return None
    for k in touched:
        name = shard.chunk_files[k]
        if name not in hashes:
            return (f"chunk {name} was modified ({_when(shard.chunk_mtimes_ns[k])}, the checkpoint saw "
                    f"{_when(saved[k])}) and the shard records no content hashes to tell whether it still holds the "
                    "same "
                    "tokens (it was not written by this version of 'midtrain prepare')")
        if file_sha256(shard.path / name) != hashes[name]:
            return f"chunk {name} holds other bytes than its manifest records (rewritten in place)"
    return None


@dataclass
class DataChanges:
    """What differs between the shards a checkpoint read and the shards on disk now."""

    changed: list[str] = field(default_factory=list)
    """Shards read before whose tokens are no longer the same: 'id (path): why'."""
    removed: list[str] = field(default_factory=list)
    """Shards read before that are gone from the data root."""
    added: list[str] = field(default_factory=list)
    """Shards in the mixture now that were not in the data root when the checkpoint was saved."""
    unchecked: bool = False
    """The checkpoint records no identity (written before midtrain recorded it): contents were not compared."""

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed or self.added)

    def lines(self) -> list[str]:
        return ([f"changed: {c}" for c in self.changed] + [f"removed: {r} (read by the checkpoint's run)" for r in
                self.removed] + [f"added: {a} (now in the mixture, not in the data root at the checkpoint)" for a in
                                 self.added])


def compare(saved_state: Mapping, shards: Sequence[Shard], used_ids: Iterable[str]) -> DataChanges:
    """``saved_state``: a loader state (``midtrain.data.stream``) with its ``data_identity``; ``shards``: every shard
    discovered now; ``used_ids``: the shards the mixture reads now."""
    identity = saved_state.get("data_identity") if isinstance(saved_state, Mapping) else None
    if not isinstance(identity, Mapping) or identity.get("format") != IDENTITY_FORMAT:
        return DataChanges(unchecked=True)
    by_id = {s.id: s for s in shards}
    changes = DataChanges()
    for shard_id, record in identity["shards"].items():
        if shard_id in by_id:
            why = what_changed(by_id[shard_id], record)
            if why:
                changes.changed.append(f"{shard_id} ({by_id[shard_id].path}): {why}")
        else:
            changes.removed.append(shard_id)
    on_disk = set(identity.get("on_disk", ()))
    changes.added = [i for i in used_ids if i not in on_disk and i in by_id]
    return changes


def identity_record(read: Mapping[str, dict], on_disk: Iterable[str]) -> dict:
    """The ``data_identity`` a loader state carries: the identity of every shard read, and every shard id on disk."""
    return {"format": IDENTITY_FORMAT, "on_disk": list(on_disk), "shards": dict(read)}


def set_fingerprint(shards: Sequence[Shard]) -> str:
    """One hash of a fixed set of shards' identities (a validation set): another set, or changed contents, gives
    another value."""
    parts = []
    for shard in shards:
        record = shard_identity(shard)  # a copied root keeps its manifests (and so this value); a plain one its times
        parts.append([shard.id, record["fingerprint"], record["manifest_sha256"] or record["mtime_ns"].hex()])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
