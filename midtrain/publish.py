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
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text)
    os.replace(staging, path)
