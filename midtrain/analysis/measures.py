"""Measuring how alike corpora are, one implementation for ``midtrain similarity`` and ``midtrain recommend``:
each corpus sampled with a fixed seed and cut to the smallest sample's size (n-gram divergences grow as samples
shrink), the token measure on every pair, and the model measure when a checkpoint is given."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midtrain.analysis.corpora import CorpusSpec, read_sample, truncate
from midtrain.data.domains import DomainRegistry
from midtrain.errors import ConfigError

LABELS = {"token": "1 - JSD of {ngram}-gram distributions", "model": "cosine of mean hidden states"}


@dataclass(frozen=True)
class Measured:
    names: list[str]
    matrices: dict[str, np.ndarray]
    """``token`` always; ``model`` with a checkpoint: similarity of every pair, in ``names`` order."""
    sample_tokens: int
    """Tokens of each corpus every measure saw (the smallest sample's size)."""
    sampled: dict[str, int]
    """Tokens sampled from each corpus before the cut."""


def check_sizes(**values: int) -> None:
    """Each size at least 1, and ``sample_tokens`` at least one sequence (below it, every corpus's sample is one
    short sequence and every similarity a near-constant)."""
    for flag, value in values.items():
        if value < 1:
            raise ConfigError(f"--{flag}={value} must be at least 1.")
    sample, sequence = values.get("sample_tokens"), values.get("seq_length")
    if sample is not None and sequence is not None and sample < sequence:
        raise ConfigError(f"--sample_tokens={sample:,} is below one sequence (--seq_length={sequence:,}): no corpus "
                          "could be sampled as a whole sequence, and every measure would compare scraps. Raise "
                          f"--sample_tokens to at least {sequence:,} (tens of thousands for a stable measure), or "
                          "lower --seq_length.")


def measure(specs: list[CorpusSpec], tokenizer, loaded, registry: DomainRegistry, sample_tokens: int,
            seq_length: int, ngram: int, seed: int, micro_batch_size: int) -> Measured:
    """Every corpus read first (a corpus that cannot be read fails before anything is measured), then measured."""
    from midtrain.analysis.similarity import cosine_matrix, token_similarity_matrix

    samples = {s.name: read_sample(s, tokenizer, registry, sample_tokens, seq_length, seed) for s in specs}
    sizes = {name: sum(len(s) for s in sample) for name, sample in samples.items()}
    common = min(sizes.values())
    samples = {name: truncate(sample, common) for name, sample in samples.items()}
    for spec in specs:
        print(f"  {spec.name}: {common:,} of {sizes[spec.name]:,} sampled tokens used, from {spec.path}", flush=True)
    names = [s.name for s in specs]
    matrices = {"token": token_similarity_matrix(samples, ngram)}
    if loaded is not None:
        from midtrain.analysis.hidden_states import mean_hidden_state

        vectors = np.stack(
            [mean_hidden_state(loaded.model, samples[n], loaded.device, micro_batch_size) for n in names]
        )
        matrices["model"] = cosine_matrix(vectors)
    return Measured(names, matrices, common, sizes)
