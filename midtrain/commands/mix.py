"""``midtrain mix``: the mixture plan, in one of three ways, all read by this command's one parser: for a data root,
a mixture and a token budget; for a pretrain config (``--config run.yaml``: what that run will read, by
``pretrain --dry_run``'s code); or the decisions an online mixture took up to a checkpoint, replayed as a schedule
(``--replay RUN/step-N``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from midtrain.config_files import DATA_MODULE_ALIASES, plain
from midtrain.data.mixture import MixtureArgs, resolve_mixture
from midtrain.data.plan import render_plan
from midtrain.errors import ConfigError

DATA_MODULE = "midtrain.data.ShardedMixedDataset"
RUN_KEYS = ("model_name", "model_config", "out_dir", "precision", "initial_checkpoint_dir", "resume", "train", "eval",
            "log", "optimizer", "devices", "strategy", "num_nodes", "tokenizer_dir", "logger_name", "seed",
            "branch_from", "branch_from_step", "anneal", "accelerator", "compile")
"""``midtrain pretrain``'s keys beside ``data`` (a test keeps them in step with its settings): a config that gives
any of them is a run's, planned as that run will read."""


def mix(
    data: MixtureArgs = MixtureArgs(),  # noqa: B008 - jsonargparse reads (and copies) the default's fields
    max_tokens: int | None = None,
    seq_length: int | None = None,
    format: Literal["table", "json"] = "table",
    replay: Path | None = None,
    out: Path | None = None,
    model_name: str | None = None,
    model_config: dict | None = None,
    out_dir: Path | None = None,
    precision: str | None = None,
    initial_checkpoint_dir: Path | None = None,
    resume: bool | str | None = None,
    train: dict | None = None,
    eval: dict | None = None,
    log: dict | None = None,
    optimizer: str | dict | None = None,
    devices: int | str | None = None,
    strategy: str | None = None,
    num_nodes: int | None = None,
    tokenizer_dir: Path | None = None,
    logger_name: str | None = None,
    seed: int | None = None,
    branch_from: Path | None = None,
    branch_from_step: int | None = None,
    anneal: dict | None = None,
    accelerator: str | None = None,
    compile: bool | None = None,
) -> dict:
    """Print a mixture plan: per shard the tokens on disk, its weight, planned tokens and passes.

    Three forms: the data keys with a budget (``--data.data_path ... --max_tokens N --seq_length L``); a pretrain
    config (``--config run.yaml``, overrides by pretrain's flags: the plan ``pretrain --dry_run`` makes, for a branch
    or a resume from its start checkpoint); or ``--replay RUN/step-N [--out FILE]``: an online mixture's decisions as
    a ``mix_schedule``.

    Args:
        data: The data module's init args (as under ``data.init_args`` in a pretrain config).
        max_tokens: Token budget of the run (a pretrain config's ``train.max_tokens``).
        seq_length: The model's context length, default 2048; each sample reads ``seq_length + 1`` tokens (a
            pretrain config's ``train.max_seq_length``).
        format: ``table`` for people, ``json`` for scripts (a run's adds each shard's ``start_samples``).
        replay: A checkpoint of a run with ``data.mix_controller``: print its decisions up to there as a
            ``data.mix_schedule`` block (a run with it and no controller reads the identical stream).
        out: With ``replay``: also write the run's whole config with that block in place of its mixture and
            controller, its ``out_dir`` the run's plus ``-replay-step<N>``. A new file: an existing one is refused.
        model_name: A pretrain config's key (as ``midtrain pretrain``'s): the plan is then that run's.
        model_config: A pretrain config's key.
        out_dir: A pretrain config's key.
        precision: A pretrain config's key.
        initial_checkpoint_dir: A pretrain config's key.
        resume: A pretrain config's key.
        train: A pretrain config's key.
        eval: A pretrain config's key.
        log: A pretrain config's key.
        optimizer: A pretrain config's key.
        devices: A pretrain config's key.
        strategy: A pretrain config's key.
        num_nodes: A pretrain config's key.
        tokenizer_dir: A pretrain config's key.
        logger_name: A pretrain config's key.
        seed: A pretrain config's key.
        branch_from: A pretrain config's key.
        branch_from_step: A pretrain config's key.
        anneal: A pretrain config's key.
        accelerator: A pretrain config's key.
        compile: A pretrain config's key.
    """
    given = {k: v for k, v in locals().items() if k in RUN_KEYS and v is not None}
    data = data if data.data_path is not None else None
    if replay is not None:
        if data is not None or given or max_tokens is not None or seq_length is not None:
            raise ConfigError("--replay reads a checkpoint's decisions; it takes no data, budget or run keys. Give "
                              "--replay (and --out) alone.")
        from midtrain.commands.replay import mix_replay

        return mix_replay(replay, out)
    if out is not None:
        raise ConfigError("--out writes a replayed config: it goes with --replay RUN/step-N.")
    if given:
        return _run_plan(data, given, format, max_tokens, seq_length)
    if data is None:
        raise ConfigError("--data.data_path is not set: give the data keys (--data.data_path, a mixture and "
                          "--max_tokens), a pretrain config (--config run.yaml), or --replay RUN/step-N.")
    seq_length = 2048 if seq_length is None else seq_length
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


