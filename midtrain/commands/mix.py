"""``midtrain mix``: print the mixture plan for a data root, a mixture and a token budget."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import yaml

from midtrain.config_files import load_config, read_yaml_mapping
from midtrain.data.mixture import MixtureArgs, resolve_mixture
from midtrain.data.plan import render_plan
from midtrain.errors import ConfigError

# Class paths under which configs name our data module (the paper's fork called it litgpt.data....).
DATA_MODULE_CLASS_PATHS = (
    "midtrain.data.ShardedMixedDataset",
    "litgpt.data.ShardedMixedDataset",
    "ShardedMixedDataset",
)
MIX_KEYS = {"data", "max_tokens", "seq_length", "format"}


def mix(
    data: MixtureArgs,
    max_tokens: int | None = None,
    seq_length: int = 2048,
    format: Literal["table", "json"] = "table",
) -> dict:
    """Print the mixture plan: per shard the tokens on disk, its weight, planned tokens and passes. (``midtrain mix
    --replay RUN/step-XXXXXXXX [--out FILE]`` writes a controlled run's decisions as a ``mix_schedule``; see
    ``midtrain mix --replay x --help``.)

    Args:
        data: The data module's init args (the same as under ``data.init_args`` in a pretrain config).
        max_tokens: Token budget of the run (``train.max_tokens`` in a pretrain config).
        seq_length: The model's context length; each training sample reads ``seq_length + 1`` tokens.
        format: ``table`` for people, ``json`` for scripts.
    """
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(
            f"--max_tokens={max_tokens!r} must be a positive number of tokens (the run's budget), or left "
            "unset for the plan of one pass."
        )
    if isinstance(seq_length, bool) or not isinstance(seq_length, int) or seq_length < 1:
        raise ConfigError(f"--seq_length={seq_length!r} must be a positive integer (the model's context length).")
    mixture = resolve_mixture(data)
    if mixture.changes_key is not None:
        raise ConfigError(f"{mixture.changes_key} changes the mixture at optimizer steps, so its plan needs the run's "
                          "batch size and length: give the run's config, 'midtrain mix --config run.yaml'.")
    return _show(mixture, mixture.plan(seq_length, max_tokens, data.max_passes), format, header=_plan_notes(data))


# init args that a run needs but the plan does not depend on (the loader's processes, the order's seed, what a
# resume may accept, the validation set's size)
_PLAN_NEUTRAL = ("num_workers", "seed", "allow_tokenizer_mismatch", "allow_data_change")


def _plan_notes(data: MixtureArgs) -> list[str]:
    """What the plan does not show of the given keys: counts of a random order are expectations; some keys set
    here change nothing in a plan."""
    notes = []
    if data.sampling == "random":
        notes.append("Note: --data.sampling=random draws each sample independently: the planned tokens are expected "
                     "values, each shard's count varies around them (about ±√(n·w) samples).")
    defaults = {f.name: f.default for f in dataclasses.fields(MixtureArgs) if f.name in _PLAN_NEUTRAL}
    given = [f"--data.{k}" for k, default in defaults.items() if getattr(data, k, default) != default]
    if given:
        notes.append(f"Note: {', '.join(given)} {'change' if len(given) > 1 else 'changes'} nothing in this plan (they "
                     "matter to a run).")
    return notes + ([""] if notes else [])


def _show(mixture, plan, format: str, extra: dict | None = None, header: list[str] | None = None) -> dict:
    validation: dict[str, int] = {}
    for shard in mixture.val_shards:
        validation[shard.domain] = validation.get(shard.domain, 0) + shard.tokens
    payload = {**plan.to_json(), **(extra or {}), "validation_tokens": validation}
    if format == "json":
        print(json.dumps(payload, indent=2))
    else:
        print(f"Training shards: {mixture.train_root}   mixture: {mixture.describe()}")
        print("\n".join([*(header or []), render_plan(plan)]))
        held_out = ", ".join(f"{d} {t:,} tokens" for d, t in validation.items()) or "none"
        print(f"\nValidation data ({mixture.val_root or 'no validation root'}): {held_out}")
    return payload


def is_pretrain_config(path: str | Path) -> bool:
    """A pretrain config (litgpt's keys), rather than one in ``mix``'s own schema."""
    return not set(read_yaml_mapping(path)) <= MIX_KEYS


def run_plan(format: Literal["table", "json"] = "table", max_tokens: int | None = None,
             seq_length: int | None = None, **arguments: Any) -> dict:
    """The arguments of ``midtrain mix --config pretrain.yaml``: pretrain's keys, plus mix's own three (see
    ``mix_pretrain_config``); its signature is made below, so one parser reads both."""
    return {"format": format, "max_tokens": max_tokens, "seq_length": seq_length, **arguments}


def mix_pretrain_config(path: str | Path, args: list[str]) -> dict:
    """``midtrain mix --config pretrain.yaml [overrides]``: the plan ``midtrain pretrain --dry_run`` makes, by the
    same code (``midtrain.train.startup.setup_run``): for a branch or a resume, the remaining budget from its start
    checkpoint, passes counting what the parent already read. Overrides use pretrain's flags (``--data.*``,
    ``--train.*``, ``--branch_from``); ``--max_tokens``/``--seq_length`` are read as ``--train.max_tokens``/
    ``--train.max_seq_length``; ``--format json`` adds each shard's ``start_samples``."""
    from midtrain.commands.parsing import call_with_args
    from midtrain.commands.pretrain import run_settings
    from midtrain.data.stream_io import render_transitions
    from midtrain.train.report import describe_controller, describe_schedule
    from midtrain.train.startup import setup_run

    config = load_config(path)
    data_init_args(config.get("data"), f"--config={path}")
    run_plan.__signature__ = _run_plan_signature()  # pretrain's keys and mix's own, parsed by one parser
    kwargs = call_with_args(run_plan, ["--config", yaml.safe_dump(config, sort_keys=False), *args], prog="midtrain mix")
    format, max_tokens, seq_length = kwargs.pop("format"), kwargs.pop("max_tokens"), kwargs.pop("seq_length")
    # mix's own flags, given next to a pretrain config, are the pretrain config's train.max_tokens/max_seq_length
    train = dataclasses.replace(
        kwargs["train"],
        **{k: v for k, v in (("max_tokens", max_tokens), ("max_seq_length", seq_length)) if v is not None},
    )
    run = setup_run(run_settings(**{**kwargs, "train": train}))
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
    header += describe_controller(run)
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


def _run_plan_signature():
    import inspect

    from midtrain.train.settings import command_signature

    extra = [inspect.Parameter("format", inspect.Parameter.KEYWORD_ONLY, default="table",
                               annotation=Literal["table", "json"]),
             inspect.Parameter("max_tokens", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=int | None),
             inspect.Parameter("seq_length", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=int | None)]
    return command_signature(extra)
