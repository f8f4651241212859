"""Decontamination matching (pure logic, numpy only): which evaluation items a training document holds.

Text is normalised to words: Unicode NFKC, lower case, every run of letters and digits a word (punctuation,
whitespace and case do not count). An item of ``N_WORDS`` words or more (13, the word n-gram of OLMo 3's and Marin's
decontamination) is *found* in a document when at least ``FOUND_FRACTION`` (half) of its distinct 13-grams occur in
the document, so a copy inside a longer document, or with a few words changed, is found, and a document that shares
a phrase or two is not. An item of ``MIN_SHORT_WORDS`` to 12 words (a short question, an answer) is found only as
a whole: its full word sequence in the document. An item under ``MIN_SHORT_WORDS`` words cannot be told from common
phrases and is reported as too short, never matched.

An n-gram is a 64-bit hash: each word's CRC-32 (stable across processes, so an index can be cached) combined
polynomially over the window, computed for a whole document with numpy. The index is the sorted array of the
items' n-gram hashes with the item each belongs to; a document's n-grams are looked up with one binary search.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_WORDS = 13
MIN_SHORT_WORDS = 5
FOUND_FRACTION = 0.5
RULE = (f"word {N_WORDS}-grams of NFKC-lower-cased letter/digit runs; an item of >= {N_WORDS} words is found when "
        f">= {FOUND_FRACTION:.0%} of its distinct {N_WORDS}-grams are in the document; an item of {MIN_SHORT_WORDS}-"
        f"{N_WORDS - 1} words when its whole word sequence is; shorter items are not matched")
POLICY_VERSION = "midtrain.decon/1"
DECON_KEY = "decontamination"
"""The manifest key of a decontaminated shard's record (and ``run.json``'s of the shards a run read)."""
_WORD = re.compile(r"[^\W_]+")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hash of a window keeps every word's bits


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def word_hashes(text: str) -> np.ndarray:
    return np.fromiter((zlib.crc32(w.encode()) for w in words(text)), dtype=np.uint64)


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """The hash of every window of ``n`` words (none when there are fewer words)."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    out = hashes[:count].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            out *= _MULTIPLIER
            out += hashes[k:k + count] + np.uint64(k)
    return out


@dataclass(frozen=True)
class Item:
    source: str
    index: int
    text: str


