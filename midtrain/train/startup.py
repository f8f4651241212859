"""Everything a run checks before it touches an accelerator, put together into one ``RunSetup``: the model, the
devices, the budget and LR schedule, the optimizer, the data mixture and its plan, the checkpoint to start from
(read once) and what the run says at start-up. ``--dry_run`` stops here, so every error a real run would hit at
start-up is found on a login node. Each concept has its own module; this one only orders them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from litgpt.config import Config

from midtrain.data.module import DataStart, ShardedMixedDataset
from midtrain.data.token_check import check_token_ids, shard_tokenizer_fingerprint
from midtrain.errors import ConfigError, DataError
from midtrain.tokenizer import load_tokenizer
from midtrain.train import checkpoint_files as files
from midtrain.train import notices as say
from midtrain.train import run_dir
from midtrain.train.averaging import AveragePlan, check_resume, resolve_average
from midtrain.train.budget import Budget, resolve_budget
from midtrain.train.checkpointer import tokenizer_files
from midtrain.train.continuity import LRJump, lr_jump
from midtrain.train.devices import DeviceSetup, loader_workers_note, setup_devices
from midtrain.train.fork_dialect import (
    ForkStart,
    device_count_note,
    dialect_of,
    refuse_fork_only_keys,
    resolve_fork_schedule,
)
from midtrain.train.hf_trunk import HF_SOURCE
from midtrain.train.lr_schedule import IterationLRSchedule, LRSchedule, resolve_lr_schedule
from midtrain.train.metrics import check_logger
from midtrain.train.model_rule import resolve_model_config
from midtrain.train.optimizer import OptimizerSetup, against_checkpoint, saved_lr, setup_optimizer
from midtrain.train.restore import (
    CheckpointRecord,
    StartKind,
    StartPoint,
    branch_step,
    find_start,
    read_start_checkpoint,
)
from midtrain.train.settings import RunSettings
from midtrain.train.validation import tokens_per_byte


@dataclass(frozen=True)
class RunSetup:
    """A run, resolved and checked; built by keyword, changed by no one after ``setup_run`` returns it."""

    settings: RunSettings
    model_config: Config
    parameters: int
    devices: DeviceSetup
    budget: Budget
    schedule: LRSchedule | IterationLRSchedule
    """The LR schedule, anchored where a branch's ``decay`` starts."""
    optimizer: OptimizerSetup
    start: StartPoint
    checkpoint: CheckpointRecord | None
    """The checkpoint (or initial weights) the run starts from, read once; the run restores from it."""
    data: ShardedMixedDataset
    data_start: DataStart
    start_step: int
    start_iter: int
    dialect: str = "midtrain"
    dialect_reason: str = ""
    notices: tuple[str, ...] = ()
    """Every way the config is read that a user might not expect; printed at start-up and saved in run.json."""
    lr_jump: LRJump | None = None
    """This run's first LR against the parent's next LR, when they differ by more than 1 %."""
    tokenizer_files: dict[str, bytes] = field(default_factory=dict)
    """The tokenizer files every checkpoint gets (from ``tokenizer_dir``, else from the starting checkpoint)."""
    val_identities: dict[str, str] = field(default_factory=dict)
    """Each domain's held-out set's identity, recorded in every checkpoint so a swapped set is said at resume."""
    loop_state: dict = field(default_factory=dict)
    """midtrain's own state every checkpoint carries on: the LR anchor of ``decay``, a resumed log window."""
    average: AveragePlan | None = None
    """``train.average``: the steps whose weights enter the run's average."""
    lr_weighted: bool = True
    """Whether the ledger weighs each sample by its step's LR (not where a step is no fixed number of samples)."""
    val_tokens_per_byte: dict = field(default_factory=dict)
    """Each validation set's tokens per byte of text (validation reports bits per byte), empty without a tokenizer."""
    gold_sets: tuple = ()
    val_forward_tokens: int = 0
    """Tokens through the model in one held-out validation (all domains): the unit the gold sets' cost is given in."""
    """``eval.gold_sets`` tokenized for the training context (``PreparedGold``), scored at each evaluation."""


