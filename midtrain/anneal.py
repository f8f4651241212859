"""Anneal pairs (pure logic, no torch): judging a data source by annealing one checkpoint to LR 0 twice, with the
candidate mixed in and without (Llama 3's 30 % anneals, OLMo 3's micro-anneals, Marin's ``default_anneal``).

Every run of one ``midtrain anneal`` starts from the same checkpoint, reads the same number of tokens from there and
decays the LR with the same shape to 0; per data-order seed there is one *control* (the parent's mixture) and one
run per candidate (the parent's mixture scaled by ``1 - share`` plus the candidate at ``share``). Each run records
its place (``AnnealRecord``) in its config and ``run.json``, so ``midtrain analyze`` pairs a candidate with its
control by that record, never by folder name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from midtrain.errors import ConfigError, did_you_mean

FLAG_CANDIDATES = "--candidates"
CONTROL = "control"


@dataclass
class AnnealRecord:
    """Where a run sits in a set of anneals (written by ``midtrain anneal``; kept in ``run.json`` as ``anneal``)."""

    group: str = ""
    """The set of anneals this run belongs to: one checkpoint, one budget, one decay, one share."""
    candidate: str | None = None
    """The data this run anneals on, as given to ``--candidates``; unset for the set's control (the parent's
    mixture)."""
    share: float | None = None
    """The candidate's share of the anneal's tokens."""
    seed: int | None = None
    """The data-order seed (``data.order_seed``) shared by this run and its control (unset: the lineage's order)."""
    tokens: int = 0
    """The anneal's budget in tokens from the branch point (``train.tokens_from_branch``)."""
    from_checkpoint: str = ""
    """The checkpoint every run of the set starts from."""


def check_share(share) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ConfigError(f"--share={share!r} must be between 0 and 1 (exclusive): the candidate's share of the "
                          "anneal's tokens, e.g. 0.3 (Llama 3) or 0.5 (OLMo 3's micro-anneals).")
    return float(share)


def check_seeds(seeds) -> list[int]:
    values = seeds if isinstance(seeds, (list, tuple)) else [seeds]
    if not values or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in values):
        raise ConfigError(f"--seeds={seeds!r} must be a list of non-negative integers (data-order seeds), e.g. "
                          "'[1, 2]'.")
    if len(set(values)) != len(values):
        raise ConfigError(f"--seeds={seeds!r} repeats a seed: each seed is one pair of anneals. Give each once.")
    return list(values)


def check_candidates(candidates) -> list[str]:
    values = candidates if isinstance(candidates, (list, tuple)) else [candidates]
    if not values or any(not isinstance(c, str) or not c.strip() for c in values):
        raise ConfigError(f"{FLAG_CANDIDATES}={candidates!r} must be a list of candidates: domains ('code'), shard "
                          "ids ('c1') or mixture strings ('code:0.5,math:0.5').")
    if len(set(values)) != len(values) or CONTROL in values:
        raise ConfigError(f"{FLAG_CANDIDATES}={candidates!r} repeats a candidate or names '{CONTROL}' (every seed "
                          "gets its control anyway). Give each candidate once.")
    return [c.strip() for c in values]


def candidate_weights(candidate: str, shard_domains: Mapping[str, str],
                      resolve_domains) -> dict[str, float]:
    """Per-shard weights (summing to 1) of a candidate: a domain (split over its shards as the base config splits
    domains, by ``resolve_domains``: a ``mix_weights_str`` text -> per-shard weights), a shard id, or a mixture string
    over domains or over shard ids. ``ConfigError`` naming ``--candidates`` when it names no shard."""
    domains = sorted(set(shard_domains.values()))
    if ":" in candidate:
        entries = {}
        for part in candidate.split(","):
            key, _, value = part.partition(":")
            try:
                entries[key.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"{FLAG_CANDIDATES}: {candidate!r} is not a mixture string (name:weight, ...); "
                                  f"{value!r} is not a number.") from None
        if entries and all(k in shard_domains for k in entries):
            total = sum(entries.values())
            if total <= 0 or any(v < 0 for v in entries.values()):
                raise ConfigError(f"{FLAG_CANDIDATES}: {candidate!r} needs non-negative weights with a positive sum.")
            return {k: v / total for k, v in entries.items() if v > 0}
        missing = [k for k in entries if k not in domains and k not in shard_domains]
        if missing:
            raise ConfigError(_no_shards(missing[0], domains, shard_domains))
        return dict(resolve_domains(candidate))
    if candidate in shard_domains:
        return {candidate: 1.0}
    if candidate in domains:
        return dict(resolve_domains(f"{candidate}:1"))
    raise ConfigError(_no_shards(candidate, domains, shard_domains))


def _no_shards(name: str, domains: list[str], shard_domains: Mapping[str, str]) -> str:
    return (f"{FLAG_CANDIDATES}: {name!r} is neither a domain with shards under the base config's data_path "
            f"(domains: {', '.join(domains)}) nor a shard id (e.g. {', '.join(sorted(shard_domains)[:3])}). Prepare "
            f"its shards with 'midtrain prepare', or name one that exists.{did_you_mean(name, domains)}")


def anneal_mixture(parent: Mapping[str, float], candidate: Mapping[str, float], share: float) -> dict[str, float]:
    """The parent's mixture scaled by ``1 - share`` plus the candidate at ``share`` (per shard, summing to 1)."""
    out = {shard: weight * (1.0 - share) for shard, weight in parent.items()}
    for shard, weight in candidate.items():
        out[shard] = out.get(shard, 0.0) + weight * share
    return {shard: weight for shard, weight in out.items() if weight > 0}


def literal_text(weights: Mapping[str, float]) -> str:
    """A per-shard mixture as ``literal_weights_str`` writes it, exactly (``repr`` reads back the same float)."""
    return ",".join(f"{shard}:{weight!r}" for shard, weight in weights.items())


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def run_name(candidate: str | None, seed: int | None) -> str:
    """``code-seed1``, ``control-seed1`` (``code`` without a seed); a mixture string as a short readable name plus a
    hash."""
    label = CONTROL if candidate is None else candidate
    safe = _UNSAFE.sub("-", label.replace(":", "")).strip("-.")
    if safe != label or len(safe) > 40:
        safe = f"{safe[:30].rstrip('-.')}-{hashlib.sha1(label.encode()).hexdigest()[:6]}"
    return safe if seed is None else f"{safe}-seed{seed}"


def group_id(from_checkpoint: str, tokens: int, share: float, shape: str, base: Mapping) -> str:
    """The set's identity: the checkpoint, budget, share, decay shape and base config it was made from."""
    payload = json.dumps([from_checkpoint, tokens, share, shape, base], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def pairs(records: Sequence[tuple[str, Mapping]]) -> tuple[dict[str, str | None], list[str]]:
    """Each candidate run's control: the run of the same group and seed without a candidate (None where the table
    has none); ``records`` are (run name, its anneal record). Notes for groups with several controls per seed."""
    controls: dict[tuple, list[str]] = {}
    for name, record in records:
        if record.get("candidate") is None:
            controls.setdefault((record.get("group"), record.get("seed")), []).append(name)
    notes = [f"anneal set {key[0]} seed {key[1]} has {len(found)} controls ({', '.join(sorted(found))}): "
             f"{sorted(found)[0]} is used." for key, found in controls.items() if len(found) > 1]
    matched = {name: (sorted(controls[(r.get("group"), r.get("seed"))])[0]
                      if (r.get("group"), r.get("seed")) in controls else None)
               for name, r in records if r.get("candidate") is not None}
    return matched, notes