class EvalIndex:
    """The n-grams of every item of the sources: built once, looked up per document."""

    def __init__(self, keys: np.ndarray, owners: np.ndarray, grams: np.ndarray, short_lengths: Sequence[int]) -> None:
        self.keys, self.owners, self.grams = keys, owners, grams
        """``grams``: each item's distinct n-grams (1 for a short item, matched whole; 0 for one too short)."""
        self.short_lengths = tuple(short_lengths)
        with np.errstate(invalid="ignore"):
            self.needed = np.ceil(FOUND_FRACTION * grams).astype(np.int64)

    @classmethod
    def build(cls, items: Sequence[Item]) -> EvalIndex:
        keys, owners = [], []
        counts = np.zeros(len(items), dtype=np.int64)
        short = set()
        for item_id, item in enumerate(items):
            hashes = word_hashes(item.text)
            if len(hashes) >= N_WORDS:
                grams = np.unique(ngram_hashes(hashes, N_WORDS))
            elif len(hashes) >= MIN_SHORT_WORDS:
                grams = ngram_hashes(hashes, len(hashes))
                short.add(len(hashes))
            else:
                continue  # too short to match: no n-grams
            counts[item_id] = len(grams)
            keys.append(grams)
            owners.append(np.full(len(grams), item_id, dtype=np.int64))
        all_keys = np.concatenate(keys) if keys else np.empty(0, dtype=np.uint64)
        all_owners = np.concatenate(owners) if owners else np.empty(0, dtype=np.int64)
        order = np.argsort(all_keys, kind="stable")
        return cls(all_keys[order], all_owners[order], counts, sorted(short))

    @property
    def too_short(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.grams == 0)]

    def found_in(self, text: str) -> dict[int, float]:
        """The items found in one document: item id -> the fraction of its n-grams (1.0 for a short item) present."""
        hashes = word_hashes(text)
        if not len(self.keys) or len(hashes) < MIN_SHORT_WORDS:
            return {}
        hits = []
        for n in (N_WORDS, *self.short_lengths):
            grams = np.unique(ngram_hashes(hashes, n))
            if not len(grams):
                continue
            left = np.searchsorted(self.keys, grams, side="left")
            right = np.searchsorted(self.keys, grams, side="right")
            present = right > left
            if present.any():  # every owner of every present n-gram, gathered without a Python loop
                lo, width = left[present], (right - left)[present]
                starts = np.repeat(lo - np.cumsum(width) + width, width)
                hits.append(self.owners[starts + np.arange(int(width.sum()))])
        if not hits:
            return {}
        # counted over the items hit only: the cost per document does not grow with the number of items
        owners, counts = np.unique(np.concatenate(hits), return_counts=True)
        found = counts >= self.needed[owners]
        return {int(i): float(c) / float(self.grams[i]) for i, c in zip(owners[found], counts[found], strict=True)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys, "owners": self.owners, "grams": self.grams,
                "short_lengths": np.asarray(self.short_lengths, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays) -> EvalIndex:
        return cls(arrays["keys"], arrays["owners"], arrays["grams"], [int(n) for n in arrays["short_lengths"]])


def sources_digest(sources: Sequence[tuple[str, str]]) -> str:
    """The identity of a set of sources (name, content hash) under this policy: the index's cache key and what a
    decontaminated shard records."""
    payload = "\n".join(f"{name}\t{digest}" for name, digest in sorted(sources))
    return hashlib.sha256(f"{POLICY_VERSION}\n{RULE}\n{payload}".encode()).hexdigest()[:16]


def policy_record(digest: str, sources: Sequence[tuple[str, str, str, int]]) -> dict:
    """What a report and a decontaminated shard's manifest say of the check: the policy, its rule and parameters,
    the index, and each source (name, location, sha256, items)."""
    return {"policy": POLICY_VERSION, "rule": RULE, "n": N_WORDS, "min_short_words": MIN_SHORT_WORDS,
            "found_fraction": FOUND_FRACTION, "index": digest,
            "sources": [{"name": n, "location": where, "sha256": sha, "items": items}
                        for n, where, sha, items in sources]}


def cache_folder(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "midtrain" / "decon"


def cached_index(items: Sequence[Item], digest: str, cache_dir: Path | None,
                 fallback_dir: Path | None = None) -> tuple[EvalIndex, bool, Path | None]:
    """(the sources' index, whether it came from the cache, the file it is in): from the cache when built before
    (same sources, same policy), else built and kept there (or in ``fallback_dir`` where the cache cannot be
    written; None when neither can)."""
    path = cache_folder(cache_dir) / f"{digest}.npz"
    try:
        with np.load(path) as arrays:
            index = EvalIndex.from_arrays({k: arrays[k] for k in arrays.files})
        if len(index.grams) == len(items):
            return index, True, path
    except (OSError, ValueError, KeyError):
        pass  # none yet, or unreadable: built again
    index = EvalIndex.build(items)
    for folder in (path.parent, fallback_dir):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            staging = folder / f".{digest}.{os.getpid()}.npz"
            np.savez(staging, **index.arrays())
            os.replace(staging, folder / f"{digest}.npz")
            return index, False, folder / f"{digest}.npz"
        except OSError:  # a read-only home: kept elsewhere, or only not kept
            continue
    return index, False, None


_LOADED: dict[str, EvalIndex] = {}


def load_index(path: str) -> EvalIndex:
    """An index file read once per process (a tokenizer worker filters every document with it)."""
    if path not in _LOADED:
        with np.load(path) as arrays:
            _LOADED[path] = EvalIndex.from_arrays({k: arrays[k] for k in arrays.files})
    return _LOADED[path]
