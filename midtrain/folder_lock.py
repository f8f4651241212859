"""An exclusive lock on an output folder for the life of a process (pure file logic, no torch).

``flock`` on a lock file: the operating system releases it when the process dies, however it dies, so a killed job
never leaves a stale lock behind (a file may remain, unlocked, which the next run takes over); the file keeps the
holder's host, pid and start time for the message another process gets, and is removed on a clean release. A
process forked while a lock is held (data loader workers, prepare's litdata process) closes its copy of the lock's
file at once: an ``flock`` belongs to the open file, so an orphaned child would otherwise keep the dead holder's
lock.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import weakref
from pathlib import Path

from midtrain.errors import ConfigError, is_disk_full

_HELD: weakref.WeakSet = weakref.WeakSet()


def _close_in_child() -> None:
    for lock in list(_HELD):
        if lock._handle is not None:
            try:
                lock._handle.close()  # this process's descriptor only: the parent still holds the lock
            except OSError:
                pass
            lock._handle = None


os.register_at_fork(after_in_child=_close_in_child)


class FolderLock:
    def __init__(self, lock_file: Path, flag: str, folder: Path, what: str) -> None:
        self.lock_file, self.flag, self.folder, self.what = Path(lock_file), flag, Path(folder), what
        self._handle = None

    def acquire(self) -> FolderLock:
        try:
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            return self._acquire()
        except OSError as exc:  # a read-only or foreign folder: say which
            if is_disk_full(exc):
                raise  # not the folder's fault: the command exits 75 (midtrain.cli), to be retried
            raise ConfigError(
                f"{self.flag}={str(self.folder)!r} cannot be locked for this {self.what} ({exc.strerror or exc} "
                f"at {self.lock_file}). Choose a folder you can write, or fix its permissions."
            ) from None

    def _acquire(self) -> FolderLock:
        while True:
            handle = open(self.lock_file, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = _holder(handle.read())
                handle.close()
                raise ConfigError(
                    f"{self.flag}={str(self.folder)!r} is in use by another midtrain {self.what} ({holder}). Two "
                    f"processes writing one {self.flag} destroy each other's work: wait for it to finish, stop it, or "
                    f"choose another {self.flag}.") from None
            # the holder before us removes the file when it lets go: make sure we locked the file that is there now
            try:
                if os.fstat(handle.fileno()).st_ino == os.stat(self.lock_file).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        self._handle = handle
        _HELD.add(self)
        return self

    def release(self) -> None:
        """Remove the lock file (the folder is left as it was), then let go."""
        if self._handle is not None:
            try:
                self.lock_file.unlink()
            except FileNotFoundError:
                pass
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
            _HELD.discard(self)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"host {info['host']}, pid {info['pid']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