def setup_run(settings: RunSettings) -> RunSetup:
    """Resolve and check everything; raises ``ConfigError``/``DataError`` naming the flag and the fix."""
    train = settings.train
    model_config, model_note = resolve_model_config(settings.model_name, settings.model_config)
    seq_length = train.max_seq_length or model_config.block_size
    if seq_length > model_config.block_size:
        raise ConfigError(
            f"--train.max_seq_length={seq_length} exceeds the model's block_size {model_config.block_size}. "
            f"Lower it, or raise --model_config.block_size."
        )
    if train.activation_checkpointing and model_config.n_layer < 1:
        raise ConfigError(f"--train.activation_checkpointing=true recomputes transformer blocks, and the model "
                          f"({model_config.name}) has n_layer={model_config.n_layer}. Remove it.")
    devices = setup_devices(settings.accelerator, settings.devices, settings.num_nodes, settings.precision,
                            settings.compile, settings.strategy)
    _refuse_unsupported(settings)
    dialect, dialect_reason = dialect_of(train)
    fork = dialect == "fork"
    if not fork:
        refuse_fork_only_keys(train)
    budget = resolve_budget(train, devices.world_size, seq_length, fork_dialect=fork)
    run_dir.check_out_dir(settings.out_dir)  # read below for the branch point (again, with the data, in _data)
    origin = branch_step(settings)
    if not fork:
        budget = budget.from_branch(origin)
    optimizer = setup_optimizer(settings.optimizer, train.max_lr)
    schedule = None if fork else resolve_lr_schedule(train, optimizer.peak_lr, budget.total_steps,
                                                     budget.accumulation_iters)
    data, val_sets = _data(settings, model_config, seq_length)

    start = find_start(settings, None if fork else budget.total_steps)
    say.check_one_run_per_folder(settings.out_dir, settings.config_dump)
    record = read_start_checkpoint(start, model_config)
    continuing = start.checkpoint is not None
    start_step, start_iter = (record.step, record.iter_num) if continuing else (0, 0)
    notices = [n for n in (model_note,) if n] + list(devices.notices)
    weights_only = continuing and record.weights_only
    if weights_only:
        if fork:
            raise ConfigError("--branch_from is a Hugging Face folder, which the paper fork's dialect cannot branch "
                              "from (its LR counts micro-iterations of a parent it ran). Set --train.dialect=midtrain.")
        start_iter = start_step * budget.accumulation_iters  # the step grid of this run's batch settings
        source = record.info[HF_SOURCE]
        where = f"{source['repo']}@{source['revision']}" if source.get("repo") else source["path"]
        notices.append(f"--branch_from is a Hugging Face model folder ({where}, step {start_step:,}): its weights are "
                       "converted and the run continues at that step of its LR schedule, but it holds no optimizer "
                       "state and no data position: the optimizer starts fresh (Adam's moments at zero"
                       + (f"; the LR rises from 0 over --train.rewarm_steps={train.rewarm_steps}"
                          if train.rewarm_steps else "; --train.rewarm_steps=K rebuilds them under a rising LR")
                       + ") and every shard at its first sample.")
    elif continuing:
        optimizer = against_checkpoint(optimizer, record.optimizer_state, record.info, train.reset_optimizer,
                                       start.kind is StartKind.BRANCH, start.checkpoint.path)
        notices += optimizer.notices
    elif train.reset_optimizer:
        raise ConfigError(
            "--train.reset_optimizer=true resets a checkpoint's optimizer where a branch starts, but this "
            "run starts from scratch (no --branch_from, nothing in --out_dir to resume). Remove it."
        )
    restored_lr = saved_lr(record.optimizer_state) if continuing else None
    if fork:
        schedule, budget, start, fork_notices = _fork_schedule(train, budget, start, record, start_step, start_iter,
                                                               optimizer, restored_lr, devices, data)
        notices += fork_notices
    lr_weighted = not (budget.steps_end_at_iteration_multiples and start_iter % budget.accumulation_iters)
    if not lr_weighted:
        notices.append("the ledger records no LR-weighted tokens for this run: its first step is shorter (the fork "
                       "dialect's step boundaries after a parent with other batch settings), so the stream cannot tell "
                       "which step trains a sample.")
    loop_state = _loop_state(start, record, start_step, restored_lr)
    average = resolve_average(train.average, budget.total_steps, origin or 0)
    if start.kind is StartKind.RESUME:
        check_resume(average, loop_state.get(files.AVERAGE), start_step)
    if schedule is not None and loop_state.get("lr_anchor") and loop_state["lr_anchor"][1] is not None:
        schedule = schedule.anchored(int(loop_state["lr_anchor"][0]), float(loop_state["lr_anchor"][1]))
    if weights_only and isinstance(schedule, LRSchedule) and schedule.name == "decay":
        schedule = schedule.anchored(start_step, schedule.peak_lr)
        loop_state["lr_anchor"] = [start_step, schedule.peak_lr]
        notices.append(f"--train.lr_scheduler=decay from a Hugging Face folder, whose LR is unknown: the decay starts "
                       f"from the peak LR ({schedule.peak_lr:g}) at step {start_step:,}.")
    if start.kind is StartKind.RESUME:  # what the branch point recorded: its optimizer started fresh or not
        lineage = (run_dir.load_run(settings.out_dir) or {}).get("lineage") or []
        fresh_optimizer = bool(lineage) and lineage[-1].get("optimizer") == "fresh"
    else:
        fresh_optimizer = continuing and (weights_only or optimizer.reset)
    schedule = _rewarm(train, schedule, origin, fresh_optimizer)

    data_start = data.continuation(record.loader_state if continuing else None, start_step=start_step,
                                   total_steps=budget.total_steps, global_batch_size=budget.global_batch_size,
                                   world_size=devices.world_size, same_run=start.kind is not StartKind.BRANCH,
                                   where=f"{start.flag}={start.checkpoint.path}" if continuing else "")
    notices += data_start.notices
    notices += data.mixture.check_run(settings.eval.interval, list(val_sets), budget.total_steps, start_step)
    jump = None
    if continuing and start.kind in (StartKind.RESUME, StartKind.BRANCH) and start_step < budget.total_steps:
        jump = lr_jump(start.checkpoint.info, schedule.record(), schedule.lr_at(start_step), start_step,
                       budget.global_batch_size, budget.tokens_per_step)
        if jump is not None and not jump.intentional:
            notices.append(jump.describe())
    val_identities = data.val_identities(val_sets)
    notices += say.clamps_and_gaps(train, budget, data.mixture)
    notices += say.validation_gaps(settings.eval.max_iters, data, val_sets)
    notices += loader_workers_note(data.num_workers, devices.devices)
    if continuing and start.kind in (StartKind.RESUME, StartKind.BRANCH):
        notices += say.continuation_notices(start.checkpoint.info, budget, start_step, val_identities)
    if start.kind is StartKind.RESUME:
        notices += say.edited_phases(settings.out_dir, settings.config_dump, start_step)
    tokenizers, tokenizer_note = tokenizer_files(settings.tokenizer_dir, start.checkpoint.path if continuing else None)
    notices += [tokenizer_note] if tokenizer_note else []
    tokenizer_source = settings.tokenizer_dir or (start.checkpoint.path if continuing and tokenizers else None)
    tokenizer = load_tokenizer(tokenizer_source) if tokenizer_source and (val_sets or settings.eval.gold_sets) else None
    per_byte = tokens_per_byte(val_sets, tokenizer) if val_sets and tokenizer else {}
    gold = _gold_sets(settings, tokenizer, seq_length)
    if start.kind is StartKind.RESUME and start.checkpoint.info.get("final") and start_step < budget.total_steps:
        notices.append(f"the run had finished at step {start_step:,} ({start.checkpoint.path.name}); this config's end "
                       f"(step {budget.total_steps:,}) extends it. Its final weights of step {start_step:,} are kept "
                       f"as {files.step_dir_name(start_step)}.")
    return RunSetup(
        settings=settings, model_config=model_config, parameters=_parameters(model_config), devices=devices,
        budget=budget, schedule=schedule, optimizer=optimizer, start=start, checkpoint=record, data=data,
        data_start=data_start, start_step=start_step, start_iter=start_iter, dialect=dialect,
        dialect_reason=dialect_reason, notices=tuple(notices), lr_jump=jump, tokenizer_files=tokenizers,
        val_identities=val_identities, loop_state=loop_state, average=average, lr_weighted=lr_weighted,
        val_tokens_per_byte=per_byte, gold_sets=gold,
        val_forward_tokens=sum(len(held_out) for held_out in val_sets.values()) * seq_length)


