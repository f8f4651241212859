"""Where a run starts (fresh, resume, branch, finished) and the checkpoint it starts from, read once into a
``CheckpointRecord`` that the planning checks (model shapes and config, loader state, counters, optimizer) and the
run restores from, before anything is loaded onto an accelerator."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from litgpt.config import Config

from midtrain.config_files import plain
from midtrain.errors import ConfigError, Problems
from midtrain.train import checkpoint_files as files
from midtrain.train.hf_trunk import HF_SOURCE, hf_branch_point, is_hf_folder, read_hf_branch_point
from midtrain.train.run_dir import load_run
from midtrain.train.safe_load import load_checkpoint_file
from midtrain.train.settings import RunSettings


class StartKind(enum.Enum):
    FRESH = "fresh"
    RESUME = "resume"
    """This run's own checkpoint."""
    BRANCH = "branch"
    """Another run's checkpoint: a new run continues it."""
    FINISHED = "finished"
    """This run's final checkpoint at its end: nothing to do."""


@dataclass(frozen=True)
class StartPoint:
    kind: StartKind
    checkpoint: files.CheckpointInfo | None = None
    flag: str | None = None
    initial_weights: Path | None = None
    """``lit_model.pth`` to take weights from (``--initial_checkpoint_dir``)."""

    def finished(self) -> StartPoint:
        return dataclasses.replace(self, kind=StartKind.FINISHED)


@dataclass
class CheckpointRecord:
    """The starting checkpoint, read once (memory-mapped, so tensors are read where they are used)."""

    path: Path
    payload: dict
    """What ``lit_model.pth`` holds; for an ``initial_checkpoint_dir``, ``{"model": state dict}``."""
    info: dict = field(default_factory=dict)
    nested: bool = True
    """False for a raw state dict (litgpt's downloaded or converted checkpoints) given as initial weights."""

    @property
    def step(self) -> int:
        return int(self.payload.get("step_count", 0))

    @property
    def iter_num(self) -> int:
        return int(self.payload.get("iter_num", 0))

    @property
    def model_state(self) -> dict:
        return self.payload["model"]

    @property
    def optimizer_state(self) -> Any:
        return self.payload.get("optimizer")

    @property
    def loader_state(self) -> Any:
        return self.payload.get("train_dataloader")

    @property
    def weights_only(self) -> bool:
        """A branch point with weights and a step only (a Hugging Face folder): no optimizer or data position."""
        return HF_SOURCE in self.info

    @property
    def loop_state(self) -> dict:
        """midtrain's own entries (the LR anchor of ``decay``, the log window)."""
        return dict(self.payload.get("midtrain") or {})

    def release(self) -> None:
        """Drop the payload once restored (its tensors are memory-mapped from the file)."""
        self.payload = {}


