"""Reading YAML config files the way every midtrain command does: ``${VAR}`` placeholders expanded from the
environment (so configs name no personal paths, e.g. ``data_path: ${MIDTRAIN_DATA}/c4``), and the paper fork's
class path for our data module accepted as an alias.

A config's values are written into every run folder and checkpoint (``config.yaml``, ``run.json``,
``hyperparameters.yaml``), which get shared and published, so only variables a config needs are expanded:
``MIDTRAIN_*``, ``SLURM_*``, the path and identity variables in ``PATH_VARIABLES``, and names a site lists in
``$MIDTRAIN_ALLOW_VARS``. A name that looks like a credential (ending in ``TOKEN``, ``KEY``, ``SECRET``,
``PASSWORD``…) is never expanded, and a value that equals a credential variable's value (a shell's ``$HF_TOKEN``
typed on the command line) is refused wherever it appears; neither value is ever printed.

The reader is strict where PyYAML is silent: a key written twice in one mapping is refused naming both lines
(PyYAML keeps the last, so a second ``train:`` section would replace the whole first one), a document whose aliases
expand past ``MAX_EXPANDED_NODES`` or that nests deeper than ``MAX_DEPTH`` is refused before it is built (a
"billion laughs" file of a few hundred bytes would otherwise take minutes and gigabytes), and a file that is not
UTF-8, is empty, or does not hold a mapping is named with what it holds instead.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from midtrain.errors import ConfigError

# The paper's fork named our data module under litgpt; its configs run unchanged.
DATA_MODULE_ALIASES = {"litgpt.data.ShardedMixedDataset": "midtrain.data.ShardedMixedDataset"}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
EXPANDED_PREFIXES = ("MIDTRAIN_", "SLURM_")
PATH_VARIABLES = frozenset({"HOME", "USER", "LOGNAME", "TMPDIR", "SCRATCH", "WORK", "PROJECT", "STORE", "PWD"})
ALLOW_VARIABLES = "MIDTRAIN_ALLOW_VARS"
"""A comma-separated list of further variable names a site's configs use (``DSDIR,CINECA_SCRATCH``)."""
_CREDENTIAL_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIALS?|AUTH)$", re.IGNORECASE)
_SHORTEST_CREDENTIAL = 8  # a shorter value (a flag, "1") is no secret and would match ordinary values
MAX_EXPANDED_NODES = 100_000
"""A config of the paper's grid has a few hundred nodes; aliases may repeat a block, not multiply it a billion-fold."""
MAX_DEPTH = 64
_UTF16_32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\xff\xfe", b"\xfe\xff")


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first_line: int, second_line: int) -> None:
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _DottedBesideBlock(Exception):
    def __init__(self, dotted: str, dotted_line: int, head: str, block_line: int) -> None:
        super().__init__(dotted)
        self.dotted, self.dotted_line, self.head, self.block_line = dotted, dotted_line, head, block_line


