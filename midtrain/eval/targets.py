"""What ``midtrain eval`` scores: the checkpoints of runs given by folder globs (pure file logic, no torch).

A target is one checkpoint folder (holding ``lit_model.pth`` and ``model_config.yaml``) with what the table needs
to place it: the run it belongs to, the run's lineage (which run and step it branched from), its step and the
tokens it had seen. Folders written by ``midtrain pretrain`` carry all of that in ``checkpoint.json`` and
``run.json``; folders written by litgpt (``finetune_full``, ``pretrain``, ``convert_*``) carry the step in the
folder name at most, and a fine-tune launched by ``training_scripts/finetune_eval.sbatch`` names its base
checkpoint, task and seed in ``finetune.json``.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from midtrain.distributed import get_logger
from midtrain.errors import ConfigError
from midtrain.train.checkpoint_files import AVERAGE, FINAL, INFO_FILE, MODEL_FILE, step_of
from midtrain.train.run_dir import RUN_FILE

log = get_logger(__name__)

FINETUNE_FILE = "finetune.json"


@dataclass(frozen=True)
class Lineage:
    """Where a run came from: the parent run's name and the step it branched at (None for a trunk)."""

    parent_run: str | None = None
    branch_step: int | None = None

    @property
    def label(self) -> str:
        return "" if self.parent_run is None else f"{self.parent_run}@{self.branch_step}"


@dataclass(frozen=True)
class EvalTarget:
    run: str
    """The run's name in the table (its folder name, made unique over the runs given)."""
    run_dir: Path
    checkpoint: Path
    step: int | None
    tokens_seen: int | None
    lineage: Lineage = field(default_factory=Lineage)
    finetune: dict = field(default_factory=dict)
    """``finetune.json`` of a fine-tuned checkpoint: ``base_run``, ``base_step``, ``task``, ``seed``."""

    @property
    def key(self) -> str:
        return str(self.checkpoint.resolve())


def is_checkpoint(folder: Path) -> bool:
    return (folder / MODEL_FILE).is_file() and (folder / "model_config.yaml").is_file()


def _step_of(folder: Path, info: dict) -> int | None:
    if "step" in info:
        return int(info["step"])
    return step_of(folder.name)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read as JSON ({exc}). Repair or delete it.") from None
    return value if isinstance(value, dict) else {}


def _checkpoints_of(run_dir: Path) -> list[tuple[Path, dict]]:
    """(folder, its ``checkpoint.json``) of the checkpoints directly under a run folder (``step-*``, ``final`` and
    the run's weight average, ``average``), by step, final then the average last."""
    found = [(c, _read_json(c / INFO_FILE)) for c in run_dir.iterdir()
             if c.is_dir() and (step_of(c.name) is not None or c.name in (FINAL, AVERAGE)) and is_checkpoint(c)]

    def order(entry: tuple[Path, dict]) -> tuple:
        step = _step_of(*entry)
        return (step if step is not None else float("inf"), entry[0].name == FINAL, entry[0].name == AVERAGE)

    return sorted(found, key=order)


def _lineage(info: dict, run: dict, names: dict[Path, str]) -> Lineage:
    """The last branch point; the parent is named as the table names it when it is among the runs scored."""
    entries = info.get("lineage") or run.get("lineage") or []
    if not entries:
        return Lineage()
    last = entries[-1]
    parent_dir = last.get("parent_out_dir")
    if parent_dir:
        parent = names.get(Path(parent_dir).resolve(), Path(parent_dir).name)
    else:
        parent = last.get("parent_run_id")
    return Lineage(parent, last.get("step"))