def find_start(settings: RunSettings, total_steps: int | None) -> StartPoint:
    """The checkpoint to start from; ``total_steps`` None when the run's end is only known from the start (the
    fork's dialect), so no checkpoint counts as finished here."""
    out_dir, resume = settings.out_dir, settings.resume
    problems = Problems()
    if settings.branch_from is not None and settings.initial_checkpoint_dir is not None:
        problems.add(
            "--branch_from and --initial_checkpoint_dir both give a starting checkpoint. --branch_from continues "
            "the whole state (optimizer, step, data cursors); --initial_checkpoint_dir loads weights only. Choose one."
        )
    if resume not in (False, "auto") and settings.initial_checkpoint_dir is not None:
        problems.add(
            f"--resume={resume} and --initial_checkpoint_dir both give a starting checkpoint. Use --resume=auto "
            "(weights from --initial_checkpoint_dir on the first start, the run's own checkpoints after that)."
        )
    if isinstance(resume, (str, Path)) and resume != "auto" and settings.branch_from is not None:
        problems.add(f"--resume={resume} and --branch_from={settings.branch_from} both name a checkpoint. Use one.")
    if settings.branch_from_step is not None and settings.branch_from is None:
        problems.add(f"--branch_from_step={settings.branch_from_step} gives the step of a --branch_from Hugging Face "
                     "folder, and --branch_from is not set. Remove it, or set --branch_from.")
    problems.raise_if_any(ConfigError)

    own = files.latest_checkpoint(out_dir)
    own_run = load_run(out_dir)
    if settings.branch_from is not None:
        parent = branch_point(settings)
        check_branch_lineage(out_dir, own, own_run, parent)
    if isinstance(resume, (str, Path)) and resume != "auto":
        start = StartPoint(StartKind.RESUME, files.checkpoint_folder(resume, "--resume"), "--resume")
    elif own is not None and (resume or settings.branch_from is not None):
        start = StartPoint(StartKind.RESUME, own, "--resume")
    elif settings.branch_from is not None:
        start = StartPoint(StartKind.BRANCH, parent, "--branch_from")
    elif resume is True:
        raise ConfigError(
            f"--resume=true, but --out_dir={str(out_dir)!r} holds no complete checkpoint. To branch from a trunk "
            "checkpoint, set --branch_from=<trunk out_dir>/step-XXXXXXXX (or link that step folder into --out_dir, as "
            "the "
            "paper's scripts did); to start fresh when there is nothing to resume, use --resume=auto; or point "
            "--resume "
            "at a checkpoint.")
    elif own is not None and own_run is None and own.path.is_symlink():
        raise ConfigError(
            f"--out_dir={str(out_dir)!r} holds {own.path.name}, a link to {own.path.resolve()} (as the paper's scripts "
            f"linked a parent in), and --resume={resume}. Two experiments fit, choose one: --resume=auto branches "
            f"from that checkpoint at step {own.step:,} (its weights, optimizer, LR position and data continue); to "
            "train from scratch, as the paper's fork did with resume: false (it ignored the link), remove the link "
            "or choose a new --out_dir.")
    elif own is not None:
        raise ConfigError(
            f"--out_dir={str(out_dir)!r} already holds checkpoints (latest {own.path.name}). Set --resume=auto to "
            "continue that run, or choose a new --out_dir."
        )
    else:
        weights = None
        if settings.initial_checkpoint_dir is not None:
            given = Path(settings.initial_checkpoint_dir).expanduser()
            weights = given if given.suffix == ".pth" else given / files.MODEL_FILE
            if not weights.is_file():
                raise ConfigError(f"--initial_checkpoint_dir={str(settings.initial_checkpoint_dir)!r} holds no "
                                  f"{files.MODEL_FILE}. Point it at a litgpt checkpoint folder (downloaded, converted, "
                                  "or a step folder of a run).")
        return StartPoint(StartKind.FRESH, initial_weights=weights)
    if start.kind is StartKind.RESUME:
        # a checkpoint written by another run (copied into out_dir, as the paper did, or named by --resume) starts a
        # branch of that run here: lineage recorded, LR 'decay' anchored at it
        saved_run = start.checkpoint.info.get("run_id")
        # no run of ours here and a checkpoint that names none (the paper fork's, litgpt's): a parent, too
        if own_run is None or (saved_run is not None and own_run["run_id"] != saved_run):
            start = dataclasses.replace(start, kind=StartKind.BRANCH)
    if total_steps is not None and start.kind is StartKind.BRANCH and start.checkpoint.step >= total_steps:
        raise ConfigError(
            f"{start.flag}={str(start.checkpoint.path)!r} is at step {start.checkpoint.step:,}, at or past this run's "
            "end "
            f"(step {total_steps:,}, from --train.max_steps/--train.max_tokens): the branch would train nothing and "
            "publish its parent's weights as its final checkpoint. Branch from an earlier step, or set a later end.")
    if total_steps is not None and start.kind is StartKind.RESUME and start.checkpoint.step > total_steps:
        raise ConfigError(
            f"the run in --out_dir={str(out_dir)!r} is at step {start.checkpoint.step:,} "
            f"({start.checkpoint.path.name}), "
            f"past the end this config gives (step {total_steps:,}): a run cannot be shortened after the fact. Keep "
            "its "
            "end (--train.max_steps/--train.max_tokens), or branch from an earlier checkpoint into a new --out_dir.")
    if total_steps is not None and start.checkpoint.step >= total_steps and start.checkpoint.info.get(
            "final", start.checkpoint.path.name == files.FINAL):
        start = start.finished()
    return start


