"""The ``midtrain`` command line: the top-level help, and the exit status for each way a command can end (see
``midtrain.commands.dispatch`` for the parsing: one jsonargparse parser per command, built, and the command
imported, only for the command that runs).

Every subcommand takes ``--config FILE`` (YAML), ``--print_config`` and dotted overrides
(``--data.mix_weights_str main:0.8,code:0.2``), as litgpt's CLI does.
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Sequence

from midtrain.commands.dispatch import COMMANDS, run_command
from midtrain.errors import Interrupted, MidtrainError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def top_level_help() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name.ljust(width)}  {summary}" for name, (_, _, summary) in COMMANDS.items())
    return ("usage: midtrain COMMAND [--config FILE] [--KEY VALUE ...]\n\nMidtraining experiments on top of LitGPT.\n\n"
            f"commands:\n{rows}\n\n'midtrain COMMAND --help' lists a command's keys. Docs: README.md and docs/.")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(top_level_help())
            return 0 if argv else EXIT_BAD_INPUT
        if argv[0] not in COMMANDS:
            close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            print(f"midtrain: '{argv[0]}' is not a command (commands: {', '.join(COMMANDS)}).{hint}", file=sys.stderr)
            return EXIT_BAD_INPUT
        return run_command(argv)
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
        print(
            "midtrain: litdata is not installed. Run `pip install --no-deps litdata==0.2.76` (midtrain installs it "
            "without its unpinned torchvision), or install everything with `bash scripts/install.sh`.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT


def console_main() -> None:
    sys.exit(main())
