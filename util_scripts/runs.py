"""List runs' checkpoints and lineage, or collect their metrics into one tidy CSV.

    python util_scripts/runs.py list out/pythia-70m/*            # checkpoints (step, tokens, LR) and lineage
    python util_scripts/runs.py metrics out/pythia-70m/* -o m.csv # run,step,metric,value from every run's logs

Metrics come from the csv logger's ``logs/metrics.csv`` or the tensorboard event files under ``logs/tensorboard``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from midtrain.train.checkpoint_files import list_checkpoints  # noqa: E402


def describe_run(run: Path) -> str:
    record = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    lines = [f"{run}  (run {record.get('run_id', '?')}, {len(record.get('invocations', []))} invocation(s))"]
    for entry in record.get("lineage", []):
        lines.append(f"  branched from {entry['checkpoint']} at step {entry['step']:,}: "
                     f"{entry.get('mixture_before')} -> {entry.get('mixture_after')}")
    for checkpoint in list_checkpoints(run):
        info = checkpoint.info
        lines.append(f"  {checkpoint.path.name:<16} step {checkpoint.step:>9,}  tokens {info.get('tokens', 0):>16,}  "
                     f"next lr {info.get('lr_next', float('nan')):.3e}")
    return "\n".join(lines)


def run_metrics(run: Path) -> list[tuple[int, str, float]]:
    tidy = run / "logs" / "metrics.csv"
    if tidy.is_file():
        with tidy.open(newline="") as file:
            return [(int(r["step"]), r["metric"], float(r["value"])) for r in csv.DictReader(file)]
    events = run / "logs" / "tensorboard"
    if events.is_dir():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        rows = []
        for folder in sorted({p.parent for p in events.rglob("events.out.tfevents.*")}):
            accumulator = EventAccumulator(str(folder))
            accumulator.Reload()
            for tag in accumulator.Tags()["scalars"]:
                rows.extend((e.step, tag, e.value) for e in accumulator.Scalars(tag))
        return rows
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["list", "metrics"])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="CSV file for 'metrics' (default: stdout)")
    args = parser.parse_args(argv)
    runs = [r for r in args.runs if (r / "run.json").is_file() or list_checkpoints(r)]
    if not runs:
        print(f"no run folders among {[str(r) for r in args.runs]}", file=sys.stderr)
        return 2
    if args.action == "list":
        print("\n\n".join(describe_run(r) for r in runs))
        return 0
    out = args.output.open("w", newline="") if args.output else sys.stdout
    writer = csv.writer(out)
    writer.writerow(["run", "step", "metric", "value"])
    for run in runs:
        writer.writerows((str(run), step, metric, value) for step, metric, value in run_metrics(run))
    if args.output:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
