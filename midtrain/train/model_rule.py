"""Which litgpt ``Config`` a config's ``model_name`` and ``model_config`` mean: one rule for every command.

litgpt's meaning is the reference: ``model_config`` is the whole model and ``model_name`` is then ignored (litgpt's
``pretrain`` requires ``model_name`` even then, so configs often carry both). When both are given and describe
different models, the rule says so — which fields ``model_config`` sets differently from the named model — because a
partial ``model_config`` next to a ``model_name`` reads like "these fields of that model" but builds litgpt's
default model with them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from litgpt.config import Config, name_to_config

from midtrain.errors import ConfigError

# Fields that name or document a model rather than shape it.
_IDENTITY_FIELDS = ("name", "hf_config")


def _config_from_name(model_name: str) -> Config:
    try:
        return Config.from_name(model_name)
    except ValueError:
        close = [n for n in name_to_config if model_name.lower() in n.lower()][:5]
        hint = f" Close names: {', '.join(close)}." if close else " See 'litgpt pretrain list' for the names."
        raise ConfigError(f"--model_name={model_name!r} is not a litgpt model.{hint}") from None


def _config_from_value(model_config: Config | dict) -> Config:
    if isinstance(model_config, Config):
        return model_config
    if not isinstance(model_config, dict):
        raise ConfigError(f"--model_config={model_config!r} must be a mapping of litgpt Config fields.")
    try:
        return Config(**model_config)
    except TypeError as exc:
        raise ConfigError(
            f"--model_config: {exc}. Use litgpt Config field names (n_layer, n_embd, block_size, …)."
        ) from None


def shape_fields(config: Config) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in _IDENTITY_FIELDS}


def resolve_model_config(model_name: str | None, model_config: Config | dict | None) -> tuple[Config, str | None]:
    """(the model a config means, a note when ``model_name`` is ignored for a different ``model_config``)."""
    if model_config is None:
        if not model_name:
            raise ConfigError("no model given: set --model_name (a litgpt model, e.g. pythia-160m) or --model_config.")
        return _config_from_name(model_name), None
    config = _config_from_value(model_config)
    if not model_name:
        return config, None
    named = shape_fields(_config_from_name(model_name))
    given = shape_fields(config)
    differing = [k for k in named if named[k] != given.get(k)]
    if not differing:
        return config, None
    shown = ", ".join(f"{k} {given.get(k)!r} (not {named[k]!r})" for k in differing[:6])
    more = f" and {len(differing) - 6} more field(s)" if len(differing) > 6 else ""
    return config, (f"the model is --model_config alone, as in litgpt; --model_name={model_name!r} is ignored. "
                    f"--model_config differs from {model_name} in {shown}{more}. To change a few fields of "
                    f"{model_name}, "
                    "write its whole config with your changes.")