def branch_point(settings: RunSettings) -> files.CheckpointInfo:
    """``--branch_from``: a checkpoint folder, or a Hugging Face model folder (its step from its revision or
    ``--branch_from_step``)."""
    if is_hf_folder(settings.branch_from):
        return hf_branch_point(settings.branch_from, settings.branch_from_step, "--branch_from")
    if settings.branch_from_step is not None:
        raise ConfigError(f"--branch_from_step={settings.branch_from_step} applies to a Hugging Face model folder, but "
                          f"--branch_from={str(settings.branch_from)!r} is a checkpoint, whose own step counts. Remove "
                          "--branch_from_step.")
    return files.checkpoint_folder(settings.branch_from, "--branch_from")


def branch_step(settings: RunSettings) -> int | None:
    """The step this run branched at, read from folders only: ``--branch_from``'s, else the branch its run folder
    recorded (or the parent's checkpoint linked or copied into it, the paper's way); None for a run that branches
    from nothing."""
    if settings.branch_from is not None:
        return branch_point(settings).step
    own_run = load_run(settings.out_dir)
    lineage = (own_run or {}).get("lineage") or []
    if lineage:
        return int(lineage[-1]["step"])
    own = files.latest_checkpoint(settings.out_dir)
    if own_run is None and own is not None:
        return own.step
    return None


def _same_checkpoint(entry: dict, parent: files.CheckpointInfo) -> bool:
    """Whether a lineage entry names the checkpoint ``parent`` (by its real path, or by its run and step when the
    parent's folder moved)."""
    if entry.get("checkpoint") and Path(entry["checkpoint"]) == parent.path.resolve():
        return True
    parent_run = parent.info.get("run_id")
    return parent_run is not None and entry.get("parent_run_id") == parent_run and entry.get("step") == parent.step


def check_branch_lineage(out_dir: Path, own: files.CheckpointInfo | None, own_run: dict | None,
                         parent: files.CheckpointInfo) -> None:
    """A run folder holds one lineage: ``--branch_from`` must not name a checkpoint of this folder's own run, and a
    folder that already holds checkpoints must be the branch from that very checkpoint."""
    out = out_dir.resolve()
    same_run = own_run is not None and parent.info.get("run_id") not in (None, "") and \
        parent.info.get("run_id") == own_run.get("run_id")
    if same_run or parent.path.resolve().parent == out:
        raise ConfigError(
            f"--branch_from={str(parent.path)!r} is a checkpoint of the run in --out_dir={str(out_dir)!r} itself: "
            "branching into the trunk's own folder would train the trunk on the branch's mixture (its checkpoints, "
            "config.yaml and ledger). Give the branch an --out_dir of its own.")
    if own is None:
        return
    lineage = (own_run or {}).get("lineage") or []
    if lineage and _same_checkpoint(lineage[-1], parent):
        return
    if not lineage and own_run is None and own.path.resolve() == parent.path.resolve():
        return  # the parent's step folder linked into out_dir, as the paper's scripts did
    holds = (f"a branch from {lineage[-1].get('checkpoint')} (step {lineage[-1].get('step')})" if lineage else
             f"the checkpoints of {'run ' + own_run['run_id'] if own_run else 'another run'} (latest {own.path.name}), "
             "which did not branch from it")
    raise ConfigError(
        f"--out_dir={str(out_dir)!r} holds {holds}, but --branch_from={str(parent.path)!r}: a run folder holds one "
        "lineage. To resume that run, set --branch_from back to what it was; for a branch from this checkpoint, choose "
        "a new --out_dir.")


