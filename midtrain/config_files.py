"""Reading YAML config files the way every midtrain command does: ``${VAR}`` placeholders expanded from the
environment (so configs name no personal paths, e.g. ``data_path: ${MIDTRAIN_DATA}/c4``), and the paper fork's
class path for our data module accepted as an alias."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from midtrain.errors import ConfigError

# The paper's fork named our data module under litgpt; its configs run unchanged.
DATA_MODULE_ALIASES = {"litgpt.data.ShardedMixedDataset": "midtrain.data.ShardedMixedDataset"}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_placeholders(value: Any, where: str, missing: set[str]) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                missing.add(name)
                return match.group(0)
            return os.environ[name]

        return _PLACEHOLDER.sub(replace, value)
    if isinstance(value, dict):
        return {k: expand_placeholders(v, where, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_placeholders(v, where, missing) for v in value]
    return value


def read_yaml_mapping(path: str | Path, flag: str = "--config") -> dict:
    """The YAML mapping in ``path`` as written (no expansion); a clear error naming ``flag`` otherwise."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{flag}={str(path)!r} cannot be read as YAML ({exc}). Fix the path or the file.") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{flag}={str(path)!r} is not a YAML mapping of config keys.")
    return config


def load_config(path: str | Path) -> dict:
    """The YAML mapping in ``path`` with placeholders expanded and aliases resolved; a clear error otherwise."""
    config = read_yaml_mapping(path)
    missing: set[str] = set()
    config = expand_placeholders(config, str(path), missing)
    if missing:
        names = ", ".join(sorted(missing))
        raise ConfigError(f"--config={str(path)!r} uses ${{{sorted(missing)[0]}}} but the environment does not set "
                          f"{names}. Export it (e.g. in training_scripts/env.sh) before running.")
    data = config.get("data")
    if isinstance(data, dict) and data.get("class_path") in DATA_MODULE_ALIASES:
        data["class_path"] = DATA_MODULE_ALIASES[data["class_path"]]
        # the fork's class path means the fork's config: its training keys are read with the fork's semantics
        # (midtrain.train.fork_dialect), unless the config chooses a dialect itself
        if config.get("train") is None:
            config["train"] = {}
        if isinstance(config["train"], dict):
            config["train"].setdefault("dialect", "fork")
    return config


def needs_rewrite(path: str | Path) -> bool:
    """True when the file has placeholders or an alias, so the parser must get the resolved text instead."""
    text = Path(path).read_text()
    return bool(_PLACEHOLDER.search(text)) or any(alias in text for alias in DATA_MODULE_ALIASES)
