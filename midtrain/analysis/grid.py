"""A grid of branches turned into effects (pure logic, numpy only): each branch against the control branched from
the same parent at the same step (matched by lineage, never by name), its effect on the data it is for and on the
pretraining data, the timing x share effects by least squares, and bridge length against gain.

Conventions:
- A branch's *targets* are the domains whose share of the tokens it read since its branch point (its ledger) is
  above their share in its parent's mixture there (by more than ``SHARE_TOLERANCE``); a *control* is a branch with
  none (it continues the parent's mixture). The *pretraining domains* are those of the parent's mixture.
- Δ = branch − control in loss (negative: the branch is better); gain = −Δ.
- Losses come from fine-tuned rows of a checkpoint when the table has them (``base_run``/``base_step``, one per
  seed), else from the checkpoint's own rows.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SHARE_TOLERANCE = 0.01
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Student's t, 97.5th percentile, for 1 to 30 degrees of freedom."""


def t_quantile(df: float) -> float:
    """Student's t 97.5th percentile (two-sided 95 %), for ``df`` rounded down; beyond 30, the first Cornish-Fisher
    correction of the normal's 1.96 (error below 0.001)."""
    k = max(1, int(math.floor(df)))
    if k <= len(T_975):
        return T_975[k - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * k)


@dataclass(frozen=True)
class Branch:
    name: str
    parent_id: str | None
    parent_dir: str | None
    step: int | None
    """The branch step (None: a run without a parent, a trunk)."""
    parent_shares: dict[str, float] = field(default_factory=dict)
    """Domain shares of the parent's mixture at the branch point."""
    shares: dict[str, float] = field(default_factory=dict)
    """Domain shares of the tokens this run read since its branch point."""
    anneal: Mapping | None = field(default=None, hash=False)
    """The run's anneal record (``midtrain anneal``), which pairs it with its control; None for other branches."""

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(d for d, s in self.shares.items() if s > self.parent_shares.get(d, 0.0) + SHARE_TOLERANCE)

    @property
    def is_control(self) -> bool:
        """A branch that read its parent's mixture (a branch that read nothing yet is no control); an anneal is
        one when its record says so."""
        if self.anneal is not None:
            return self.anneal.get("candidate") is None
        return self.step is not None and bool(self.shares) and not self.targets

    @property
    def pretraining_domains(self) -> tuple[str, ...]:
        return tuple(d for d, s in self.parent_shares.items() if s > 0)

    @property
    def key(self) -> tuple:
        return (self.parent_id or self.parent_dir, self.step)


def branch_of(name: str, run: Mapping, ledger: Mapping, parent_ledger: Mapping | None = None) -> Branch:
    """A run's place in the grid from its ``run.json`` and its latest ``ledger.json``. What it read since its branch
    point is its ledger less the ledger of the checkpoint it branched from (``parent_ledger``); without that, the
    stretches that began at or after the branch point, else the mixture it started with (its lineage)."""
    lineage = run.get("lineage") or []
    if not lineage:
        return Branch(name, None, None, None)
    last = lineage[-1]
    step = int(last["step"])
    domain_of = {i: info["domain"] for i, info in ledger["shards"].items()}
    parent = domain_shares({domain_of.get(i, i): w for i, w in (last.get("mixture_before") or {}).items()})
    read: dict[str, float] = defaultdict(float)
    if parent_ledger is not None:
        before = {i: info.get("tokens", 0) for i, info in parent_ledger["shards"].items()}
        for shard_id, info in ledger["shards"].items():
            read[domain_of[shard_id]] += info.get("tokens", 0) - before.get(shard_id, 0)
    else:
        for stretch in ledger.get("stretches", []):
            if stretch.get("start_step", -1) >= step:
                for shard_id, tokens in stretch["tokens"].items():
                    read[domain_of.get(shard_id, shard_id)] += tokens
        if not read:
            for shard_id, w in (last.get("mixture_after") or {}).items():
                read[domain_of.get(shard_id, shard_id)] += w
    return Branch(name, last.get("parent_run_id"), last.get("parent_out_dir"), step, parent,
                  domain_shares({d: t for d, t in read.items() if t > 0}), run.get("anneal"))


def domain_shares(weights: Mapping[str, float]) -> dict[str, float]:
    merged: dict[str, float] = defaultdict(float)
    for domain, w in weights.items():
        merged[domain] += w
    total = sum(merged.values())
    return {d: w / total for d, w in merged.items()} if total > 0 else {}


