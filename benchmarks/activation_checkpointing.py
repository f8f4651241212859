"""Activation checkpointing (``train.activation_checkpointing``) against none: the memory a training step holds
beyond the model and optimizer, and the step's time, on CPU, side by side.

    .venv/bin/python benchmarks/activation_checkpointing.py [--model pythia-160m] [--seq 1024] [--batch 4] [--steps 3]

Each variant runs in a fresh process (a process's peak memory only grows): a litgpt model (random weights,
float32) and AdamW, one untimed step, then ``--steps`` timed steps on random tokens, with or without midtrain's
per-block wrapper (``midtrain.train.devices.checkpoint_blocks``). Prints each variant's peak resident memory above
what the process held before its first step (the model, its gradients and the optimizer's moments, the same in
both), its median seconds per step, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def child(model_name: str, seq: int, batch: int, steps: int, checkpointed: bool) -> dict:
    import resource

    import torch
    from litgpt.config import Config
    from litgpt.model import GPT

    from midtrain.train.devices import checkpoint_blocks

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    torch.manual_seed(0)
    config = Config.from_name(model_name, block_size=seq)
    model = GPT(config)
    if checkpointed:
        checkpoint_blocks(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, config.vocab_size, (batch, seq + 1))
    # gradients and the optimizer's moments exist before the measure: both variants hold the same there
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    before = peak()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        times.append(time.perf_counter() - start)
    return {"extra_bytes": peak() - before, "step_s": sorted(times[1:])[len(times[1:]) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pythia-160m")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", choices=["plain", "checkpointed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.model, args.seq, args.batch, args.steps,
                                           args.child == "checkpointed")))
        return
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    results = {}
    for variant in ("plain", "checkpointed"):
        command = [sys.executable, __file__, "--child", variant, "--model", args.model, "--seq", str(args.seq),
                   "--batch", str(args.batch), "--steps", str(args.steps)]
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
        if out.returncode != 0:
            raise SystemExit(out.stdout[-2000:] + out.stderr[-3000:])
        results[variant] = next(json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT "))
    for variant, r in results.items():
        print(f"{variant:>12}: step memory {r['extra_bytes'] / 1e9:.2f} GB, {r['step_s']:.2f} s per step (median)")
    plain, ac = results["plain"], results["checkpointed"]
    print(f"checkpointed / plain: memory {ac['extra_bytes'] / plain['extra_bytes']:.3f}, time "
          f"{ac['step_s'] / plain['step_s']:.3f} ({args.model}, {args.batch} × {args.seq} tokens)")


if __name__ == "__main__":
    main()
