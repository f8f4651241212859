"""Every shard's cursor in a rank's mixed stream (pure logic).

A shard's cursor is its *global* stream position: the samples taken from it by all ranks together. Within a
stretch of constant mixture, rank r's d-th draw from a shard is position ``base + d * world_size + r``, so a cursor
is ``base + count * world_size``. Shards read before but not members of this stream any more (a branch dropped
them) are *carried*: their saved entries stay in the state, so a later branch that reads them again continues them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence


class Cursors:
    def __init__(self, ids: Sequence[str], rank: int, world_size: int) -> None:
        self.ids, self.rank, self.world_size = list(ids), rank, world_size
        self.position = 0
        """This rank's samples in the current stretch."""
        self.counts = [0] * len(self.ids)
        """This rank's draws per member in the current stretch."""
        self.bases = [0] * len(self.ids)
        """Each member's cursor when the current stretch began."""
        self.carried: dict[str, dict] = {}
        self.mark: dict[str, int] = {}
        """Every cursor as it stood when the current stretch began (absent: 0), for the next stretch's record."""

    def consumed(self, member: int) -> int:
        return self.bases[member] + self.counts[member] * self.world_size

    def all_cursors(self) -> dict[str, int]:
        """Every cursor that is not 0, carried shards' included."""
        cursors = {i: v["consumed"] for i, v in self.carried.items()}
        cursors.update({shard_id: c for k, shard_id in enumerate(self.ids) if (c := self.consumed(k))})
        return cursors

    def moved_since_mark(self) -> dict[str, int]:
        """The cursors that moved since the current mark, which then moves to now."""
        moved = {i: c for i, c in self.all_cursors().items() if self.mark.get(i, 0) != c}
        self.mark.update(moved)
        return moved

    def new_stretch(self) -> None:
        """A new stretch starts at the cursors as they are: counts start again."""
        self.bases = [self.consumed(i) for i in range(len(self.ids))]
        self.position, self.counts = 0, [0] * len(self.ids)

    def set(self, consumed: Sequence[int], counts: Sequence[int] | None = None, position: int = 0) -> None:
        """Cursors from a saved state: ``consumed`` per member; within a stretch, also this rank's ``counts``."""
        self.counts = list(counts) if counts is not None else [0] * len(self.ids)
        self.position = position
        self.bases = [c - n * self.world_size for c, n in zip(consumed, self.counts, strict=True)]

    def positions(self, drawn: list[int]) -> list[tuple[int, int]]:
        """Stream positions of samples just drawn (``counts`` already counts them): the last draw of a member is its
        count minus one, the one before minus two, and so on."""
        later: dict[int, int] = {}
        draws = [0] * len(drawn)
        for k in range(len(drawn) - 1, -1, -1):
            member = drawn[k]
            later[member] = later.get(member, 0) + 1
            draws[k] = self.counts[member] - later[member]
        return [(m, self.bases[m] + d * self.world_size + self.rank) for m, d in zip(drawn, draws, strict=True)]

    def snapshot(self) -> dict:
        return {"position": self.position, "counts": list(self.counts), "bases": list(self.bases),
                "mark": dict(self.mark)}

    def at(self, snapshot: dict) -> Cursors:
        clone = copy.copy(self)
        clone.position, clone.counts = snapshot["position"], list(snapshot["counts"])
        clone.bases, clone.mark = list(snapshot["bases"]), dict(snapshot["mark"])
        return clone
