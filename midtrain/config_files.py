"""Reading YAML config files the way every midtrain command does: ``${VAR}`` placeholders expanded from the
environment (so configs name no personal paths, e.g. ``data_path: ${MIDTRAIN_DATA}/c4``), and the paper fork's
class path for our data module accepted as an alias.

The reader is strict where PyYAML is silent: a key written twice in one mapping is refused naming both lines
(PyYAML keeps the last, so a second ``train:`` section would replace the whole first one), a document whose aliases
expand past ``MAX_EXPANDED_NODES`` or that nests deeper than ``MAX_DEPTH`` is refused before it is built (a
"billion laughs" file of a few hundred bytes would otherwise take minutes and gigabytes), and a file that is not
UTF-8, is empty, or does not hold a mapping is named with what it holds instead.
"""

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
MAX_EXPANDED_NODES = 100_000
"""A config of the paper's grid has a few hundred nodes; aliases may repeat a block, not multiply it a billion-fold."""
MAX_DEPTH = 64
_UTF16_32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\xff\xfe", b"\xfe\xff")


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first_line: int, second_line: int) -> None:
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (merge keys ``<<`` still override)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
                    seen[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: PyYAML reports it itself
                    continue
        return super().construct_mapping(node, deep)


def _check_size(root) -> None:
    """Refuse a node graph whose aliases expand past ``MAX_EXPANDED_NODES`` or that nests past ``MAX_DEPTH``
    (iteratively: the check must not itself recurse as deep as the document)."""
    expanded: dict[int, int] = {}
    stack = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.ScalarNode):
            expanded[id(node)] = 1
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
        if children_done:
            total = 1 + sum(expanded[id(c)] for c in children)
            if total > MAX_EXPANDED_NODES:
                raise ConfigError(f"expands to more than {MAX_EXPANDED_NODES:,} values through its aliases (&/*)")
            expanded[id(node)] = total
            continue
        if id(node) in expanded:
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in expanded)


def parse_yaml(text: str, where: str) -> Any:
    """The YAML document in ``text``, read strictly (see the module docstring); ``where`` names it in errors."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(f"{where} {exc}. Write the values out.") from None
    except _DuplicateKey as exc:
        lines = (f"line {exc.first_line}" if exc.first_line == exc.second_line else
                 f"lines {exc.first_line} and {exc.second_line}")
        raise ConfigError(f"{where} gives key {exc.key!r} twice in one mapping ({lines}); YAML would silently keep "
                          "only the second. Merge them into one.") from None
    except RecursionError:
        raise ConfigError(f"{where} nests too deeply to be read. Flatten it.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} cannot be read as YAML ({' '.join(str(exc).split())}). Fix the file.") from None
    finally:
        loader.dispose()


def read_text(path: str | Path, flag: str) -> str:
    """A config file's text; a clear error for a missing file or another encoding than UTF-8."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag}={str(path)!r} cannot be read ({exc.strerror or exc}). Fix the path.") from None
    if raw.startswith(_UTF16_32_BOMS):
        raise ConfigError(f"{flag}={str(path)!r} is UTF-16 or UTF-32 encoded; configs are UTF-8. Save it as UTF-8.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{flag}={str(path)!r} is not UTF-8 (byte {exc.start:,} is {raw[exc.start]:#04x}). Save it as UTF-8."
        ) from None


def yaml_mapping(text: str, where: str) -> dict:
    """The YAML mapping in ``text``; ``where`` (e.g. ``--config='x.yaml'``) names it in every error."""
    config = parse_yaml(text, where)
    if config is None:
        raise ConfigError(f"{where} is empty. Give it the config's keys (e.g. out_dir, data, train).")
    if not isinstance(config, dict):
        raise ConfigError(f"{where} holds a {type(config).__name__}, not a mapping of config keys (key: value lines).")
    return config


def read_yaml_mapping(path: str | Path, flag: str = "--config") -> dict:
    """The YAML mapping in ``path`` as written (no expansion); a clear error naming ``flag`` otherwise."""
    return yaml_mapping(read_text(path, flag), f"{flag}={str(path)!r}")


def expand_placeholders(value: Any, missing: set[str]) -> Any:
    """``value`` with every ``${VAR}`` replaced from the environment; unset names are added to ``missing``."""
    if isinstance(value, str):
        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                missing.add(name)
                return match.group(0)
            return os.environ[name]

        return _PLACEHOLDER.sub(replace, value)
    if isinstance(value, dict):
        return {k: expand_placeholders(v, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_placeholders(v, missing) for v in value]
    return value


def missing_placeholders_error(where: str, missing: set[str]) -> ConfigError:
    names = sorted(missing)
    return ConfigError(f"{where} uses ${{{names[0]}}} but the environment does not set {', '.join(names)}. Export it "
                       "(e.g. in training_scripts/env.sh) before running.")


def resolve_config(config: dict, where: str) -> dict:
    """A config mapping with placeholders expanded and the data module's alias resolved."""
    missing: set[str] = set()
    config = expand_placeholders(config, missing)
    if missing:
        raise missing_placeholders_error(where, missing)
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


def load_config(path: str | Path, flag: str = "--config") -> dict:
    """The YAML mapping in ``path`` with placeholders expanded and aliases resolved; a clear error otherwise."""
    return resolve_config(read_yaml_mapping(path, flag), f"{flag}={str(path)!r}")
