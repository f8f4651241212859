"""Checkpoint folders on disk (pure file logic, no torch): names, discovery, atomic publication, retention.

A checkpoint is written into a hidden sibling (``.step-00001000.partial``) and renamed into place only when
complete, so a crash or kill during a save leaves the previous checkpoints intact and a partial one is never
found. Every complete checkpoint holds ``checkpoint.json`` (step, counters, lineage), read without torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from midtrain.distributed import get_logger
from midtrain.errors import ConfigError
from midtrain.publish import publish, sync_folder, sync_tree  # noqa: F401 (the checkpoints' publication)

log = get_logger(__name__)

MODEL_FILE = "lit_model.pth"
INFO_FILE = "checkpoint.json"
FINAL = "final"
AVERAGE = "average"
"""A run's weight average (``train.average``): a litgpt checkpoint beside ``final/``, not one a run resumes from."""
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def step_of(name: str) -> int | None:
    """The step a checkpoint folder's name carries (``step-00004000``, as litgpt writes it), or None."""
    match = _STEP_DIR.match(name)
    return int(match.group(1)) if match else None


def partial_dir(out_dir: Path, name: str) -> Path:
    return out_dir / f".{name}.partial"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    """The checkpoint folder (holding ``lit_model.pth``)."""
    step: int
    info: dict

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE


class DamagedCheckpoint(ConfigError):
    """A checkpoint folder whose ``checkpoint.json`` cannot be read."""


def read_info(folder: Path) -> CheckpointInfo | None:
    """The checkpoint in ``folder`` if it is complete; None otherwise; ``DamagedCheckpoint`` if its
    ``checkpoint.json`` is unreadable."""
    if not (folder / MODEL_FILE).is_file():
        return None
    info_file = folder / INFO_FILE
    if info_file.is_file():
        try:
            info = json.loads(info_file.read_text())
            return CheckpointInfo(folder, int(info["step"]), info)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DamagedCheckpoint(f"{info_file} cannot be read ({type(exc).__name__}: {exc}): the checkpoint in "
                                    f"{folder} is damaged.") from None
    step = step_of(folder.name)  # written by plain litgpt (or the paper's fork): the folder name carries the step
    return CheckpointInfo(folder, step, {}) if step is not None else None


def list_checkpoints(out_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints directly under ``out_dir`` (``step-*`` and ``final``), by step (final last on ties).
    A damaged one is skipped with a warning, so an intact newer or older one is still found."""
    if not out_dir.is_dir():
        return []
    found = []
    for child in out_dir.iterdir():
        if child.is_dir() and (step_of(child.name) is not None or child.name == FINAL):
            try:
                checkpoint = read_info(child)
            except DamagedCheckpoint as exc:
                log.warning("Skipping a damaged checkpoint: %s", exc)
                continue
            if checkpoint is not None:
                found.append(checkpoint)
    return sorted(found, key=lambda c: (c.step, c.path.name == FINAL))


def latest_checkpoint(out_dir: Path) -> CheckpointInfo | None:
    checkpoints = list_checkpoints(out_dir)
    return checkpoints[-1] if checkpoints else None


def checkpoint_folder(value: str | Path, flag: str) -> CheckpointInfo:
    """A checkpoint given by its folder or its ``lit_model.pth``; a clear error when it is not one."""
    path = Path(value).expanduser()
    folder = path.parent if path.name == MODEL_FILE or path.suffix == ".pth" else path
    if not folder.exists():
        raise ConfigError(f"{flag}={str(value)!r} does not exist. Point it at a checkpoint folder (e.g. "
                          "out/trunk/step-00020000).")
    try:
        checkpoint = read_info(folder)
    except DamagedCheckpoint as exc:
        raise ConfigError(f"{flag}={str(value)!r}: {exc} Name another checkpoint.") from None
    if checkpoint is None and (folder / MODEL_FILE).is_file():
        raise ConfigError(f"{flag}={str(value)!r}: {folder} holds {MODEL_FILE} but no {INFO_FILE}, and its name is not "
                          "step-XXXXXXXX, so its step cannot be told. Name the folder step-XXXXXXXX (its step) or use "
                          "a checkpoint written by midtrain.")
    if checkpoint is None:
        candidates = ", ".join(c.path.name for c in list_checkpoints(folder)[-3:])
        hint = (
            f" It is a run folder; name one of its checkpoints, e.g. {folder / candidates.split(', ')[-1]}."
            if candidates
            else ""
        )
        raise ConfigError(
            f"{flag}={str(value)!r} is not a complete checkpoint (no {MODEL_FILE} in {folder}).{hint}"
        )
    return checkpoint


def remove_partials(out_dir: Path) -> list[Path]:
    """Delete what interrupted saves left behind (hidden ``.partial``/``.retired`` folders)."""
    removed = []
    if out_dir.is_dir():
        for child in out_dir.iterdir():
            if child.name.endswith(".retired") and not (out_dir / child.name[1 : -len(".retired")]).exists():
                os.replace(child, out_dir / child.name[1 : -len(".retired")])  # killed mid-replace: restore it
            elif child.is_dir() and child.name.startswith(".") and child.name.endswith((".partial", ".retired")):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def prune(out_dir: Path, keep_last: int | None, keep_steps: set[int]) -> list[Path]:
    """Delete ``step-*`` checkpoints beyond the newest ``keep_last``, except those at ``keep_steps`` and those that
    were a finished run's final weights; the newest is never deleted, whatever ``keep_last`` says (the run resumes
    from it). A step folder that is a link (a parent's checkpoint linked in, as the paper's scripts did) is
    unlinked, never followed."""
    if keep_last is None:
        return []
    steps = [c for c in list_checkpoints(out_dir) if c.path.name != FINAL]
    doomed = [c for c in steps[: max(0, len(steps) - max(1, keep_last))]
              if c.step not in keep_steps and not c.info.get("final")]
    for checkpoint in doomed:
        if checkpoint.path.is_symlink():
            checkpoint.path.unlink()
        else:
            shutil.rmtree(checkpoint.path)
    return [c.path for c in doomed]


def link_files(source: Path, staging: Path) -> None:
    """Hard-link the files of a published checkpoint into another's staging folder (the same weights under a
    second name cost no second write); copied where the file system has no hard links."""
    for path in source.iterdir():
        if path.is_file() and path.name != INFO_FILE:
            try:
                os.link(path, staging / path.name)
            except OSError:
                shutil.copy2(path, staging / path.name)


def keep_finished(out_dir: Path) -> Path | None:
    """Before a new ``final/`` is published over an older one (a finished run extended to a later end), keep the old
    one under its step's name (marked final, so retention never removes it): a finished result is never replaced
    without a copy. A step folder of that step holding the same files (saved with it) is that copy."""
    final = out_dir / FINAL
    try:
        old = read_info(final)
    except DamagedCheckpoint:
        old = None
    if old is None:
        return None
    kept = out_dir / step_dir_name(old.step)
    if _same_file(kept / MODEL_FILE, final / MODEL_FILE):
        info_file = kept / INFO_FILE
        info = json.loads(info_file.read_text()) if info_file.is_file() else {"step": old.step}
        staging = kept / f".{INFO_FILE}.tmp"
        staging.write_text(json.dumps({**info, "final": True}, indent=2) + "\n")
        os.replace(staging, info_file)
        shutil.rmtree(final)
    else:
        if kept.exists() or kept.is_symlink():
            kept = out_dir / f"{FINAL}-{step_dir_name(old.step)}"
        os.replace(final, kept)
    sync_folder(out_dir)
    return kept


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
