"""Stop requests: SIGUSR1 or SIGTERM (SLURM's ``--signal``) or Ctrl-C (SIGINT) ask the run to finish its current
optimizer step, save a checkpoint and exit with ``EXIT_PREEMPTED`` so the sbatch script can requeue it. The handlers
are installed when the command starts, so a request during start-up stops the run before its first step, leaving
everything as it was. A second Ctrl-C aborts at once (exit 130), without saving."""

from __future__ import annotations

import enum
import signal
import sys
from types import FrameType

# EX_TEMPFAIL from sysexits.h: "temporary failure, the user is invited to retry". The run saved a checkpoint and
# is not finished; `resume: auto` continues it exactly. Also used when train.max_time runs out.
EXIT_PREEMPTED = 75
# The loss or a gradient norm became non-finite: nothing was saved from that step on, and a requeue would diverge
# again, so this is not EXIT_PREEMPTED (the sbatch script requeues only that) nor 2 (bad input).
EXIT_DIVERGED = 3
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class StopReason(enum.Enum):
    """Why ``fit`` returned."""

    FINISHED = "finished"  # the horizon was reached: final/ written
    MAX_ADDITIONAL_STEPS = "max_additional_steps"  # this invocation's cap; the run goes on when started again
    MAX_ITERS = "max_iters"
    MAX_TIME = "max_time"
    SIGNAL = "signal"
    SIGNAL_ON_ANOTHER_RANK = "signal on another rank"

    @property
    def requeue(self) -> bool:
        """Stopped from outside (a signal, the time limit) before the end: exit ``EXIT_PREEMPTED`` to be requeued."""
        return self in (StopReason.MAX_TIME, StopReason.SIGNAL, StopReason.SIGNAL_ON_ANOTHER_RANK)


_EARLY_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
_early: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    _early.append(signum)


def catch_stop_signals_early() -> dict:
    """Remember SIGUSR1/SIGTERM from the process's first line on (``midtrain.cli`` calls this before importing
    anything heavy), until ``StopRequest`` takes over and reads them: SLURM's ``--signal`` reaches every rank, and
    a rank still importing torch would otherwise die of it (exit 137 for the job, not 75, and no requeue). Returns
    the handlers it replaced, for ``release_stop_signals``."""
    return {sig: signal.signal(sig, _remember) for sig in _EARLY_SIGNALS}


def release_stop_signals(previous: dict) -> None:
    """The handlers before ``catch_stop_signals_early``, back (a command run in-process, by a test or a script)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    _early.clear()


class StopRequest:
    """Installs handlers for the stop signals while active; ``signal_name`` is set once one arrives (or if one
    arrived before, while ``catch_stop_signals_early``'s handlers were in place)."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.signal_name: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:  # the next Ctrl-C raises KeyboardInterrupt: abort without saving
            signal.signal(signal.SIGINT, signal.default_int_handler)
            print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving).",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        if _early:
            self.signal_name = signal.Signals(_early[0]).name
            _early.clear()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
