"""Metric loggers for a run, all writing inside ``out_dir`` and continuing one curve across restarts.

``tensorboard`` (default) purges events past the step a resumed run restarts from; ``csv`` is a tidy
``step,metric,value`` file that drops rows past the restart step; ``wandb`` reuses the run's id (kept in
``run.json``) with ``resume="allow"``, its files under ``out_dir``.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path
from typing import Any

from lightning.fabric.loggers import Logger, TensorBoardLogger

from midtrain.errors import ConfigError
from midtrain.publish import write_text_atomic

LOGGER_NAMES = ("tensorboard", "csv", "wandb")


class TidyCSVLogger(Logger):
    """``out_dir/logs/metrics.csv`` with one row per (step, metric): appending never rewrites a header."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            with self.path.open(newline="") as file:
                rows = [r for r in csv.DictReader(file) if _step(r) is not None and _step(r) <= resume_step]
            self._rewrite(rows)
        elif not self.path.exists() or resume_step is None:
            self._rewrite([])

    def _rewrite(self, rows: list[dict]) -> None:
        """The whole file, replaced atomically: a failed write (a full disk) keeps the earlier curve."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["step", "metric", "value"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("step", "metric", "value")} for r in rows)
        write_text_atomic(self.path, buffer.getvalue())

    def _append(self, rows: list[dict]) -> None:
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, fieldnames=["step", "metric", "value"]).writerows(rows)

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._append([{"step": step, "metric": k, "value": float(v)} for k, v in metrics.items()])

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the resolved config is saved as out_dir/config.yaml


def _step(row: dict) -> int | None:
    """A row's step; None for a row torn by an interrupted append (a full disk), which a resume drops."""
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return None


def check_logger(name: str) -> None:
    """Fails before training for a logger that cannot be built here."""
    if name not in LOGGER_NAMES:
        raise ConfigError(f"--logger_name={name!r} is not supported by midtrain pretrain; use one of "
                          f"{', '.join(LOGGER_NAMES)}.")
    if name == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("--logger_name=wandb needs the wandb package, which is not installed. Run: pip install wandb "
                          "(set WANDB_MODE=offline on machines without network), or use --logger_name=tensorboard.")


def build_logger(
    name: str, out_dir: Path, run_id: str, resume_step: int | None, log_args: Any, run_name: str
) -> Logger:
    check_logger(name)
    if name == "tensorboard":
        kwargs = {} if resume_step is None else {"purge_step": resume_step + 1}
        return TensorBoardLogger(root_dir=out_dir / "logs", name="tensorboard", version=0, **kwargs)
    if name == "csv":
        return TidyCSVLogger(out_dir / "logs" / "metrics.csv", resume_step)
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        project=log_args.project or "midtrain",
        name=log_args.run or run_name,
        group=log_args.group,
        id=run_id,
        resume="allow",
        save_dir=str(out_dir),
    )


def close_logger(logger: Logger) -> None:
    """Flush and close; a wandb run is finished so the next invocation (or a test in the same process) resumes it."""
    logger.finalize("success")
    if type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish()
