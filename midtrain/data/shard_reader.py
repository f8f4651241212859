"""Read one shard as an endless sequence of fixed-length samples, pass after pass, each pass a fresh shuffle.

Position ``q`` of a shard's stream is sample ``q % M`` of pass ``q // M`` (M = samples per pass). A pass visits
the chunks in a permuted order and the items of each chunk in a permuted order, both seeded by (seed, shard id,
pass[, chunk]); memory stays O(chunks + items per chunk) however large the shard, and reads stay local.

Chunks are read in place (memory-mapped) in litdata's token chunk layout: a header of ``chunk_size + 2`` uint32
values, then the tokens.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import OrderedDict

import numpy as np

from midtrain.data.discovery import Shard

_CACHED_CHUNK_ORDERS = 8


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
        # samples keep the shard's integer width (half the inter-process traffic of int64); unsigned types widen
        # to a signed one torch handles everywhere
        self.sample_dtype = {np.dtype("uint16"): np.dtype("int32"), np.dtype("uint32"): np.dtype("int64")}.get(self.dtype, self.dtype)
        self._pass = -1
        self._order: list[int] = []
        self._ends: list[int] = []
        self._item_orders: OrderedDict[tuple[int, int], list[int]] = OrderedDict()
        self._maps: dict[int, np.memmap] = {}

    def __getstate__(self) -> dict:
        # memory maps and caches are per process: rebuilt lazily in each DataLoader worker
        state = self.__dict__.copy()
        state.update(_pass=-1, _order=[], _ends=[], _item_orders=OrderedDict(), _maps={})
        return state

    def _enter_pass(self, pass_index: int) -> None:
        rng = np.random.default_rng([self.seed, self.key % (1 << 63), pass_index])
        order = [int(c) for c in rng.permutation(len(self.items_per_chunk)) if self.items_per_chunk[c] > 0]
        self._order = order
        self._ends = np.cumsum([self.items_per_chunk[c] for c in order]).tolist()
        self._pass = pass_index

    def _item_order(self, pass_index: int, chunk: int) -> list[int]:
        key = (pass_index, chunk)
        order = self._item_orders.get(key)
        if order is None:
            rng = np.random.default_rng([self.seed, self.key % (1 << 63), pass_index, chunk + 1])
            order = rng.permutation(self.items_per_chunk[chunk]).tolist()
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

    def _chunk_map(self, chunk: int) -> np.memmap:
        mapped = self._maps.get(chunk)
        if mapped is None:
            header_bytes = (self.shard.chunk_items[chunk] + 2) * 4
            path = self.shard.path / self.shard.chunk_files[chunk]
            mapped = np.memmap(path, dtype=self.dtype, mode="r", offset=header_bytes,
                               shape=(self.shard.chunk_tokens[chunk],))
            self._maps[chunk] = mapped
        return mapped

    def read(self, position: int) -> np.ndarray:
        return self._read_item(*self.locate(position))

    def read_natural(self, index: int) -> np.ndarray:
        """Sample ``index`` in on-disk order (chunk by chunk), for fixed validation sets."""
        chunk = bisect.bisect_right(self._natural_ends, index)
        return self._read_item(chunk, index - (self._natural_ends[chunk - 1] if chunk else 0))

    def _read_item(self, chunk: int, item: int) -> np.ndarray:
        start = item * self.block_tokens
        return np.array(self._chunk_map(chunk)[start : start + self.block_tokens], dtype=self.sample_dtype)
