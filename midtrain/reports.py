"""What commands write for people and for scripts, written one way: plain-text tables for the terminal, Markdown
tables for report files, CSV and JSON files (written atomically: a reader sees the old file or the new one), and
figures on matplotlib's Agg backend (chosen once, here; no screen is needed)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from midtrain.publish import write_text_atomic

DPI = 110


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """A plain-text table with a rule under the header; ``right``: which columns align right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True))
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    """A Markdown table; ``right``: which columns align right (default: none)."""
    right = right or [False] * len(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def csv_text(header: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> str:
    """CSV lines (None cells empty); without ``header``, the rows alone (to append to a file that has one)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if header is not None:
        writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue()


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    write_text_atomic(Path(path), csv_text(header, rows))
    return Path(path)


def write_json(path: Path, payload: Any) -> Path:
    write_text_atomic(Path(path), json.dumps(payload, indent=2) + "\n")
    return Path(path)


def figure(rows: int = 1, columns: int = 1, size: tuple[float, float] = (6.0, 4.0), sharex: bool = False):
    """(a new figure, its axes as a 2-D array), on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, figsize=size, squeeze=False, sharex=sharex)


def save_figure(fig, path: Path) -> Path:
    """Write the figure (its folder created) and free it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def heatmap(ax, values, x_labels: Sequence[str], y_labels: Sequence[str], label: str, cmap: str, vmin: float,
            vmax: float, cell_format: str = "{:.2f}", light_when=None, **tick_options) -> None:
    """``values`` (rows x columns; NaN cells left blank) with each cell's value written in it, and a colour bar.
    ``light_when(value)``: whether a cell's text is white (on a dark cell)."""
    import math

    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, origin=tick_options.pop("origin", "upper"),
                      aspect="auto")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if not math.isnan(value):
                ax.text(j, i, cell_format.format(value), ha="center", va="center", fontsize=8,
                        color="white" if light_when and light_when(value) else "black")
    ax.set_xticks(range(len(x_labels)), x_labels, **tick_options)
    ax.set_yticks(range(len(y_labels)), y_labels)
    ax.figure.colorbar(image, ax=ax, label=label)
