"""Plots of the results table: one figure per held-out domain or named set, loss against tokens seen (or steps),
one line per run, each branch drawn from its parent's point at the branch step (marked), so branches and the
control overlay the trunk. Fine-tuned checkpoints are plotted against the step of the checkpoint they started
from, averaged over seeds, one line per base run (the paper's SFT figures)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from statistics import mean

from midtrain import reports


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def curves(rows: list[dict]) -> dict[tuple[str, str, str | None], dict]:
    """(kind, name, sft task) -> {'axis', 'series': run -> [(x, loss)], 'branches': run -> (x, loss)}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["metric"] == "loss" and row["kind"] in ("heldout", "set"):
            groups[(row["kind"], row["name"], row["sft_task"])].append(row)
    figures = {}
    for key, members in groups.items():
        if key[2] is not None:
            points: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
            for row in members:
                if row["base_step"] is not None:
                    points[row["base_run"] or row["run"]][row["base_step"]].append(row["value"])
            series = {run: sorted((x, mean(v)) for x, v in by_x.items()) for run, by_x in points.items()}
            figures[key] = {"axis": "base checkpoint step", "series": series, "branches": {}}
            continue
        use_tokens = all(r["tokens_seen"] is not None for r in members)
        axis = "tokens seen" if use_tokens else "step"
        by_run: dict[str, dict[float, float]] = defaultdict(dict)
        steps: dict[tuple[str, int], float] = {}
        parents: dict[str, tuple[str, int]] = {}
        for row in members:
            x = row["tokens_seen"] if use_tokens else row["step"]
            if x is None:
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
        figures[key] = {"axis": axis, "series": series, "branches": branches}
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
        what = "held-out" if kind == "heldout" else "validation set"
        title = f"{name} ({what}) loss" + (f" after fine-tuning on {sft_task}" if sft_task else "")
        ax.set_title(title + ("; circles: branch points" if figure_data["branches"] else ""))
        ax.set_xlabel(figure_data["axis"])
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out_dir / _file_name(f"{kind}_{name}" + (f"_after_{sft_task}" if sft_task else "") + ".png")
        written.append(reports.save_figure(fig, path))
    return written
