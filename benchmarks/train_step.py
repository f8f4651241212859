"""Per-step time of ``midtrain pretrain`` beside ``litgpt pretrain`` on the same tiny config, on CPU, side by side.

    .venv/bin/python benchmarks/train_step.py [--steps 100] [--rounds 5]

Writes one token shard into a temporary folder and runs, alternately, ``litgpt pretrain`` and ``midtrain pretrain``
with the same model (2 layers, n_embd 64, context 128), batch (8 sequences per step, no accumulation), optimizer,
precision (32-true) and data module (midtrain.data.ShardedMixedDataset), both with torch.compile (litgpt always
compiles; ``--eager`` is not available for it, so the comparison stays compiled). Each tool logs cumulative training
time every 10 steps; the per-step time is the slope between step 20 (after compilation) and the last step. Prints
both per-step times and ours/litgpt per round, then the median and the spread over the interleaved rounds (goal: a
median of at most 1.02; this machine is noisy, so the median of several rounds decides, not one).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
REPO = Path(__file__).resolve().parents[1]
MODEL = {"name": "bench", "block_size": 128, "vocab_size": 4096, "padded_vocab_size": 4096, "n_layer": 2, "n_head": 2,
         "n_embd": 64, "rotary_percentage": 0.25, "parallel_residual": True, "bias": True}
SEQ, BATCH, LOG_EVERY, FIRST_TIMED_STEP = 128, 8, 10, 20


def _tokens(spec):
    import torch

    start, count = spec
    yield torch.arange(start, start + count, dtype=torch.int32) % MODEL["vocab_size"]


def write_shard(path: Path, n_tokens: int) -> None:
    from litdata import TokensLoader, optimize

    piece = 20_000
    optimize(fn=_tokens, inputs=[(o, min(piece, n_tokens - o)) for o in range(0, n_tokens, piece)], output_dir=str(path),
             chunk_size=2 ** 16, item_loader=TokensLoader(), num_workers=1, reorder_files=False, verbose=False)


def config(data_root: Path, out_dir: Path, steps: int, ours: bool) -> dict:
    train = {"save_interval": 100_000, "log_interval": LOG_EVERY, "global_batch_size": BATCH, "micro_batch_size": BATCH,
             "lr_warmup_steps": 10, "max_seq_length": SEQ, "max_norm": 1.0, "min_lr": 1e-5}
    train["max_steps" if ours else "max_tokens"] = steps if ours else steps * BATCH * SEQ
    out = {
        "model_name": "pythia-14m",
        "model_config": MODEL,
        "out_dir": str(out_dir),
        "precision": "32-true",
        "data": {"class_path": "midtrain.data.ShardedMixedDataset",
                 "init_args": {"data_path": str(data_root), "mix_weights_str": "main:1.0", "num_workers": 0,
                               "max_passes": 100}},
        "train": train,
        "eval": {"interval": 100_000, "max_iters": 1, "final_validation": False},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3, "weight_decay": 0.1}},
        "devices": 1,
        "logger_name": "csv",
    }
    if ours:
        out.update(accelerator="cpu", compile=True)
    return out


def seconds_per_step(times: dict[int, float], last_step: int) -> float:
    return (times[last_step] - times[FIRST_TIMED_STEP]) / (last_step - FIRST_TIMED_STEP)


def run(tool: str, data_root: Path, work: Path, steps: int) -> float:
    ours = tool == "midtrain"
    out_dir = work / f"{tool}-{len(list(work.iterdir()))}"
    path = out_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config(data_root, out_dir, steps, ours)))
    module = "midtrain" if ours else "litgpt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", module, "pretrain", "--config", str(path)], capture_output=True,
                            text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    if ours:
        with (out_dir / "logs" / "metrics.csv").open(newline="") as file:
            times = {int(r["step"]): float(r["value"]) for r in csv.DictReader(file) if r["metric"] == "train/time_s"}
    else:  # litgpt's CSV: one row per logged iteration, "time" since the loop began (no accumulation: iter == step)
        with (out_dir / "logs" / "csv" / "version_0" / "metrics.csv").open(newline="") as file:
            times = {int(r["iter"]): float(r["time"]) for r in csv.DictReader(file) if r.get("time")}
    return seconds_per_step(times, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.steps % LOG_EVERY or args.steps <= FIRST_TIMED_STEP:
        raise SystemExit(f"--steps must be a multiple of {LOG_EVERY} above {FIRST_TIMED_STEP}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_root = work / "data"
        write_shard(data_root / "train" / "1", args.steps * BATCH * (SEQ + 1) + 50_000)
        write_shard(data_root / "val" / "1", 20_000)  # litgpt's loop validates once before training
        runs = work / "runs"
        runs.mkdir()
        print(f"tiny GPT ({MODEL['n_layer']} layers, n_embd {MODEL['n_embd']}), {BATCH} × {SEQ} tokens per step, "
              f"compiled, steps {FIRST_TIMED_STEP}-{args.steps} timed", flush=True)
        ratios = []
        for round_ in range(1, args.rounds + 1):
            litgpt_s = run("litgpt", data_root, runs, args.steps)
            ours_s = run("midtrain", data_root, runs, args.steps)
            ratios.append(ours_s / litgpt_s)
            print(f"round {round_}: litgpt {litgpt_s * 1000:.2f} ms/step   midtrain {ours_s * 1000:.2f} ms/step   "
                  f"midtrain/litgpt {ratios[-1]:.3f}", flush=True)
        spread = f"min {min(ratios):.3f}, max {max(ratios):.3f}"
        print(f"median midtrain/litgpt per-step time over {len(ratios)} interleaved rounds: "
              f"{statistics.median(ratios):.3f} ({spread}; goal <= 1.02)")


if __name__ == "__main__":
    main()
