"""Choosing midtraining data before any training (pure logic): rank candidate corpora for a target post-training
set by bridge length between the pretraining data and the target (the paper's finding: the data that bridges the
two helps most), and suggest a mixture.

Rank: bridge length ``(1 - sim(P, C)) + (1 - sim(C, T))`` ascending (ties: the candidate more like the target, then
the name). Suggested mixture: the top candidate at the paper's share for its kind (``PAPER_SHARES``, from the
paper's branch configs), or at ``DEFAULT_SHARE`` (the paper's most common share) when the paper has no branch of
that kind; the rest is the pretraining data (``main``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from midtrain.analysis.similarity import bridge_length

PAPER_SHARES = {"code": 0.20, "math": 0.12, "instruct": 0.15, "qa": 0.20, "web": 0.20}
"""The share each kind of midtraining data had in the paper's main branches (Starcoder 20 %, math 12 %, FLAN
instructions 15 %, knowledge QA 20 %, DCLM web 20 %)."""
DEFAULT_SHARE = 0.20


def rank_candidates(matrices: Mapping[str, np.ndarray], names: Sequence[str], pretrain: str,
                    candidates: Sequence[str], target: str, measure: str) -> list[dict]:
    """The candidates in rank order, each with its rank, its bridge length under ``measure`` and every measure's
    similarity to the pretraining data and to the target."""
    index = {n: i for i, n in enumerate(names)}
    entries = []
    for candidate in candidates:
        entry = {"candidate": candidate,
                 "bridge_length": bridge_length(matrices[measure], list(names), pretrain, candidate, target)}
        for kind, matrix in matrices.items():
            entry[kind] = {"to_pretrain": float(matrix[index[pretrain], index[candidate]]),
                           "to_target": float(matrix[index[candidate], index[target]])}
        entries.append(entry)
    entries.sort(key=lambda e: (round(e["bridge_length"], 12), -e[measure]["to_target"], e["candidate"]))
    return [{"rank": k + 1, **e} for k, e in enumerate(entries)]


def suggest_mixture(top: str, kind: str) -> dict:
    """The mixture a branch for this target could start from: ``mix_weights_str`` and why that share."""
    share = PAPER_SHARES.get(kind)
    rule = f"the paper's share for {kind} data"
    if share is None:
        share = DEFAULT_SHARE
        rule = f"no paper branch of kind {kind!r}: the paper's most common share"
    return {"candidate": top, "kind": kind, "share": share, "rule": rule,
            "mix_weights_str": f"main:{1 - share:g},{kind}:{share:g}"}
