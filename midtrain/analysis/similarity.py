"""Distribution similarity between corpora and the paper's "bridge length" (pure numpy, no torch).

Token measure: 1 - Jensen-Shannon divergence (base 2, so in [0, 1]) between the corpora's n-gram distributions
under one tokenizer. Model measure: cosine similarity of the corpora's mean hidden states under one checkpoint.
Bridge length of a midtraining mix M between pretraining data P and an SFT set S:
(1 - sim(P, M)) + (1 - sim(M, S)); a short bridge means M sits between P and S.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from midtrain.errors import ConfigError


def ngram_distribution(sequences: Sequence[np.ndarray], n: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted n-gram keys, probabilities): n-grams within each sequence, each packed into one int64."""
    if n < 1:
        raise ConfigError(f"--ngram={n} must be at least 1.")
    bits = max(1, math.ceil(math.log2(max(vocab_size, 2))))
    if bits * n > 63:
        raise ConfigError(f"--ngram={n} is too long for a vocabulary of {vocab_size:,} tokens ({bits} bits each). Use "
                          f"--ngram {63 // bits} or less.")
    keys = []
    for sequence in sequences:
        tokens = np.asarray(sequence, dtype=np.int64)
        if len(tokens) < n:
            continue
        packed = np.zeros(len(tokens) - n + 1, dtype=np.int64)
        for offset in range(n):
            packed = (packed << bits) | tokens[offset : len(tokens) - n + 1 + offset]
        keys.append(packed)
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    unique, counts = np.unique(np.concatenate(keys), return_counts=True)
    return unique, counts / counts.sum()


def jensen_shannon(p: tuple[np.ndarray, np.ndarray], q: tuple[np.ndarray, np.ndarray]) -> float:
    """JSD in bits between two distributions given as (sorted keys, probabilities)."""
    keys = np.union1d(p[0], q[0])
    dense_p, dense_q = np.zeros(len(keys)), np.zeros(len(keys))
    dense_p[np.searchsorted(keys, p[0])] = p[1]
    dense_q[np.searchsorted(keys, q[0])] = q[1]
    mixture = (dense_p + dense_q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / mixture[mask])))

    return min(1.0, max(0.0, (kl(dense_p) + kl(dense_q)) / 2))


def token_similarity_matrix(samples: dict[str, list[np.ndarray]], n: int) -> np.ndarray:
    vocab = 1 + max(int(max((s.max() for s in seqs if len(s)), default=0)) for seqs in samples.values())
    distributions = [ngram_distribution(seqs, n, vocab) for seqs in samples.values()]
    size = len(distributions)
    matrix = np.eye(size)
    for i in range(size):
        for j in range(i + 1, size):
            matrix[i, j] = matrix[j, i] = 1.0 - jensen_shannon(distributions[i], distributions[j])
    return matrix


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1, norms)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def bridge_length(matrix: np.ndarray, names: list[str], pretrain: str, mix: str, sft: str) -> float:
    index = {name: i for i, name in enumerate(names)}
    return float((1 - matrix[index[pretrain], index[mix]]) + (1 - matrix[index[mix], index[sft]]))


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None when undefined (fewer than 3 points or a constant series)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(values: Sequence[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = values.argsort(kind="stable")
        result = np.empty(len(values))
        result[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):
            tied = values == value
            result[tied] = result[tied].mean()
        return result

    return pearson(ranks(x), ranks(y)) if len(x) >= 3 else None
