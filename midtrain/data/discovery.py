"""Shard discovery: find the litdata token shards under a data root and read their exact sizes.

A shard is a folder written by ``litdata.optimize`` with ``TokensLoader``: an ``index.json`` plus
``chunk-*.bin`` files. Sizes come from ``index.json`` (tokens = sum of chunk ``dim``), never estimated.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from midtrain.data.domains import MAIN_DOMAIN, DomainRegistry
from midtrain.errors import DataError, Problems

_NUMBERED_RE = re.compile(r"^\d+$")
_TYPED_RE = re.compile(r"^([a-z]+)(\d+)$")
INDEX_FILE = "index.json"
_SUPPORTED_FORMATS = ("no_header_tensor", "no_header_numpy")


@dataclass(frozen=True)
class Shard:
    """One token shard on disk.

    ``chunk_tokens[i]`` is the number of tokens in chunk file ``chunk_files[i]``; a training block of L tokens
    never crosses a chunk, so the shard holds ``sum(d // L)`` blocks of length L.
    """

    id: str
    domain: str
    path: Path
    chunk_files: tuple[str, ...]
    chunk_tokens: tuple[int, ...]
    chunk_items: tuple[int, ...]
    data_format: str
    fingerprint: str
    """Of the layout that decides which tokens sit at which sample index (file names, dims, items, format)."""
    chunk_mtimes_ns: tuple[int, ...] = ()
    """Each chunk file's modification time when discovered: a resume re-hashes only chunks whose time changed."""
    chunk_ctimes_ns: tuple[int, ...] = ()
    """Each chunk file's status-change time when discovered: any write sets it, and no copy tool restores it (a chunk
    rewritten in place with its modification time put back, ``cp -p``/``rsync -a``/``touch -r``, still shows)."""

    @property
    def tokens(self) -> int:
        return sum(self.chunk_tokens)

    def samples(self, block_tokens: int) -> int:
        """Number of whole blocks of ``block_tokens`` tokens (what one pass over the shard yields)."""
        return sum(dim // block_tokens for dim in self.chunk_tokens)


def shard_sort_key(shard_id: str) -> tuple:
    """Stable order: main shards by number, then typed shards by prefix and number (c2 before c10)."""
    if shard_id.startswith(f"{MAIN_DOMAIN}/"):
        return (0, "", int(shard_id.split("/", 1)[1]))
    match = _TYPED_RE.match(shard_id)
    if match:
        return (1, match.group(1), int(match.group(2)))
    return (2, shard_id, 0)


def read_shard(path: Path, shard_id: str, domain: str) -> Shard:
    """Read one shard's ``index.json``; raises DataError saying what is wrong with it."""
    index_path = path / INDEX_FILE
    if not index_path.is_file():
        raise DataError(
            f"folder {path} looks like shard {shard_id!r} but has no {INDEX_FILE}. "
            "Write it with 'midtrain prepare', or move the folder out of the data root."
        )
    raw = index_path.read_bytes()
    try:
        index = json.loads(raw)
        chunks = index["chunks"]
        config = index["config"]
        files = tuple(str(c["filename"]) for c in chunks)
        dims = tuple(int(c["dim"]) if c["dim"] is not None else -1 for c in chunks)
        items = tuple(int(c["chunk_size"]) for c in chunks)
        data_format = list(config["data_format"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{index_path} is not a valid litdata index ({type(exc).__name__}: {exc}). "
            "Re-create the shard with 'midtrain prepare' (or litdata.optimize with TokensLoader)."
        ) from None
    if config.get("item_loader") != "TokensLoader" or len(data_format) != 1 or any(d < 0 for d in dims):
        raise DataError(
            f"{index_path} is not a token shard (item_loader={config.get('item_loader')!r}, "
            f"data_format={data_format}). Write token shards with 'midtrain prepare' or "
            "litdata.optimize(..., item_loader=TokensLoader())."
        )
    if data_format[0].split(":")[0] not in _SUPPORTED_FORMATS or config.get("compression"):
        raise DataError(
            f"{index_path} uses data format {data_format[0]!r} with compression {config.get('compression')!r}; "
            "midtrain reads uncompressed token chunks only. Re-create it without compression."
        )
    if sum(dims) == 0:
        raise DataError(f"shard {shard_id!r} at {path} holds no tokens. Re-create it or remove the folder.")
    folder = str(path)
    sizes, mtimes, ctimes, missing = [], [], [], []
    for name in files:  # one stat per chunk (no pathlib): discovery of 10,000 shards stays within seconds
        try:
            status = os.stat(os.path.join(folder, name))
        except OSError:
            missing.append(name)
            continue
        sizes.append(status.st_size)
        mtimes.append(status.st_mtime_ns)
        ctimes.append(status.st_ctime_ns)
    if missing:
        raise DataError(
            f"shard {shard_id!r} at {path} lists {len(missing)} chunk file(s) that do not exist "
            f"(first: {missing[0]}). The shard is incomplete: re-create it with 'midtrain prepare'."
        )
    recorded_bytes = tuple(c.get("chunk_bytes") for c in chunks)
    problem = check_chunk_sizes(files, sizes, dims, items, recorded_bytes)
    if problem:
        raise DataError(f"shard {shard_id!r} at {path}: {problem}. The shard is damaged: re-create it with "
                        "'midtrain prepare' (or restore the file).")
    # The fingerprint covers what decides which tokens sit at which sample index, not timestamps.
    identity = json.dumps([files, dims, items, data_format], separators=(",", ":"))
    fingerprint = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return Shard(shard_id, domain, path, files, dims, items, data_format[0], fingerprint, tuple(mtimes),
                 tuple(ctimes))


def check_chunk_sizes(files: tuple[str, ...], sizes: list[int], dims: tuple[int, ...], items: tuple[int, ...],
                      recorded_bytes: tuple[int | None, ...]) -> str | None:
    """What is wrong with the chunk files' sizes (one ``stat`` each, no reads), or None. A token chunk is a header of
    ``items + 2`` uint32 values then ``dim`` tokens of one width, so its size must be the size ``index.json``
    records and ``header + dim × width`` for a width shared by every chunk."""
    widths = set()
    for name, size, dim, count, recorded in zip(files, sizes, dims, items, recorded_bytes, strict=True):
        if recorded is not None and size != recorded:
            return (f"chunk {name} holds {size:,} bytes but index.json records {recorded:,} (truncated or replaced "
                    "after it was written)")
        body = size - (count + 2) * 4
        if dim and (body <= 0 or body % dim):
            return (f"chunk {name} holds {size:,} bytes, which is no whole number of tokens for the dim {dim:,} that "
                    "index.json records (a wrong dim, or a truncated file)")
        if dim:
            widths.add(body // dim)
    if len(widths) > 1 or widths - {1, 2, 4, 8}:
        return f"its chunks imply token widths of {sorted(widths)} bytes; index.json's dims do not match the files"
    return None


def classify_folder(name: str, registry: DomainRegistry) -> tuple[str, str] | None | str:
    """(shard id, domain) for a shard-like folder name, None for an unrelated folder,
    or the unregistered prefix (a str) for a typed-looking folder whose prefix is unknown."""
    if _NUMBERED_RE.match(name):
        return (f"{MAIN_DOMAIN}/{int(name)}", MAIN_DOMAIN)
    match = _TYPED_RE.match(name)
    if not match:
        return None
    domain = registry.domain_of_prefix(match.group(1))
    if domain is None:
        return match.group(1)
    return (f"{match.group(1)}{int(match.group(2))}", domain)


def discover_shards(root: Path, registry: DomainRegistry, flag: str = "--data.data_path") -> list[Shard]:
    """Every shard under ``root`` in a stable order. Problems with shard-like folders are collected and raised
    together as one DataError; folders that do not look like shards (``val``, ``.cache``) are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data root {root} ({flag}) does not exist or is not a folder. "
            f"Point {flag} at a folder of shards, created with 'midtrain prepare'."
        )
    problems = Problems()
    shards: list[Shard] = []
    seen: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        kind = classify_folder(child.name, registry)
        if kind is None:
            continue
        if child.is_symlink() and not _resolves(child):
            problems.add(f"{child} looks like a shard but is a broken symbolic link (or a link loop) to "
                         f"{os.readlink(child)}. Fix the link or remove it.")
            continue
        if not child.is_dir():
            continue
        if isinstance(kind, str):
            known = ", ".join(f"{p}={d}" for p, d in registry.prefixes.items())
            problems.add(
                f"folder {child} looks like a typed shard but prefix {kind!r} is not registered (known: {known}). "
                f"Register it with --data.domain_prefixes '{{{kind}: <domain>}}' or rename the folder."
            )
            continue
        shard_id, domain = kind
        if shard_id in seen:
            problems.add(
                f"folders {seen[shard_id]} and {child} both name shard {shard_id!r}. "
                "Keep one of them (leading zeros do not make a new shard)."
            )
            continue
        seen[shard_id] = child
        try:
            shards.append(read_shard(child, shard_id, domain))
        except DataError as exc:
            problems.add(str(exc))
    problems.raise_if_any(DataError)
    if not shards:
        raise DataError(
            f"no shards under {root} ({flag}). Expected numbered folders (1, 2, ...) or typed folders "
            "(c1, m1, ...), each with an index.json; create them with 'midtrain prepare'."
        )
    shards.sort(key=lambda s: shard_sort_key(s.id))
    return shards


def _resolves(link: Path) -> bool:
    try:
        link.resolve(strict=True)
        return True
    except (OSError, RuntimeError):  # missing target, or a loop
        return False


def shards_at(path: Path, registry: DomainRegistry, domain: str | None, flag: str) -> list[Shard]:
    """The shards a path names: one shard folder (with ``index.json``), or every shard under a data root
    (only ``domain``'s, if given)."""
    path = Path(path)
    if (path / INDEX_FILE).is_file():
        return [read_shard(path, path.name, domain or path.name)]
    shards = [s for s in discover_shards(path, registry, flag=flag) if domain in (None, s.domain)]
    if not shards:
        raise DataError(f"{flag}: no {domain!r} shards under {path} (found other domains only).")
    return shards


def held_out_shards(root: Path, registry: DomainRegistry, flag: str = "--data.val_data_path") -> list[Shard]:
    """The held-out shards under a validation root. A root that is itself one dataset (an ``index.json`` inside,
    as the paper's C4 validation set) is the main domain's held-out set."""
    root = Path(root)
    if (root / INDEX_FILE).is_file():
        return [read_shard(root, f"{MAIN_DOMAIN}/1", MAIN_DOMAIN)]
    return discover_shards(root, registry, flag=flag)


def resolve_data_roots(data_path: Path, val_data_path: Path | None) -> tuple[Path, Path | None]:
    """(training root, validation root or None).

    As in the paper's code: with ``val_data_path`` set, ``data_path`` itself holds the training shards; without
    it, ``data_path/train`` and ``data_path/val`` are used. A ``data_path`` without a ``train`` folder holds the
    training shards directly and has no validation data.
    """
    data_path = Path(data_path)
    if val_data_path is not None:
        return data_path, Path(val_data_path)
    if (data_path / "train").is_dir():
        val = data_path / "val"
        return data_path / "train", val if val.is_dir() else None
    return data_path, None
