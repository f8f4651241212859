"""The ``midtrain`` command line: one jsonargparse parser per command, built (and the command imported) only for the
command that runs.

Every subcommand takes ``--config FILE`` (YAML), ``--print_config`` and dotted overrides
(``--data.mix_weights_str main:0.8,code:0.2``), as litgpt's CLI does.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml
from jsonargparse import ArgumentError

from midtrain.commands.parsing import command_parser
from midtrain.config_files import DATA_MODULE_ALIASES, load_config, needs_rewrite
from midtrain.errors import Interrupted, MidtrainError
from midtrain.parse_errors import explain

# Each command is imported only when it runs, so that `midtrain --help`, `mix` and `sweep` start without loading
# torch, litgpt or lightning (`pretrain`, `eval` and `similarity` need them anyway).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": ("midtrain.data.prepare", "prepare_shard", "Tokenize raw text into one shard, with a held-out shard."),
    "mix": ("midtrain.commands.mix", "mix", "Print the mixture plan (for a pretrain config: the plan of that run)."),
    "pretrain": ("midtrain.commands.pretrain", "pretrain", "Pretrain (trunk) or midtrain (branch) on a mixture."),
    "port": ("midtrain.commands.port", "port", "Write a native config from a paper-fork config, same schedule."),
    "sweep": ("midtrain.commands.sweep", "sweep", "Expand a sweep spec into configs and an sbatch array."),
    "eval": ("midtrain.commands.eval", "evaluate", "Score every checkpoint of some runs into one table."),
    "similarity": ("midtrain.commands.similarity", "similarity", "Similarity of corpora and bridge lengths."),
    "demo": ("midtrain.commands.demo", "demo", "The whole idea on a laptop, offline."),
}

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def load_command(name: str) -> Callable:
    module_name, function_name, _ = COMMANDS[name]
    return getattr(importlib.import_module(module_name), function_name)


def top_level_help() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name.ljust(width)}  {summary}" for name, (_, _, summary) in COMMANDS.items())
    return ("usage: midtrain COMMAND [--config FILE] [--KEY VALUE ...]\n\nMidtraining experiments on top of LitGPT.\n\n"
            f"commands:\n{rows}\n\n'midtrain COMMAND --help' lists a command's keys. Docs: README.md and docs/.")


def pretrain_config_of_mix(argv: list[str]) -> tuple[str, list[str]] | None:
    """(the config, the other arguments) for ``midtrain mix --config pretrain.yaml ...``, else None."""
    if not argv or argv[0] != "mix":
        return None
    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.split("=", 1)[1] if arg.startswith(
            "--config=") else None
        if path is not None and _is_file(path) and _is_pretrain_config(path):
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


def _is_pretrain_config(path: str) -> bool:
    from midtrain.commands.mix import is_pretrain_config

    return is_pretrain_config(path)


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
            from midtrain.commands.mix import mix_pretrain_config

            mix_pretrain_config(*mix_of_pretrain)
            return 0
        if not argv or argv[0] in ("-h", "--help"):
            print(top_level_help())
            return 0 if argv else EXIT_BAD_INPUT
        name = argv[0]
        if name not in COMMANDS:
            close = difflib.get_close_matches(name, COMMANDS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            print(f"midtrain: '{name}' is not a command (commands: {', '.join(COMMANDS)}).{hint}", file=sys.stderr)
            return EXIT_BAD_INPUT
        function = load_command(name)
        parser = command_parser(function, prog=f"midtrain {name}")
        try:
            config = parser.parse_args(translate_config_files(argv)[1:])
        except ArgumentError as exc:
            print(f"midtrain.ConfigError: {explain(str(exc), name, function)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        init = parser.instantiate_classes(config)
        kwargs = {k: v for k, v in init.items() if k not in ("config", "__path__")}
        status = function(**kwargs)
    except MidtrainError as exc:
        print(f"midtrain.{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as exc:
        print(f"\nInterrupted: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as exc:
        if exc.name != "litdata":
            raise
        print("midtrain: litdata is not installed. Run `pip install --no-deps litdata==0.2.76` (midtrain installs it "
              "without its unpinned torchvision), or install everything with `bash scripts/install.sh`.", file=sys.stderr)
        return EXIT_BAD_INPUT
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def console_main() -> None:
    sys.exit(main())
