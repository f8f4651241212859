"""What ``midtrain similarity`` and ``midtrain recommend`` measure with: the checkpoint for the model measure and the
tokenizer for text corpora (the evaluation's model loading, which the analysis layer may not import)."""

from __future__ import annotations

from pathlib import Path

from midtrain.errors import ConfigError


def load_for_measures(checkpoint: Path | None, tokenizer_dir: Path | None, accelerator: str, seq_length: int):
    """(the loaded checkpoint or None, the tokenizer or None): the checkpoint's tokenizer unless one is given."""
    if checkpoint is not None:
        from midtrain.eval.model_loading import load_model, resolve_device, resolve_precision

        device = resolve_device(accelerator)
        loaded = load_model(Path(checkpoint), device, resolve_precision(None, device), tokenizer_dir)
        if seq_length > loaded.block_size:
            raise ConfigError(f"--seq_length={seq_length} exceeds the checkpoint's block size {loaded.block_size}. "
                              "Lower it.")
        return loaded, loaded.tokenizer
    if tokenizer_dir is not None:
        from midtrain.tokenizer import load_tokenizer

        return None, load_tokenizer(tokenizer_dir)
    return None, None
