"""A corpus's mean hidden state under a checkpoint: the final-norm output (what the LM head reads) averaged over
every token of the sample; the model-based similarity compares these vectors."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def mean_hidden_state(
    model: torch.nn.Module, sequences: list[np.ndarray], device: torch.device, batch_size: int = 8
) -> np.ndarray:
    captured: list[torch.Tensor] = []
    # a forward hook reads the activations litgpt's GPT computes anyway; the model itself is unchanged
    handle = model.transformer.ln_f.register_forward_hook(lambda module, inputs, output: captured.append(output))
    total, count = None, 0
    try:
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # equal lengths batch without padding
        for start in range(0, len(order), batch_size):
            chunk = [sequences[i] for i in order[start : start + batch_size]]
            width = max(len(s) for s in chunk)
            batch = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.bool)
            for row, sequence in enumerate(chunk):
                batch[row, : len(sequence)] = torch.from_numpy(np.asarray(sequence, dtype=np.int64))
                mask[row, : len(sequence)] = True
            captured.clear()
            model(batch.to(device))
            hidden = captured[-1].float()[
                mask.to(device)
            ]  # padding positions excluded (causal: they affect nothing before them)
            summed = hidden.sum(0).double().cpu()
            total = summed if total is None else total + summed
            count += hidden.shape[0]
    finally:
        handle.remove()
    return (total / count).numpy()