def _rewarm(train, schedule, origin: int | None, fresh_optimizer: bool):
    """``train.rewarm_steps``: the LR rising from 0 after a branch point whose optimizer starts fresh."""
    steps = train.rewarm_steps
    if not steps:
        return schedule
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"--train.rewarm_steps={steps!r} must be 0 or a positive number of steps.")
    if origin is None:
        raise ConfigError(f"--train.rewarm_steps={steps} rewarms the LR after a branch point, and this run branches "
                          "from nothing. Remove it (a fresh run has --train.lr_warmup_steps).")
    if not isinstance(schedule, LRSchedule):
        raise ConfigError(f"--train.rewarm_steps={steps} applies to midtrain's per-step LR, not the paper fork's "
                          "per-micro-iteration one. Remove it, or set --train.dialect=midtrain.")
    if not fresh_optimizer:
        raise ConfigError(f"--train.rewarm_steps={steps}: this branch continues its parent's optimizer state, whose "
                          "moments need no rebuilding. Remove it, or start the optimizer fresh "
                          "(--train.reset_optimizer=true, or a Hugging Face --branch_from).")
    return schedule.rewarmed(origin, steps)


def _gold_sets(settings: RunSettings, tokenizer, seq_length: int) -> tuple:
    """``eval.gold_sets`` for the context the model trains at, refused before training where they cannot be scored."""
    if not settings.eval.gold_sets:
        return ()
    from midtrain.train.gold import prepare_gold_sets

    if tokenizer is None:
        raise ConfigError("--eval.gold_sets needs the run's tokenizer to encode prompts and answers, and this run has "
                          "none. Set --tokenizer_dir (the tokenizer the shards were prepared with).")
    if settings.eval.interval < 1:
        raise ConfigError(f"--eval.interval={settings.eval.interval} must be at least 1 to score --eval.gold_sets.")
    return prepare_gold_sets(settings.eval.gold_sets, tokenizer, seq_length, "--eval.gold_sets")


