"""A console summary of the results table: each run's latest scored checkpoint, one column per domain or set."""

from __future__ import annotations

from midtrain.eval.results import is_average
from midtrain.reports import markdown_table


def latest_table(rows: list[dict], checkpoints: set[str]) -> str:
    """Markdown: run, step, tokens seen and the loss on every held-out domain and named set (task metrics too)."""
    chosen = [
        r
        for r in rows
        if r["checkpoint"] in checkpoints and r["metric"] not in ("ppl",) and not r["metric"].endswith("_stderr")
    ]
    latest: dict[str, tuple] = {}
    for row in chosen:
        label = f"{row['run']} (average)" if is_average(row) else row["run"]  # the weight average: its own line
        order = (row["step"] if row["step"] is not None else -1, row["checkpoint"].endswith("final"))
        if label not in latest or order > latest[label][0]:
            latest[label] = (order, row["checkpoint"])
    columns = list(dict.fromkeys((r["kind"], r["name"], r["metric"]) for r in chosen))
    if not columns:
        return "(nothing scored)"
    values = {(r["checkpoint"], r["kind"], r["name"], r["metric"]): r for r in chosen}
    titles = [name if metric == "loss" else f"{name} {metric}" for _, name, metric in columns]
    rows = []
    for run, (_, checkpoint) in latest.items():
        first = next(r for r in chosen if r["checkpoint"] == checkpoint)
        cells = [f"{values[key]['value']:.4f}" if (key := (checkpoint, *column)) in values else "-"
                 for column in columns]
        tokens = f"{first['tokens_seen']:,}" if first["tokens_seen"] is not None else "-"
        rows.append([run, first["step"] if first["step"] is not None else "-", tokens, *cells])
    return markdown_table(["run", "step", "tokens seen", *titles], rows, [False, True, True] + [True] * len(titles))
