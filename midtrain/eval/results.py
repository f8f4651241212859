"""The tidy results table of ``midtrain eval`` (pure file logic, no torch).

One row per (checkpoint, what was scored, metric): ``kind`` is ``heldout`` (a domain's held-out shards),
``set`` (a named validation set), ``gold`` (a gold-answer set: ``logprob``, ``bpb``, and ``acc``, ``gold_prob`` for
multiple choice) or ``task`` (an lm-evaluation-harness task). ``eval.csv`` is appended to after
every checkpoint, so an interrupted evaluation keeps what it finished; ``eval.json`` holds the same rows as a list.
Re-running skips every (checkpoint, kind, name) already scored with the same ``settings``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

from midtrain.distributed import get_logger
from midtrain.errors import ConfigError
from midtrain.reports import csv_text
from midtrain.train.checkpoint_files import AVERAGE

log = get_logger(__name__)

COLUMNS = ("run", "parent", "branch_step", "step", "tokens_seen", "kind", "name", "metric", "value", "eval_tokens",
           "settings", "base_run", "base_step", "sft_task", "seed", "checkpoint")
CSV_FILE = "eval.csv"
JSON_FILE = "eval.json"
_NUMERIC = {"branch_step": int, "step": int, "tokens_seen": int, "value": float, "eval_tokens": int, "base_step": int,
            "seed": int}


def is_average(row: dict) -> bool:
    """A row of a run's weight average (``out_dir/average``, ``train.average``): a point beside ``final``, not one
    of the run's curve."""
    return Path(str(row.get("checkpoint") or "")).name == AVERAGE


def _parse(row: dict, where: str, line: int) -> dict:
    parsed = {}
    for column in COLUMNS:
        value = row.get(column, "")
        if column in _NUMERIC and value not in ("", None):
            try:
                parsed[column] = _NUMERIC[column](float(value))
            except (ValueError, OverflowError):  # int(float("inf")) overflows
                raise ConfigError(f"{where}: line {line}, column {column!r}: {value!r} is not a number. Fix or remove "
                                  "that row ('midtrain eval' writes numbers there).") from None
        else:
            parsed[column] = value if value != "" else None
    return parsed


def read_rows(path: Path, flag: str | None = None) -> list[dict]:
    """Rows of an ``eval.csv`` (numbers parsed, empty cells as None). A torn last row (a job killed mid-write, a
    full disk) and rows with the wrong number of cells are left out with a warning. ``flag``: the option that named
    the table (``--tables``), for the messages; None for ``midtrain eval``'s own table in its ``--out_dir``."""
    where = f"{flag}={str(path)!r}" if flag else str(path)
    if not path.is_file():
        raise ConfigError(f"{where} does not exist. Run 'midtrain eval' first, or point at its eval.csv.")
    with path.open(newline="") as file:
        text = file.read()
    if not text.strip():
        if flag is None:
            return []  # created, nothing written yet
        raise ConfigError(f"{where} is empty: no evaluation was written to it. Run 'midtrain eval' into it first, "
                          "or point at another eval.csv.")
    if text and not text.endswith("\n"):
        log.warning("%s ends in a torn row (%d characters without a line end): left out.", path,
                    len(text) - text.rfind("\n") - 1)
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        advice = (f"Point {flag} at an eval.csv that 'midtrain eval' wrote." if flag else
                  "Choose another --out_dir, or move the old file away.")
        raise ConfigError(f"{where} is not a midtrain eval table (columns {reader.fieldnames}, expected "
                          f"{list(COLUMNS)}). {advice}")
    rows, bad = [], 0
    for row in reader:
        if None in row or any(row.get(c) is None for c in COLUMNS):  # more or fewer cells than columns
            bad += 1
            continue
        rows.append(_parse(row, where, reader.line_num))
    if bad:
        log.warning("%s: %d row(s) with the wrong number of cells left out (rows glued together by an earlier "
                    "interrupted write).", path, bad)
    return rows


class ResultsTable:
    """The table in ``out_dir``, shared by evaluations running at once (array tasks): what is done is decided, and
    rows are added, under one exclusive lock, so two evaluations never write the same row twice."""

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

    @contextlib.contextmanager
    def _locked(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with (self.out_dir / ".eval.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._repair_tail()
            self.rows = read_rows(self.csv_path) if self.csv_path.is_file() else []
            self._done = {self.row_key(r) for r in self.rows}
            yield

    def _repair_tail(self) -> None:
        """Cut a torn last row off the file (under the lock), so the next row does not get glued onto it."""
        if not self.csv_path.is_file():
            return
        with self.csv_path.open("rb+") as file:
            size = file.seek(0, os.SEEK_END)
            if size == 0:
                return
            file.seek(size - 1)
            if file.read(1) == b"\n":
                return
            file.seek(max(0, size - (1 << 20)))
            tail = file.read()
            keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
            file.truncate(keep)
        log.warning(
            "%s ended in a torn row (%d bytes, from an interrupted write): removed.", self.csv_path, size - keep
        )

    def pending(self, checkpoint: str, wanted: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        """Of ``wanted`` (kind, name, settings), what the table still lacks for ``checkpoint``, read under the lock
        (another evaluation may have scored it meanwhile)."""
        with self._locked():
            return [w for w in wanted if not self.done(checkpoint, *w)]

    def append(self, rows: Iterable[dict]) -> None:
        """Add rows (every column, None for unknown) and write both files; the CSV only grows. Rows another
        evaluation wrote meanwhile are not written again."""
        rows = [{c: row.get(c) for c in COLUMNS} for row in rows]
        if not rows:
            return
        # array tasks may share one table: append under an exclusive lock, then rebuild the JSON from the whole CSV
        with self._locked():
            rows = [r for r in rows if self.row_key(r) not in self._done]
            new_file = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
            with self.csv_path.open("a", newline="") as file:
                file.write(csv_text(COLUMNS if new_file else None, [[row[c] for c in COLUMNS] for row in rows]))
                file.flush()
                os.fsync(file.fileno())
            self.rows = read_rows(self.csv_path)
            self._done = {self.row_key(r) for r in self.rows}
            staging = self.json_path.with_name(f".{JSON_FILE}.{os.getpid()}.tmp")
            staging.write_text(json.dumps(self.rows, indent=1) + "\n")
            os.replace(staging, self.json_path)
