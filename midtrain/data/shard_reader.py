"""Read one shard as an endless sequence of fixed-length samples, pass after pass, each pass a fresh shuffle.

Position ``q`` of a shard's stream is sample ``q % M`` of pass ``q // M`` (M = samples per pass). A pass visits
the chunks in a permuted order and the items of each chunk in a permuted order, both seeded by (seed, shard id,
pass[, chunk]); memory stays O(chunks + items per chunk) however large the shard, and reads stay local.

A *reorder* ``(from_position, order_seed)`` (``data.order_seed``, a branch's data-order seed) reads the samples of
the shard not read yet in another order, exactly: the pass holding ``from_position`` keeps every chunk already begun
(and the rest of a chunk begun, in its order) and visits its untouched chunks in an order seeded by ``order_seed``,
their items too; later passes are fresh shuffles seeded by it. No sample is read twice in a pass, none skipped, and
the positions before ``from_position`` read what they read before. Reorders stack, each on the order before it.

Chunks are read in litdata's token chunk layout (a header of ``chunk_size + 2`` uint32 values, then the tokens),
from a bounded set of memory-mapped files.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
from collections import OrderedDict

import numpy as np

from midtrain.data.discovery import Shard
from midtrain.errors import DataError

_CACHED_CHUNK_ORDERS = 8
_REORDER_TAG = 0x0D0E  # seeds of a reorder's shuffles differ from the base shuffles' whatever the numbers
def _open_file_budget() -> int:
    """Half the process's file-handle limit, between 64 and 16,384 (loader workers each have their own). The soft
    limit is raised to the hard one first, as PyTorch's DataLoader docs advise: clusters often set the soft limit to
    1,024, which a data root of thousands of shards outgrows while the hard limit allows far more."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return max(64, min(16384, soft // 2 if soft != resource.RLIM_INFINITY else 16384))


