"""Which shard each sample of a stream comes from — pure logic, no torch, no I/O.

``exact`` (the default) is a deterministic greedy low-discrepancy sequence: sample n goes to the shard whose
count lags its target ``w * (n + 1)`` the most (ties to the first shard). Weights are quantised to integers
summing to ``SCALE`` so the arithmetic is exact on every machine; after any prefix of n samples every shard has
contributed ``round(w * n) ± 1`` samples (tests check this on thousands of random mixtures).

``random`` is one independent weighted draw per sample (what litdata's ``CombinedStreamingDataset`` does), for
parity runs with the paper's code. Its draws are counter-based (seed, stretch, position), so it resumes exactly too.

Both are replayable from (position, per-shard counts) alone, which is all a checkpoint needs to hold.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence

import numpy as np

SCALE = 1 << 40
_RANDOM_BLOCK = 4096


def quantise(weights: Sequence[float]) -> list[int]:
    """Integer weights proportional to ``weights`` that sum to exactly ``SCALE`` (largest remainder)."""
    total = float(sum(weights))
    exact = [w / total * SCALE for w in weights]
    out = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: (out[i] - exact[i], i))[: SCALE - sum(out)]:
        out[i] += 1
    return out


class ExactOrder:
    """Greedy largest-deficit sequence over integer weights (see module docstring).

    Sample n (0-based) goes to the shard maximising ``w_i (n + 1) - SCALE c_i`` (ties to the lowest index). Among
    shards of *equal* integer weight that order is the order of their counts ``c_i`` (then index), whatever n is,
    so each weight class keeps a heap keyed by ``(c_i, i)`` and a sample compares only the heads of the classes:
    O(classes + log shards) per sample instead of O(shards). A domain's weight is split equally over its shards, so
    10,000 shards of a few domains make a handful of classes (quantisation may split one class in two). The sequence
    is the same as scanning every shard (a test compares them).
    """

    def __init__(self, int_weights: Sequence[int]) -> None:
        if sum(int_weights) != SCALE or min(int_weights) <= 0:
            raise ValueError("int_weights must be positive and sum to SCALE")
        self.weights = list(int_weights)
        self._position: int | None = None
        self._counts: list[int] | None = None
        self._classes: list[tuple[int, list[tuple[int, int]]]] = []

    def _rebuild(self, position: int, counts: list[int]) -> None:
        by_weight: dict[int, list[tuple[int, int]]] = {}
        for i, weight in enumerate(self.weights):
            by_weight.setdefault(weight, []).append((counts[i], i))
        self._classes = []
        for weight, members in by_weight.items():
            heapq.heapify(members)
            self._classes.append((weight, members))
        self._position, self._counts = position, counts

    def run(self, position: int, counts: list[int], length: int) -> list[int]:
        """The shard indices of samples ``position .. position + length - 1``; ``counts`` (samples per shard
        before ``position``) is advanced in place."""
        if position != self._position or counts is not self._counts:
            self._rebuild(position, counts)
        classes = self._classes
        out = []
        for n in range(position, position + length):
            t = n + 1
            best_key = best_heap = None
            for weight, heap in classes:
                count, index = heap[0]
                key = (SCALE * count - weight * t, index)  # the smallest is the largest deficit
                if best_key is None or key < best_key:
                    best_key, best_heap = key, heap
            count, index = best_heap[0]
            heapq.heapreplace(best_heap, (count + 1, index))
            counts[index] += 1
            out.append(index)
        self._position = position + length
        return out


def scan_exact(weights: Sequence[int], position: int, counts: list[int], length: int) -> list[int]:
    """The same sequence by scanning every shard per sample (O(shards)): the definition, kept for tests."""
    deficit = [weights[i] * position - SCALE * counts[i] for i in range(len(weights))]
    out = []
    indices = range(len(weights))
    for _ in range(length):
        for i in indices:
            deficit[i] += weights[i]
        best = max(indices, key=deficit.__getitem__)
        deficit[best] -= SCALE
        counts[best] += 1
        out.append(best)
    return out


class RandomOrder:
    """Independent weighted draws, counter-based so that any position can be replayed."""

    def __init__(self, int_weights: Sequence[int], seed: int, stretch: int) -> None:
        self.cumulative = list(np.cumsum(int_weights, dtype=np.int64) / SCALE)
        self.cumulative[-1] = 1.0
        self.seed, self.stretch = seed, stretch
        self._block_index = -1
        self._uniforms: list[float] = []

    def _uniform(self, position: int) -> float:
        block = position // _RANDOM_BLOCK
        if block != self._block_index:
            rng = np.random.default_rng([self.seed, self.stretch, block, 0x5EED])
            self._uniforms, self._block_index = rng.random(_RANDOM_BLOCK).tolist(), block
        return self._uniforms[position % _RANDOM_BLOCK]

    def run(self, position: int, counts: list[int], length: int) -> list[int]:
        out = []
        for n in range(position, position + length):
            best = min(bisect.bisect_right(self.cumulative, self._uniform(n)), len(self.cumulative) - 1)
            counts[best] += 1
            out.append(best)
        return out


def make_order(kind: str, int_weights: Sequence[int], seed: int, stretch: int) -> ExactOrder | RandomOrder:
    """The order of a stretch of constant mixture (its index seeds ``random``)."""
    return ExactOrder(int_weights) if kind == "exact" else RandomOrder(int_weights, seed, stretch)
