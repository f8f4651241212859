"""A config of the paper's fork as a native midtrain config with the same schedule (what ``midtrain port`` writes):
every quirk of the fork's dialect made explicit in midtrain's own keys. Pure logic, but for reading the iteration
count of the checkpoint a branch starts from."""

from __future__ import annotations

import json
from pathlib import Path

from midtrain.config_files import DATA_MODULE_ALIASES
from midtrain.errors import ConfigError
from midtrain.train.fork_dialect import FORK_ONLY_KEYS, ForkSchedule

# The fork's keys that the native config replaces with explicit ones.
_REPLACED_TRAIN_KEYS = ("max_iters", "max_additional_steps", "lr_warmup_fraction", "lr_warmup_steps", "stable_steps",
                        "dialect", "max_tokens", *FORK_ONLY_KEYS)



def native_config(source: dict, train_dict: dict, fork_scheduler: str, resolved: ForkSchedule, accumulation: int,
                  world_size: int, num_nodes: int, step0: int, it0: int, it0_note: str,
                  branch_from: str | None) -> tuple[dict, list[str]]:
    """(the native config, what changed and why) for a fork config ``source`` (its train keys as written in
    ``train_dict``) whose schedule the fork's dialect resolved as ``resolved``, starting at step ``step0`` and
    micro-iteration ``it0``."""
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
        f"train.max_steps {resolved.end_step:,}: the absolute end "
        f"({'step ' + format(step0, ',') + ' + ' if step0 else ''}"
        f"{resolved.end_step - step0:,} steps), instead of max_additional_steps/max_iters",
        f"train.max_lr {schedule.peak_lr:g} and optimizer lr {schedule.peak_lr:g}: the peak the fork used",
        f"train.lr_warmup_iters {schedule.warmup_iters:,}"
        + (f", train.lr_horizon_iters {schedule.horizon_iters:,}" if schedule.name == "cosine" else "")
        + f": the fork's schedule in micro-iterations ({accumulation} per step on {world_size} device(s))",
        it0_note,
    ]
    if offset:
        if it0 % accumulation:
            why = f"the checkpoint's micro-iteration {it0:,} is no multiple of {accumulation}"
        else:
            per_step = f"{it0 // step0:,} micro-iterations per step there" if step0 and it0 % step0 == 0 else (
                "another count per step there")
            why = (f"the checkpoint's micro-iteration {it0:,} is step {step0:,} at {per_step} (its device count), "
                   f"and this run takes {accumulation} per step on {world_size} device(s), so the fork counts "
                   f"{it0 // accumulation:,} steps where the checkpoint says {step0:,}")
        changes.append(f"train.lr_iter_offset {offset:,}: {why}; the fork's steps ended {offset:+,} "
                       f"micro-iterations from step × {accumulation}. The LR of every step is the fork's"
                       + (f", but the first step reads a whole step of data where the fork's read "
                          f"{accumulation - it0 % accumulation} micro-batches (the fork dialect reproduces that too)"
                          if it0 % accumulation else ""))
    if schedule.name != "cosine":
        changes.append(
            f"train.lr_scheduler constant: the fork's {fork_scheduler} as it ran "
            + ("(1e-5 throughout)" if fork_scheduler == "constant" else "(warmup, then the peak; its decay never ran)")
        )
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
    return native, changes


def start_iteration(branch_from: str | None, step0: int, accumulation: int) -> tuple[int, str]:
    """(the micro-iteration the run starts at, what the port says of it): the checkpoint's own ``iter_num`` (its
    ``checkpoint.json``, else its ``lit_model.pth``, as the fork wrote it); ``step × accumulation`` without one."""
    if not branch_from:
        return step0 * accumulation, (f"starts at micro-iteration {step0 * accumulation:,} (step {step0:,} × "
                                      f"{accumulation})")
    path = Path(branch_from)
    folder = path.parent if path.suffix == ".pth" else path
    iteration = None
    try:
        info = json.loads((folder / "checkpoint.json").read_text())
        iteration = int(info["iter_num"])
    except (OSError, ValueError, KeyError, TypeError):
        if (folder / "lit_model.pth").is_file():
            from midtrain.train.safe_load import load_checkpoint_file

            payload = load_checkpoint_file(folder / "lit_model.pth", f"--branch_from={branch_from!r}")
            try:
                iteration = int(payload["iter_num"])
            except (KeyError, TypeError, ValueError):  # a foreign file: say so
                raise ConfigError(f"--branch_from={branch_from!r}: {folder / 'lit_model.pth'} records no iter_num. "
                                  "Name a checkpoint of a pretraining run.") from None
    if iteration is None:
        return step0 * accumulation, (f"starts at micro-iteration {step0 * accumulation:,} (step {step0:,} × "
                                      f"{accumulation}), assumed: {folder} could not be read; port again once it "
                                      "exists, "
                                      "so that its own iteration count is used")
    return iteration, f"starts at micro-iteration {iteration:,}, the checkpoint's iter_num"


