"""The tidy results table of ``midtrain eval`` (pure file logic, no torch).

One row per (checkpoint, what was scored, metric): ``kind`` is ``heldout`` (a domain's held-out shards),
``set`` (a named validation set) or ``task`` (an lm-evaluation-harness task). ``eval.csv`` is appended to after
every checkpoint, so an interrupted evaluation keeps what it finished; ``eval.json`` holds the same rows as a list.
Re-running skips every (checkpoint, kind, name) already scored with the same ``settings``.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path

from midtrain.errors import ConfigError

COLUMNS = ("run", "parent", "branch_step", "step", "tokens_seen", "kind", "name", "metric", "value", "eval_tokens",
           "settings", "base_run", "base_step", "sft_task", "seed", "checkpoint")
CSV_FILE = "eval.csv"
JSON_FILE = "eval.json"
_NUMERIC = {"branch_step": int, "step": int, "tokens_seen": int, "value": float, "eval_tokens": int, "base_step": int,
            "seed": int}


def _parse(row: dict) -> dict:
    parsed = {}
    for column in COLUMNS:
        value = row.get(column, "")
        parsed[column] = _NUMERIC[column](float(value)) if column in _NUMERIC and value not in ("", None) else (value if value != "" else None)
    return parsed


def read_rows(path: Path) -> list[dict]:
    """Rows of an ``eval.csv`` (numbers parsed, empty cells as None)."""
    if not path.is_file():
        raise ConfigError(f"{path} does not exist. Run 'midtrain eval' first, or point at its eval.csv.")
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ConfigError(f"{path} is not a midtrain eval table (columns {reader.fieldnames}, expected {list(COLUMNS)}). "
                              "Choose another --out_dir, or move the old file away.")
        return [_parse(row) for row in reader]


class ResultsTable:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.csv_path, self.json_path = self.out_dir / CSV_FILE, self.out_dir / JSON_FILE
        self.rows: list[dict] = read_rows(self.csv_path) if self.csv_path.is_file() else []
        self._done = {self.row_key(r) for r in self.rows}

    @staticmethod
    def row_key(row: dict) -> tuple:
        return (row["checkpoint"], row["kind"], row["name"], row["settings"])

    def done(self, checkpoint: str, kind: str, name: str, settings: str) -> bool:
        return (checkpoint, kind, name, settings) in self._done

    def append(self, rows: Iterable[dict]) -> None:
        """Add rows (every column, None for unknown) and write both files; the CSV only grows."""
        rows = [{c: row.get(c) for c in COLUMNS} for row in rows]
        if not rows:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # array tasks may share one table: append under an exclusive lock, then rebuild the JSON from the whole CSV
        with (self.out_dir / ".eval.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            new_file = not self.csv_path.is_file()
            with self.csv_path.open("a", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=COLUMNS)
                if new_file:
                    writer.writeheader()
                writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
            self.rows = read_rows(self.csv_path)
            self._done = {self.row_key(r) for r in self.rows}
            staging = self.json_path.with_name(f".{JSON_FILE}.{os.getpid()}.tmp")
            staging.write_text(json.dumps(self.rows, indent=1) + "\n")
            os.replace(staging, self.json_path)