def _refuse_unsupported(settings: RunSettings) -> None:
    """litgpt's keys that pretraining cannot honour, refused rather than ignored."""
    check_logger(settings.logger_name)
    if settings.eval.max_new_tokens is not None:
        raise ConfigError(
            f"--eval.max_new_tokens={settings.eval.max_new_tokens} is for fine-tuning; pretraining generates "
            "nothing. Remove it."
        )
    if settings.eval.evaluate_example != "first":
        raise ConfigError(f"--eval.evaluate_example={settings.eval.evaluate_example!r} is for fine-tuning; pretraining "
                          "evaluates no examples. Remove it.")
    lit_logger_only = {"teamspace": None, "metadata": None, "checkpoint_name": None, "log_model": False,
                       "save_logs": True}
    for key, default in lit_logger_only.items():
        if getattr(settings.log, key) != default:
            raise ConfigError(
                f"--log.{key}={getattr(settings.log, key)!r} applies to litgpt's LitLogger, which midtrain "
                "does not support (use tensorboard, csv or wandb). Remove it."
            )
    wandb_only = [k for k in ("project", "run", "group") if getattr(settings.log, k) is not None]
    if wandb_only and settings.logger_name != "wandb":
        raise ConfigError(f"--log.{wandb_only[0]}={getattr(settings.log, wandb_only[0])!r} names a wandb "
                          f"{wandb_only[0]}, but --logger_name={settings.logger_name}: nothing would use it. Set "
                          f"--logger_name=wandb, or remove --log.{', --log.'.join(wandb_only)}.")
    if not isinstance(settings.eval.interval, int) or settings.eval.interval < 1:
        raise ConfigError(f"--eval.interval={settings.eval.interval!r} must be a positive number of steps.")


