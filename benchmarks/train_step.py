"""Per-step time of ``midtrain pretrain`` beside ``litgpt pretrain`` on the same tiny config, on CPU, side by side.

    .venv/bin/python benchmarks/train_step.py [--axis compute host] [--steps 100] [--rounds 5]

Two axes (both by default):
  compute  2 layers, n_embd 64, 8 x 128 tokens a step (~40 ms): the step is mostly the model's arithmetic;
  host     1 layer, n_embd 16, 1 x 16 tokens a step (~3 ms): the step is almost all host work (the loader, the
           loop's bookkeeping, the ledger, logging, the LR), the time a GPU waits unless it overlaps.
Writes one token shard into a temporary folder and runs, alternately, ``litgpt pretrain`` and ``midtrain pretrain``
with the same model, batch (no accumulation), optimizer, precision (32-true) and data module
(midtrain.data.ShardedMixedDataset), both with torch.compile (litgpt always compiles; ``--eager`` is not available
for it, so the comparison stays compiled). Each tool logs cumulative training time every 10 steps; the per-step time
is the slope between step 20 (after compilation) and the last step (the host axis runs 3x the steps). Prints both
per-step times and ours/litgpt per round, then per axis the median and the spread over the interleaved rounds
(goals: compute <= 1.02, host <= 1.05; this machine is noisy, so the median of several rounds decides, not one).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
REPO = Path(__file__).resolve().parents[1]
VOCAB, LOG_EVERY, FIRST_TIMED_STEP = 4096, 10, 20


@dataclass(frozen=True)
class Axis:
    name: str
    n_layer: int
    n_embd: int
    seq: int
    batch: int
    steps_factor: int
    goal: float

    @property
    def model(self) -> dict:
        return {"name": "bench", "block_size": self.seq, "vocab_size": VOCAB, "padded_vocab_size": VOCAB,
                "n_layer": self.n_layer, "n_head": 2, "n_embd": self.n_embd, "rotary_percentage": 0.25,
                "parallel_residual": True, "bias": True}


AXES = {"compute": Axis("compute", 2, 64, 128, 8, 1, 1.02), "host": Axis("host", 1, 16, 16, 1, 3, 1.05)}


def _tokens(spec):
    import torch

    start, count = spec
    yield torch.arange(start, start + count, dtype=torch.int32) % VOCAB


def write_shard(path: Path, n_tokens: int) -> None:
    from litdata import TokensLoader, optimize

    piece = 20_000
    optimize(
        fn=_tokens,
        inputs=[(o, min(piece, n_tokens - o)) for o in range(0, n_tokens, piece)],
        output_dir=str(path),
        chunk_size=2**16,
        item_loader=TokensLoader(),
        num_workers=1,
        reorder_files=False,
        verbose=False,
    )


def config(axis: Axis, data_root: Path, out_dir: Path, steps: int, ours: bool) -> dict:
    train = {"save_interval": 100_000, "log_interval": LOG_EVERY, "global_batch_size": axis.batch,
             "micro_batch_size": axis.batch, "lr_warmup_steps": 10, "max_seq_length": axis.seq, "max_norm": 1.0,
             "min_lr": 1e-5}
    train["max_steps" if ours else "max_tokens"] = steps if ours else steps * axis.batch * axis.seq
    out = {
        "model_name": "pythia-14m",
        "model_config": axis.model,
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


def run(tool: str, axis: Axis, data_root: Path, work: Path, steps: int) -> float:
    ours = tool == "midtrain"
    out_dir = work / f"{tool}-{len(list(work.iterdir()))}"
    path = out_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config(axis, data_root, out_dir, steps, ours)))
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
    parser.add_argument("--axis", nargs="+", choices=sorted(AXES), default=["compute", "host"])
    parser.add_argument("--steps", type=int, default=100, help="timed run length on the compute axis")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.steps % LOG_EVERY or args.steps <= FIRST_TIMED_STEP:
        raise SystemExit(f"--steps must be a multiple of {LOG_EVERY} above {FIRST_TIMED_STEP}")
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.axis:
            axis, work = AXES[name], Path(tmp) / name
            steps = args.steps * axis.steps_factor
            data_root = work / "data"
            write_shard(data_root / "train" / "1", steps * axis.batch * (axis.seq + 1) + 50_000)
            write_shard(data_root / "val" / "1", 20_000)  # litgpt's loop validates once before training
            runs = work / "runs"
            runs.mkdir()
            print(f"{name} axis: tiny GPT ({axis.n_layer} layer(s), n_embd {axis.n_embd}), {axis.batch} x {axis.seq} "
                  f"tokens per step, compiled, steps {FIRST_TIMED_STEP}-{steps} timed", flush=True)
            ratios = []
            for round_ in range(1, args.rounds + 1):
                litgpt_s = run("litgpt", axis, data_root, runs, steps)
                ours_s = run("midtrain", axis, data_root, runs, steps)
                ratios.append(ours_s / litgpt_s)
                print(f"  round {round_}: litgpt {litgpt_s * 1000:.2f} ms/step   midtrain {ours_s * 1000:.2f} ms/step"
                      f"   midtrain/litgpt {ratios[-1]:.3f}", flush=True)
            medians[name] = statistics.median(ratios)
            print(f"  median midtrain/litgpt over {len(ratios)} interleaved rounds: {medians[name]:.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f}; goal <= {axis.goal})", flush=True)
    for name, median in medians.items():
        verdict = "ok" if median <= AXES[name].goal else "MISSED"
        print(f"{name}: median midtrain/litgpt {median:.3f}, goal <= {AXES[name].goal}: {verdict}")


if __name__ == "__main__":
    main()
