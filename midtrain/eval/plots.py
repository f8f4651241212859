"""Plots of the results table: one figure per held-out domain or named set, loss against tokens seen (or steps),
one line per run, each branch drawn from its parent's point at the branch step (marked), so branches and the
control overlay the trunk; a run's weight average (``average/``) is a star beside its line. Fine-tuned checkpoints
are plotted against the step of the checkpoint they started from, averaged over seeds, one line per base run (the
paper's SFT figures)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from statistics import mean

from midtrain import reports
from midtrain.eval.results import is_average


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


PLOTTED = {"heldout": "loss", "set": "loss", "gold": "bpb"}
"""The metric plotted over steps for each kind of row."""


def curves(rows: list[dict]) -> dict[tuple[str, str, str | None], dict]:
    """(kind, name, sft task) -> {'axis', 'series': run -> [(x, loss)], 'branches': run -> (x, loss),
    'averages': run -> (x, loss)}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if PLOTTED.get(row["kind"]) == row["metric"]:
            groups[(row["kind"], row["name"], row["sft_task"])].append(row)
    figures = {}
    for key, members in groups.items():
        if key[2] is not None:
            points: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
            for row in members:
                if row["base_step"] is not None:
                    points[row["base_run"] or row["run"]][row["base_step"]].append(row["value"])
            series = {run: sorted((x, mean(v)) for x, v in by_x.items()) for run, by_x in points.items()}
            figures[key] = {"axis": "base checkpoint step", "series": series, "branches": {}, "averages": {}}
            continue
        use_tokens = all(r["tokens_seen"] is not None for r in members)
        axis = "tokens seen" if use_tokens else "step"
        by_run: dict[str, dict[float, float]] = defaultdict(dict)
        averages: dict[str, tuple[float, float]] = {}
        steps: dict[tuple[str, int], float] = {}
        parents: dict[str, tuple[str, int]] = {}
        for row in members:
            x = row["tokens_seen"] if use_tokens else row["step"]
            if x is None:
                continue
            if is_average(row):
                averages[row["run"]] = (x, row["value"])
                continue
            by_run[row["run"]][x] = row["value"]
            steps[(row["run"], row["step"])] = x
            if row["parent"] is not None and row["branch_step"] is not None:
                parents[row["run"]] = (row["parent"], row["branch_step"])
        series, branches = {}, {}
        for run, points_by_x in by_run.items():
            line = sorted(points_by_x.items())
            parent = parents.get(run)
            if parent is not None and parent in steps and parent[0] in by_run:
                x = steps[parent]
                start = (x, by_run[parent[0]][x])
                line = [start] + [p for p in line if p[0] > x]
                branches[run] = start
            series[run] = line
        figures[key] = {"axis": axis, "series": series, "branches": branches, "averages": averages}
    return figures


