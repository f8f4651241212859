"""``litdata.optimize`` in a child process of its own: litdata installs a SIGINT handler that ends the process with
status 0, which in our own process would hide an interruption; in a child with a process group of its own, a stop
request (Ctrl-C, SIGTERM) kills the whole group, litdata's workers included, and a parent killed with SIGKILL is
noticed by the child, which ends its group too. Nothing is left running for a ``prepare`` that no longer exists."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

from midtrain.errors import DataError, Interrupted


def run_optimize(arguments: dict, stats: Path) -> None:
    """``litdata.optimize`` in a child process with a process group of its own. litdata installs a SIGINT handler
    that ends the process with status 0; in a child, that cannot hide an interruption from us, and a stop request
    (Ctrl-C, SIGTERM) kills the child's whole group, litdata's workers included, so nothing is left running."""
    error_file = stats / "optimize-error.txt"
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    child = context.Process(target=_optimize_in_child, args=(arguments, str(error_file)), daemon=False)
    child.start()
    try:
        child.join()
    except BaseException:
        _kill_group(child)
        raise
    if child.exitcode != 0:
        unit_errors = sorted(stats.glob("unit-error-*.txt"))
        if unit_errors:  # our own message, from the worker that met the bad input
            raise DataError(unit_errors[0].read_text())
        detail = error_file.read_text().strip() if error_file.is_file() else f"exit status {child.exitcode}"
        raise DataError(f"tokenizing and writing the shard failed: {detail.splitlines()[-1] if detail else detail}")


def _optimize_in_child(arguments: dict, error_file: str) -> None:
    os.setpgid(0, 0)  # our own group: the parent stops us and every worker we start with one killpg
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(os.getppid())
    # litdata's notes (its cache size) are not ours to print; the resource tracker's "leaked semaphore" warning at
    # our os._exit is about litdata's queues, freed with the process
    logging.getLogger("litdata").setLevel(logging.WARNING)
    sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")
    try:
        from litdata import TokensLoader, optimize

        optimize(**arguments, item_loader=TokensLoader(), reorder_files=False, start_method="spawn",
                 verbose=False)  # litdata's bar moves only when a worker ends; we print a summary per split
    except BaseException as exc:
        Path(error_file).write_text(f"{type(exc).__name__}: {exc}")
        os._exit(1)
    os._exit(0)


def _die_with_parent(parent: int) -> None:
    """A parent killed with SIGKILL cannot stop us: a watcher thread ends our whole group (litdata's workers too)
    as soon as the parent is gone, so nothing keeps working, or holding files, for a prepare that no longer exists."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="midtrain-prepare-parent-watch", daemon=True).start()


def _kill_group(child) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.join()


class stop_signals_raise:
    """While active, SIGTERM (and SIGINT) raise ``Interrupted`` in the main thread, so the caller cleans up."""

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._raise) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted(signum, f"{signal.Signals(signum).name} while preparing: the temporary folders were removed; "
                                  "a shard is published only once all its splits are complete.")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
