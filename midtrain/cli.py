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
from jsonargparse import ArgumentError, ArgumentParser

from midtrain.commands.demo import demo
from midtrain.commands.parsing import command_parser
from midtrain.commands.eval import evaluate
from midtrain.commands.mix import is_pretrain_config, mix, mix_pretrain_config
from midtrain.commands.port import port
from midtrain.commands.pretrain import pretrain
from midtrain.commands.similarity import similarity
from midtrain.commands.sweep import sweep
from midtrain.data.prepare import prepare_shard
from midtrain.config_files import DATA_MODULE_ALIASES, load_config, needs_rewrite
from midtrain.errors import Interrupted, MidtrainError
from midtrain.parse_errors import explain

COMMANDS: dict[str, Callable] = {"mix": mix, "prepare": prepare_shard, "pretrain": pretrain, "sweep": sweep, "eval": evaluate, "similarity": similarity,
                                 "port": port, "demo": demo}

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser() -> ArgumentParser:
    # errors raise (and are explained by midtrain.parse_errors) rather than print the whole usage text
    parser = ArgumentParser(prog="midtrain", description="Midtraining experiments on top of LitGPT.", exit_on_error=False,
                            allow_abbrev=False)
    subcommands = parser.add_subcommands(required=True)
    for name, function in COMMANDS.items():
        summary = (function.__doc__ or "").strip().splitlines()[0]
        subcommands.add_subcommand(name, command_parser(function), help=summary)
    return parser


def pretrain_config_of_mix(argv: list[str]) -> tuple[str, list[str]] | None:
    """(the config, the other arguments) for ``midtrain mix --config pretrain.yaml ...``, else None."""
    if not argv or argv[0] != "mix":
        return None
    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.split("=", 1)[1] if arg.startswith(
            "--config=") else None
        if path is not None and _is_file(path) and is_pretrain_config(path):
            return path, argv[1:i] + argv[i + (1 if arg.startswith("--config=") else 2):]
    return None


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


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except OSError:  # YAML text rather than a path (e.g. a name too long for the file system)
        return False


def _rewritable(value: str) -> bool:
    return _is_file(value) and needs_rewrite(value)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        mix_of_pretrain = pretrain_config_of_mix(argv)
        if mix_of_pretrain is not None:
            mix_pretrain_config(*mix_of_pretrain)
            return 0
        argv = translate_config_files(argv)
        parser = build_parser()
        try:
            config = parser.parse_args(argv)
        except ArgumentError as exc:
            name = argv[0] if argv and argv[0] in COMMANDS else None
            text = explain(str(exc), name, COMMANDS[name]) if name else str(exc)
            print(f"midtrain.ConfigError: {text}", file=sys.stderr)
            return EXIT_BAD_INPUT
        name = config.subcommand
        init = parser.instantiate_classes(config)[name]
        kwargs = {k: v for k, v in init.items() if k not in ("config", "__path__")}
        status = COMMANDS[name](**kwargs)
    except MidtrainError as exc:
        print(f"midtrain.{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as exc:
        print(f"\nInterrupted: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def console_main() -> None:
    sys.exit(main())