def find_targets(patterns: list[str], steps: list[int] | None = None, flag: str = "--runs") -> list[EvalTarget]:
    """Every checkpoint under the run folders (or checkpoint folders) that ``patterns`` match.

    A final checkpoint at the same step as a ``step-*`` one is the same weights and is scored once.
    """
    if not patterns:
        raise ConfigError(f"{flag} is empty. Name run folders (or checkpoint folders), e.g. {flag} 'out/runs/*'.")
    folders: list[Path] = []
    for pattern in patterns:
        matched = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser())))
        matched = [m for m in matched if m.is_dir()]
        if not matched:
            raise ConfigError(f"{flag} pattern {pattern!r} matches no folder. Give run folders (holding step-* "
                              "checkpoints) or checkpoint folders (holding lit_model.pth and model_config.yaml).")
        folders.extend(matched)
    found: list[tuple[Path, Path, dict]] = []  # (run folder, checkpoint folder, its checkpoint.json)
    for folder in dict.fromkeys(p.resolve() for p in folders):
        if is_checkpoint(folder):
            found.append((folder.parent, folder, _read_json(folder / INFO_FILE)))
            continue
        checkpoints = _checkpoints_of(folder)
        if not checkpoints:
            raise ConfigError(
                f"{flag}: {folder} holds no checkpoint (no step-*/ or final/ folder with {MODEL_FILE} and "
                "model_config.yaml). Point it at a run's out_dir or at a checkpoint folder."
            )
        found.extend((folder, checkpoint, info) for checkpoint, info in checkpoints)
    run_dirs = list(dict.fromkeys(run for run, _, _ in found))
    names = _run_names(run_dirs)
    records = {run: (_read_json(run / RUN_FILE), _read_json(run / FINETUNE_FILE)) for run in run_dirs}
    for run_dir in run_dirs:
        _check_one_model(run_dir, [c for r, c, _ in found if r == run_dir], flag)
    targets: list[EvalTarget] = []
    seen: dict[tuple[Path, int | None], Path] = {}
    held: dict[Path, set] = {}
    for run_dir, checkpoint, info in found:
        step = _step_of(checkpoint, info)
        held.setdefault(run_dir, set()).add(step)
        if steps is not None and step not in steps:
            continue
        point = (run_dir, step, checkpoint.name == AVERAGE)  # the average is a point of its own beside final
        if step is not None and point in seen:
            first = seen[point]
            if FINAL in (first.name, checkpoint.name):
                continue  # final/ and step-N of one save: the same weights, scored once
            raise ConfigError(
                f"{flag}: {first} and {checkpoint} both hold step {step:,} of {run_dir}, so one curve would "
                "have two points there. Remove (or move away) the one that does not belong to this run."
            )
        seen[point] = checkpoint
        run_record, run_finetune = records[run_dir]
        tokens = info.get("tokens")
        targets.append(
            EvalTarget(
                names[run_dir],
                run_dir,
                checkpoint,
                step,
                int(tokens) if tokens is not None else None,
                _lineage(info, run_record, names),
                _read_json(checkpoint / FINETUNE_FILE) or run_finetune,
            )
        )
    if not targets:
        raise ConfigError(f"--steps={steps} selects none of the checkpoints found under {', '.join(patterns)}. "
                          "Leave --steps unset to score every checkpoint.")
    for run_dir, present in held.items():
        absent = [s for s in steps or () if s not in present]
        if absent:
            has = ", ".join(f"{s:,}" for s in sorted(s for s in present if s is not None))
            log.warning("--steps: %s has no checkpoint at step %s (it has %s): not scored there.", names[run_dir],
                        ", ".join(f"{s:,}" for s in absent), has or "none with a step")
    return targets


def _model_identity(checkpoint: Path) -> dict:
    try:
        config = yaml.safe_load((checkpoint / "model_config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return (
        {k: v for k, v in (config or {}).items() if k not in ("name", "hf_config")} if isinstance(config, dict) else {}
    )


def _check_one_model(run_dir: Path, checkpoints: list[Path], flag: str) -> None:
    """A run's checkpoints are one model's: a folder mixing two (a config changed under a resume by an older
    midtrain, files copied together) would be plotted as one curve."""
    first = None
    for checkpoint in checkpoints:
        identity = _model_identity(checkpoint)
        if first is None:
            first = (checkpoint, identity)
            continue
        differing = sorted(k for k in set(identity) | set(first[1]) if identity.get(k) != first[1].get(k))
        if differing:
            shown = ", ".join(f"{k} {first[1].get(k)!r} vs {identity.get(k)!r}" for k in differing[:4])
            raise ConfigError(
                f"{flag}: {run_dir} holds checkpoints of two models ({first[0].name} and {checkpoint.name} "
                f"differ in {shown}), which would be scored as one curve. Move each model's checkpoints "
                "into a folder of its own, or name the checkpoint folders to score directly."
            )


def _run_names(run_dirs: list[Path]) -> dict[Path, str]:
    """Each run's folder name; where two share a name, enough parent folders to tell them apart."""
    depth = 1
    while True:
        names = {d: "/".join(d.parts[-depth:]) for d in run_dirs}
        if len(set(names.values())) == len(names) or depth >= max((len(d.parts) for d in run_dirs), default=1):
            return names
        depth += 1
