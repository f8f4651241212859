"""Scoring prepared gold-answer sets (``midtrain.train.gold``): each choice's summed log-probability given its
context, reduced per set to sums that add over ranks, then to metrics.

Rank r scores items r, r + W, r + 2W, ... of each set; every rank runs the same number of forward passes (a rank
with fewer sequences runs one-token fillers), because a sharded model needs every rank in every forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from midtrain.train.gold import CHOICE, PreparedGold
from midtrain.train.hooks import Hook
from midtrain.train.validation import IGNORE_INDEX, LN2

LOGPROB, ITEMS, BYTES, TOKENS, CORRECT, GOLD_PROB = range(6)
SUMS = 6
"""Per set: Σ gold log-probability, items, Σ gold answer bytes, Σ gold answer tokens, items right, Σ gold choice's
probability among the choices."""


def _sequences(prepared: Sequence[PreparedGold], rank: int, world: int) -> list[tuple[int, int, int, list[int], int]]:
    """(set, item, choice, the sequence cut to fit, tokens scored at its end) of this rank's items."""
    out = []
    for s, gold in enumerate(prepared):
        for i in range(rank, len(gold.items), world):
            for c, (context, answer) in enumerate(gold.items[i].choices):
                out.append((s, i, c, list(context) + list(answer), len(answer)))
    return out


def _forwards(prepared: Sequence[PreparedGold], rank: int, world: int, micro_batch_size: int) -> int:
    count = sum(len(gold.items[i].choices) for gold in prepared for i in range(rank, len(gold.items), world))
    return math.ceil(count / micro_batch_size)


@torch.no_grad()
def gold_sums(model: torch.nn.Module, prepared: Sequence[PreparedGold], block_size: int, micro_batch_size: int,
              device: torch.device, rank: int = 0, world: int = 1) -> torch.Tensor:
    """float64 ``[sets, SUMS]`` of this rank's items (sum them over ranks for the whole sets)."""
    was_training = model.training
    model.eval()
    sequences = _sequences(prepared, rank, world)
    log_probs: dict[tuple[int, int], dict[int, float]] = {}
    forwards = max(_forwards(prepared, r, world, micro_batch_size) for r in range(world))
    for b in range(forwards):
        chunk = sequences[b * micro_batch_size : (b + 1) * micro_batch_size]
        if not chunk:  # a filler: this rank has scored all its items, the others have not
            model(torch.zeros(1, 1, dtype=torch.long, device=device))
            continue
        fitted = [(tokens[-(block_size + 1):], min(scored, len(tokens[-(block_size + 1):]) - 1))
                  for *_, tokens, scored in chunk]
        width = max(len(tokens) - 1 for tokens, _ in fitted)
        inputs = torch.zeros(len(chunk), width, dtype=torch.long)
        targets = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, (tokens, scored) in enumerate(fitted):
            inputs[row, : len(tokens) - 1] = torch.tensor(tokens[:-1])
            end = len(tokens) - 1
            targets[row, end - scored : end] = torch.tensor(tokens[len(tokens) - scored :])
        logits = model(inputs.to(device))
        losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten(), ignore_index=IGNORE_INDEX,
                                 reduction="none").view(len(chunk), width).sum(1).double().cpu()
        for (s, i, c, _, _), loss in zip(chunk, losses.tolist(), strict=True):
            log_probs.setdefault((s, i), {})[c] = -loss
    if was_training:
        model.train()
    sums = torch.zeros(len(prepared), SUMS, dtype=torch.float64)
    for (s, i), by_choice in log_probs.items():
        item = prepared[s].items[i]
        scores = [by_choice[c] for c in range(len(item.choices))]
        gold = scores[item.gold]
        sums[s, LOGPROB] += gold
        sums[s, ITEMS] += 1
        sums[s, BYTES] += item.answer_bytes
        sums[s, TOKENS] += len(item.choices[item.gold][1])
        # the harness's acc: the first choice with the highest summed log-probability
        sums[s, CORRECT] += float(max(range(len(scores)), key=scores.__getitem__) == item.gold)
        top = max(scores)
        sums[s, GOLD_PROB] += math.exp(gold - top) / sum(math.exp(v - top) for v in scores)
    return sums.to(device)


def gold_metrics(prepared: Sequence[PreparedGold], sums: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per set: ``logprob`` (the gold answer's mean summed log-probability, nats), ``bpb`` (its bits per byte), and
    for multiple choice ``acc`` and ``gold_prob`` (the gold choice's probability normalised over the choices)."""
    sums = sums.detach().double().cpu()
    out = {}
    for s, gold in enumerate(prepared):
        row = sums[s].tolist()
        if row[ITEMS] == 0:
            continue
        metrics = {"logprob": row[LOGPROB] / row[ITEMS], "bpb": -row[LOGPROB] / LN2 / row[BYTES]}
        if gold.kind == CHOICE:
            metrics.update(acc=row[CORRECT] / row[ITEMS], gold_prob=row[GOLD_PROB] / row[ITEMS])
        out[gold.name] = metrics
    return out


def answer_tokens(sums: torch.Tensor, s: int) -> int:
    return int(sums[s, TOKENS].item())


class GoldEvaluation(Hook):
    """``eval.gold_sets`` at each evaluation: every rank scores its share of the items, one all-reduce of the sums
    (nothing at training steps)."""

    evaluates = True

    def __init__(self, prepared: Sequence[PreparedGold], block_size: int, micro_batch_size: int) -> None:
        self.prepared, self.block_size, self.micro_batch_size = tuple(prepared), block_size, micro_batch_size

    def evaluated(self, loop, step: int) -> tuple[dict[str, float], str]:
        fabric = loop.fabric
        sums = gold_sums(loop.model, self.prepared, self.block_size, self.micro_batch_size, fabric.device,
                         fabric.global_rank, fabric.world_size)
        metrics = gold_metrics(self.prepared, fabric.all_reduce(sums, reduce_op="sum"))
        logged = {f"gold/{name}/{metric}": value for name, values in metrics.items()
                  for metric, value in values.items()}
        shown = ", ".join(f"{name} {values['bpb']:.4f}" + (f" (acc {values['acc']:.3f})" if "acc" in values else "")
                          for name, values in metrics.items())
        return logged, f"gold bpb: {shown}"
