"""Decision accuracy (pure logic, no torch): whether the order of a grid's runs by a metric at a small model size
(or one seed) is the order at the largest size (or another seed), pair by pair, as DataDecide measures it.

A *cell* of the grid is a run's data recipe: its branch step and the shares of what it read since then (rounded to
two decimals); runs of one model with the same cell are replicates (seeds). For every pair of cells measured at
both sizes, the smaller size decides correctly when it orders the two cells as the largest size does (each size's
value the mean over its replicates). A pair tied at the larger size decides nothing and is left out; a tie at the
smaller size counts half.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

HIGHER_IS_BETTER = {"acc", "acc_norm", "logprob", "gold_prob", "exact_match", "f1", "mc1", "mc2"}
"""Metrics where larger values are better; every other metric (loss, ppl, bpb) is better lower."""
DECIDING = {("heldout", "loss"), ("heldout", "bpb"), ("set", "loss"), ("gold", "bpb"), ("gold", "logprob"),
            ("gold", "acc"), ("gold", "gold_prob"), ("task", "acc"), ("task", "acc_norm")}
"""The (kind, metric) pairs whose orders are compared: held-out loss and bits per byte, SFT losses, gold-answer
metrics and task accuracy."""


@dataclass(frozen=True)
class RunPoint:
    """A run's place for decision accuracy: its model (label and size for ordering), its grid cell, its seed."""

    model: str
    parameters: int
    cell: tuple
    seed: object


def direction(metric: str) -> int:
    return 1 if metric.split("[")[0] in HIGHER_IS_BETTER else -1


