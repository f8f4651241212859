"""The mixture plan: a resolved mixture against a token budget — per shard the tokens on disk, the weight,
the tokens it will contribute and how many passes over it that means. Printed before training, saved with runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from midtrain.data.discovery import Shard
from midtrain.errors import ConfigError, DataError, Problems
from midtrain.reports import format_table

# Muennighoff et al. (2023, "Scaling Data-Constrained Language Models") found up to ~4 epochs of repeated data
# worth almost as much as fresh data, with returns falling off quickly beyond; past that, repetition is more
# likely a mistake in the mixture than an intent, so it must be asked for.
DEFAULT_MAX_PASSES = 4.0
MAX_PASSES_FLAG = "--data.max_passes"


@dataclass(frozen=True)
class ShardPlan:
    id: str
    domain: str
    tokens: int
    samples: int
    weight: float
    planned_samples: int
    planned_tokens: int
    passes: float
    """Passes over the shard at the end of the budget, counting ``start_samples`` already read (a branch's trunk)."""
    start_samples: int = 0


@dataclass(frozen=True)
class MixturePlan:
    """``samples`` are training sequences of ``seq_length + 1`` tokens read from a shard; ``planned_tokens`` counts
    the ``seq_length`` tokens trained on per sample, so it adds up to the budget ``max_tokens``."""

    shards: tuple[ShardPlan, ...]
    seq_length: int
    max_tokens: int | None
    total_samples: int | None
    max_passes: float

    def domains(self) -> dict[str, dict[str, float]]:
        totals: dict[str, dict[str, float]] = {}
        for s in self.shards:
            entry = totals.setdefault(s.domain, {"tokens": 0, "weight": 0.0, "planned_tokens": 0})
            entry["tokens"] += s.tokens
            entry["weight"] += s.weight
            entry["planned_tokens"] += s.planned_tokens
        return totals

    def to_json(self) -> dict:
        keys = ("id", "domain", "tokens", "weight", "planned_tokens", "passes", "samples", "planned_samples",
                "start_samples")
        return {
            "seq_length": self.seq_length,
            "max_tokens": self.max_tokens,
            "total_samples": self.total_samples,
            "max_passes": self.max_passes,
            "shards": [{k: asdict(s)[k] for k in keys} for s in self.shards],
            "domains": self.domains(),
        }


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` items by ``weights`` (summing to 1) into integers that sum to ``total``, each within one of
    its exact share (largest remainder method)."""
    exact = {k: w * total for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(counts.values())
    by_remainder = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))
    for key in by_remainder[:left]:
        counts[key] += 1
    return counts


def make_plan(
    shards: Sequence[Shard],
    weights: Mapping[str, float],
    seq_length: int,
    max_tokens: int | None,
    max_passes: float | None = None,
    start_samples: Mapping[str, int] | None = None,
) -> MixturePlan:
    """Resolve the budget into per-shard samples; raises if a used shard is too small or read too often.
    ``start_samples`` are samples already read per shard id (a branch continues its trunk's cursors)."""
    if not isinstance(seq_length, int) or seq_length < 1:
        raise ConfigError(f"--seq_length={seq_length!r} must be a positive integer (the model's context length).")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"--train.max_tokens={max_tokens!r} must be a positive integer number of tokens.")
    if max_passes is None:
        max_passes = DEFAULT_MAX_PASSES
    if not max_passes > 0:
        raise ConfigError(f"{MAX_PASSES_FLAG}={max_passes!r} must be positive (the most passes allowed over any "
                          "shard).")
    block_tokens = seq_length + 1
    total_samples = None if max_tokens is None else max(1, max_tokens // seq_length)
    planned = apportion(total_samples, weights) if total_samples is not None else {}
    problems = Problems()
    rows = []
    for shard in shards:
        weight = weights.get(shard.id, 0.0)
        samples = shard.samples(block_tokens)
        count = planned.get(shard.id, 0)
        if weight > 0 and samples == 0:
            # a sample never crosses a chunk file, so what counts is the largest chunk, not the shard's total
            problems.add(
                f"shard {shard.id!r} ({shard.path}) has no chunk that holds one sequence of {block_tokens:,} tokens "
                f"(seq_length + 1): its largest chunk holds {max(shard.chunk_tokens):,} tokens "
                f"({shard.tokens:,} in {len(shard.chunk_tokens)} chunk(s)), and a sample never crosses a chunk. "
                "Re-chunk "
                f"it with 'midtrain prepare --chunk_tokens N' (N a multiple of {block_tokens:,}, e.g. "
                f"{block_tokens * 64:,}), give it weight 0, or use a shorter --train.max_seq_length."
            )
            continue
        start = (start_samples or {}).get(shard.id, 0)
        passes = (start + count) / samples if samples else 0.0
        if passes > max_passes:
            problems.add(
                f"shard {shard.id!r} ({shard.domain}) would be read {passes:.2f} times ({count:,} samples from "
                f"{samples:,}{f', after {start:,} already read' if start else ''}), more than "
                f"{MAX_PASSES_FLAG}={max_passes:g}. Lower its weight, add data, lower the budget, "
                f"or allow it with {MAX_PASSES_FLAG}={math.ceil(passes)}."
            )
        rows.append(
            ShardPlan(shard.id, shard.domain, shard.tokens, samples, weight, count, count * seq_length, passes, start)
        )
    problems.raise_if_any(DataError)
    return MixturePlan(tuple(rows), seq_length, max_tokens, total_samples, float(max_passes))


def render_plan(plan: MixturePlan | MixSchedulePlan, title: str | None = None) -> str:
    if isinstance(plan, MixSchedulePlan):
        return render_mix_schedule_plan(plan)
    budget = "no token budget given (--train.max_tokens)" if plan.max_tokens is None else (
        f"budget {plan.max_tokens:,} tokens = {plan.total_samples:,} sequences of {plan.seq_length:,} tokens"
    )
    has_budget = plan.max_tokens is not None
    continued = any(s.start_samples for s in plan.shards)
    if continued:
        budget += " (what remains; passes count the samples already read before this run's start)"
    headers = [
        "shard",
        "domain",
        "tokens",
        "weight",
        *(["read before"] if continued else []),
        "planned tokens",
        "passes",
    ]
    right = [False, False, True, True, *([True] if continued else []), True, True]
    rows = [
        [
            s.id,
            s.domain,
            f"{s.tokens:,}",
            f"{s.weight:.4f}",
            *([f"{s.start_samples:,} samples"] if continued else []),
            f"{s.planned_tokens:,}" if has_budget else "-",
            f"{s.passes:.3f}" if has_budget else "-",
        ]
        for s in plan.shards
    ]
    domain_rows = [
        [
            domain,
            f"{int(d['tokens']):,}",
            f"{d['weight']:.4f}",
            f"{int(d['planned_tokens']):,}" if has_budget else "-",
        ]
        for domain, d in plan.domains().items()
    ]
    return "\n".join(
        [
            title or f"Mixture plan: {budget}; max passes per shard {plan.max_passes:g}",
            "",
            format_table(headers, rows, right),
            "",
            format_table(["domain", "tokens", "weight", "planned tokens"], domain_rows, [False, True, True, True]),
        ]
    )


@dataclass(frozen=True)
class PhasePlan:
    """One phase of a mixture schedule within a run: its steps and what it reads (``plan.shards``: the phase's
    samples per shard; ``passes`` at the phase's end, counting everything read before)."""

    phase: int
    description: str
    start_step: int
    end_step: int
    plan: MixturePlan


@dataclass(frozen=True)
class MixSchedulePlan:
    """The plan of a run with ``mix_schedule``: per phase, and the totals over the run (``max_passes`` is checked
    on the totals)."""

    phases: tuple[PhasePlan, ...]
    totals: MixturePlan
    skipped: tuple[str, ...] = ()
    """Phases that end before the run's start step (a resume or branch past them)."""

    def to_json(self) -> dict:
        return {**self.totals.to_json(), "phases": [
            {"phase": p.phase, "description": p.description, "start_step": p.start_step, "end_step": p.end_step,
             **p.plan.to_json()} for p in self.phases]}


def make_mix_schedule_plan(
    shards: Sequence[Shard],
    timeline: Sequence,
    descriptions: Mapping[int, str],
    seq_length: int,
    start_step: int,
    total_steps: int,
    samples_per_step: int,
    max_passes: float | None = None,
    start_samples: Mapping[str, int] | None = None,
) -> MixSchedulePlan:
    """The plan of steps ``[start_step, total_steps)`` under ``timeline`` (``midtrain.data.mix_schedule.Segment``s),
    ``samples_per_step`` sequences per optimizer step over all ranks."""
    used = {i for segment in timeline for i in segment.weights}
    usable = [s for s in shards if s.id in used]
    make_plan(usable, {s.id: 1.0 for s in usable}, seq_length, None, max_passes)  # every used shard holds a sample
    max_passes = DEFAULT_MAX_PASSES if max_passes is None else max_passes
    read = {s.id: (start_samples or {}).get(s.id, 0) for s in shards}
    phases: dict[int, dict] = {}
    for segment in timeline:
        first, last = max(segment.start_step, start_step), min(segment.end_step or total_steps, total_steps)
        entry = phases.setdefault(segment.phase, {"start": first, "end": last, "counts": {}, "before": dict(read)})
        entry["start"], entry["end"] = min(entry["start"], first), max(entry["end"], last)
        if last <= first:
            continue
        for shard_id, count in apportion((last - first) * samples_per_step, segment.weights).items():
            entry["counts"][shard_id] = entry["counts"].get(shard_id, 0) + count
            read[shard_id] += count
    phase_plans, skipped = [], []
    for index, entry in phases.items():
        if entry["end"] <= entry["start"]:
            skipped.append(descriptions[index])
            continue
        phase_plans.append(PhasePlan(index, descriptions[index], entry["start"], entry["end"], _plan_of_counts(
            shards, entry["counts"], entry["before"], seq_length, max_passes)))
    totals = _plan_of_counts(shards, {i: read[i] - (start_samples or {}).get(i, 0) for i in read},
                             start_samples or {}, seq_length, max_passes)
    problems = Problems()
    for row in totals.shards:
        if row.passes > max_passes:
            problems.add(
                f"shard {row.id!r} ({row.domain}) would be read {row.passes:.2f} times over the whole schedule "
                f"({row.planned_samples:,} samples from {row.samples:,}"
                f"{f', after {row.start_samples:,} already read' if row.start_samples else ''}), more than "
                f"{MAX_PASSES_FLAG}={max_passes:g}. Lower its weight in the phases, add data, or allow it with "
                f"{MAX_PASSES_FLAG}={math.ceil(row.passes)}.")
    problems.raise_if_any(DataError)
    return MixSchedulePlan(tuple(phase_plans), totals, tuple(skipped))


def _plan_of_counts(shards: Sequence[Shard], counts: Mapping[str, int], before: Mapping[str, int], seq_length: int,
                    max_passes: float) -> MixturePlan:
    total = sum(counts.values())
    rows = []
    for shard in shards:
        count, start = counts.get(shard.id, 0), before.get(shard.id, 0)
        if not count and not start:
            continue
        samples = shard.samples(seq_length + 1)
        rows.append(ShardPlan(shard.id, shard.domain, shard.tokens, samples, count / total if total else 0.0, count,
                              count * seq_length, (start + count) / samples if samples else 0.0, start))
    return MixturePlan(tuple(rows), seq_length, total * seq_length, total, float(max_passes))


def render_mix_schedule_plan(plan: MixSchedulePlan) -> str:
    lines = [f"Mixture schedule: {len(plan.phases)} phase(s) in this run; weights are each phase's realised shares"]
    for skipped in plan.skipped:
        lines.append(f"  ({skipped}: ended before this run's start)")
    for phase in plan.phases:
        lines += ["", f"Phase {phase.phase}, steps {phase.start_step:,} → {phase.end_step:,}: {phase.description}",
                  render_plan(phase.plan, title=f"{phase.plan.max_tokens:,} tokens; passes at the phase's end")]
    lines += ["", "Totals over the run:", render_plan(plan.totals)]
    return "\n".join(lines)


def lr_weighted_plan(segments: Sequence[tuple[int, int | None, Mapping[str, float]]], start_step: int,
                     total_steps: int, tokens_per_step: int, lr_at) -> dict[str, float]:
    """The planned LR-weighted tokens per domain over steps ``[start_step, total_steps)``: for each step, its LR
    (``lr_at``) times its tokens times each domain's share in the segment holding it (``segments``: first step, end
    step or None, domain -> share)."""
    out: dict[str, float] = {}
    for first, end, shares in segments:
        for step in range(max(first, start_step), min(total_steps if end is None else end, total_steps)):
            weighted = lr_at(step) * tokens_per_step
            for domain, share in shares.items():
                out[domain] = out.get(domain, 0.0) + weighted * share
    return out