def load_checkpoint_payload(model_file: Path, flag: str) -> dict:
    payload = load_checkpoint_file(model_file, flag)
    if not isinstance(payload, dict):
        raise ConfigError(f"{flag}: {model_file} is not a litgpt checkpoint (no state mapping).")
    return payload


def read_start_checkpoint(start: StartPoint, model_config: Config) -> CheckpointRecord | None:
    """The checkpoint a run starts from (or its initial weights), read once and checked against the configured model:
    every key a continuation needs, the tensors' shapes, and (for a resume or branch) the model config it recorded."""
    if start.checkpoint is not None and HF_SOURCE in start.checkpoint.info:
        payload = read_hf_branch_point(start.checkpoint, model_config, start.flag)
        check_model_state(payload["model"], model_config, start.flag, start.checkpoint.path)
        return CheckpointRecord(start.checkpoint.path, payload, start.checkpoint.info)
    if start.checkpoint is not None:
        payload = load_checkpoint_payload(start.checkpoint.model_file, start.flag)
        missing = [k for k in ("model", "optimizer", "train_dataloader", "step_count") if k not in payload]
        if missing:
            raise ConfigError(
                f"{start.flag}: {start.checkpoint.model_file} lacks {', '.join(missing)}, so the run cannot continue "
                "from it (it holds weights only). Use --initial_checkpoint_dir for weights-only initialisation.")
        check_model_state(payload["model"], model_config, start.flag, start.checkpoint.path)
        check_model_config(start.checkpoint.path, model_config, start.flag)
        return CheckpointRecord(start.checkpoint.path, payload, start.checkpoint.info)
    if start.initial_weights is not None:
        payload = load_checkpoint_payload(start.initial_weights, "--initial_checkpoint_dir")
        nested = isinstance(payload.get("model"), dict)  # one of our (or litgpt pretrain's) full checkpoints
        record = CheckpointRecord(start.initial_weights.parent, payload if nested else {"model": payload}, {}, nested)
        check_model_state(record.model_state, model_config, "--initial_checkpoint_dir", start.initial_weights.parent)
        return record
    return None


def check_model_config(folder: Path, model_config: Config, flag: str) -> None:
    """Refuse a resume or branch whose model differs in any field from the one the checkpoint recorded
    (``model_config.yaml``), even where the tensor shapes agree (``n_head``, ``rope_base``, ``parallel_residual`` …)."""
    path = folder / "model_config.yaml"
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return  # none recorded (the paper fork's checkpoints): the shape check is all there is
    if not isinstance(saved, dict):
        return
    current = plain(dataclasses.asdict(model_config))
    differing = [f"{key} {saved[key]!r} -> {current[key]!r}" for key in sorted(set(saved) & set(current))
                 if key not in _MODEL_METADATA and plain(saved[key]) != current[key]]
    if differing:
        raise ConfigError(
            f"{flag}: the configured model differs from the one the checkpoint in {folder} was trained as "
            f"(checkpoint -> config): {'; '.join(differing)}. A resume or branch continues the same model: use the "
            "checkpoint's model_config.yaml. To change the architecture on purpose, start a new run with "
            "--initial_checkpoint_dir (weights only).")


# fields that name a model without changing what it computes
_MODEL_METADATA = frozenset({"name", "hf_config"})


def check_model_state(model_state: dict, model_config: Config, flag: str, where: Path) -> None:
    """Compare a checkpoint's tensors with the configured model (built on the meta device)."""
    from litgpt.model import GPT

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(model_config).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in model_state.items() if hasattr(v, "shape")}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k} {found[k]} vs {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
    if missing or unexpected or wrong:
        details = "; ".join(filter(None, [
            f"missing {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}" if missing else "",
            f"unexpected {', '.join(unexpected[:4])}{' …' if len(unexpected) > 4 else ''}" if unexpected else "",
            f"shapes (checkpoint vs config) {', '.join(wrong[:4])}" if wrong else "",
        ]))
        raise ConfigError(f"{flag}: the checkpoint in {where} does not fit the configured model "
                          f"({model_config.name}): {details}. Use the model config it was trained with.")
