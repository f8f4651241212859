"""A command line as jsonargparse is to parse it, read the way every midtrain command reads it:

- ``--config FILE`` (and YAML text given as ``--config``) goes through midtrain's strict reader
  (``midtrain.config_files``: duplicate keys refused, placeholders expanded, the fork's class path resolved) and is
  handed over as text;
- ``${VAR}`` in a value on the command line is expanded from the environment, as in files;
- the optimizer's flags (``--optimizer NAME|MAPPING``, ``--optimizer.class_path``, ``--optimizer.init_args.lr``,
  ``--optimizer.lr``) override the config's optimizer key by key, as in litgpt; jsonargparse alone ignores them over
  a config that gives the optimizer as a mapping, or fails on them, so they are merged here into one value.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from midtrain.config_files import (
    DATA_MODULE_ALIASES,
    check_no_credentials,
    expand_placeholders,
    load_config,
    missing_placeholders_error,
    parse_yaml,
    refused_placeholders_error,
    resolve_config,
    yaml_mapping,
)
from midtrain.errors import ConfigError

OPTIMIZER = "optimizer"


def _split(argv: list[str]) -> list[tuple[str, str | None]]:
    """(flag, value) pairs; a value given as ``--flag=value`` or as the next word; lone words as (word, None)."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("--") and "=" in word:
            flag, value = word.split("=", 1)
            pairs.append((flag, value))
        elif word.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            pairs.append((word, argv[i + 1]))
            i += 1
        else:
            pairs.append((word, None))
        i += 1
    return pairs


def _expand(flag: str, value: str) -> str:
    missing: set[str] = set()
    refused: set[str] = set()
    expanded = expand_placeholders(value, missing, refused)
    if refused:
        raise refused_placeholders_error(flag, refused)
    if missing:
        raise missing_placeholders_error(f"{flag}={value!r}", missing)
    check_no_credentials(expanded, flag)
    return expanded


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # YAML text rather than a path (e.g. a name too long for the file system)
        return False


def _config_mapping(value: str) -> dict:
    """A ``--config`` value: a file's path, or YAML text. A value that is neither (one line, no ``key:``) is a path
    that does not exist, the most common typo: said as such, not as YAML holding a string."""
    if _is_file(value):
        return load_config(value)
    if "\n" not in value and not value.lstrip().startswith("{"):
        try:
            is_folder = Path(value).is_dir()
        except (OSError, ValueError):
            is_folder = False
        if is_folder:
            raise ConfigError(f"--config={value!r} is a folder, not a config file. Name the YAML file.")
        if ": " not in value and not value.rstrip().endswith(":"):
            raise ConfigError(f"--config={value!r} does not exist. Fix the path (relative paths start at "
                              f"{Path.cwd()}).")
    return resolve_config(yaml_mapping(value, "--config"), "--config")


def prepare_argv(function: Callable, argv: list[str]) -> list[str]:
    """``argv`` (without the command's name) rewritten for ``function``'s parser, as the module docstring says."""
    takes_optimizer = OPTIMIZER in inspect.signature(function).parameters
    configs: list[dict] = []
    optimizer_flags: list[tuple[str, Any]] = []
    out: list[str | int] = []  # an int marks where config number k goes
    for flag, value in _split(list(argv)):
        if value is None:
            out.append(flag)
            continue
        value = _expand(flag, value)
        if flag == "--config":
            config = _config_mapping(value)
            normalize = getattr(function, "normalize_config", None)  # a command's own reading of a config file
            configs.append(normalize(config, f"--config={value!r}") if normalize else config)
            out.append(len(configs) - 1)
        elif takes_optimizer and (flag == f"--{OPTIMIZER}" or flag.startswith(f"--{OPTIMIZER}.")):
            optimizer_flags.append((flag, parse_yaml(value, flag)))
        elif flag in ("--data", "--data.class_path") and value in DATA_MODULE_ALIASES:
            out += [flag, DATA_MODULE_ALIASES[value]]
        else:
            out += [flag, value]
    if optimizer_flags:
        base = next((c[OPTIMIZER] for c in reversed(configs) if OPTIMIZER in c),
                    inspect.signature(function).parameters[OPTIMIZER].default)
        merged = merge_optimizer(base, optimizer_flags)
        configs = [{k: v for k, v in c.items() if k != OPTIMIZER} for c in configs]
    words: list[str] = []
    for item in out:
        words += ["--config", yaml.safe_dump(configs[item], sort_keys=False)] if isinstance(item, int) else [item]
    if optimizer_flags:
        words.append(f"--{OPTIMIZER}={json.dumps(merged)}")
    return words


def merge_optimizer(base: Any, flags: list[tuple[str, Any]]) -> Any:
    """The optimizer value after the command line's flags, in their order, over ``base`` (a name or a mapping)."""
    value = copy.deepcopy(base)
    for flag, given in flags:
        path = flag[len(f"--{OPTIMIZER}"):].lstrip(".").split(".") if flag != f"--{OPTIMIZER}" else []
        if not path:
            value = given  # a whole new optimizer: a name, or {class_path, init_args}
            continue
        mapping = dict(value) if isinstance(value, dict) else {"class_path": value}
        mapping["init_args"] = dict(mapping.get("init_args") or {})
        if path == ["class_path"]:
            mapping["class_path"] = given
        else:
            keys = path[1:] if path[0] == "init_args" else path  # --optimizer.lr is litgpt's short form
            node = mapping["init_args"]
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = given
        value = mapping
    return value