class _OpenFiles:
    """A process-wide LRU of memory-mapped chunk files. Its capacity (the chunk files mapped at once, over all shards)
    is set at first use, from the process's file-handle limit (raised then, not when this module is imported). Each
    map holds a file handle, and a data root of 10,000 shards × many chunks would exhaust them if all stayed open; the
    least recently used are closed first. Mapping a file costs tens of microseconds (``mmap`` directly, not
    ``numpy.memmap``), reading a sample from a map no syscall."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.files: OrderedDict[str, mmap.mmap] = OrderedDict()
        self.owner = os.getpid()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._trim()

    def _trim(self) -> None:
        while self.capacity is not None and len(self.files) > self.capacity:
            mapped = self.files.popitem(last=False)[1]
            try:
                mapped.close()
            except BufferError:  # a sample still views it: it closes when that goes
                pass

    def get(self, path: str) -> mmap.mmap:
        if self.capacity is None:
            self.capacity = _open_file_budget()
        if self.owner != os.getpid():  # a forked worker: the parent's maps are its own to close
            self.files, self.owner = OrderedDict(), os.getpid()
        mapped = self.files.get(path)
        if mapped is None:
            handle = os.open(path, os.O_RDONLY)
            try:
                mapped = self.files[path] = mmap.mmap(handle, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(handle)  # the map keeps its own descriptor
            self._trim()
        else:
            self.files.move_to_end(path)
        return mapped


_OPEN_FILES = _OpenFiles()


def _numpy_dtype(data_format: str) -> np.dtype:
    from litdata.constants import _NUMPY_DTYPES_MAPPING, _TORCH_DTYPES_MAPPING

    serializer, index = data_format.split(":")
    if serializer == "no_header_numpy":
        return np.dtype(_NUMPY_DTYPES_MAPPING[int(index)])
    torch_dtype = _TORCH_DTYPES_MAPPING[int(index)]
    return np.dtype(str(torch_dtype).replace("torch.", ""))


def shard_key(shard_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(shard_id.encode(), digest_size=8).digest(), "big")


class ShardReader:
    """Samples of ``block_tokens`` tokens from one shard, addressed by stream position."""

    def __init__(self, shard: Shard, block_tokens: int, seed: int) -> None:
        self.shard = shard
        self.block_tokens = block_tokens
        self.seed = seed
        self.key = shard_key(shard.id)
        self.items_per_chunk = [dim // block_tokens for dim in shard.chunk_tokens]
        self.samples_per_pass = sum(self.items_per_chunk)
        self._natural_ends = np.cumsum(self.items_per_chunk).tolist()
        self.dtype = _numpy_dtype(shard.data_format)
        self._chunk_paths = [os.path.join(str(shard.path), name) for name in shard.chunk_files]
        # samples keep the shard's integer width (half the inter-process traffic of int64); unsigned types widen
        # to a signed one torch handles everywhere
        self.sample_dtype = {np.dtype("uint16"): np.dtype("int32"), np.dtype("uint32"): np.dtype("int64")}.get(
            self.dtype, self.dtype
        )
        self.reorders: list[tuple[int, int]] = []
        """(from position, order seed), in the order they were made (positions never decrease)."""
        self._pass = -1
        self._order: list[int] = []
        self._ends: list[int] = []
        self._item_orders: OrderedDict[tuple[int, int], list[int]] = OrderedDict()

    def set_reorders(self, reorders) -> None:
        self.reorders = [(int(f), int(seed)) for f, seed in reorders]
        self._pass, self._order, self._ends, self._item_orders = -1, [], [], OrderedDict()

    def __getstate__(self) -> dict:
        # memory maps and caches are per process: rebuilt lazily in each DataLoader worker
        state = self.__dict__.copy()
        state.update(_pass=-1, _order=[], _ends=[], _item_orders=OrderedDict())
        return state

    def _level(self, pass_index: int) -> int:
        """How many reorders govern a pass: those made in it or before."""
        return sum(1 for f, _ in self.reorders if f // self.samples_per_pass <= pass_index)

    def _rng(self, pass_index: int, level: int, *more: int) -> np.random.Generator:
        base = [self.seed, self.key % (1 << 63), pass_index, *more]
        return np.random.default_rng(base if level == 0 else [*base, self.reorders[level - 1][1], _REORDER_TAG])

    def _chunk_order(self, pass_index: int, level: int) -> tuple[list[int], set[int]]:
        """The chunks of a pass in visiting order under the first ``level`` reorders, and the chunks the last of them
        reshuffled in this pass (their items too)."""
        if level == 0 or self.reorders[level - 1][0] // self.samples_per_pass < pass_index:
            order = [int(c) for c in self._rng(pass_index, level).permutation(len(self.items_per_chunk))
                     if self.items_per_chunk[c] > 0]
            return order, set(order) if level else set()
        before, _ = self._chunk_order(pass_index, level - 1)
        within = self.reorders[level - 1][0] % self.samples_per_pass
        starts = [0, *np.cumsum([self.items_per_chunk[c] for c in before]).tolist()[:-1]]
        begun = bisect.bisect_left(starts, within)  # the chunks that start before the reorder's position
        rest = before[begun:]
        shuffled = [rest[i] for i in self._rng(pass_index, level).permutation(len(rest))]
        return before[:begun] + shuffled, set(rest)

    def _enter_pass(self, pass_index: int) -> None:
        order, _ = self._chunk_order(pass_index, self._level(pass_index))
        self._order = order
        self._ends = np.cumsum([self.items_per_chunk[c] for c in order]).tolist()
        self._pass = pass_index

    def _item_order(self, pass_index: int, chunk: int) -> list[int]:
        key = (pass_index, chunk)
        order = self._item_orders.get(key)
        if order is None:
            level = self._level(pass_index)
            while level and chunk not in self._chunk_order(pass_index, level)[1]:
                level -= 1  # a chunk begun before the reorder keeps the order it was begun in
            order = self._rng(pass_index, level, chunk + 1).permutation(self.items_per_chunk[chunk]).tolist()
            self._item_orders[key] = order
            if len(self._item_orders) > _CACHED_CHUNK_ORDERS:
                self._item_orders.popitem(last=False)
        return order

    def locate(self, position: int) -> tuple[int, int]:
        """(chunk index, item within chunk) of stream position ``position``."""
        pass_index, within = divmod(position, self.samples_per_pass)
        if pass_index != self._pass:
            self._enter_pass(pass_index)
        slot = bisect.bisect_right(self._ends, within)
        chunk = self._order[slot]
        offset = within - (self._ends[slot - 1] if slot else 0)
        return chunk, self._item_order(pass_index, chunk)[offset]

    def read(self, position: int) -> np.ndarray:
        return self._read_item(*self.locate(position))

    def read_natural(self, index: int) -> np.ndarray:
        """Sample ``index`` in on-disk order (chunk by chunk), for fixed validation sets."""
        chunk = bisect.bisect_right(self._natural_ends, index)
        return self._read_item(chunk, index - (self._natural_ends[chunk - 1] if chunk else 0))

    def _read_item(self, chunk: int, item: int) -> np.ndarray:
        width = self.dtype.itemsize
        offset = (self.shard.chunk_items[chunk] + 2) * 4 + item * self.block_tokens * width
        path = self._chunk_paths[chunk]
        mapped = _OPEN_FILES.get(path)
        if offset + self.block_tokens * width > len(mapped):
            raise DataError(f"shard {self.shard.id!r}: {path} ends before its sample {item:,} (the file shrank after "
                            "discovery). Re-create the shard.")
        view = np.frombuffer(mapped, dtype=self.dtype, count=self.block_tokens, offset=offset)
        sample = view.astype(self.sample_dtype)  # a copy: the map may close once no sample views it
        del view
        return sample
