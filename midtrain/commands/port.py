"""``midtrain port``: write a native midtrain config from a config of the paper's fork, with the same schedule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from midtrain.config_files import DATA_MODULE_ALIASES, read_yaml_mapping
from midtrain.commands.mix import seq_length_of
from midtrain.errors import ConfigError
from midtrain.train.optimizer import configured_lr as optimizer_configured_lr
from midtrain.train.fork_dialect import FORK_ONLY_KEYS, ForkStart, dialect_of, resolve_fork_schedule

# The fork's keys that the native config replaces with explicit ones.
_REPLACED_TRAIN_KEYS = ("max_iters", "max_additional_steps", "lr_warmup_fraction", "lr_warmup_steps", "stable_steps",
                        "dialect", "max_tokens", *FORK_ONLY_KEYS)
_STEP_FOLDER = re.compile(r"step-(\d+)$")


def port(
    fork_config: Path,
    output: Path,
    devices: int | None = None,
    num_nodes: int = 1,
    branch_from: str | None = None,
    start_step: int | None = None,
    overwrite: bool = False,
) -> int:
    """Write a native midtrain config from a paper-fork config, printing what changed and why.

    The native config pins what the fork left implicit: the peak LR (``train.max_lr`` and the optimizer's ``lr``),
    the schedule in micro-iterations (``lr_warmup_iters``, ``lr_horizon_iters``, as the fork computed them), the
    absolute end (``max_steps``), ``branch_from`` instead of a checkpoint copied into ``out_dir`` with
    ``resume: true``, the device count, and midtrain's class path. Its LR equals the fork dialect's at every step.

    Args:
        fork_config: The fork's YAML config.
        output: Where to write the native config.
        devices: GPUs per node the run uses (the fork's schedule is counted in micro-iterations, which depend on it).
            Default: the config's ``devices`` if it is a number.
        num_nodes: Nodes the run uses.
        branch_from: For a config with ``resume: true`` (the paper's branches): the trunk checkpoint it continues,
            ``<trunk out_dir>/step-XXXXXXXX``. Its step is read from the folder name.
        start_step: The step the run starts at, when ``branch_from`` is not a ``step-XXXXXXXX`` folder.
        overwrite: Replace an existing ``output``.
    """
    from midtrain.commands.parsing import call_with_args
    from midtrain.commands.pretrain import pretrain

    source = read_yaml_mapping(fork_config, "--fork_config")
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConfigError(f"--output={str(output)!r} exists. Choose another path or set --overwrite=true.")
    world_size = _world_size(source, devices, num_nodes)
    train_dict = dict(source.get("train") or {})
    # read as 'midtrain pretrain' reads it (one reader, one typing: the paper's `min_lr: 1e-6` is a YAML string)
    train = call_with_args(pretrain, ["--config", str(fork_config)])["train"]
    dialect, why = dialect_of(train)
    if dialect != "fork":
        raise ConfigError(f"--fork_config={str(fork_config)!r} is not in the paper fork's dialect ({why}): it already "
                          f"runs with midtrain's meaning, so there is nothing to port. Run it as it is: 'midtrain "
                          f"pretrain --config {fork_config}'.")
    if train.lr_scheduler == "decay":
        raise ConfigError(
            f"--fork_config={str(fork_config)!r} uses the fork's lr_scheduler decay (exponential from the restored optimizer's "
            "LR), which has no native form. Run it as it is: 'midtrain pretrain' reads it in the fork's dialect.")
    per_step = train.micro_batch_size * world_size
    if train.global_batch_size % per_step:
        raise ConfigError(f"--devices: global_batch_size {train.global_batch_size} is not a multiple of micro_batch_size "
                          f"{train.micro_batch_size} × {world_size} rank(s). Give the device count the run uses.")
    accumulation = train.global_batch_size // per_step
    step0 = _start_step(source, branch_from, start_step)
    budget_steps = None
    if train.max_steps is not None:
        budget_steps = train.max_steps
    elif train.max_tokens is not None:
        seq_length = seq_length_of(source, f"--fork_config={fork_config}") or 2048
        budget_steps = train.max_tokens // (train.global_batch_size * seq_length)
    configured_lr = optimizer_configured_lr(source.get("optimizer") or "AdamW")
    it0, it0_note = _start_iteration(branch_from, step0, accumulation)
    resolved = resolve_fork_schedule(train, accumulation, ForkStart(step0, it0, configured_lr or 1e-3, None,
                                                                   configured_lr), budget_steps)
    schedule = resolved.schedule
    # native steps are counted from step x accumulation: a parent off this run's step grid shifts the fork's iterations
    offset = (it0 // accumulation - step0) * accumulation

    native_train = {k: v for k, v in train_dict.items() if k not in _REPLACED_TRAIN_KEYS}
    native_train.update(max_steps=resolved.end_step, max_lr=schedule.peak_lr,
                        lr_scheduler="cosine" if schedule.name == "cosine" else "constant",
                        lr_warmup_iters=schedule.warmup_iters, min_lr=min(schedule.min_lr, schedule.peak_lr))
    if schedule.name == "cosine":
        native_train["lr_horizon_iters"] = schedule.horizon_iters
    if offset:
        native_train["lr_iter_offset"] = offset
    native_train["dialect"] = "midtrain"
    changes = [
        f"train.max_steps {resolved.end_step:,}: the absolute end ({'step ' + format(step0, ',') + ' + ' if step0 else ''}"
        f"{resolved.end_step - step0:,} steps), instead of max_additional_steps/max_iters",
        f"train.max_lr {schedule.peak_lr:g} and optimizer lr {schedule.peak_lr:g}: the peak the fork used",
        f"train.lr_warmup_iters {schedule.warmup_iters:,}"
        + (f", train.lr_horizon_iters {schedule.horizon_iters:,}" if schedule.name == "cosine" else "")
        + f": the fork's schedule in micro-iterations ({accumulation} per step on {world_size} device(s))",
        it0_note,
    ]
    if offset:
        changes.append(f"train.lr_iter_offset {offset:,}: the checkpoint's micro-iteration {it0:,} is no multiple of "
                       f"{accumulation}, so the fork's steps ended {offset:+,} micro-iterations from step × "
                       f"{accumulation}; the LR of every step is the fork's, but the first step reads a whole step of "
                       f"data where the fork's read {accumulation - it0 % accumulation} micro-batches (the fork "
                       "dialect reproduces that too)")
    if schedule.name != "cosine":
        changes.append(f"train.lr_scheduler constant: the fork's {train.lr_scheduler} as it ran "
                       + ("(1e-5 throughout)" if train.lr_scheduler == "constant" else "(warmup, then the peak; its decay never ran)"))
    changes += [f"dropped train.{k}" for k in _REPLACED_TRAIN_KEYS if k in train_dict and k != "dialect"]

    native = {k: v for k, v in source.items() if k not in ("train", "devices", "num_nodes", "branch_from")}
    native["train"] = native_train
    native["devices"], native["num_nodes"] = world_size // num_nodes, num_nodes
    optimizer = source.get("optimizer")
    if isinstance(optimizer, dict):
        optimizer = {**optimizer, "init_args": {**(optimizer.get("init_args") or {}), "lr": schedule.peak_lr}}
    else:
        optimizer = {"class_path": f"torch.optim.{optimizer or 'AdamW'}", "init_args": {"lr": schedule.peak_lr}}
    native["optimizer"] = optimizer
    data = native.get("data")
    if isinstance(data, dict) and data.get("class_path") in DATA_MODULE_ALIASES:
        native["data"] = {**data, "class_path": DATA_MODULE_ALIASES[data["class_path"]]}
        changes.append(f"data.class_path {DATA_MODULE_ALIASES[data['class_path']]}")
    if branch_from:
        native["resume"] = "auto"
        native["branch_from"] = str(branch_from)
        changes.append(f"branch_from {branch_from} and resume auto"
                       + (", instead of resume: true over a copied checkpoint" if source.get("resume") is True else ""))
    elif source.get("resume") is True:
        native["resume"] = "auto"
        changes.append("resume auto, instead of resume: true")
    for notice in resolved.notices:
        changes.append(f"(fork behaviour now explicit) {notice}")

    header = "".join(f"#   - {line}\n" for line in changes)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(f"# Ported from {fork_config} by 'midtrain port': the same schedule, in midtrain's own keys.\n"
                      f"{header}" + yaml.safe_dump(native, sort_keys=False))
    print(f"Wrote {output}. Changes:")
    print("\n".join(f"  - {line}" for line in changes))
    return 0


def _world_size(source: dict, devices: int | None, num_nodes: int) -> int:
    if devices is None:
        devices = source.get("devices")
        if not isinstance(devices, int) or isinstance(devices, bool):
            raise ConfigError("--devices is needed: the config does not pin a device count, and the fork's schedule is "
                              "counted in micro-iterations, which depend on it (the paper used 8 GPUs on one node).")
    if not isinstance(devices, int) or devices < 1 or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ConfigError(f"--devices={devices!r} and --num_nodes={num_nodes!r} must be positive integers.")
    return devices * num_nodes


def _start_step(source: dict, branch_from: str | None, start_step: int | None) -> int:
    if start_step is not None:
        if start_step < 0:
            raise ConfigError(f"--start_step={start_step!r} must be 0 or more.")
        return start_step
    if branch_from:
        path = Path(branch_from)
        match = _STEP_FOLDER.search(path.parent.name if path.suffix == ".pth" else path.name)
        if match is None:
            raise ConfigError(f"--branch_from={branch_from!r} is not a step-XXXXXXXX folder; give --start_step too.")
        return int(match.group(1))
    if source.get("resume") is True:
        raise ConfigError("the config continues a checkpoint (resume: true), as the paper's branches did. Give the trunk "
                          "checkpoint it continues: --branch_from <trunk out_dir>/step-XXXXXXXX (or --start_step N).")
    return 0


def _start_iteration(branch_from: str | None, step0: int, accumulation: int) -> tuple[int, str]:
    """(the micro-iteration the run starts at, what the port says of it): the checkpoint's own ``iter_num`` (its
    ``checkpoint.json``, else its ``lit_model.pth``, as the fork wrote it); ``step × accumulation`` without one."""
    if not branch_from:
        return step0 * accumulation, f"starts at micro-iteration {step0 * accumulation:,} (step {step0:,} × {accumulation})"
    path = Path(branch_from)
    folder = path.parent if path.suffix == ".pth" else path
    iteration = None
    try:
        info = json.loads((folder / "checkpoint.json").read_text())
        iteration = int(info["iter_num"])
    except (OSError, ValueError, KeyError, TypeError):
        if (folder / "lit_model.pth").is_file():
            import torch

            try:
                payload = torch.load(folder / "lit_model.pth", map_location="cpu", mmap=True, weights_only=False)
                iteration = int(payload["iter_num"])
            except Exception as exc:  # a damaged or foreign file: say so
                raise ConfigError(f"--branch_from={branch_from!r}: {folder / 'lit_model.pth'} cannot be read for its "
                                  f"iter_num ({type(exc).__name__}: {exc}). Name an intact checkpoint.") from None
    if iteration is None:
        return step0 * accumulation, (f"starts at micro-iteration {step0 * accumulation:,} (step {step0:,} × "
                                      f"{accumulation}), assumed: {folder} could not be read; port again once it exists, "
                                      "so that its own iteration count is used")
    return iteration, f"starts at micro-iteration {iteration:,}, the checkpoint's iter_num"


