"""The demo's results: per-domain validation loss of the trunk and each branch, as a table and a plot."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from midtrain import reports
from midtrain.reports import markdown_table

Curves = dict[str, dict[int, float]]  # domain -> step -> validation loss
CONTROL = "control"


def read_val_curves(run_dir: Path) -> Curves:
    """``val/<domain>/loss`` by step from a run's tidy CSV log (``logger_name: csv``)."""
    curves: Curves = {}
    with (run_dir / "logs" / "metrics.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            parts = row["metric"].split("/")
            if len(parts) == 3 and parts[0] == "val" and parts[2] == "loss" and parts[1] != "overall":
                curves.setdefault(parts[1], {})[int(row["step"])] = float(row["value"])
    return curves


def summary_table(branches: Mapping[str, Curves], domains: list[str]) -> tuple[str, dict[str, dict[str, float]]]:
    """Markdown table of each branch's final validation loss per domain, with the change against the control."""
    final = {
        name: {d: curves[d][max(curves[d])] for d in domains if curves.get(d)} for name, curves in branches.items()
    }
    step = max(max(c) for curves in branches.values() for c in curves.values())
    control = final.get(CONTROL, {})

    def cell(name: str, d: str) -> str:
        value = final[name].get(d)
        if value is None:
            return "-"
        return f"{value:.3f}" if name == CONTROL or d not in control else f"{value:.3f} ({value - control[d]:+.3f})"

    table = markdown_table(["branch", *(f"{d} loss" for d in domains)],
                           [[name, *(cell(name, d) for d in domains)] for name in final],
                           [False] + [True] * len(domains))
    note = f"Validation loss per domain at step {step:,} (in brackets: the change against the control branch)."
    return f"{note}\n\n{table}", final


def plot_curves(
    trunk: Curves, branches: Mapping[str, Curves], branch_step: int, domains: list[str], path: Path
) -> Path:
    """One panel per domain: loss vs step, the trunk up to the branch point, the branches overlaid after it."""
    columns = 2
    rows = (len(domains) + columns - 1) // columns
    figure, axes = reports.figure(rows, columns, (6 * columns, 3.6 * rows))
    colours = {"trunk": "black", CONTROL: "tab:gray", "code": "tab:blue", "code_ramp": "tab:cyan", "math": "tab:orange"}
    for ax, domain in zip(axes.flat, domains, strict=False):
        points = sorted((s, v) for s, v in trunk.get(domain, {}).items() if s <= branch_step)
        ax.plot([s for s, _ in points], [v for _, v in points], color="black", label="trunk (main only)")
        start = dict(points).get(branch_step)
        for name, curves in branches.items():
            series = sorted(curves.get(domain, {}).items())
            if start is not None:
                series = [(branch_step, start)] + [p for p in series if p[0] > branch_step]
            ax.plot([s for s, _ in series], [v for _, v in series], label=f"branch: {name}",
                    color=colours.get(name), linestyle="--" if name == CONTROL else "-")
        ax.axvline(branch_step, color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"{domain} validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(domains):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(f"Midtraining branches from step {branch_step:,} (dotted line) vs the control")
    return reports.save_figure(figure, path)
