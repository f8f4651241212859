"""The ``midtrain`` command line: the top-level help, and the exit status for each way a command can end (see
``midtrain.commands.dispatch`` for the parsing: one jsonargparse parser per command, built, and the command
imported, only for the command that runs).

Every subcommand takes ``--config FILE`` (YAML), ``--print_config`` and dotted overrides
(``--data.mix_weights_str main:0.8,code:0.2``), as litgpt's CLI does.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from midtrain.commands.dispatch import COMMANDS, run_command
from midtrain.errors import Interrupted, MidtrainError, is_disk_full

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_RETRY = 75
"""EX_TEMPFAIL, as a preempted run exits (``midtrain.train.preemption``): a full disk or quota, to be retried."""


def top_level_help() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name.ljust(width)}  {summary}" for name, (_, _, summary) in COMMANDS.items())
    return ("usage: midtrain COMMAND [--config FILE] [--KEY VALUE ...]\n\nMidtraining experiments on top of LitGPT.\n\n"
            f"commands:\n{rows}\n\n'midtrain COMMAND --help' lists a command's keys. Docs: README.md and docs/.")


STATUS_DIR_VARIABLE = "MIDTRAIN_STATUS_DIR"
"""Set by ``pretrain.sbatch``: every process of a run writes its exit status there (a file named by its rank), so
the script can tell a run whose ranks stopped to be requeued from one that failed, even when ``srun`` reports the
status of a rank that was killed."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["pretrain"]:
        return _main(argv)
    # before the imports that take seconds: a stop signal then is a stop request
    from midtrain.train.preemption import catch_stop_signals_early, release_stop_signals

    previous = catch_stop_signals_early()
    try:
        status = _main(argv)
    finally:
        release_stop_signals(previous)
    if os.environ.get(STATUS_DIR_VARIABLE):
        _record_status(Path(os.environ[STATUS_DIR_VARIABLE]), status)
    return status


def _record_status(folder: Path, status: int) -> None:
    name = f"rank-{os.environ['SLURM_PROCID']}" if "SLURM_PROCID" in os.environ else f"pid-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"{status}\n")
    except OSError as exc:  # the status stands as the exit code; the file only helps the script explain it
        print(f"midtrain: could not record the exit status in {folder} ({exc.strerror}).", file=sys.stderr)


def _main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        # any file a command writes (a run's records and metrics, a table, a shard): what was published before stands
        print(f"midtrain: writing {exc.filename or 'a file'} failed ({exc.strerror}). What was finished before is "
              "intact (published checkpoints and shards, earlier rows): free space or raise the quota, then rerun "
              f"(a run continues with --resume=auto). Exiting with status {EXIT_RETRY}, so a requeue retries.",
              file=sys.stderr)
        return EXIT_RETRY
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
