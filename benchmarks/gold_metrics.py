"""The cost of the in-loop gold-answer metrics (``eval.gold_sets``) beside the held-out validation, per evaluation,
on CPU, side by side.

    .venv/bin/python benchmarks/gold_metrics.py [--model pythia-70m] [--seq 512] [--items 100] [--rounds 3]

A litgpt model (random weights, float32, one process) runs, in interleaved rounds, midtrain's own held-out
validation (``midtrain.train.validation.validate``: ``--domains`` sets of ``--val_samples`` sequences of ``--seq``
tokens, as ``eval.max_iters`` × ``train.micro_batch_size`` gives them) and midtrain's own gold scoring
(``midtrain.train.gold_scoring.gold_sums``) of one SFT set and one four-way multiple-choice set of ``--items``
items each, the cost of ``eval.gold_sets`` at its default ``max_items: 100``. Items are random tokens of fixed
lengths (SFT: a 96-token prompt and a 48-token answer; multiple choice: a 96-token context and four 8-token
choices), typical of instruction and benchmark items; tokenizing them is done once at start-up and is not timed.
Prints each part's seconds per evaluation, the forward tokens of each, and the ratio gold / held-out (the median
over rounds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace


def items(kind: str, count: int, vocab: int, seed: int):
    import random

    from midtrain.train.gold import CHOICE, SFT, GoldItem, PreparedGold

    rng = random.Random(seed)

    def tokens(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(vocab) for _ in range(n))

    if kind == SFT:
        built = [GoldItem(((tokens(96), tokens(48)),), 0, 200) for _ in range(count)]
    else:
        built = []
        for _ in range(count):
            context = tokens(96)
            built.append(GoldItem(tuple((context, tokens(8)) for _ in range(4)), rng.randrange(4), 30))
    return PreparedGold(f"{kind}_set", kind if kind == SFT else CHOICE, tuple(built), "bench")


def main() -> None:
    import torch
    from litgpt.config import Config
    from litgpt.model import GPT

    from midtrain.train.gold import SFT
    from midtrain.train.gold_scoring import gold_sums
    from midtrain.train.validation import validate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pythia-70m")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--micro_batch", type=int, default=8)
    parser.add_argument("--domains", type=int, default=4)
    parser.add_argument("--val_samples", type=int, default=32, help="held-out sequences per domain")
    parser.add_argument("--items", type=int, default=100, help="items per gold set")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = Config.from_name(args.model, block_size=args.seq)
    model = GPT(config).eval()
    fabric = SimpleNamespace(global_rank=0, world_size=1, device=torch.device("cpu"),
                             all_reduce=lambda tensor, reduce_op="sum": tensor)
    val_sets = {f"d{d}": torch.randint(0, config.vocab_size, (args.val_samples, args.seq + 1))
                for d in range(args.domains)}
    gold = [items(SFT, args.items, config.vocab_size, 1), items("choice", args.items, config.vocab_size, 2)]
    heldout_tokens = args.domains * args.val_samples * args.seq
    gold_tokens = sum(g.forward_tokens(args.seq) for g in gold)
    print(f"{args.model}, {torch.get_num_threads()} threads; held-out: {args.domains} domains × {args.val_samples} × "
          f"{args.seq} tokens = {heldout_tokens:,} forward tokens; gold: {len(gold)} sets × {args.items} items = "
          f"{gold_tokens:,} forward tokens; micro-batch {args.micro_batch}")
    ratios = []
    for r in range(args.rounds):
        start = time.perf_counter()
        validate(fabric, model, val_sets, args.micro_batch)
        heldout_s = time.perf_counter() - start
        start = time.perf_counter()
        gold_sums(model, gold, args.seq, args.micro_batch, torch.device("cpu"))
        gold_s = time.perf_counter() - start
        ratios.append(gold_s / heldout_s)
        print(f"round {r + 1}: held-out {heldout_s:.2f} s, gold {gold_s:.2f} s, gold / held-out {ratios[-1]:.3f}")
    print(f"median gold / held-out per evaluation: {statistics.median(ratios):.3f} (forward tokens "
          f"{gold_tokens / heldout_tokens:.3f})")


if __name__ == "__main__":
    main()