def match_controls(branches: Sequence[Branch]) -> tuple[dict[str, Branch | None], list[str]]:
    """Each non-control branch's control (same parent, same step; for an anneal, the control of its anneal set and
    seed, by their records), None where there is none; and notes (several controls at one point: the first by name
    is used, and said)."""
    from midtrain.anneal import pairs

    anneals = [b for b in branches if b.anneal is not None]
    by_name = {b.name: b for b in anneals}
    paired, notes = pairs([(b.name, b.anneal) for b in anneals])
    branches = [b for b in branches if b.anneal is None]  # an anneal decays to 0: no control of another branch
    controls: dict[tuple, list[Branch]] = defaultdict(list)
    for b in branches:
        if b.is_control:
            controls[b.key].append(b)
    for key, found in controls.items():
        if len(found) > 1:
            found.sort(key=lambda b: b.name)
            notes.append(f"{len(found)} controls branch at step {key[1]:,} of the same parent "
                         f"({', '.join(b.name for b in found)}): {found[0].name} is used.")
    matched = {b.name: (controls[b.key][0] if controls.get(b.key) else None)
               for b in branches if b.step is not None and not b.is_control}
    matched.update({name: None if control is None else by_name[control] for name, control in paired.items()})
    return matched, notes


ROW_KEY = ("run", "step", "kind", "name", "metric", "base_run", "base_step", "seed", "sft_task")
"""What one measurement is: a second row with this key is the same row again, or a conflict."""


def unique_rows(tables: Sequence[tuple[str, Sequence[Mapping]]]) -> tuple[list[Mapping], list[str]]:
    """The rows of several tables (``(source, rows)``), each measurement once, and notes. A row repeated as it is
    (the same table given twice, tables that overlap) is dropped and counted; two rows of one measurement with other
    values (or settings, or checkpoints) are a conflict, and a loss that is not finite no measure; both are refused
    naming the run, step and set, since averaging them or taking them for seeds would make up a result."""
    from midtrain.errors import DataError

    seen: dict[tuple, tuple[Mapping, str]] = {}
    out, repeated = [], 0
    for source, rows in tables:
        for row in rows:
            what = (f"run {row['run']!r} step {row['step']} {row['kind']} {row['name']!r} {row['metric']}"
                    + (f" (fine-tuned from {row['base_run']!r} step {row['base_step']}, seed {row['seed']})"
                       if row.get("base_run") else ""))
            value = row.get("value")
            if isinstance(value, float) and not math.isfinite(value):
                raise DataError(f"--tables {source}: {what} is {value}: no effect can be measured from it (a Δ "
                                "would be nan or inf). Evaluate that checkpoint again, or remove its rows.")
            key = tuple(row.get(c) for c in ROW_KEY)
            if key in seen:
                first, where = seen[key]
                if dict(first) == dict(row):
                    repeated += 1
                    continue
                differ = [c for c in row if first.get(c) != row.get(c)]
                folders = {str(r.get("checkpoint") or "").rpartition("/")[0] for r in (first, row)}
                if not row.get("base_run") and len(folders) == 2:
                    raise DataError(two_folders_error(row["run"], *sorted(folders)))
                raise DataError(f"--tables: {what} is given twice, differently ({', '.join(differ)}: "
                                f"{', '.join(f'{first.get(c)!r} in {where}' for c in differ)}; "
                                f"{', '.join(f'{row.get(c)!r} in {source}' for c in differ)}). Averaging them, or "
                                "taking them for seeds, would make up a result: keep one table's rows.")
            seen[key] = (row, source)
            out.append(row)
    notes = [f"{repeated:,} row(s) repeated as they were (the same table given twice, or tables that overlap) were "
             "read once."] if repeated else []
    return out, notes


def two_folders_error(run: str, first: str, second: str) -> str:
    return (f"--tables: the run name {run!r} stands for two run folders, {first} and {second}: their branches cannot "
            "both be matched by it. Give the runs distinct folder names and evaluate them again.")


def rows_by_run(rows: Sequence[Mapping]) -> dict[tuple[str, str], list[Mapping]]:
    """Loss rows grouped by (scored name, run), a fine-tuned row under the run it was tuned from: each branch's curves
    are then read from its own rows, not from the whole grid's table once per branch and measure."""
    index: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for row in rows:
        if row["metric"] == "loss":
            index[(row["name"], row.get("base_run") or row["run"])].append(row)
    return dict(index)


def loss_samples(rows: Sequence[Mapping], run: str, kind: str, name: str) -> tuple[dict[int, list[float]], bool]:
    """(step -> losses, one per seed; whether they are fine-tuned rows) for a run on one held-out domain or set."""
    kinds = ("set", "heldout") if kind == "any" else (kind,)
    tuned: dict[int, list[float]] = defaultdict(list)
    direct: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if row["metric"] != "loss" or row["name"] != name or row["kind"] not in kinds:
            continue
        if row.get("base_run") == run and row.get("base_step") is not None:
            tuned[row["base_step"]].append(row["value"])
        elif row["run"] == run and row.get("base_run") is None and row["step"] is not None:
            direct[row["step"]].append(row["value"])
    return (dict(tuned), True) if tuned else (dict(direct), False)


