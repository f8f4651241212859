"""``midtrain mix``: print the mixture plan for a data root, a mixture and a token budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal


import yaml

from midtrain.config_files import load_config, read_yaml_mapping
from midtrain.data.args import MixtureArgs
from midtrain.data.mixture import resolve_mixture
from midtrain.data.plan import render_plan
from midtrain.errors import ConfigError

# Class paths under which configs name our data module (the paper's fork called it litgpt.data....).
DATA_MODULE_CLASS_PATHS = ("midtrain.data.ShardedMixedDataset", "litgpt.data.ShardedMixedDataset", "ShardedMixedDataset")
MIX_KEYS = {"data", "max_tokens", "seq_length", "format"}
# Data module init args that do not change the plan (the validation set's size).
PLAN_NEUTRAL_KEYS = ("val_samples_per_domain",)


def mix(
    data: MixtureArgs,
    max_tokens: int | None = None,
    seq_length: int = 2048,
    format: Literal["table", "json"] = "table",
) -> dict:
    """Print the mixture plan: per shard the tokens on disk, its weight, planned tokens and passes.

    Args:
        data: The data module's init args (the same as under ``data.init_args`` in a pretrain config).
        max_tokens: Token budget of the run (``train.max_tokens`` in a pretrain config).
        seq_length: The model's context length; each training sample reads ``seq_length + 1`` tokens.
        format: ``table`` for people, ``json`` for scripts.
    """
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"--max_tokens={max_tokens!r} must be a positive number of tokens (the run's budget), or left "
                          "unset for the plan of one pass.")
    if isinstance(seq_length, bool) or not isinstance(seq_length, int) or seq_length < 1:
        raise ConfigError(f"--seq_length={seq_length!r} must be a positive integer (the model's context length).")
    mixture = resolve_mixture(data)
    if mixture.schedule is not None:
        raise ConfigError("--data.mix_schedule changes the mixture at optimizer steps, so its plan needs the run's "
                          "batch size and length: give the run's config, 'midtrain mix --config run.yaml'.")
    return _show(mixture, mixture.plan(seq_length, max_tokens, data.max_passes), format)


def _show(mixture, plan, format: str, extra: dict | None = None, header: list[str] | None = None) -> dict:
    validation: dict[str, int] = {}
    for shard in mixture.val_shards:
        validation[shard.domain] = validation.get(shard.domain, 0) + shard.tokens
    payload = {**plan.to_json(), **(extra or {}), "validation_tokens": validation}
    if format == "json":
        print(json.dumps(payload, indent=2))
    else:
        described = (f"{len(mixture.schedule.phases)} phases (--data.mix_schedule)" if mixture.schedule is not None
                     else f"{mixture.spec.describe()} ({mixture.spec.flag})")
        print(f"Training shards: {mixture.train_root}   mixture: {described}")
        print("\n".join([*(header or []), render_plan(plan)]))
        held_out = ", ".join(f"{d} {t:,} tokens" for d, t in validation.items()) or "none"
        print(f"\nValidation data ({mixture.val_root or 'no validation root'}): {held_out}")
    return payload


def is_pretrain_config(path: str | Path) -> bool:
    """A pretrain config (litgpt's keys), rather than one in ``mix``'s own schema."""
    return not set(read_yaml_mapping(path)) <= MIX_KEYS


# mix's own flags, given next to a pretrain config, in the pretrain config's spelling
_MIX_FLAGS_AS_PRETRAIN = {"--max_tokens": "--train.max_tokens", "--seq_length": "--train.max_seq_length"}


def mix_pretrain_config(path: str | Path, args: list[str]) -> dict:
    """``midtrain mix --config pretrain.yaml [overrides]``: the plan ``midtrain pretrain --dry_run`` makes, by the
    same code (``midtrain.train.startup.setup_run``): for a branch or a resume, the remaining budget from its start
    checkpoint, passes counting what the parent already read. Overrides use pretrain's flags (``--data.*``,
    ``--train.*``, ``--branch_from``); ``--max_tokens``/``--seq_length`` are read as ``--train.max_tokens``/
    ``--train.max_seq_length``; ``--format json`` adds each shard's ``start_samples``."""
    from midtrain.commands.parsing import call_with_args
    from midtrain.commands.pretrain import pretrain, run_settings
    from midtrain.data.stream_io import render_transitions
    from midtrain.train.report import describe_schedule
    from midtrain.train.startup import setup_run

    format, rest, i = "table", [], 0
    while i < len(args):
        flag, _, value = args[i].partition("=")
        if flag in ("--format", *_MIX_FLAGS_AS_PRETRAIN) and not value and i + 1 < len(args):
            value, i = args[i + 1], i + 1
        if flag == "--format":
            format = value
        elif flag in _MIX_FLAGS_AS_PRETRAIN:
            rest.append(f"{_MIX_FLAGS_AS_PRETRAIN[flag]}={value}")
        else:
            rest.append(args[i])
        i += 1
    if format not in ("table", "json"):
        raise ConfigError(f"--format={format!r} is not one of table, json.")
    config = load_config(path)
    data_init_args(config.get("data"), f"--config={path}")
    kwargs = call_with_args(pretrain, ["--config", yaml.safe_dump(config, sort_keys=False), *rest], drop=("dry_run",))
    run = setup_run(run_settings(**kwargs))
    budget, start = run.budget, run.start
    end = budget.stop_step(run.start_step)
    started = "from scratch" if start.checkpoint is None else f"{start.kind.value} from {start.checkpoint.path}"
    header = [f"The run in {run.settings.out_dir}: steps {run.start_step:,} → {end:,} of {budget.total_steps:,} "
              f"({budget.tokens_per_step:,} tokens per step), {started}",
              describe_schedule(run.schedule, run.start_step, end)]
    header += [f"WARNING: {notice}" for notice in run.notices]
    if run.data_start.mixture_changed:
        header += ["Data mixture changed; shard cursors carried over by id:",
                   render_transitions(run.data_start.transitions)]
    extra = {"start_step": run.start_step, "end_step": end, "total_steps": budget.total_steps,
             "start_checkpoint": None if start.checkpoint is None else str(start.checkpoint.path)}
    return _show(run.data.mixture, run.data_start.plan, format, extra, header + [""])


def data_init_args(data_section: Any, where: str) -> dict:
    """The init args of a config's ``data`` section, which may be ``{class_path, init_args}`` or flat."""
    if not isinstance(data_section, dict):
        raise ConfigError(f"{where}: 'data' must be a mapping with class_path and init_args; got {data_section!r}.")
    if "class_path" not in data_section:
        return dict(data_section)
    class_path = data_section["class_path"]
    if class_path not in DATA_MODULE_CLASS_PATHS:
        raise ConfigError(
            f"{where}: --data.class_path is {class_path!r}, but mixture plans are made for "
            "midtrain.data.ShardedMixedDataset. Set data.class_path to midtrain.data.ShardedMixedDataset."
        )
    return dict(data_section.get("init_args") or {})


def seq_length_of(config: dict, where: str) -> int | None:
    """The context length a pretrain config trains with: train.max_seq_length, else the model's block_size (the
    model as ``midtrain.train.model_rule`` resolves it for every command)."""
    train = config.get("train") or {}
    if train.get("max_seq_length"):
        return int(train["max_seq_length"])
    if config.get("model_name") or config.get("model_config"):
        from midtrain.train.model_rule import resolve_model_config

        model, note = resolve_model_config(config.get("model_name"), config.get("model_config"))
        if note:
            print(f"Note: {note}")
        return model.block_size
    return None