def final_values(rows: Sequence[Mapping], runs: Mapping[str, RunPoint]) -> dict[tuple, dict[str, dict]]:
    """(kind, name, metric) -> model -> cell -> [value per replicate]: each run's value at its latest scored step
    (a run's own checkpoints; fine-tuned rows, one per seed, where the table has them for that step)."""
    latest: dict[tuple, tuple[int, list[float]]] = {}
    for row in rows:
        if (row["kind"], row["metric"]) not in DECIDING or (row.get("step") is None and row.get("base_step") is None):
            continue
        run = row.get("base_run") or row["run"]
        if run not in runs:
            continue
        step = row["base_step"] if row.get("base_run") else row["step"]
        tuned = row.get("base_run") is not None
        key = (run, row["kind"], row["name"], row["metric"])
        rank = (step, tuned)
        if key not in latest or rank > latest[key][0]:
            latest[key] = (rank, [row["value"]])
        elif rank == latest[key][0]:
            latest[key][1].append(row["value"])
    out: dict[tuple, dict[str, dict]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for (run, kind, name, metric), (_, values) in latest.items():
        point = runs[run]
        out[(kind, name, metric)][point.model][point.cell].append(sum(values) / len(values))
    return {k: {m: dict(c) for m, c in v.items()} for k, v in out.items()}


def agreement(small: Mapping[tuple, float], large: Mapping[tuple, float], small_sign: int = -1,
              large_sign: int = -1) -> tuple[float, int]:
    """(pairs decided alike, pairs compared) over the cells both have; ``*_sign``: +1 where higher is better."""
    cells = sorted(set(small) & set(large), key=str)
    agree, pairs = 0.0, 0
    for a, b in itertools.combinations(cells, 2):
        truth = (large[a] - large[b]) * large_sign
        if truth == 0:
            continue
        guess = (small[a] - small[b]) * small_sign
        pairs += 1
        agree += 0.5 if guess == 0 else float((guess > 0) == (truth > 0))
    return agree, pairs


def _means(cells: Mapping[tuple, Sequence[float]]) -> dict[tuple, float]:
    return {cell: sum(v) / len(v) for cell, v in cells.items() if v}


def accuracy_interval(small: Mapping[tuple, Sequence[float]], large: Mapping[tuple, Sequence[float]],
                      small_sign: int, large_sign: int, resamples: int, seed: int) -> tuple[float | None, float | None]:
    """A 95 % bootstrap interval of the accuracy, resampling each cell's replicates at each size; (None, None) when
    no cell has two replicates (one seed: nothing to resample)."""
    if all(len(v) < 2 for v in (*small.values(), *large.values())):
        return None, None
    rng = random.Random(seed)
    found = []
    for _ in range(resamples):
        drawn_small = {c: sum(rng.choices(v, k=len(v))) / len(v) for c, v in small.items() if v}
        drawn_large = {c: sum(rng.choices(v, k=len(v))) / len(v) for c, v in large.items() if v}
        agree, pairs = agreement(drawn_small, drawn_large, small_sign, large_sign)
        if pairs:
            found.append(agree / pairs)
    if not found:
        return None, None
    found.sort()
    return found[int(0.025 * (len(found) - 1))], found[int(round(0.975 * (len(found) - 1)))]


def decision_accuracy(values: Mapping[tuple, Mapping[str, Mapping[tuple, Sequence[float]]]],
                      parameters: Mapping[str, int], resamples: int = 1000, seed: int = 0) -> dict:
    """Per metric, each smaller model against the largest (``across: size``): the share of cell pairs ordered alike,
    with a bootstrap interval over replicates; and per target metric at the largest model, every metric at each
    smaller model as its predictor, the best named. With one model and several seeds: each seed against each other
    (``across: seed``), each seed's value its own."""
    models = sorted({m for by_model in values.values() for m in by_model}, key=lambda m: (parameters.get(m, 0), m))
    if len(models) >= 2:
        return _across_sizes(values, models, resamples, seed)
    return _across_seeds(values, resamples, seed)


def _across_sizes(values, models: list[str], resamples: int, seed: int) -> dict:
    largest = models[-1]
    same, predictors = [], []
    for metric, by_model in sorted(values.items()):
        if largest not in by_model:
            continue
        sign = direction(metric[2])
        for small in models[:-1]:
            if small not in by_model:
                continue
            agree, pairs = agreement(_means(by_model[small]), _means(by_model[largest]), sign, sign)
            if pairs:
                low, high = accuracy_interval(by_model[small], by_model[largest], sign, sign, resamples, seed)
                same.append({"across": "size", "small": small, "large": largest, "kind": metric[0],
                             "name": metric[1], "metric": metric[2], "pairs": pairs, "accuracy": agree / pairs,
                             "low": low, "high": high})
    for target, by_model in sorted(values.items()):
        if largest not in by_model:
            continue
        truth = _means(by_model[largest])
        for small in models[:-1]:
            ranked = []
            for proxy, proxy_by_model in sorted(values.items()):
                if small not in proxy_by_model:
                    continue
                agree, pairs = agreement(_means(proxy_by_model[small]), truth, direction(proxy[2]),
                                         direction(target[2]))
                if pairs:
                    ranked.append({"proxy": "/".join(proxy), "accuracy": agree / pairs, "pairs": pairs})
            if ranked:
                ranked.sort(key=lambda r: (-r["accuracy"], r["proxy"]))
                predictors.append({"target": "/".join(target), "small": small, "large": largest,
                                   "best": ranked[0]["proxy"], "best_accuracy": ranked[0]["accuracy"],
                                   "proxies": ranked})
    return {"models": models, "across": "size", "same_metric": same, "predictors": predictors,
            "best_metric": _best(same)}


def _across_seeds(values, resamples: int, seed: int) -> dict:
    same = []
    for metric, by_model in sorted(values.items()):
        sign = direction(metric[2])
        for model, cells in by_model.items():
            replicates = min((len(v) for v in cells.values()), default=0)
            agree_total, pair_total = 0.0, 0
            for a, b in itertools.combinations(range(replicates), 2):
                agree, pairs = agreement({c: v[a] for c, v in cells.items()}, {c: v[b] for c, v in cells.items()},
                                         sign, sign)
                agree_total, pair_total = agree_total + agree, pair_total + pairs
            if pair_total:
                same.append({"across": "seed", "small": model, "large": model, "kind": metric[0], "name": metric[1],
                             "metric": metric[2], "pairs": pair_total, "accuracy": agree_total / pair_total,
                             "low": None, "high": None})
    models = sorted({m for by_model in values.values() for m in by_model})
    return {"models": models, "across": "seed", "same_metric": same, "predictors": [], "best_metric": _best(same)}


def _best(same: list[dict]) -> dict | None:
    """The metric whose small-model (or one-seed) order matches best, over the pairs it decides."""
    if not same:
        return None
    best = max(same, key=lambda r: (r["accuracy"], r["pairs"], "/".join((r["kind"], r["name"], r["metric"]))))
    return {"kind": best["kind"], "name": best["name"], "metric": best["metric"], "accuracy": best["accuracy"],
            "small": best["small"]}


def cell_of(step: int | None, shares: Mapping[str, float]) -> tuple:
    """A run's grid cell: its branch step and the shares of what it read since then, to two decimals."""
    return (step, tuple(sorted((d, round(s, 2)) for d, s in shares.items() if round(s, 2) > 0)))


def estimated_parameters(config: Mapping) -> int:
    """A transformer's parameter count from its litgpt config (attention, MLP, embeddings), to order model sizes
    without building one."""
    n_embd, n_layer = int(config.get("n_embd") or 0), int(config.get("n_layer") or 0)
    vocab = int(config.get("padded_vocab_size") or config.get("vocab_size") or 0)
    hidden = int(config.get("intermediate_size") or 4 * n_embd)
    return n_layer * (4 * n_embd * n_embd + 2 * n_embd * hidden) + 2 * vocab * n_embd
