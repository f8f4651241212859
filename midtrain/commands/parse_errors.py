"""jsonargparse's parse errors as one clear message: the unknown key as a flag with a "did you mean", or the bad
value with the reason, instead of the whole usage text."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from collections.abc import Callable

# The paper fork's data module's keys that midtrain reads: a typo in a fork config is matched against these, so the
# suggestion is a key the fork's configs write (mix_weights_str, not midtrain's own mix_weights).
FORK_DATA_KEYS = ("data_path", "val_data_path", "mix_config_path", "mix_weights_str", "literal_weights_str",
                  "proportional_sampling", "seed", "num_workers")


def known_keys(function: Callable, fork: bool = False) -> dict[str, list[str]]:
    """``{"": top-level keys, group: its keys}`` for a command: dataclass groups (``train``, ``eval``, ``log``)
    and the data module's init args (in the fork's dialect, the fork's data keys)."""
    keys: dict[str, list[str]] = {"": list(inspect.signature(function).parameters)}
    for name, parameter in inspect.signature(function).parameters.items():
        default = parameter.default
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            keys[name] = [f.name for f in dataclasses.fields(default) if f.init]
    if "data" in keys[""]:
        from midtrain.data.mixture import MixtureArgs
        from midtrain.data.module import ShardedMixedDataset

        keys["data"] = [f.name for f in dataclasses.fields(ShardedMixedDataset) if f.init] or [
            f.name for f in dataclasses.fields(MixtureArgs)]
        if fork:
            keys["data"] = [k for k in keys["data"] if k in FORK_DATA_KEYS]
    if fork and "train" in keys:
        from midtrain.train.fork_dialect import NATIVE_ONLY_KEYS

        keys["train"] = [k for k in keys["train"] if k not in NATIVE_ONLY_KEYS]
    return keys


_UNKNOWN_PATTERNS = (
    re.compile(r"does not accept nested key '([\w.]+)'"),
    re.compile(r"NestedArg\(key='([\w.]+)'"),
    re.compile(r"Key '([\w.]+)' is not expected"),
)


def literal_choices(function: Callable, key: str) -> tuple | None:
    """The values a ``Literal``-typed key (``format``, ``train.lr_scheduler``) takes, or None."""
    import typing

    head, _, rest = key.partition(".")
    try:
        parameter = inspect.signature(function).parameters.get(head)
        annotation = parameter.annotation if parameter is not None else None
        if isinstance(annotation, str):  # a postponed annotation: resolve it in the function's module
            annotation = typing.get_type_hints(function).get(head)
        if rest:
            default = inspect.signature(function).parameters[head].default
            annotation = typing.get_type_hints(type(default)).get(rest) if dataclasses.is_dataclass(default) else None
    except Exception:  # an annotation that cannot be resolved here: no choices to offer
        return None
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return typing.get_args(candidate)
    return None


def _given(argv: list[str] | None, key: str) -> str | None:
    for i, word in enumerate(argv or []):
        if word.startswith(f"--{key}="):
            return word.split("=", 1)[1]
        if word == f"--{key}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def explain(message: str, command: str, function: Callable, argv: list[str] | None = None, fork: bool = False) -> str:
    keys = known_keys(function, fork)
    group_match = re.search(r'Parser key "([\w.]+)"', message)
    group = group_match.group(1) if group_match else ""
    choices = literal_choices(function, group) if group and "Cannot take a Union of no types" in message else None
    if choices:
        given = _given(argv, group)
        return (f"--{group}={given if given is not None else '?'} is not one of {', '.join(map(str, choices))}. "
                f"See 'midtrain {command} --help'.")
    unknown = [f"{g}.{k}" for g, k in re.findall(r"Group '([\w.]+)' does not accept nested key '([\w.]+)'", message)]
    for pattern in _UNKNOWN_PATTERNS if not unknown else ():
        for key in pattern.findall(message):
            unknown.append(key if "." in key or not group else f"{group}.{key}")
    unknown += [f.lstrip("-") for f in re.findall(r"(--[\w.]+)", message.split("Unrecognized arguments:", 1)[1])] \
        if "Unrecognized arguments:" in message else []
    if not unknown and group == "data":  # a "Given value: {...}" mapping: name the keys the data module lacks
        given = re.search(r"'init_args': \{(.*?)\}", message)
        names = re.findall(r"'(\w+)':", given.group(1)) if given else []
        unknown = [f"data.{n}" for n in names if n not in keys.get("data", [])]
    lines = []
    for key in dict.fromkeys(unknown):
        prefix, _, name = key.rpartition(".")
        candidates = keys.get(prefix, [])
        if name in candidates:  # a known key with a bad value
            return _bad_value(message, key, command)
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        hint = f" Did you mean --{prefix + '.' if prefix else ''}{close[0]}?" if close else (
            f" Known keys: {', '.join(candidates)}." if candidates and len(candidates) <= 40 else "")
        lines.append(f"--{key} is not a key of 'midtrain {command}'{' (' + prefix + ')' if prefix else ''}.{hint}")
    if lines:
        return " ".join(lines) + f" See 'midtrain {command} --help'."
    nested = re.findall(r'Parser key "([\w.]+)"', message)
    if group == "data" and len(nested) > 1:  # a bad init arg of the data module: name it, not the whole --data
        inner = message.rindex(f'Parser key "{nested[-1]}"')
        return _bad_value(message[inner:], f"data.{nested[-1]}", command)
    return _bad_value(message, group, command)


def _bad_value(message: str, key: str, command: str) -> str:
    """The value's problem, in the fewest of jsonargparse's lines: the expectations and the value given."""
    expected = [m.rpartition(".")[2] for m in re.findall(r"Expected a <class '([\w.]+)'>", message) if m != "NoneType"]
    expected += [f"a mapping of {m.rpartition('.')[2]}'s keys" for m in
                 re.findall(r"Type <class '([\w.]+)'> expects a dict", message)]
    given = re.search(r"(?:Got value|Given value): (.*)", message)
    value = given.group(1).strip() if given else "?"
    nested = re.search(r"NestedArg\(key='[\w.]+', val=(.*)\)", value)
    value = nested.group(1) if nested else value
    if expected:
        return (f"--{key}={value} is not valid: expected {' or '.join(dict.fromkeys(expected))}. "
                f"See 'midtrain {command} --help'.")
    reason = [line.strip() for line in message.splitlines() if line.strip() and not line.strip().startswith(
        ("Subtypes:", "Given value type:", "- Expected a <class 'NoneType'>", "Errors:"))]
    return " ".join(reason[:6]) + f" See 'midtrain {command} --help'."