def normalize_config(config: dict, where: str) -> dict:
    """A config as this command's parser reads it: a pretrain config names the data module (``{class_path,
    init_args}``); this command takes its init args. Another data module is refused."""
    data = config.get("data")
    if isinstance(data, dict) and "class_path" in data:
        class_path = DATA_MODULE_ALIASES.get(data["class_path"], data["class_path"])
        if class_path not in (DATA_MODULE, "ShardedMixedDataset"):
            raise ConfigError(f"{where}: --data.class_path is {data['class_path']!r}, but mixture plans are made for "
                              f"{DATA_MODULE}. Set data.class_path to {DATA_MODULE}.")
        config = {**config, "data": dict(data.get("init_args") or {})}
    return config


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


def _show(mixture, plan, format: str, extra: dict | None = None, header: list[str] | None = None,
          footer: list[str] | None = None) -> dict:
    validation: dict[str, int] = {}
    for shard in mixture.val_shards:
        validation[shard.domain] = validation.get(shard.domain, 0) + shard.tokens
    payload = {**plan.to_json(), **(extra or {}), "validation_tokens": validation}
    if format == "json":
        print(json.dumps(payload, indent=2))
    else:
        print(f"Training shards: {mixture.train_root}   mixture: {mixture.describe()}")
        print("\n".join([*(header or []), render_plan(plan), *(footer or [])]))
        held_out = ", ".join(f"{d} {t:,} tokens" for d, t in validation.items()) or "none"
        print(f"\nValidation data ({mixture.val_root or 'no validation root'}): {held_out}")
    return payload


def _run_plan(data: MixtureArgs | None, given: dict, format: str, max_tokens: int | None,
              seq_length: int | None) -> dict:
    """The plan ``midtrain pretrain --dry_run`` makes of a run, by the same code (``setup_run``): for a branch or a
    resume, the remaining budget from its start checkpoint, passes counting what the parent already read.
    ``--max_tokens``/``--seq_length`` are read as ``--train.max_tokens``/``--train.max_seq_length``."""
    from midtrain.commands.parsing import call_with_args
    from midtrain.commands.pretrain import pretrain, run_settings
    from midtrain.train.report import describe_lr_weighted, plan_header
    from midtrain.train.startup import setup_run

    config = {**plain(given), "train": {**(given.get("train") or {}),
                                         **({"max_tokens": max_tokens} if max_tokens else {}),
                                         **({"max_seq_length": seq_length} if seq_length else {})}}
    if data is not None:
        config["data"] = {"class_path": DATA_MODULE, "init_args": plain(data)}
    import yaml

    arguments = call_with_args(pretrain, ["--config", yaml.safe_dump(config, sort_keys=False)],
                               drop=("dry_run",), prog="midtrain mix")
    run = setup_run(run_settings(**arguments))
    end = run.budget.stop_step(run.start_step)
    extra = {"start_step": run.start_step, "end_step": end, "total_steps": run.budget.total_steps,
             "start_checkpoint": None if run.start.checkpoint is None else str(run.start.checkpoint.path)}
    return _show(run.data.mixture, run.data_start.plan, format, extra, plan_header(run) + [""],
                 describe_lr_weighted(run))


mix.normalize_config = normalize_config  # read by the parser (midtrain.commands.argv) for every --config
