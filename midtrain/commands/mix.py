"""``midtrain mix``: print the mixture plan for a data root, a mixture and a token budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal


from midtrain.config_files import load_config
from midtrain.data.args import MixtureArgs
from midtrain.data.mixture import resolve_mixture
from midtrain.data.plan import render_plan
from midtrain.errors import ConfigError

# Class paths under which configs name our data module (the paper's fork called it litgpt.data....).
DATA_MODULE_CLASS_PATHS = ("midtrain.data.ShardedMixedDataset", "litgpt.data.ShardedMixedDataset", "ShardedMixedDataset")
MIX_KEYS = {"data", "max_tokens", "seq_length", "format"}
# Data module init args that do not change the plan (the validation set's size).
PLAN_NEUTRAL_KEYS = ("val_samples_per_domain",)


def mix(
    data: MixtureArgs,
    max_tokens: int | None = None,
    seq_length: int = 2048,
    format: Literal["table", "json"] = "table",
) -> dict:
    """Print the mixture plan: per shard the tokens on disk, its weight, planned tokens and passes.

    Args:
        data: The data module's init args (the same as under ``data.init_args`` in a pretrain config).
        max_tokens: Token budget of the run (``train.max_tokens`` in a pretrain config).
        seq_length: The model's context length; each training sample reads ``seq_length + 1`` tokens.
        format: ``table`` for people, ``json`` for scripts.
    """
    mixture = resolve_mixture(data)
    plan = mixture.plan(seq_length, max_tokens, data.max_passes)
    validation: dict[str, int] = {}
    for shard in mixture.val_shards:
        validation[shard.domain] = validation.get(shard.domain, 0) + shard.tokens
    payload = {**plan.to_json(), "validation_tokens": validation}
    if format == "json":
        print(json.dumps(payload, indent=2))
    else:
        print(f"Training shards: {mixture.train_root}   mixture: {mixture.spec.describe()} ({mixture.spec.flag})")
        print(render_plan(plan))
        held_out = ", ".join(f"{d} {t:,} tokens" for d, t in validation.items()) or "none"
        print(f"\nValidation data ({mixture.val_root or 'no validation root'}): {held_out}")
    return payload


def data_init_args(data_section: Any, where: str) -> dict:
    """The init args of a config's ``data`` section, which may be ``{class_path, init_args}`` or flat."""
    if not isinstance(data_section, dict):
        raise ConfigError(f"{where}: 'data' must be a mapping with class_path and init_args; got {data_section!r}.")
    if "class_path" not in data_section:
        return dict(data_section)
    class_path = data_section["class_path"]
    if class_path not in DATA_MODULE_CLASS_PATHS:
        raise ConfigError(
            f"{where}: --data.class_path is {class_path!r}, but mixture plans are made for "
            "midtrain.data.ShardedMixedDataset. Set data.class_path to midtrain.data.ShardedMixedDataset."
        )
    return dict(data_section.get("init_args") or {})


def seq_length_of(config: dict, where: str) -> int | None:
    """The context length a pretrain config trains with: train.max_seq_length, else the model's block_size."""
    train = config.get("train") or {}
    if train.get("max_seq_length"):
        return int(train["max_seq_length"])
    model_config = config.get("model_config") or {}
    if model_config.get("block_size"):
        return int(model_config["block_size"])
    if config.get("model_name"):
        from litgpt.config import Config

        try:
            return Config.from_name(config["model_name"], **model_config).block_size
        except ValueError as exc:
            raise ConfigError(f"{where}: --model_name={config['model_name']!r} is not a litgpt model ({exc}).") from None
    return None


def mix_config_from_pretrain(path: Path) -> dict:
    """Translate a pretrain YAML into the ``mix`` schema: data init args, budget and context length."""
    config = load_config(path)
    if set(config) <= MIX_KEYS:
        return config
    if "data" not in config:
        raise ConfigError(f"--config={str(path)!r} has no 'data' section, so there is no mixture to plan. Add one.")
    data = data_init_args(config["data"], f"--config={path}")
    translated: dict = {"data": {k: v for k, v in data.items() if k not in PLAN_NEUTRAL_KEYS}}
    train = config.get("train") or {}
    if train.get("max_tokens") is not None:
        translated["max_tokens"] = int(train["max_tokens"])
    seq_length = seq_length_of(config, f"--config={path}")
    if seq_length is not None:
        translated["seq_length"] = seq_length
    return translated
