"""Progress on a terminal: a bar with ETA (training: the step and the last loss, with the log lines printed above
it; evaluation: the sets scored). Under SLURM, in a pipe or a file, or with ``MIDTRAIN_PROGRESS=plain``, plain lines
only (a bar's redraws would fill a log file); ``MIDTRAIN_PROGRESS=bar`` forces the bar."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

PROGRESS_VARIABLE = "MIDTRAIN_PROGRESS"
PROGRESS_MODES = ("auto", "bar", "plain")


def bar_wanted(stream: TextIO, environ: Mapping[str, str]) -> bool:
    mode = environ.get(PROGRESS_VARIABLE, "auto")
    if mode not in PROGRESS_MODES:
        print(f"{PROGRESS_VARIABLE}={mode!r} is not one of {', '.join(PROGRESS_MODES)}: using 'auto'.", file=sys.stderr)
        mode = "auto"
    if mode != "auto":
        return mode == "bar"
    return stream.isatty() and "SLURM_JOB_ID" not in environ


class StepProgress:
    """The run's steps (``start_step`` of ``total_steps`` done when it starts); ``write`` prints a log line."""

    def __init__(self, total_steps: int, start_step: int, show: bool, bar: bool | None = None,
                 stream: TextIO | None = None) -> None:
        self.show = show  # False on all ranks but the first: they print nothing
        self.stream = stream or sys.stderr
        self.bar = None
        if show and (bar_wanted(self.stream, os.environ) if bar is None else bar):
            from tqdm.auto import tqdm

            # the ETA comes from this invocation's rate: tqdm counts from `initial`
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", desc="train", dynamic_ncols=True,
                            file=self.stream, smoothing=0.1)

    def advance(self, step: int, loss: float | None = None) -> None:
        if self.bar is None:
            return
        if loss is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
        self.bar.update(step - self.bar.n)

    def write(self, line: str) -> None:
        if not self.show:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
