"""Per-domain validation loss on fixed held-out sets, exact over all ranks.

Rank r scores samples r, r + W, r + 2W, … of each domain's set; summed losses and token counts are all-reduced,
so the result is the mean over the whole set, the same for any number of ranks (the paper's code reported rank 0's
share alone). Every rank runs the same number of forward passes (short ranks pad with a masked copy) because
sharded models need all ranks in every forward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

OVERALL = "overall"
LN2 = math.log(2)
IGNORE_INDEX = -100
"""A target that is not scored (a masked prompt, padding, a short rank's filler row)."""


def summed_loss(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token loss, number of scored targets) of one batch, on the device: the one held-out loss that
    training's validation and ``midtrain eval`` both compute."""
    logits = model(inputs)
    total = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return total, (targets != IGNORE_INDEX).sum()


@torch.no_grad()
def validate(fabric, model: torch.nn.Module, sets: Mapping[str, Dataset], micro_batch_size: int) -> dict[str, float]:
    """Mean next-token loss per domain and over all domains' tokens (``overall``)."""
    rank, world = fabric.global_rank, fabric.world_size
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(sets), dtype=torch.float64, device=fabric.device)
    counts = torch.zeros(len(sets), dtype=torch.float64, device=fabric.device)
    for d, dataset in enumerate(sets.values()):
        indices = list(range(rank, len(dataset), world))
        per_rank = math.ceil(len(dataset) / world)
        batches = math.ceil(per_rank / micro_batch_size)
        for b in range(batches):
            chunk = indices[b * micro_batch_size : (b + 1) * micro_batch_size]
            real = len(chunk)
            chunk = chunk + [0] * (micro_batch_size - real) if real < micro_batch_size else chunk
            batch = torch.stack([dataset[i] for i in chunk]).to(fabric.device).long()
            targets = batch[:, 1:].clone()
            targets[real:] = IGNORE_INDEX  # a short rank's filler rows run (sharded models need every rank) unscored
            total, count = summed_loss(model, batch[:, :-1], targets)
            sums[d] += total.double()
            counts[d] += count.double()
    sums = fabric.all_reduce(sums, reduce_op="sum")
    counts = fabric.all_reduce(counts, reduce_op="sum")
    if was_training:
        model.train()
    result = {domain: (sums[d] / counts[d]).item() for d, domain in enumerate(sets) if counts[d] > 0}
    if counts.sum() > 0:
        result[OVERALL] = (sums.sum() / counts.sum()).item()
    return result


def tokens_per_byte(sets: Mapping[str, Dataset], tokenizer) -> dict[str, float]:
    """Each set's scored tokens (every sample's targets) per UTF-8 byte they decode to, and over all sets
    (``overall``): computed once, so each validation's bits per byte is its loss times this over ln 2."""
    from midtrain.tokenizer import decoded_bytes

    tokens, sizes = {}, {}
    for domain, dataset in sets.items():
        rows = [dataset[i][1:] for i in range(len(dataset))]
        tokens[domain], sizes[domain] = sum(len(r) for r in rows), decoded_bytes(tokenizer, rows)
    out = {d: tokens[d] / sizes[d] for d in sets if sizes[d] > 0}
    if out and sum(sizes.values()) > 0:
        out[OVERALL] = sum(tokens.values()) / sum(sizes.values())
    return out


def bits_per_byte(losses: Mapping[str, float], per_byte: Mapping[str, float]) -> dict[str, float]:
    """Mean next-token losses (nats per token) as bits per byte of the text they score."""
    return {domain: loss * per_byte[domain] / LN2 for domain, loss in losses.items() if domain in per_byte}
