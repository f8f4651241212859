"""The command line of the command running in this process (without ``midtrain``): recorded by ``dispatch`` when a
command starts, read by ``pretrain`` to start the processes of a run on several devices with the same command."""

from __future__ import annotations

_ARGV: list[str] = []


def record(argv: list[str]) -> None:
    _ARGV[:] = argv


def invoked_argv() -> list[str]:
    return list(_ARGV)
