"""Fixed validation sets: the held-out samples of each domain, in on-disk order (no shuffle)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from midtrain.data.discovery import Shard
from midtrain.data.shard_reader import ShardReader


class HeldOutBlocks(Dataset):
    """The first ``max_samples`` samples (all, if None) of the given shards, shard after shard."""

    def __init__(self, shards: Sequence[Shard], block_tokens: int, max_samples: int | None = None) -> None:
        self.readers = [ShardReader(shard, block_tokens, seed=0) for shard in shards]
        self.ends: list[int] = []
        total = 0
        for reader in self.readers:
            total += reader.samples_per_pass
            self.ends.append(total)
        self.length = total if max_samples is None else min(total, max_samples)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.length:
            raise IndexError(index)
        slot = bisect.bisect_right(self.ends, index)
        within = index - (self.ends[slot - 1] if slot else 0)
        return torch.from_numpy(self.readers[slot].read_natural(within))


    def largest_token_id(self) -> tuple[int, str]:
        """(the largest token id in the set, the shard that holds it): the set is small and fixed, so it is read
        once before training rather than found out of the vocabulary at the first validation."""
        best, where = -1, ""
        for index in range(self.length):
            sample = self[index]
            if int(sample.max()) > best:
                best, where = int(sample.max()), self.readers[bisect.bisect_right(self.ends, index)].shard.id
        return best, where


def domain_sets(shards: Sequence[Shard], block_tokens: int, max_samples: int | None) -> dict[str, HeldOutBlocks]:
    """Each domain's fixed held-out set (its first ``max_samples`` blocks), in the shards' domain order; domains
    with no whole block are left out."""
    sets = {}
    for domain in dict.fromkeys(s.domain for s in shards):
        blocks = HeldOutBlocks([s for s in shards if s.domain == domain], block_tokens, max_samples)
        if len(blocks):
            sets[domain] = blocks
    return sets
