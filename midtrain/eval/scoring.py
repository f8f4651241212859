"""Mean next-token loss of a model over batches of (inputs, targets); targets of -100 (masked prompt, padding)
are not scored. Token blocks and SFT examples both come down to this."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from midtrain.train.validation import IGNORE_INDEX, summed_loss


@torch.no_grad()
def loss_sums(
    model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[float, int]:
    """(summed loss, number of scored tokens) over all batches."""
    total, count = 0.0, 0
    for inputs, targets in batches:
        batch_total, batch_count = summed_loss(model, inputs.to(device), targets.to(device))
        total += batch_total.item()
        count += int(batch_count)
    return total, count


def block_batches(dataset, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of fixed-length token blocks: predict tokens 1..L from 0..L-1."""
    for start in range(0, len(dataset), batch_size):
        blocks = torch.stack([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]).long()
        yield blocks[:, :-1], blocks[:, 1:]


def sft_batches(dataset, batch_size: int, pad_id: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of litgpt ``SFTDataset`` examples, right-padded (padding labelled -100), as litgpt's fine-tuning
    scores them: the logits at position i predict label i + 1."""
    from litgpt.data.base import get_sft_collate_fn

    collate = get_sft_collate_fn(pad_id=pad_id, ignore_index=IGNORE_INDEX)
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        yield batch["input_ids"][:, :-1], batch["labels"][:, 1:]
