"""The training loss computed per token once and reduced two ways: the micro-batch's mean (what is trained on) and
each sample's mean (what a hook reads per domain)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_losses(logits: torch.Tensor, targets: torch.Tensor, chunk_size: int = 128) -> tuple:
    """(the mean token loss, each sample's mean token loss): the per-token losses of litgpt's
    ``chunked_cross_entropy`` (the same chunks, so the same values), reduced both ways. Only one chunk's
    log-softmax exists at a time, as there."""
    flat_targets = targets.reshape(-1)
    chunks = zip(logits.reshape(-1, logits.size(-1)).split(chunk_size), flat_targets.split(chunk_size), strict=True)
    per_token = torch.cat([F.cross_entropy(lc, tc, reduction="none") for lc, tc in chunks])
    count = (flat_targets != -100).sum()
    return per_token.sum() / count.maximum(torch.ones_like(count)), per_token.detach().view(targets.shape).mean(1)