def _data(settings: RunSettings, model_config: Config, seq_length: int) -> tuple[ShardedMixedDataset, dict]:
    """The data module set up and checked against the model and the run folder; each domain's validation set."""
    data = settings.data
    if not isinstance(data, ShardedMixedDataset):
        raise ConfigError(
            f"--data is {type(data).__name__ if data is not None else 'not set'}; midtrain pretrain trains on "
            "midtrain.data.ShardedMixedDataset (set data.class_path to it and data.init_args.data_path to your shards)."
        )
    data.connect(tokenizer=None, batch_size=settings.train.micro_batch_size, max_seq_length=seq_length)
    data.setup()  # discovery, weights and held-out shards: every data error now
    run_dir.check_out_dir(settings.out_dir)
    run_dir.check_out_dir_outside(settings.out_dir, {"--data.data_path": data.mixture.train_root,
                                                     "--data.val_data_path": data.mixture.val_root})
    if settings.tokenizer_dir is not None:
        load_tokenizer(settings.tokenizer_dir)
    check_token_ids([*data.mixture.used_shards(), *data.mixture.val_shards], model_config.padded_vocab_size,
                    shard_tokenizer_fingerprint(settings.tokenizer_dir), data.allow_tokenizer_mismatch)
    val_sets = data.val_datasets(settings.eval.max_iters * settings.train.micro_batch_size)
    for domain, held_out in val_sets.items():
        largest, shard_id = held_out.largest_token_id()
        if largest >= model_config.padded_vocab_size:
            raise DataError(
                f"the {domain} validation set (held-out shard {shard_id!r}) holds token id {largest:,}, but "
                f"the model's vocabulary has {model_config.padded_vocab_size:,} entries "
                "(padded_vocab_size). "
                "Use the tokenizer the shards were prepared with and a model whose vocabulary covers it."
            )
    return data, val_sets


def _fork_schedule(train, budget: Budget, start: StartPoint, record: CheckpointRecord | None, start_step: int,
                   start_iter: int, optimizer: OptimizerSetup, restored_lr: float | None, devices: DeviceSetup,
                   data: ShardedMixedDataset) -> tuple[IterationLRSchedule, Budget, StartPoint, list[str]]:
    """The paper fork's dialect: its schedule and end, known once the starting checkpoint is."""
    saved = start.checkpoint.info if start.kind is StartKind.RESUME else {}
    interrupted = saved.get("dialect") == "fork" and not saved.get("final") and "lr_schedule" in saved
    lr0 = optimizer.configured_lr if restored_lr is None else restored_lr
    fork_start = ForkStart(start_step, start_iter, lr0, None, optimizer.configured_lr)
    resolved = resolve_fork_schedule(train, budget.accumulation_iters, dataclasses.replace(
        fork_start, saved_schedule=saved["lr_schedule"] if interrupted else None), budget.total_steps or None)
    notices = list(resolved.notices)
    note = device_count_note(train, resolved.schedule, fork_start, train.micro_batch_size, budget.global_batch_size,
                             devices.world_size, budget.total_steps or None)
    notices += [note] if note else []
    budget = dataclasses.replace(budget, total_steps=resolved.end_step, steps_end_at_iteration_multiples=True)
    if start_iter % budget.accumulation_iters and data.mixture.changes_key is not None:
        raise ConfigError(
            f"{data.mixture.changes_key} counts whole steps, but this fork-dialect run starts at micro-iteration "
            f"{start_iter:,}, no multiple of its {budget.accumulation_iters} per step, so its first step is "
            "shorter (the fork's step boundaries). Use one mixture, or --train.dialect=midtrain.")
    if start.checkpoint is not None and resolved.end_step <= start_step:
        start = start.finished()
    if start.kind is StartKind.RESUME and start.checkpoint.info.get("final") and train.max_additional_steps is not None:
        # the fork extended a finished run by max_additional_steps at every rerun (an array's resubmission replaced
        # its final weights); here a finished run stays finished: extending it takes an absolute end
        start = start.finished()
        budget = dataclasses.replace(budget, total_steps=start_step)
    return resolved.schedule, budget, start, notices


def _loop_state(start: StartPoint, record: CheckpointRecord | None, start_step: int,
                restored_lr: float | None) -> dict:
    """What the run's checkpoints carry on of midtrain's own state: a resume continues its checkpoint's; a branch
    anchors ``decay`` at the LR its parent would have used next."""
    if start.kind is StartKind.BRANCH:
        return {"lr_anchor": [start_step, start.checkpoint.info.get("lr_next", restored_lr)]}
    if start.kind is StartKind.RESUME:
        return record.loop_state
    return {}


def _parameters(model_config: Config) -> int:
    import torch
    from litgpt.model import GPT

    with torch.device("meta"):
        return sum(p.numel() for p in GPT(model_config).parameters())
