"""Publishing a folder atomically (pure file logic, no torch): written under a hidden name, synced to disk, then
renamed into place, so a crash, a kill or a node failure never leaves a torn result where a complete one is
expected, and at every moment one complete copy exists under a findable or hidden name. Checkpoints and
``midtrain prepare``'s shards are published this way."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def sync_tree(folder: Path) -> None:
    """fsync every file in ``folder`` and the folder itself, so what is renamed into place is on disk."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    sync_folder(folder)


def sync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def publish(staging: Path, target: Path) -> None:
    """Move a fully written folder into place; an existing one of the same name is replaced. The files are synced
    before the rename and the parent folder after it, so a node crash (not only a killed process) cannot publish a
    torn folder."""
    sync_tree(staging)
    _rename_into_place(staging, target)
    sync_folder(target.parent)


def _rename_into_place(staging: Path, target: Path) -> None:
    if target.exists():
        # rename the old one away first: at every moment one complete copy exists under a findable or hidden name
        retired = target.parent / f".{target.name}.retired"
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def write_text_atomic(path: Path, text: str) -> None:
    """One file written under a hidden name and renamed into place: a reader sees the old file or the new one,
    never a torn one (reports, tables, run records)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        staging.write_text(text)
        os.replace(staging, path)
    except BaseException:  # a full disk, a quota: the old file stands, and no temporary is left
        staging.unlink(missing_ok=True)
        raise


def check_output_dir(out_dir: Path, flag: str, outputs: tuple[str, ...] = ()) -> Path:
    """Check, before any work is done and without creating anything, that ``out_dir`` is (or can be created as) a
    writable folder, so a command that measures for minutes does not fail at its last line; ``outputs`` are the
    file names it will write there (a folder in the way of one is named). ``ConfigError`` naming ``flag``."""
    from midtrain.errors import ConfigError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{flag}={str(out_dir)!r} is a file, not a folder. Name a folder for the outputs.")
    existing = out_dir.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag}={str(out_dir)!r} cannot be created: {existing} is a file. Name a folder you can "
                          "create.")
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "written" if existing == out_dir.absolute() else "created"
        raise ConfigError(f"{flag}={str(out_dir)!r} cannot be {verb}: {existing} is not writable. Name a folder you "
                          "can write.")
    blocked = [name for name in outputs if (out_dir / name).is_dir()]
    if blocked:
        raise ConfigError(f"{flag}={str(out_dir)!r} holds a folder named {blocked[0]!r}, where this command writes "
                          "that file. Move it away, or choose another folder.")
    return out_dir


def check_output_file(path: Path, flag: str) -> Path:
    """A new file's path checked before any work, creating nothing: it does not exist (nothing finished is
    overwritten), and its folder exists or can be created, writable. ``ConfigError`` naming ``flag``."""
    from midtrain.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag}={str(path)!r} is a folder. Name a file, e.g. {str(path / 'replay.yaml')!r}.")
    if path.exists() or path.is_symlink():
        raise ConfigError(f"{flag}={str(path)!r} exists; this command writes a new file and overwrites nothing. "
                          "Name a new file, or remove it.")
    existing = path.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag}={str(path)!r} cannot be created: {existing} is a file. Name a file in a folder.")
    check_output_dir(path.parent, f"{flag}'s folder")
    return path
