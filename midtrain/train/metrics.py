"""A run's metrics, in one place: the loggers (all writing inside ``out_dir`` and continuing one curve across
restarts), the sink the loop writes to (rank 0 only), and the loop hook that measures throughput, MFU, the loader's
share of the time and memory.

``tensorboard`` (default) purges events past the step a resumed run restarts from; ``csv`` is a tidy
``step,metric,value`` file that drops rows past the restart step; ``wandb`` reuses the run's id (kept in
``run.json``) with ``resume="allow"``, its files under ``out_dir``.
"""

from __future__ import annotations

import csv
import importlib.util
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.loggers import Logger, TensorBoardLogger

from midtrain.errors import ConfigError
from midtrain.reports import csv_text, write_csv
from midtrain.train.hooks import Hook

LOGGER_NAMES = ("tensorboard", "csv", "wandb")
COLUMNS = ("step", "metric", "value")


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
        write_csv(self.path, COLUMNS, [[r[k] for k in COLUMNS] for r in rows])

    def _append(self, rows: list[dict]) -> None:
        with self.path.open("a", newline="") as file:
            file.write(csv_text(None, [[r[k] for k in COLUMNS] for r in rows]))

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


class MetricSink:
    """Where the loop's metrics go: the run's logger, on rank 0 only (``None`` elsewhere)."""

    def __init__(self, name: str | None = None, out_dir: Path | None = None, run_id: str = "",
                 resume_step: int | None = None, log_args: Any = None) -> None:
        self.logger = None if name is None else _build_logger(name, out_dir, run_id, resume_step, log_args)

    def log_dict(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)

    def finalize(self) -> None:
        """Flush and close; a wandb run is finished so the next invocation (or a test in the same process) resumes
        it."""
        if self.logger is None:
            return
        self.logger.finalize("success")
        if type(self.logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()


def _build_logger(name: str, out_dir: Path, run_id: str, resume_step: int | None, log_args: Any) -> Logger:
    check_logger(name)
    if name == "tensorboard":
        kwargs = {} if resume_step is None else {"purge_step": resume_step + 1}
        return TensorBoardLogger(root_dir=out_dir / "logs", name="tensorboard", version=0, **kwargs)
    if name == "csv":
        return TidyCSVLogger(out_dir / "logs" / "metrics.csv", resume_step)
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(project=log_args.project or "midtrain", name=log_args.run or out_dir.name, group=log_args.group,
                       id=run_id, resume="allow", save_dir=str(out_dir))


class Throughput(Hook):
    """Tokens per second (all devices and per device), MFU (on a device with a known peak), the share of the time
    spent waiting for the loader, and the tokens read per domain, at every log step; the peak memory at the end."""

    def __init__(self, fabric, model_config, budget, precision: str) -> None:
        self.fabric, self.budget = fabric, budget
        self.flops_per_step, self.peak_flops = _flops(fabric, model_config, budget, precision)
        self.started_at = self.mark = time.perf_counter()
        self.waited_at_mark = 0.0

    def started(self, loop, val_losses) -> None:
        self.started_at = self.mark = time.perf_counter()
        self.waited_at_mark = loop.data_wait_s

    def log(self, loop, steps: int) -> dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self.mark, 1e-9)
        tokens_per_s = steps * self.budget.tokens_per_step / elapsed
        metrics = {"train/tokens_per_s": tokens_per_s,
                   "train/tokens_per_s_per_device": tokens_per_s / self.fabric.world_size,
                   "train/tokens": loop.counters.step * self.budget.tokens_per_step,
                   "train/iter": loop.counters.iter_num,
                   "train/time_s": now - self.started_at,
                   "train/data_wait_share": (loop.data_wait_s - self.waited_at_mark) / elapsed}
        if self.flops_per_step and self.peak_flops:
            metrics["train/mfu"] = steps * self.flops_per_step / elapsed / (self.peak_flops * self.fabric.world_size)
        metrics.update({f"data/{domain}/tokens": tokens for domain, tokens in loop.loader.domain_tokens().items()})
        self.mark, self.waited_at_mark = now, loop.data_wait_s
        return metrics

    def finished(self, loop) -> str | None:
        if self.fabric.device.type != "cuda":
            return None
        return f"Peak memory: {torch.cuda.max_memory_allocated(self.fabric.device) / 1e9:.2f} GB"


def _flops(fabric, model_config, budget, precision: str) -> tuple[float | None, float | None]:
    """(the model's FLOPs per optimizer step over all ranks, the device's peak FLOPs) for MFU, as litgpt measures
    them; on a device without a known peak (a CPU), (None, None)."""
    from lightning.fabric.utilities.throughput import get_available_flops

    dtype = {"bf16-true": torch.bfloat16, "bf16-mixed": torch.bfloat16, "16-true": torch.float16,
             "16-mixed": torch.float16}.get(precision, torch.float32)
    if fabric.device.type != "cuda" or (peak := get_available_flops(fabric.device, dtype)) is None:
        return None, None
    b = budget
    return flops_per_step(model_config, b.micro_batch_size, b.seq_length) * b.accumulation_iters * b.world_size, \
        float(peak)


def flops_per_step(model_config, micro_batch_size: int, seq_length: int) -> float:
    """FLOPs of one micro-batch's forward and backward, counted on the meta device (nothing allocated)."""
    from lightning.fabric.utilities.throughput import measure_flops
    from litgpt.model import GPT

    with torch.device("meta"):
        meta = GPT(model_config)
        meta.max_seq_length = seq_length
        x = torch.randint(0, 1, (micro_batch_size, seq_length))
        return float(measure_flops(meta, lambda: meta(x), lambda y: y.sum()))