def plot_results(rows: list[dict], out_dir: Path) -> list[Path]:
    written = []
    for (kind, name, sft_task), figure_data in sorted(
        curves(rows).items(), key=lambda kv: tuple(str(k) for k in kv[0])
    ):
        if not figure_data["series"]:
            continue
        fig, axes = reports.figure(size=(7, 4.2))
        ax = axes[0, 0]
        for run, line in sorted(figure_data["series"].items()):
            drawn = ax.plot([x for x, _ in line], [y for _, y in line], marker=".", label=run)
            if run in figure_data["branches"]:
                x, y = figure_data["branches"][run]
                ax.scatter([x], [y], s=60, facecolors="none", edgecolors=drawn[0].get_color(), zorder=3)
                ax.axvline(x, color="gray", linestyle=":", linewidth=1)
            if run in figure_data["averages"]:
                x, y = figure_data["averages"][run]
                ax.scatter([x], [y], s=90, marker="*", color=drawn[0].get_color(), zorder=4)
        what = {"heldout": "held-out", "set": "validation set", "gold": "gold answers"}[kind]
        title = f"{name} ({what}) {PLOTTED[kind]}" + (f" after fine-tuning on {sft_task}" if sft_task else "")
        marks = ["circles: branch points"] * bool(figure_data["branches"]) + \
            ["stars: weight averages"] * bool(figure_data["averages"])
        ax.set_title("; ".join([title, *marks]), fontsize=9 if marks else None)
        ax.set_xlabel(figure_data["axis"])
        ax.set_ylabel("bits per byte" if PLOTTED[kind] == "bpb" else "loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out_dir / _file_name(f"{kind}_{name}" + (f"_after_{sft_task}" if sft_task else "") + ".png")
        written.append(reports.save_figure(fig, path))
    return written


def mixture_and_lr(run_dir: Path) -> dict | None:
    """A run's mixture and LR over its lineage's steps: ``stretches`` [(start, end, {domain: share})] from its latest
    ledger, ``lr`` [(step, lr)] from its own and its parents' ``logs/metrics.csv`` (each up to where its child
    branched), ``branch_steps``. None for a folder without a midtrain ledger."""
    import csv
    import json

    from midtrain.train import checkpoint_files as files

    latest = files.latest_checkpoint(run_dir)
    try:
        ledger = json.loads((latest.path / "ledger.json").read_text()) if latest else None
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if not ledger or not ledger.get("stretches"):
        return None
    domain_of = {i: info["domain"] for i, info in ledger["shards"].items()}
    stretches = []
    for k, stretch in enumerate(ledger["stretches"]):
        start = stretch.get("start_step", 0)
        end = ledger["stretches"][k + 1].get("start_step", latest.step) if k + 1 < len(ledger["stretches"]) \
            else latest.step
        shares: dict[str, float] = defaultdict(float)
        for share, shard_ids in stretch.get("shares", []):
            for shard_id in shard_ids:
                shares[domain_of.get(shard_id, shard_id)] += share
        stretches.append((start, max(start, end), dict(shares)))
    lineage = run.get("lineage") or []
    folders = [(Path(e["parent_out_dir"]), int(e["step"])) for e in lineage if e.get("parent_out_dir")]
    cuts = [step for _, step in folders] + [latest.step]
    lr: dict[int, float] = {}
    for (folder, _), (start, end) in zip([*folders, (run_dir, latest.step)], zip([0, *cuts[:-1]], cuts, strict=True),
                                         strict=True):
        try:
            with (folder / "logs" / "metrics.csv").open(newline="") as handle:
                for row in csv.DictReader(handle):
                    if row.get("metric") == "train/lr" and start < int(row["step"]) <= end:
                        lr[int(row["step"])] = float(row["value"])
        except (OSError, ValueError, KeyError):
            continue  # a parent whose logs are gone: its stretch of the LR curve is left out
    return {"stretches": stretches, "lr": sorted(lr.items()), "branch_steps": [step for _, step in folders]}


def plot_mixture_and_lr(run_dirs: dict[str, Path], out_dir: Path) -> list[Path]:
    """One figure per run: its domains' shares over steps (stacked) above its LR over steps, both over the whole
    lineage, branch points marked: when each domain's data came relative to the LR."""
    written = []
    for name, run_dir in sorted(run_dirs.items()):
        data = mixture_and_lr(run_dir)
        if data is None:
            continue
        fig, axes = reports.figure(2, 1, (7, 5.2), sharex=True)
        top, bottom = axes[0, 0], axes[1, 0]
        domains = sorted({d for _, _, shares in data["stretches"] for d in shares})
        xs = [x for start, end, _ in data["stretches"] for x in (start, end)]
        top.stackplot(xs, *[[shares.get(d, 0.0) for _, _, shares in data["stretches"] for _ in (0, 1)]
                            for d in domains], labels=domains, alpha=0.85)
        top.set_ylabel("share of the mixture")
        top.set_ylim(0, 1)
        top.legend(fontsize=8, loc="lower left")
        top.set_title(f"{name}: mixture and learning rate over steps", fontsize=10)
        if data["lr"]:
            bottom.plot([s for s, _ in data["lr"]], [v for _, v in data["lr"]], color="black", linewidth=1.2)
        bottom.set_ylabel("learning rate")
        bottom.set_xlabel("step")
        for ax in (top, bottom):
            for step in data["branch_steps"]:
                ax.axvline(step, color="gray", linestyle=":", linewidth=1)
            ax.grid(alpha=0.3)
        written.append(reports.save_figure(fig, out_dir / _file_name(f"mixture_lr_{name}.png")))
    return written
