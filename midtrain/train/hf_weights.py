"""Weights between litgpt's layout and a Hugging Face architecture's (litgpt's own converters, per family), and
Hugging Face weight files: safetensors written in shards with their index, and read back (safetensors, or
``pytorch_model.bin`` read with ``weights_only=True``: nothing read runs code)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from midtrain.errors import ConfigError
from midtrain.train.hf_config import NEOX, family

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
DEFAULT_SHARD_BYTES = 5 * 1024**3
"""Above this, weights are written in several files with an index (what ``save_pretrained`` does at 5 GB)."""


def to_hf_state(config, lit_state: dict) -> dict[str, torch.Tensor]:
    """The Hugging Face architecture's state dict of a litgpt state dict."""
    from litgpt.scripts import convert_lit_checkpoint as lit_to_hf

    out: dict[str, torch.Tensor] = {}
    lit_state = {k: v for k, v in lit_state.items() if "rope_cache" not in k}
    if family(config, "export") == NEOX:
        lit_to_hf.copy_weights_gpt_neox(config, out, lit_state)
    else:
        lit_to_hf.copy_weights_llama(config, out, lit_state)
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_state(config, hf_state: dict, flag: str) -> dict[str, torch.Tensor]:
    """The litgpt state dict of a Hugging Face architecture's, for the configured model."""
    from litgpt.scripts import convert_hf_checkpoint as hf_to_lit

    out: dict[str, torch.Tensor] = {}
    try:
        if family(config, flag) == NEOX:
            hf_to_lit.copy_weights_gpt_neox(config, out, hf_state)
        else:
            hf_to_lit.copy_weights_hf_llama(config, {}, out, hf_state)
    except KeyError as exc:  # a tensor the architecture does not have
        raise ConfigError(f"{flag}: the folder's weights hold {exc}, which a {config.name} model has no place for. "
                          "Set --model_name (or --model_config) to the model the folder holds.") from None
    return out


def write_safetensors(state: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                      metadata: dict | None = None) -> list[Path]:
    """``model.safetensors``, or ``model-0000k-of-0000n.safetensors`` files and their index above
    ``max_shard_bytes`` (tensors in name order, a new file when the next would pass the limit)."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        tensor = state[name]
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    meta = {"format": "pt", **(metadata or {})}
    if len(shards) == 1:
        save_file(shards[0], str(folder / SAFETENSORS_FILE), metadata=meta)
        return [folder / SAFETENSORS_FILE]
    written, weight_map = [], {}
    for k, shard in enumerate(shards, 1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata=meta)
        weight_map.update(dict.fromkeys(shard, name))
        written.append(folder / name)
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / SAFETENSORS_INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                       indent=2))
    return [*written, folder / SAFETENSORS_INDEX]


def weight_files(folder: Path) -> list[Path]:
    """The files a Hugging Face model folder keeps its weights in (safetensors first), or []."""
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_INDEX), (BIN_FILE, BIN_INDEX)):
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text()).get("weight_map") or {}
            return [folder / name for name in sorted(set(weight_map.values()))]
        if (folder / single).is_file():
            return [folder / single]
    return []


def read_hf_weights(folder: Path, flag: str) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face model folder."""
    from safetensors.torch import load_file

    from midtrain.train.safe_load import load_checkpoint_file

    files = weight_files(folder)
    if not files:
        raise ConfigError(f"{flag}={str(folder)!r} holds no weights (no model.safetensors, pytorch_model.bin or their "
                          "index). Download the whole model folder.")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{flag}: {path.name}, named by the folder's weight index, is missing. Download the "
                              "whole model folder.")
        state.update(load_file(str(path)) if path.suffix == ".safetensors" else load_checkpoint_file(path, flag))
    return state
