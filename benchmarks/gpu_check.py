"""The production path on one GPU, in one call, as one table: ``midtrain pretrain`` beside plain ``litgpt pretrain``.

    python benchmarks/gpu_check.py            # on a GPU machine (pythia-160m, sequence 2,048; about 6-8 minutes)
    python benchmarks/gpu_check.py --smoke    # the same code paths on CPU at toy size (CI runs it)

Writes synthetic token shards (random ids within the vocabulary) into a temporary folder, then, for each precision
(bf16-mixed and bf16-true, the paper's; ``32-true`` with ``--smoke``):
  - step time, tokens/s and MFU of ``midtrain pretrain`` and of ``litgpt pretrain`` on the same model, batch, data
    module and optimizer, both compiled; the ratio midtrain/litgpt (goal <= 1.02);
then, for the first precision:
  - data wait: the host's time waiting for the loader as a share of the step time, with 4 loader workers (goal < 2 %);
  - save at step N and resume, against an uninterrupted run: largest relative difference of the next losses
    (goal: 0 for 32-true, below 2e-2 for bf16, where compiled kernels may differ);
  - ``--strategy=fsdp`` (FSDP2) on every visible GPU (2 CPU processes with ``--smoke``): step time, tokens/s per
    device and the largest relative loss difference from DDP on as many ranks (from the one-device run on one GPU;
    goal: below 1e-4 for 32-true, 2e-2 for bf16);
  - FSDP compiled block by block (``--compile true``): step time and the largest relative loss difference from the
    eager FSDP run (goal: below 1e-4 for 32-true, 2e-2 for bf16);
  - ``train.activation_checkpointing``: step time and peak memory against the same run without it, and the largest
    relative loss difference (goal: below 1e-4 for 32-true, 2e-2 for bf16);
  - ``midtrain eval`` of the same checkpoints on the same device: held-out loss and seconds;
  - peak memory of the midtrain run.
``--budget_s`` (default 480 on a GPU) keeps the whole check inside a time budget: a check that would start after
the budget's share for it is spent is listed as not run, so the table always comes back.
Step times are slopes of the cumulative training time between step ``--steps`` / 2 and the last step (compilation
and warm-up excluded). MFU counts litgpt's ``estimate_flops`` (6N plus attention) against the device's dense bf16
peak (H100/H200: 989 TFLOPS, A100: 312); "n/a" elsewhere.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
REPO = Path(__file__).resolve().parents[1]
TOY_MODEL = {"name": "toy", "block_size": 128, "vocab_size": 4096, "padded_vocab_size": 4096, "n_layer": 2,
             "n_head": 2, "n_embd": 64, "rotary_percentage": 0.25, "parallel_residual": True, "bias": True}
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


class Setup:
    def __init__(self, smoke: bool, steps: int, model: str) -> None:
        self.smoke = smoke
        self.steps = steps
        self.model_name = "pythia-14m" if smoke else model
        self.model_config = TOY_MODEL if smoke else None
        self.seq = 128 if smoke else 2048
        self.batch = 4 if smoke else 8
        self.precisions = ["32-true"] if smoke else ["bf16-mixed", "bf16-true"]
        self.accelerator = "cpu" if smoke else "cuda"

    def vocab_size(self) -> int:
        from litgpt.config import Config

        return (
            self.model_config["padded_vocab_size"]
            if self.model_config
            else Config.from_name(self.model_name).padded_vocab_size
        )


def _random_tokens(spec):
    import torch

    seed, count, vocab = spec
    generator = torch.Generator().manual_seed(seed)
    yield torch.randint(0, vocab, (count,), generator=generator, dtype=torch.int32)


def write_shard(path: Path, n_tokens: int, vocab: int, seed: int) -> None:
    from litdata import TokensLoader, optimize

    piece = 1 << 20
    inputs = [(seed * 100_003 + k, min(piece, n_tokens - o), vocab) for k, o in enumerate(range(0, n_tokens, piece))]
    optimize(fn=_random_tokens, inputs=inputs, output_dir=str(path), chunk_size=1 << 24, item_loader=TokensLoader(),
             num_workers=1, reorder_files=False, verbose=False)


def pretrain_config(setup: Setup, data_root: Path, out_dir: Path, precision: str, ours: bool, workers: int = 2,
                    steps: int | None = None, save_interval: int = 1_000_000, timed: bool = False) -> dict:
    """``timed``: a run whose step time is measured against litgpt's (compiled, as litgpt's); with ``--smoke`` the
    other runs check code paths only, and run eager (compiling a toy model on CPU costs more than it runs)."""
    steps = steps or setup.steps
    train = {"save_interval": save_interval, "log_interval": 1, "global_batch_size": setup.batch,
             "micro_batch_size": setup.batch, "lr_warmup_steps": 5, "max_seq_length": setup.seq, "max_norm": 1.0,
             "min_lr": 1e-5}
    train["max_steps" if ours else "max_tokens"] = steps if ours else steps * setup.batch * setup.seq
    config = {
        "model_name": setup.model_name,
        "model_config": setup.model_config,
        "out_dir": str(out_dir),
        "precision": precision,
        "data": {"class_path": "midtrain.data.ShardedMixedDataset",
                 "init_args": {"data_path": str(data_root), "mix_weights_str": "main:1.0", "num_workers": workers,
                               "max_passes": 100}},
        "train": train,
        "eval": {"interval": 1_000_000, "max_iters": 2, "final_validation": False},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-4, "weight_decay": 0.1,
                                                                       "betas": [0.9, 0.95]}},
        "devices": 1,
        "logger_name": "csv",
    }
    if ours:
        config.update(accelerator=setup.accelerator, compile=timed or not setup.smoke, resume="auto")
    return config


def launch(module: str, config: dict, path: Path, timeout: int = 1200) -> str:
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", module, "pretrain", "--config", str(path)], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{module} pretrain failed "
                         f"({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def midtrain_metric(out_dir: Path, name: str) -> dict[int, float]:
    with (out_dir / "logs" / "metrics.csv").open(newline="") as file:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(file) if r["metric"] == name}


def litgpt_times(out_dir: Path) -> dict[int, float]:
    with (out_dir / "logs" / "csv" / "version_0" / "metrics.csv").open(newline="") as file:
        return {int(r["iter"]): float(r["time"]) for r in csv.DictReader(file) if r.get("time")}


def seconds_per_step(times: dict[int, float], last: int) -> float:
    first = max(2, last // 2)
    return (times[last] - times[first]) / (last - first)


def flops_per_step(setup: Setup) -> float:
    import torch
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.utils import estimate_flops

    config = Config(**setup.model_config) if setup.model_config else Config.from_name(setup.model_name)
    with torch.device("meta"):
        model = GPT(config)
        model.max_seq_length = setup.seq
        return float(estimate_flops(model, training=True)) * setup.batch


def device_peak() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    return name, next((tflops * 1e12 for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def eval_row(setup: Setup, run: Path, work: Path) -> tuple[str, str, str]:
    """``midtrain eval`` of a run's checkpoints on the same device: how many, how long, the final held-out loss."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "midtrain", "eval", f"--runs={run}", f"--out_dir={work / 'eval'}",
                             f"--tokens_per_domain={32 * setup.seq}", f"--accelerator={setup.accelerator}"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"midtrain eval failed:\n{result.stderr[-3000:]}")
    scored = json.loads((work / "eval" / "eval.json").read_text())
    final = [r for r in scored if r["metric"] == "loss" and r["step"] == setup.steps]
    return ("midtrain eval", f"{len({r['checkpoint'] for r in scored})} checkpoint(s) in "
            f"{time.perf_counter() - started:.0f} s, final held-out loss {final[0]['value']:.3f}"
            if final else "no final row", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, toy model: the same code paths, for CI")
    parser.add_argument("--steps", type=int, default=None, help="training steps per timed run (default 40; smoke 16)")
    parser.add_argument("--model", default="pythia-160m", help="a litgpt model name (e.g. pythia-410m if time allows)")
    parser.add_argument("--budget_s", type=float, default=None,
                        help="seconds for the whole check (default 480 on a GPU, none with --smoke)")
    args = parser.parse_args()
    budget = args.budget_s if args.budget_s is not None else (None if args.smoke else 480.0)
    setup = Setup(args.smoke, args.steps or (16 if args.smoke else 40), args.model)
    started = time.perf_counter()
    device, peak = device_peak()
    if not args.smoke and peak is None and device == "cpu":
        raise SystemExit("no CUDA device: run with --smoke on CPU, or on a GPU machine")
    rows: list[tuple[str, str, str]] = []

    def within_budget(check: str, share: float) -> bool:
        """Whether ``check`` may start: the time spent is below ``share`` of the budget (the checks run in order of
        importance; one that may not start is listed, so the table still comes back)."""
        if budget is None or time.perf_counter() - started <= share * budget:
            return True
        rows.append((check, f"not run: {time.perf_counter() - started:.0f} s of the {budget:.0f} s budget spent", ""))
        return False

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vocab = setup.vocab_size()
        tokens = (setup.steps * 3 + 10) * setup.batch * (setup.seq + 1)
        write_shard(work / "data" / "train" / "1", tokens, vocab, seed=1)
        write_shard(work / "data" / "val" / "1", 64 * (setup.seq + 1), vocab, seed=2)
        data_root = work / "data"
        per_step_flops = flops_per_step(setup)
        tokens_per_step = setup.batch * setup.seq
        for index, precision in enumerate(setup.precisions):
            if index and not within_budget(f"midtrain/litgpt {precision}", 0.35):
                continue
            times = {}
            for tool in ("litgpt", "midtrain"):
                out = work / f"{tool}-{precision}"
                config = pretrain_config(setup, data_root, out, precision, tool == "midtrain", timed=True)
                stdout = launch(tool, config, out.with_suffix(".yaml"))
                timeline = midtrain_metric(out, "train/time_s") if tool == "midtrain" else litgpt_times(out)
                times[tool] = seconds_per_step(timeline, setup.steps)
                mfu = f"{per_step_flops / times[tool] / peak * 100:.1f} %" if peak else "n/a"
                rows.append((f"{tool} {precision}", f"{times[tool] * 1000:.1f} ms/step, "
                             f"{tokens_per_step / times[tool]:,.0f} tok/s, MFU {mfu}", ""))
                if tool == "midtrain":
                    memory = re.search(r"Peak memory: ([\d.]+) GB", stdout)
                    if memory and precision == setup.precisions[0]:
                        rows.append(("peak memory (midtrain)", f"{memory.group(1)} GB", ""))
            ratio = times["midtrain"] / times["litgpt"]
            rows.append(
                (f"midtrain/litgpt {precision}", f"{ratio:.3f}", f"<= 1.02: {'ok' if ratio <= 1.02 else 'MISSED'}")
            )

        precision = setup.precisions[0]
        baseline = work / f"midtrain-{precision}"
        if within_budget("activation checkpointing", 0.45):
            checkpointed = work / "checkpointed"
            config = pretrain_config(setup, data_root, checkpointed, precision, True, timed=True)
            config["train"]["activation_checkpointing"] = True
            stdout = launch("midtrain", config, work / "ac.yaml")
            step_s = seconds_per_step(midtrain_metric(checkpointed, "train/time_s"), setup.steps)
            plain_s = seconds_per_step(midtrain_metric(baseline, "train/time_s"), setup.steps)
            plain_losses, ac_losses = midtrain_metric(baseline, "train/loss"), midtrain_metric(checkpointed,
                                                                                              "train/loss")
            worst = max(abs(ac_losses[s] - plain_losses[s]) / abs(plain_losses[s]) for s in plain_losses)
            memory = re.search(r"Peak memory: ([\d.]+) GB", stdout)
            tolerance = 1e-4 if precision == "32-true" else 2e-2
            rows.append(("activation checkpointing", f"{step_s / plain_s:.2f}× the step time"
                         + (f", peak memory {memory.group(1)} GB" if memory else "")
                         + f"; largest relative loss difference {worst:.2e}",
                         f"<= {tolerance:g}: {'ok' if worst <= tolerance else 'MISSED'}"))
        if within_budget("data wait, 4 workers", 0.5):
            waited = work / "workers4"
            launch("midtrain", pretrain_config(setup, data_root, waited, precision, True, workers=4), work / "w.yaml")
            shares = midtrain_metric(waited, "train/data_wait_share")
            share = sum(v for s, v in shares.items() if s > setup.steps // 2) / max(
                1, len([s for s in shares if s > setup.steps // 2])
            )
            rows.append(
                (
                    "data wait, 4 workers",
                    f"{share * 100:.2f} % of step time",
                    f"< 2 %: {'ok' if share < 0.02 else 'MISSED'}",
                )
            )

        half = setup.steps // 2
        whole, stopped = work / "uninterrupted", work / "resumed"
        launch(
            "midtrain", pretrain_config(setup, data_root, whole, precision, True, save_interval=half), work / "u.yaml"
        )
        resumed = pretrain_config(setup, data_root, stopped, precision, True, save_interval=half)
        resumed["train"]["max_additional_steps"] = half
        launch("midtrain", resumed, work / "r.yaml")
        launch("midtrain", resumed, work / "r.yaml")
        reference, continued = midtrain_metric(whole, "train/loss"), midtrain_metric(stopped, "train/loss")
        worst = max(abs(continued[s] - reference[s]) / abs(reference[s]) for s in range(half + 1, setup.steps + 1))
        tolerance = 0.0 if precision == "32-true" else 2e-2
        rows.append((f"resume at step {half}", f"largest relative loss difference {worst:.2e}",
                     f"<= {tolerance:g}: {'ok' if worst <= tolerance else 'MISSED'}"))

        import torch

        ranks = 2 if setup.smoke else torch.cuda.device_count()
        micro = max(1, setup.batch // ranks)
        runs = {}
        if within_budget(f"fsdp on {ranks} {setup.accelerator} rank(s)", 0.7):
            # one rank: the one-device run is the reference
            for strategy in ("fsdp", "ddp") if ranks > 1 else ("fsdp",):
                config = pretrain_config(setup, data_root, work / strategy, precision, True, save_interval=half)
                config.update(strategy=strategy, devices=ranks)
                config["train"].update(micro_batch_size=micro, global_batch_size=micro * ranks)
                launch("midtrain", config, work / f"{strategy}.yaml")
                runs[strategy] = midtrain_metric(work / strategy, "train/loss")
            step_s = seconds_per_step(midtrain_metric(work / "fsdp", "train/time_s"), setup.steps)
            against = runs.get("ddp", reference)
            worst = max(abs(runs["fsdp"][s] - against[s]) / abs(against[s]) for s in against)
            tolerance = 1e-4 if precision == "32-true" else 2e-2
            rows.append((f"fsdp on {ranks} {setup.accelerator} rank(s)",
                         f"{step_s * 1000:.1f} ms/step, {micro * setup.seq / step_s:,.0f} tok/s per device; largest "
                         f"relative loss difference from {'ddp' if ranks > 1 else 'one device'} {worst:.2e}",
                         f"<= {tolerance:g}: {'ok' if worst <= tolerance else 'MISSED'}"))
        compiled_row = f"fsdp compiled on {ranks} {setup.accelerator} rank(s)"
        if not within_budget(compiled_row, 0.8):
            pass  # listed as not run
        elif not runs:
            rows.append((compiled_row, "not run: the eager fsdp run it is compared with did not run", ""))
        else:
            config = pretrain_config(setup, data_root, work / "fsdp-compiled", precision, True, save_interval=half,
                                     timed=True)
            config.update(strategy="fsdp", devices=ranks)
            config["train"].update(micro_batch_size=micro, global_batch_size=micro * ranks)
            launch("midtrain", config, work / "fsdp-compiled.yaml")
            compiled = midtrain_metric(work / "fsdp-compiled", "train/loss")
            step_s = seconds_per_step(midtrain_metric(work / "fsdp-compiled", "train/time_s"), setup.steps)
            worst = max(abs(compiled[s] - runs["fsdp"][s]) / abs(runs["fsdp"][s]) for s in runs["fsdp"])
            rows.append((compiled_row,
                         f"{step_s * 1000:.1f} ms/step; largest relative loss difference from eager fsdp "
                         f"{worst:.2e}", f"<= {tolerance:g}: {'ok' if worst <= tolerance else 'MISSED'}"))

        if within_budget("midtrain eval", 0.9):
            rows.append(eval_row(setup, whole, work))

    width = max(len(r[0]) for r in rows)
    print(f"\nmidtrain GPU check, {datetime.date.today().isoformat()}, {device}, {setup.model_name} "
          f"(sequence {setup.seq}, {setup.batch} sequences per step, compiled), {time.perf_counter() - started:.0f} s")
    print(f"{'check'.ljust(width)}  result  |  goal")
    for name, value, goal in rows:
        print(f"{name.ljust(width)}  {value}" + (f"  |  {goal}" if goal else ""))


if __name__ == "__main__":
    main()
