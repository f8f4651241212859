"""Error types that carry a user-facing message: what is wrong, the value, the flag and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MidtrainError(Exception):
    """Base class for errors caused by user input (config or data), never by a bug in midtrain."""


class ConfigError(MidtrainError, ValueError):
    """A config value is invalid. The message names the key as a CLI flag and says how to fix it."""


class DataError(MidtrainError, RuntimeError):
    """The data on disk does not match what the config asks for."""


class Problems:
    """Collects every problem found while validating, so the user sees all of them in one error."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def __bool__(self) -> bool:
        return bool(self.messages)

    def check_names(self, names: list[str], flag: str) -> None:
        """The names a list of sets is given under: each once, non-empty and without '/' (they become metric keys,
        table rows and file names)."""
        for duplicate in sorted({n for n in names if names.count(n) > 1}):
            self.add(f"{flag} names {duplicate!r} twice. Give each set its own name.")
        for i, name in enumerate(names):
            if not name or "/" in name:
                self.add(f"{flag}[{i}].name={name!r} must be non-empty and without '/'.")

    def raise_if_any(self, error_type: type[MidtrainError]) -> None:
        if not self.messages:
            return
        if len(self.messages) == 1:
            raise error_type(self.messages[0])
        listed = "\n".join(f"  - {m}" for m in self.messages)
        raise error_type(f"{len(self.messages)} problems:\n{listed}")


class Interrupted(BaseException):
    """A signal (Ctrl-C, SIGTERM) stopped a command after it cleaned up; the process exits 128 + the signal number."""

    def __init__(self, signum: int, what: str) -> None:
        super().__init__(what)
        self.signum = signum


DISK_FULL_ERRNOS = (28, 122)
"""ENOSPC and EDQUOT (Linux): a full disk or a quota. Not bad input: the command exits 75 to be retried."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name``, for a "Did you mean" hint."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    match = closest(name, candidates)
    return f" Did you mean '{match}'?" if match else ""
