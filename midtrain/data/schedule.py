"""Which shard each sample of a stream comes from — pure logic, no torch, no I/O.

``exact`` (the default) is a deterministic greedy low-discrepancy sequence: sample n goes to the shard whose
count lags its target ``w * (n + 1)`` the most (ties to the first shard). Weights are quantised to integers
summing to ``SCALE`` so the arithmetic is exact on every machine; after any prefix of n samples every shard has
contributed ``round(w * n) ± 1`` samples (tests check this on thousands of random mixtures).

``random`` is one independent weighted draw per sample (what litdata's ``CombinedStreamingDataset`` does), for
parity runs with the paper's code. Its draws are counter-based (seed, phase, position), so it resumes exactly too.

Both are replayable from (position, per-shard counts) alone, which is all a checkpoint needs to hold.
"""

from __future__ import annotations

import bisect
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


class ExactSchedule:
    """Greedy largest-deficit sequence over integer weights (see module docstring)."""

    def __init__(self, int_weights: Sequence[int]) -> None:
        if sum(int_weights) != SCALE or min(int_weights) <= 0:
            raise ValueError("int_weights must be positive and sum to SCALE")
        self.weights = list(int_weights)

    def run(self, position: int, counts: list[int], length: int) -> list[int]:
        """The shard indices of samples ``position .. position + length - 1``; ``counts`` (samples per shard
        before ``position``) is advanced in place."""
        weights = self.weights
        k = len(weights)
        # deficit_i = target_i - actual_i, scaled by SCALE: w_i * n - SCALE * c_i
        deficit = [weights[i] * position - SCALE * counts[i] for i in range(k)]
        out = []
        indices = range(k)
        for _ in range(length):
            for i in indices:
                deficit[i] += weights[i]
            best = max(indices, key=deficit.__getitem__)
            deficit[best] -= SCALE
            counts[best] += 1
            out.append(best)
        return out


class RandomSchedule:
    """Independent weighted draws, counter-based so that any position can be replayed."""

    def __init__(self, int_weights: Sequence[int], seed: int, phase: int) -> None:
        self.cumulative = list(np.cumsum(int_weights, dtype=np.int64) / SCALE)
        self.cumulative[-1] = 1.0
        self.seed, self.phase = seed, phase
        self._block_index = -1
        self._uniforms: list[float] = []

    def _uniform(self, position: int) -> float:
        block = position // _RANDOM_BLOCK
        if block != self._block_index:
            rng = np.random.default_rng([self.seed, self.phase, block, 0x5EED])
            self._uniforms, self._block_index = rng.random(_RANDOM_BLOCK).tolist(), block
        return self._uniforms[position % _RANDOM_BLOCK]

    def run(self, position: int, counts: list[int], length: int) -> list[int]:
        out = []
        for n in range(position, position + length):
            best = min(bisect.bisect_right(self.cumulative, self._uniform(n)), len(self.cumulative) - 1)
            counts[best] += 1
            out.append(best)
        return out


def make_schedule(kind: str, int_weights: Sequence[int], seed: int, phase: int) -> ExactSchedule | RandomSchedule:
    return ExactSchedule(int_weights) if kind == "exact" else RandomSchedule(int_weights, seed, phase)
