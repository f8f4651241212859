"""Helpers for training tests: tiny litgpt model configs over the ``train_root`` shards (tokens within the vocab,
each shard its own range, so the first token of a sample names its shard and position)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

SEQ_LENGTH = 16  # samples of 17 tokens
VOCAB = 4096
# shard -> (first token, tokens)
TRAIN_SHARDS = {"train/1": (0, 1500), "train/c1": (2000, 800), "train/m1": (3000, 600)}
VAL_SHARDS = {"val/1": (1600, 300), "val/c1": (2900, 100), "val/m1": (3700, 100)}
REPO = Path(__file__).resolve().parents[2]

TINY_MODEL = {
    "name": "tiny", "block_size": 32, "vocab_size": VOCAB, "padded_vocab_size": VOCAB, "n_layer": 2, "n_head": 2,
    "n_embd": 32, "rotary_percentage": 0.25, "parallel_residual": True, "bias": True,
}


def shard_of(token: int) -> str:
    for name, (start, n) in TRAIN_SHARDS.items():
        if start <= token < start + n:
            return {"train/1": "main/1", "train/c1": "c1", "train/m1": "m1"}[name]
    raise ValueError(token)


def tiny_config(data_root: Path, out_dir: Path, mix: str = "main:1.0", **train_overrides) -> dict:
    """A litgpt-style pretrain config (the same keys a user writes) for a tiny CPU run."""
    train = {
        "global_batch_size": 4, "micro_batch_size": 2, "max_steps": 12, "save_interval": 4, "log_interval": 1,
        "lr_warmup_steps": 2, "min_lr": 1e-4, "max_norm": 1.0, "max_seq_length": SEQ_LENGTH,
    }
    train.update(train_overrides)
    return {
        "model_config": dict(TINY_MODEL),
        "out_dir": str(out_dir),
        "precision": "32-true",
        "resume": "auto",
        "data": {"class_path": "midtrain.data.ShardedMixedDataset",
                 "init_args": {"data_path": str(data_root), "mix_weights_str": mix, "num_workers": 0,
                               "val_samples_per_domain": 4}},
        "train": train,
        "eval": {"interval": 4, "final_validation": True},  # the validation size: data.val_samples_per_domain
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003, "weight_decay": 0.1,
                                                                       "betas": [0.9, 0.95]}},
        "accelerator": "cpu",
        "devices": 1,
        "logger_name": "csv",
        "seed": 7,
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(config_path: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m midtrain pretrain --config ...`` in a subprocess (needed for signals and several ranks)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITDATA_DISABLE_VERSION_CHECK": "1"}
    return subprocess.run([sys.executable, "-m", "midtrain", "pretrain", "--config", str(config_path), *extra],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def preempt(path: Path, at_step: int, timeout: int = 300) -> tuple[int, str]:
    """Run the config in a subprocess, send SIGUSR1 (as SLURM does before a job's time limit) once ``at_step`` is
    logged; returns (the step of the checkpoint saved on the way out, the output). The run must exit 75."""
    import signal

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "LITDATA_DISABLE_VERSION_CHECK": "1"}
    process = subprocess.Popen([sys.executable, "-m", "midtrain", "pretrain", "--config", str(path)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in process.stdout:
        if line.startswith(f"step {at_step}/"):
            process.send_signal(signal.SIGUSR1)
            break
    output = process.communicate(timeout=timeout)[0]
    assert process.returncode == 75, output[-4000:]
    return max(int(line.split()[-1].rsplit("-", 1)[1]) for line in output.splitlines()
               if line.startswith("Saved checkpoint") and "step-" in line), output


def losses(out_dir: Path) -> dict[int, float]:
    """``train/loss`` by step from the run's tidy CSV log."""
    with (out_dir / "logs" / "metrics.csv").open(newline="") as file:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(file) if r["metric"] == "train/loss"}


def metric(out_dir: Path, name: str) -> dict[int, float]:
    with (out_dir / "logs" / "metrics.csv").open(newline="") as file:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(file) if r["metric"] == name}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
