"""The run directory's records (pure file logic, no torch): ``run.json`` (run id, lineage, one entry per
invocation with git commit and SLURM job id), the resolved ``config.yaml`` and the mixture ``plan.json``."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

from midtrain.errors import ConfigError, is_disk_full
from midtrain.publish import write_text_atomic

RUN_FILE = "run.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def load_run(out_dir: Path) -> dict | None:
    path = out_dir / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def new_run(out_dir: Path) -> dict:
    """A run record with a fresh id (also the wandb run id, so restarts stay one curve)."""
    return {"run_id": uuid.uuid4().hex[:16], "out_dir": str(out_dir.resolve()), "created": _now(), "lineage": [],
            "invocations": []}


def git_commit() -> str | None:
    """The commit of the midtrain checkout this runs from (None when it is not a git checkout)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def invocation_record(start_step: int, world_size: int, started_from: str | None) -> dict:
    return {
        "started": _now(),
        "start_step": start_step,
        "started_from": started_from,
        "world_size": world_size,
        "host": socket.gethostname(),
        "git_commit": git_commit(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT"),
    }


def branch_record(
    parent_info: dict, checkpoint: Path, step: int, mixture_before: dict | None, mixture_after: dict
) -> dict:
    """One lineage entry: which run and checkpoint this run continued from, with the mixtures on either side."""
    return {
        "parent_run_id": parent_info.get("run_id"),
        # the real folder: a parent's step folder linked into this run's out_dir (the paper's way) is not this run
        "parent_out_dir": parent_info.get("out_dir", str(checkpoint.resolve().parent)),
        "checkpoint": str(checkpoint.resolve()),
        "step": step,
        "mixture_before": mixture_before,
        "mixture_after": mixture_after,
    }


def load_config(out_dir: Path) -> dict | None:
    """The run's ``config.yaml`` (the last invocation's config), or None."""
    try:
        config = yaml.safe_load((out_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def save_run_files(out_dir: Path, run: dict, config: dict, plan: dict | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / RUN_FILE, run)
    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    if plan is not None:
        write_json_atomic(out_dir / "plan.json", plan)


def check_out_dir(out_dir: Path, flag: str = "--out_dir") -> None:
    """Refuse, before anything is written, an ``out_dir`` that cannot be created and written: a name longer than the
    file system allows, an existing file, or a folder (or its nearest existing parent) that refuses a new file."""
    path = Path(os.path.abspath(out_dir))
    if os.path.islink(path) and not os.path.exists(path):  # (os.path's answer False to a name too long, said below)
        raise ConfigError(f"{flag}={str(out_dir)!r} is a link to {os.readlink(path)}, which does not exist. Create "
                          f"the folder it points to, or point {flag} at a real folder.")
    existing = path
    while not _exists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        name_max = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    long = [part for part in path.parts if len(os.fsencode(part)) > name_max]
    if long:
        raise ConfigError(
            f"{flag}={str(out_dir)!r}: the folder name {long[0][:40]!r}... is {len(os.fsencode(long[0]))} "
            f"bytes long; this file system allows {name_max}. Shorten it."
        )
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}={str(out_dir)!r} is a file, not a folder. Choose another --out_dir, or move the "
                          "file.")
    if not existing.is_dir():
        raise ConfigError(f"{flag}={str(out_dir)!r} cannot be created: {existing} is a file. Choose another --out_dir.")
    try:  # the permission bits do not say it all (root, read-only mounts, immutable folders): try it
        handle, probe = tempfile.mkstemp(prefix=".midtrain-write-check-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        if is_disk_full(exc):
            raise  # a full disk, not a bad folder: the command exits 75 (midtrain.cli), to be retried
        what = "cannot be written" if existing == path else f"cannot be created: {existing} cannot be written"
        raise ConfigError(f"{flag}={str(out_dir)!r} {what} ({exc.strerror or exc}). Choose a folder you can write, or "
                          "fix its permissions.") from None


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:  # missing, or a name too long to look up (said by the caller)
        return False


def check_out_dir_outside(out_dir: Path, roots: dict[str, Path | None]) -> None:
    """Refuse an ``out_dir`` inside a data root (``flag -> root``): its folders would be read as shards by every
    later run on that root."""
    out = Path(out_dir).resolve()
    for flag, root in roots.items():
        if root is not None and (out == Path(root).resolve() or Path(root).resolve() in out.parents):
            raise ConfigError(f"--out_dir={str(out_dir)!r} is inside the data root {flag}={str(root)!r}: its folders "
                              "would be taken for shards by every later run on that root. Put runs outside the data "
                              "root.")
