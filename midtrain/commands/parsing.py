"""The argument parser of one command (litgpt's style: ``--config FILE``, dotted overrides), shared by the CLI and
by commands that read another command's config (``midtrain mix --config pretrain.yaml``)."""

from __future__ import annotations

from collections.abc import Callable

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from midtrain.commands.argv import prepare_argv
from midtrain.commands.parse_errors import explain
from midtrain.errors import ConfigError


def command_parser(function: Callable, prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=(function.__doc__ or "").strip().split("\n\n")[0],
                            exit_on_error=False, allow_abbrev=False)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML config file (or YAML text).")
    parser.add_function_arguments(function, fail_untyped=True, sub_configs=True)
    return parser


def call_with_args(function: Callable, argv: list[str], drop: tuple[str, ...] = (), prog: str | None = None) -> dict:
    """``function``'s keyword arguments parsed from ``argv`` as the CLI parses them (see ``midtrain.commands.argv``),
    classes instantiated; a ``ConfigError`` naming the flag for anything that does not parse."""
    parser = command_parser(function, prog)
    words = prepare_argv(function, argv)
    try:
        config = parser.parse_args(words)
    except ArgumentError as exc:
        name = (prog or function.__name__).split()[-1]
        raise ConfigError(explain(str(exc), name, function, argv, fork=_fork_dialect(words))) from None
    init = parser.instantiate_classes(config)
    return {k: v for k, v in init.items() if k not in ("config", "__path__", *drop)}


def _fork_dialect(words: list[str]) -> bool:
    """Whether the configs given are read in the paper fork's dialect (its class path, or train.dialect: fork)."""
    import yaml

    pairs = list(zip(words, words[1:], strict=False))
    if "--train.dialect=fork" in words or ("--train.dialect", "fork") in pairs:
        return True
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "--config":
            train = (yaml.safe_load(value) or {}).get("train") or {}
            if isinstance(train, dict) and train.get("dialect") == "fork":
                return True
    return False
