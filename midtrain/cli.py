"""The ``midtrain`` command line: one jsonargparse CLI with a subcommand per job.

Every subcommand takes ``--config FILE`` (YAML), ``--print_config`` and dotted overrides
(``--data.mix_weights_str main:0.8,code:0.2``), as litgpt's CLI does.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

from midtrain.commands.demo import demo
from midtrain.commands.eval import evaluate
from midtrain.commands.mix import mix, mix_config_from_pretrain
from midtrain.commands.port import port
from midtrain.commands.pretrain import pretrain
from midtrain.commands.similarity import similarity
from midtrain.commands.sweep import sweep
from midtrain.data.prepare import prepare_shard
from midtrain.config_files import DATA_MODULE_ALIASES, load_config, needs_rewrite
from midtrain.errors import MidtrainError

COMMANDS: dict[str, Callable] = {"mix": mix, "prepare": prepare_shard, "pretrain": pretrain, "sweep": sweep, "eval": evaluate, "similarity": similarity,
                                 "port": port, "demo": demo}

EXIT_BAD_INPUT = 2


def command_parser(function: Callable) -> ArgumentParser:
    parser = ArgumentParser(description=(function.__doc__ or "").strip().split("\n\n")[0], exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML config file (or YAML text).")
    parser.add_function_arguments(function, fail_untyped=True, sub_configs=True)
    return parser


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="midtrain", description="Midtraining experiments on top of LitGPT.")
    subcommands = parser.add_subcommands(required=True)
    for name, function in COMMANDS.items():
        summary = (function.__doc__ or "").strip().splitlines()[0]
        subcommands.add_subcommand(name, command_parser(function), help=summary)
    return parser


def translate_mix_config(argv: list[str]) -> list[str]:
    """``midtrain mix --config pretrain.yaml``: keep only what a plan needs (data, budget, context length)."""
    if not argv or argv[0] != "mix":
        return argv
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = yaml.safe_dump(mix_config_from_pretrain(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = "--config=" + yaml.safe_dump(mix_config_from_pretrain(arg.split("=", 1)[1]))
    return out


def translate_config_files(argv: list[str]) -> list[str]:
    """Config files with ``${VAR}`` placeholders or the fork's class path are handed over resolved; the fork's
    class path is also accepted as a ``--data`` value."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in DATA_MODULE_ALIASES and i > 0 and out[i - 1] in ("--data", "--data.class_path"):
            out[i] = DATA_MODULE_ALIASES[arg]
        elif arg.startswith(("--data=", "--data.class_path=")) and arg.split("=", 1)[1] in DATA_MODULE_ALIASES:
            key, value = arg.split("=", 1)
            out[i] = f"{key}={DATA_MODULE_ALIASES[value]}"
        elif arg == "--config" and i + 1 < len(out) and _rewritable(out[i + 1]):
            out[i + 1] = yaml.safe_dump(load_config(out[i + 1]), sort_keys=False)
        elif arg.startswith("--config=") and _rewritable(arg.split("=", 1)[1]):
            out[i] = "--config=" + yaml.safe_dump(load_config(arg.split("=", 1)[1]), sort_keys=False)
    return out


def _rewritable(value: str) -> bool:
    try:
        return Path(value).is_file() and needs_rewrite(value)
    except OSError:  # YAML text rather than a path (e.g. a name too long for the file system)
        return False


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = translate_config_files(translate_mix_config(argv))
        parser = build_parser()
        config = parser.parse_args(argv)
        name = config.subcommand
        init = parser.instantiate_classes(config)[name]
        kwargs = {k: v for k, v in init.items() if k not in ("config", "__path__")}
        status = COMMANDS[name](**kwargs)
    except MidtrainError as exc:
        print(f"midtrain.{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def console_main() -> None:
    sys.exit(main())
