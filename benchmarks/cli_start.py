"""Start-up time of the CLI beside ``python -c "import torch"``, measured side by side in one run.

    .venv/bin/python benchmarks/cli_start.py [--runs 7]

Times (median of ``--runs`` fresh processes each, interleaved) ``midtrain --help``, ``midtrain mix --help``,
``midtrain sweep --help`` and ``midtrain prepare --help`` against ``python -c "import torch"``, and prints each
ratio (goal: under 0.8 — these commands load neither torch nor litgpt nor lightning).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "midtrain --help": [sys.executable, "-m", "midtrain", "--help"],
    "midtrain mix --help": [sys.executable, "-m", "midtrain", "mix", "--help"],
    "midtrain sweep --help": [sys.executable, "-m", "midtrain", "sweep", "--help"],
    "midtrain prepare --help": [sys.executable, "-m", "midtrain", "prepare", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(command, env=env, cwd=REPO, capture_output=True, check=True)
            times[name].append(time.perf_counter() - started)
    torch_s = statistics.median(times["import torch"])
    print(f"median of {args.runs} runs; python -c 'import torch': {torch_s:.2f} s")
    for name, values in times.items():
        if name != "import torch":
            ratio = statistics.median(values) / torch_s
            print(f"{name:<26} {statistics.median(values):.2f} s   vs import torch {ratio:.2f} (goal < 0.8)")


if __name__ == "__main__":
    main()
