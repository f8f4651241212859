"""The points at which the training loop calls the components that ride along with it (the online mixture, the
metrics, the weight average): each overrides what it needs; the loop knows none of them by name."""

from __future__ import annotations


class Hook:
    """A component the training loop calls at fixed points. ``loop`` is the ``Trainer``: its ``counters``,
    ``loader``, ``fabric``, ``budget``, ``validate(step)`` and ``data_wait_s``."""

    evaluates = False
    """Whether it measures something at each evaluation (``evaluated``): the loop then evaluates at
    ``eval.interval`` even without held-out sets."""

    sample_losses = False
    """Whether it reads each sample's training loss (``micro_batch``): the loss is then computed per token once, and
    reduced for the training loss and for the hook alike."""

    def started(self, loop, val_losses: dict[str, float] | None) -> None:
        """Training starts at ``loop.counters.step`` (``val_losses``: the initial validation's, if any)."""

    def micro_batch(self, loop, sample_losses) -> None:
        """A micro-batch's per-sample losses (a detached tensor; with ``sample_losses`` only)."""

    def evaluated(self, loop, step: int) -> tuple[dict[str, float], str] | None:
        """At each evaluation (with ``evaluates``): its metrics, logged with the held-out losses, and a summary for
        the progress line."""
        return None

    def stepped(self, loop, val_losses: dict[str, float] | None) -> bool:
        """After an optimizer step (and its validation, if one was due). True if the data stream must be restarted
        (the mixture's timeline grew at this step)."""
        return False

    def log(self, loop, steps: int) -> dict[str, float]:
        """Metrics for a log step (``steps``: optimizer steps since the previous one)."""
        return {}

    def before_save(self, loop) -> dict | None:
        """A checkpoint is about to be saved: what a resume needs, into the state it saves (midtrain's entries of the
        checkpoint, which a resume reads back from ``RunSetup.loop_state``)."""
        return None

    def saved(self, loop, target, final: bool) -> None:
        """The checkpoint ``target`` (a folder) is published, on every rank."""

    def finished(self, loop) -> str | None:
        """The run stopped: a line to print, if any."""
        return None