class _NotAName(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (merge keys ``<<`` still override), and a
    dotted key (``train.max_steps: 5``) beside the block it reaches into (``train:``): the parser would let one
    silently replace the other, by their order."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):  # ~: 3 or 7: 3 (a config's keys are names; a typo, or a stray line)
                    raise _NotAName(key, key_node.start_mark.line + 1)
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
                    seen[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: PyYAML reports it itself
                    continue
            for key, line in seen.items():
                if isinstance(key, str) and "." in key and key.split(".", 1)[0] in seen:
                    head = key.split(".", 1)[0]
                    raise _DottedBesideBlock(key, line, head, seen[head])
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
    except _NotAName as exc:
        shown = "~ (null)" if exc.key is None else repr(exc.key)
        raise ConfigError(f"{where} has the key {shown} on line {exc.line}: config keys are names. Fix that line "
                          "(quote a name that YAML would read as something else, e.g. '7': 3).") from None
    except _DottedBesideBlock as exc:
        rest = exc.dotted.split(".", 1)[1]
        raise ConfigError(f"{where} gives {exc.dotted!r} (line {exc.dotted_line}) beside a {exc.head!r} block (line "
                          f"{exc.block_line}): one would silently replace the other, by their order. Move {rest!r} "
                          f"into the {exc.head!r} block.") from None
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


def is_credential_name(name: str) -> bool:
    return bool(_CREDENTIAL_NAME.search(name))


def expandable(name: str) -> bool:
    """Whether ``${name}`` may be expanded (see the module docstring)."""
    if is_credential_name(name):
        return False
    allowed = {v.strip() for v in os.environ.get(ALLOW_VARIABLES, "").split(",") if v.strip()}
    return name.startswith(EXPANDED_PREFIXES) or name in PATH_VARIABLES or name in allowed


def expand_placeholders(value: Any, missing: set[str], refused: set[str] | None = None) -> Any:
    """``value`` with every ``${VAR}`` replaced from the environment; unset names are added to ``missing``, names
    that may not be expanded (``expandable``) to ``refused`` (left as they are)."""
    if isinstance(value, str):
        def replace(match: re.Match) -> str:
            name = match.group(1)
            if not expandable(name):
                if refused is not None:
                    refused.add(name)
                return match.group(0)
            if name not in os.environ:
                missing.add(name)
                return match.group(0)
            return os.environ[name]

        return _PLACEHOLDER.sub(replace, value)
    if isinstance(value, dict):
        return {k: expand_placeholders(v, missing, refused) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_placeholders(v, missing, refused) for v in value]
    return value


def missing_placeholders_error(where: str, missing: set[str]) -> ConfigError:
    names = sorted(missing)
    return ConfigError(f"{where} uses ${{{names[0]}}} but the environment does not set {', '.join(names)}. Export it "
                       "(e.g. in training_scripts/env.sh) before running.")


def refused_placeholders_error(where: str, refused: set[str]) -> ConfigError:
    names = sorted(refused)
    credential = [n for n in names if is_credential_name(n)]
    why = (f"${{{credential[0]}}} names a credential, and a config's values are written into run folders and "
           "checkpoints that get shared: give credentials to the tools that need them through their own variables "
           "(wandb and huggingface_hub read theirs), never through a config" if credential else
           f"${{{names[0]}}} is not a variable midtrain expands (it expands MIDTRAIN_*, SLURM_*, "
           f"{', '.join(sorted(PATH_VARIABLES))} and the names listed in ${ALLOW_VARIABLES}, so that a shared config "
           f"cannot copy other variables into run folders): rename it MIDTRAIN_{names[0]}, or add it to "
           f"{ALLOW_VARIABLES}")
    return ConfigError(f"{where} uses {', '.join('${' + n + '}' for n in names)}. {why}.")


def credential_values() -> dict[str, str]:
    """The environment's credential-looking variables (name -> value), values long enough to be secrets."""
    return {name: value for name, value in os.environ.items()
            if is_credential_name(name) and len(value) >= _SHORTEST_CREDENTIAL}


def check_no_credentials(value: Any, where: str, credentials: dict[str, str] | None = None) -> None:
    """Refuse ``value`` (a config, a flag's value) if any string in it holds a credential variable's value, naming
    the variable, never the value."""
    credentials = credential_values() if credentials is None else credentials
    if not credentials:
        return
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(k for k in item if isinstance(k, str))
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            for name, secret in credentials.items():
                if secret in item:
                    raise ConfigError(
                        f"{where} holds the value of ${name}, a credential: a config's values are written into run "
                        "folders, checkpoints and logs that get shared. Remove it; tools that need it (wandb, "
                        "huggingface_hub) read it from the environment themselves.")


def resolve_config(config: dict, where: str) -> dict:
    """A config mapping with placeholders expanded and the data module's alias resolved."""
    missing: set[str] = set()
    refused: set[str] = set()
    config = expand_placeholders(config, missing, refused)
    if refused:
        raise refused_placeholders_error(where, refused)
    if missing:
        raise missing_placeholders_error(where, missing)
    check_no_credentials(config, where)
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


def plain(value: Any) -> Any:
    """``value`` as YAML data: a dataclass as the mapping of its init fields, a path as text, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
