"""The in-run weight average's cost (``train.average``) beside plain training steps, on CPU, side by side.

    .venv/bin/python benchmarks/average.py [--model pythia-70m] [--seq 128] [--steps 12] [--rounds 3]

A litgpt model (pythia-70m by default, random weights, float32) trains with AdamW on random tokens, one micro-batch
of ``--seq`` tokens a step; interleaved rounds time ``--steps`` steps without an average, with the uniform average
taking every step (K = 1) and every 10th (K = 10), and with the EMA (every step). The average is midtrain's own hook
(``midtrain.train.averaging.WeightAverage``, its ``stepped``), called after each optimizer step as the loop calls it.
Prints per-step times and their ratios against the plain step (the median over rounds decides), the hook's own time
per step, and the memory the average holds against the model's weights (goal: one float32 copy).
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace


def build(model_name: str, seq: int):
    import torch
    from litgpt.config import Config
    from litgpt.model import GPT

    torch.manual_seed(0)
    config = Config.from_name(model_name, block_size=seq)
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, config.vocab_size, (1, seq + 1))
    return model, optimizer, tokens


def run(model, optimizer, tokens, steps: int, hook) -> tuple[float, float]:
    """(seconds per step, seconds per step inside the hook)."""
    import torch

    loop = SimpleNamespace(counters=SimpleNamespace(step=0))
    in_hook = 0.0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loop.counters.step = step
        if hook is not None:
            t = time.perf_counter()
            hook.stepped(loop, None)
            in_hook += time.perf_counter() - t
    return (time.perf_counter() - start) / steps, in_hook / steps


def main() -> None:
    import torch

    from midtrain.train.averaging import AveragePlan, WeightAverage

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pythia-70m")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, optimizer, tokens = build(args.model, args.seq)
    run(model, optimizer, tokens, 2, None)  # warm-up: the optimizer's state, the allocator
    variants = {
        "plain": None,
        "uniform K=1": AveragePlan(1, 10**9, 1),
        "uniform K=10": AveragePlan(10, 10**9, 10),
        "ema": AveragePlan(1, 10**9, 1, 0.999),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    hook_times: dict[str, list[float]] = {name: [] for name in variants}
    held = 0
    for _ in range(args.rounds):
        for name, plan in variants.items():
            hook = None if plan is None else WeightAverage(None, model, plan, out_dir=None)
            per_step, in_hook = run(model, optimizer, tokens, args.steps, hook)
            times[name].append(per_step)
            hook_times[name].append(in_hook)
            if hook is not None and hook.weights is not None:
                held = sum(w.numel() * w.element_size() for w in hook.weights.values())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    base = statistics.median(times["plain"])
    print(f"{args.model}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, 1 x {args.seq} tokens "
          f"a step, {args.steps} steps x {args.rounds} interleaved rounds, {torch.get_num_threads()} threads\n")
    print("| variant | ms per step (median) | ratio to plain (median) | per-round ratios | hook ms per step |")
    print("|---|---:|---:|---|---:|")
    for name in variants:
        ratios = [t / p for t, p in zip(times[name], times["plain"], strict=True)]
        print(f"| {name} | {statistics.median(times[name]) * 1e3:.1f} | {statistics.median(ratios):.3f} | "
              f"{', '.join(f'{r:.3f}' for r in ratios)} | {statistics.median(hook_times[name]) * 1e3:.2f} |")
    print(f"\nplain step {base * 1e3:.1f} ms; the average holds {held / 2**20:.1f} MiB against the weights' "
          f"{weights / 2**20:.1f} MiB ({held / weights:.2f} copies, float32)")


if __name__ == "__main__":
    main()
