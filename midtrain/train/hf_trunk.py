"""A Hugging Face model folder as a branch point (``--branch_from``): its weights converted to litgpt's layout on
the fly, its step read from the revision it was downloaded at (``step40000``, ``step-001000-2BT``) or given
(``--branch_from_step``), and its source recorded (repository, revision, commit, hashes of its files). It holds
no optimizer state and no data position: the branch's optimizer starts fresh and every shard at its first sample,
both said at start-up."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from midtrain.errors import ConfigError
from midtrain.train import checkpoint_files as files

HF_SOURCE = "huggingface"
"""The key of a branch point's source record in its lineage entry (and of its ``CheckpointInfo.info``)."""
_STEP = re.compile(r"step[-_]?0*(\d+)", re.IGNORECASE)


def is_hf_folder(path: Path) -> bool:
    from midtrain.train.hf_weights import weight_files

    path = Path(path).expanduser()
    return (path.is_dir() and (path / "config.json").is_file() and not (path / files.MODEL_FILE).is_file()
            and bool(weight_files(path)))


def revision_of(folder: Path) -> tuple[str | None, str | None, str | None]:
    """(repository, revision, commit) of a folder in the Hugging Face cache (``models--org--name/snapshots/<commit>``,
    whose ``refs/<revision>`` holds the commit); (None, None, None) elsewhere (``--local-dir`` downloads)."""
    folder = Path(folder).expanduser().resolve()
    if folder.parent.name != "snapshots" or not folder.parent.parent.name.startswith("models--"):
        return None, None, None
    root, commit = folder.parent.parent, folder.name
    repo = root.name.removeprefix("models--").replace("--", "/")
    revisions = sorted(ref.name for ref in (root / "refs").glob("*")
                       if ref.is_file() and ref.read_text().strip() == commit)
    named = [r for r in revisions if _STEP.search(r)] or revisions
    return repo, (named[0] if named else None), commit


def hf_branch_point(folder: Path, given_step: int | None, flag: str) -> files.CheckpointInfo:
    """The folder as a checkpoint to branch from: its step (the revision's, or ``--branch_from_step``) and its source
    record (the hashes come later, when the weights are read)."""
    folder = Path(folder).expanduser()
    repo, revision, commit = revision_of(folder)
    found = _STEP.search(revision or "")
    step = given_step if given_step is not None else (int(found.group(1)) if found else None)
    if step is None:
        raise ConfigError(f"{flag}={str(folder)!r} is a Hugging Face model folder whose step cannot be told (its "
                          f"revision {revision or 'is not recorded (a --local-dir download)'} names none). Give it: "
                          "--branch_from_step=N (e.g. 40000 for Pythia's step40000).")
    if found and given_step is not None and int(found.group(1)) != given_step:
        raise ConfigError(f"--branch_from_step={given_step} contradicts the folder's revision {revision!r} (step "
                          f"{int(found.group(1)):,}). Remove --branch_from_step, or name the folder of that step.")
    source = {"path": str(folder.resolve()), "repo": repo, "revision": revision, "commit": commit}
    return files.CheckpointInfo(folder, int(step), {HF_SOURCE: source})


def read_hf_branch_point(point: files.CheckpointInfo, model_config, flag: str) -> dict:
    """The payload a branch starts from: the weights in litgpt's layout and the step; the source record gains the
    SHA-256 of every file the weights and config came from."""
    from midtrain.train.hf_config import check_hf_config
    from midtrain.train.hf_weights import from_hf_state, read_hf_weights, weight_files

    folder = point.path
    try:
        hf = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag}: {folder / 'config.json'} cannot be read ({exc}).") from None
    check_hf_config(hf, model_config, flag)
    state = from_hf_state(model_config, read_hf_weights(folder, flag), flag)
    point.info[HF_SOURCE]["files"] = {p.name: _sha256(p) for p in [folder / "config.json", *weight_files(folder)]}
    return {"model": state, "step_count": point.step}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