def mean_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, half-width of its 95 % interval from the seeds' spread; None with one seed)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None
    return m, t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def difference(branch: Sequence[float], control: Sequence[float]) -> dict:
    """Δ = mean(branch) − mean(control) with a Welch 95 % interval when both have two seeds or more."""
    mb, mc = statistics.fmean(branch), statistics.fmean(control)
    out = {"delta": mb - mc, "branch_mean": mb, "control_mean": mc, "seeds": [len(branch), len(control)],
           "half_width": None}
    if len(branch) >= 2 and len(control) >= 2:
        vb, vc = statistics.variance(branch) / len(branch), statistics.variance(control) / len(control)
        se = math.sqrt(vb + vc)
        if se > 0:
            df = (vb + vc) ** 2 / (vb**2 / (len(branch) - 1) + vc**2 / (len(control) - 1))
            out["half_width"] = t_quantile(df) * se
        else:
            out["half_width"] = 0.0
    return out


def compare(branch: Mapping[int, list[float]], control: Mapping[int, list[float]], start: int) -> dict | None:
    """Δ at the latest step both curves have, and over the curve: the area between them (loss x steps, by the
    trapezoid rule over their common steps from ``start``) and its mean per step. None if no step is common."""
    common = sorted(s for s in set(branch) & set(control) if s >= start)
    if not common:
        return None
    out = {"at_step": common[-1], **difference(branch[common[-1]], control[common[-1]])}
    gaps = [statistics.fmean(branch[s]) - statistics.fmean(control[s]) for s in common]
    if len(common) >= 2:
        area = sum((gaps[k] + gaps[k + 1]) / 2 * (common[k + 1] - common[k]) for k in range(len(common) - 1))
        out.update(area=area, mean_gap=area / (common[-1] - common[0]), curve_steps=[common[0], common[-1]])
    else:
        out.update(area=None, mean_gap=None, curve_steps=[common[0], common[0]])
    return out


def least_squares(points: Sequence[tuple[float, float, float]]) -> dict:
    """Δ ~ b0 + b_step·step + b_share·share + b_both·step·share on centred predictors (step in thousands, share in
    percentage points), each term only where its predictor varies (the interaction only with more than four points);
    coefficients with standard errors from the residual variance (none when the fit is exact: no degrees of
    freedom left)."""
    steps = np.array([p[0] for p in points], dtype=float) / 1000.0
    shares = np.array([p[1] for p in points], dtype=float) * 100.0
    y = np.array([p[2] for p in points], dtype=float)
    columns, names = [np.ones(len(y))], ["intercept"]
    centred_step, centred_share = steps - steps.mean(), shares - shares.mean()
    if len(set(steps.round(9))) > 1:
        columns.append(centred_step)
        names.append("step (per 1,000)")
    if len(set(shares.round(9))) > 1:
        columns.append(centred_share)
        names.append("share (per percentage point)")
    if len(names) == 3 and len(y) > 4:
        columns.append(centred_step * centred_share)
        names.append("step x share")
    x = np.stack(columns, axis=1)
    coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual_df = len(y) - x.shape[1]
    residuals = y - x @ coefficients
    terms = []
    rss = float(residuals @ residuals)
    if residual_df > 0 and np.linalg.matrix_rank(x) == x.shape[1]:
        # a fit exact to rounding has no spread to estimate errors from: 0, and no t
        sigma2 = 0.0 if rss <= 1e-24 * max(1.0, float(y @ y)) else rss / residual_df
        errors = np.sqrt(np.diag(sigma2 * np.linalg.inv(x.T @ x)))
    else:
        errors = [None] * x.shape[1]
    for name, b, se in zip(names, coefficients, errors, strict=True):
        terms.append({"term": name, "estimate": float(b), "se": None if se is None else float(se),
                      "t": None if not se else float(b / se)})
    return {"points": len(y), "residual_df": residual_df, "terms": terms,
            "centred_at": {"step": float(steps.mean() * 1000), "share": float(shares.mean() / 100)}}


def bootstrap_interval(x: Sequence[float], y: Sequence[float], statistic, resamples: int = 2000,
                       seed: int = 0) -> tuple[float | None, float | None, int]:
    """The percentile 95 % interval of ``statistic(x, y)`` over resampled pairs, and how many resamples gave a
    value (a resample of a constant series has none)."""
    rng = np.random.default_rng(seed)
    n, values = len(x), []
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if n < 3:
        return None, None, 0
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        value = statistic(xs[pick], ys[pick])
        if value is not None:
            values.append(value)
    if not values:
        return None, None, 0
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high), len(values)
