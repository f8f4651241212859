"""Loading a checkpoint folder for evaluation: litgpt's ``GPT`` with the folder's ``model_config.yaml``, its
weights (a run's training checkpoint holds them under ``model``; litgpt's fine-tuned, downloaded and converted
folders hold a plain state dict) and its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from midtrain.errors import ConfigError
from midtrain.tokenizer import load_tokenizer
from midtrain.train.checkpoint_files import MODEL_FILE
from midtrain.train.safe_load import load_checkpoint_file

DTYPES = {"32-true": torch.float32, "bf16-true": torch.bfloat16, "16-true": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    """litgpt ``GPT`` in eval mode on ``device``."""
    tokenizer: object | None
    """litgpt ``Tokenizer`` of the folder (or of ``--tokenizer_dir``); None if neither has one."""
    device: torch.device
    block_size: int


def resolve_device(accelerator: str) -> torch.device:
    """One device, chosen and checked as ``midtrain pretrain`` chooses its accelerator."""
    from midtrain.train.devices import setup_devices

    return torch.device(setup_devices(accelerator, 1, 1, "32-true", False).accelerator)


def resolve_precision(precision: str | None, device: torch.device) -> torch.dtype:
    if precision is None:
        return (
            torch.float32
            if device.type == "cpu"
            else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        )
    if precision not in DTYPES:
        raise ConfigError(f"--precision={precision!r} is not one of {', '.join(DTYPES)} (evaluation casts the "
                          "weights).")
    return DTYPES[precision]


def load_model(checkpoint: Path, device: torch.device, dtype: torch.dtype, tokenizer_dir: Path | None = None,
               need_tokenizer: bool = False) -> LoadedModel:
    from litgpt.config import Config
    from litgpt.model import GPT
    checkpoint = Path(checkpoint)
    if not (checkpoint / MODEL_FILE).is_file():
        lora = checkpoint / f"{MODEL_FILE}.lora"
        hint = (
            f" It holds LoRA weights only: merge them first with 'litgpt merge_lora {checkpoint}'."
            if lora.is_file()
            else ""
        )
        raise ConfigError(f"{checkpoint} holds no {MODEL_FILE}.{hint}")
    config = Config.from_file(checkpoint / "model_config.yaml")
    payload = load_checkpoint_file(checkpoint / MODEL_FILE, "checkpoint")
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{checkpoint / MODEL_FILE} holds no model state dict.")
    with torch.device(device):
        model = GPT(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"{checkpoint / MODEL_FILE} does not fit its model_config.yaml ({str(exc).splitlines()[0]})."
        ) from None
    del payload, state
    model = model.to(dtype=dtype).eval()
    tokenizer = None
    source = tokenizer_dir or (checkpoint if (checkpoint / "tokenizer_config.json").is_file() else None)
    if source is not None:
        tokenizer = load_tokenizer(source)
    elif need_tokenizer:
        raise ConfigError(f"{checkpoint} has no tokenizer files (tokenizer.json, tokenizer_config.json). Set "
                          "--tokenizer_dir to the tokenizer the model was trained with.")
    return LoadedModel(model, tokenizer, device, config.block_size)
