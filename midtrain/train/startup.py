"""Everything a run checks before it touches an accelerator: model config, budget, LR schedule, logger, data
mixture and plan, the checkpoint to start from (its model shapes and data cursors). ``--dry_run`` stops here, so
every error a real run would hit at start-up is found on a login node.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from litgpt.config import Config

from midtrain.data.content import set_fingerprint
from midtrain.data.module import ShardedMixedDataset
from midtrain.data.plan import MixturePlan, SchedulePlan
from midtrain.data.stream_state import Transition, is_stream_state
from midtrain.data.token_check import check_token_ids, shard_tokenizer_fingerprint
from midtrain.errors import ConfigError, DataError, MidtrainError
from midtrain.tokenizer import CHECKPOINT_TOKENIZER_FILES, load_tokenizer
from midtrain.train import checkpoint_files as files
from midtrain.train.budget import Budget, resolve_budget
from midtrain.train.continuity import (LRJump, OptimizerChange, hyperparameters, lr_jump, mixture_changes,
                                       optimizer_changes)
from midtrain.train.fork_dialect import (ForkStart, device_count_note, dialect_of, refuse_fork_only_keys,
                                         resolve_fork_schedule)
from midtrain.train.loggers import check_logger
from midtrain.train.model_rule import resolve_model_config
from midtrain.train.lr_schedule import IterationLRSchedule, LRSchedule, resolve_lr_schedule
from midtrain.train import run_dir
from midtrain.train.restore import (StartPoint, check_model_config, check_model_state, find_start,
                                    load_checkpoint_payload)
from midtrain.train.settings import RunSettings

PRECISIONS = ("32-true", "bf16-true", "bf16-mixed", "16-mixed", "16-true")


@dataclass
class RunPlan:
    settings: RunSettings
    model_config: Config
    parameters: int
    accelerator: str
    devices: int
    world_size: int
    precision: str
    compile: bool
    budget: Budget
    schedule: LRSchedule | IterationLRSchedule
    peak_lr: float
    start: StartPoint
    data: ShardedMixedDataset
    plan: MixturePlan | SchedulePlan
    transitions: list[Transition]
    mixture_before: dict | None
    mixture_after: dict
    start_step: int
    dialect: str = "midtrain"
    dialect_reason: str = ""
    notices: list[str] = field(default_factory=list)
    """Every way the config is read that a user might not expect; printed at start-up and saved in run.json."""
    optimizer_class: str = "torch.optim.AdamW"
    optimizer_settings: dict = field(default_factory=dict)
    """The configured optimizer's hyperparameters (all but the LR), applied to every param group after a restore."""
    optimizer_changes: list[OptimizerChange] = field(default_factory=list)
    """Hyperparameters this config changes against the starting checkpoint's optimizer."""
    lr_jump: LRJump | None = None
    """This run's first LR against the parent's next LR, when they differ by more than 1 %."""
    reset_optimizer: bool = False
    """Start a branch with a fresh optimizer (``train.reset_optimizer``)."""
    tokenizer_files: dict[str, bytes] = field(default_factory=dict)
    """The tokenizer files every checkpoint gets (from ``tokenizer_dir``, else from the starting checkpoint)."""
    val_fingerprints: dict[str, str] = field(default_factory=dict)
    """Each domain's held-out set's identity, recorded in every checkpoint so a swapped set is noticed at resume."""
    stream_restored: bool = True
    """False where a branch's parent checkpoint holds another data loader's state (the paper fork's): shards start
    at 0."""


def optimizer_spec(optimizer: str | dict) -> dict:
    """``{class_path, init_args}`` with a full class path, from a name (``AdamW``) or a (partial) mapping. Numbers
    written so that YAML reads them as strings (``lr: 1e-4``, a placeholder's value) are numbers here; a value meant
    as a number that is none (``lr: abc``) is refused naming the key."""
    spec = dict(optimizer) if isinstance(optimizer, dict) else {"class_path": optimizer}
    class_path = spec.get("class_path")
    if not isinstance(class_path, str) or not class_path:
        raise ConfigError(f"--optimizer={optimizer!r} needs a class, e.g. AdamW or torch.optim.AdamW.")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ConfigError(f"--optimizer.init_args={init_args!r} must be a mapping of the optimizer's arguments, e.g. "
                          "{lr: 3.0e-4, weight_decay: 0.1}.")
    return {"class_path": class_path if "." in class_path else f"torch.optim.{class_path}",
            "init_args": {k: _number_if_numeric(k, v) for k, v in copy.deepcopy(dict(init_args)).items()}}


_NUMERIC_ARGS = ("lr", "weight_decay", "eps", "momentum", "dampening", "alpha", "lr_decay")


def _number_if_numeric(key: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            if key in _NUMERIC_ARGS:
                raise ConfigError(f"--optimizer.init_args.{key}={value!r} is not a number. Write it as one, e.g. "
                                  f"{key}: 3.0e-4 (a comment after a value read from a ${{VAR}} stays part of it).") from None
    return value


def configured_optimizer(optimizer: str | dict, peak_lr: float) -> tuple[str, dict]:
    """(the optimizer's class path, its param group as configured: init args over the class defaults)."""
    from litgpt.utils import instantiate_torch_optimizer

    spec = optimizer_spec(optimizer)
    class_path = spec["class_path"]
    try:
        instance = instantiate_torch_optimizer(spec, [torch.nn.Parameter(torch.zeros(1))], lr=peak_lr)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--optimizer={optimizer!r} cannot be built ({exc}). Fix its init_args.") from None
    return class_path, {k: v for k, v in instance.param_groups[0].items() if k != "params"}


def optimizer_peak_lr(optimizer: str | dict, max_lr: float | None) -> float:
    """The peak LR: ``train.max_lr`` if given, else the optimizer config's ``lr``, else the class default."""
    spec = optimizer_spec(optimizer)
    class_path, init_args = spec["class_path"], spec["init_args"]
    module_name, _, class_name = class_path.rpartition(".")
    try:
        optimizer_class = getattr(importlib.import_module(module_name or "torch.optim"), class_name)
    except (ImportError, AttributeError):
        raise ConfigError(f"--optimizer={class_path!r} is not an optimizer class (e.g. AdamW, torch.optim.SGD).") from None
    if max_lr is not None:
        peak, flag = float(max_lr), "--train.max_lr"
    elif "lr" in init_args:
        peak, flag = init_args["lr"], "--optimizer.init_args.lr"
    else:
        default = inspect.signature(optimizer_class).parameters.get("lr")
        if default is None or default.default is inspect.Parameter.empty:
            raise ConfigError(f"--optimizer={class_path} has no default lr; set --train.max_lr or --optimizer.init_args.lr.")
        peak, flag = default.default, f"the default lr of {class_path}"
    if isinstance(peak, bool) or not isinstance(peak, (int, float)) or not math.isfinite(peak) or peak <= 0:
        raise ConfigError(f"{flag}={peak!r}: the peak LR must be a positive, finite number, e.g. 3.0e-4.")
    return float(peak)


def resolve_devices(accelerator: str, devices: int | str, num_nodes: int) -> tuple[str, int]:
    if accelerator not in ("auto", "cpu", "cuda", "gpu"):
        raise ConfigError(f"--accelerator={accelerator!r} is not one of auto, cpu, cuda, gpu.")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    accelerator = "cuda" if accelerator == "gpu" else accelerator
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--accelerator=cuda, but no CUDA device is visible here. Use --accelerator=cpu (or auto).")
    if devices in ("auto", -1):
        count = torch.cuda.device_count() if accelerator == "cuda" else 1
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        count = devices
    else:
        raise ConfigError(f"--devices={devices!r} must be 'auto' or a positive number of devices per node.")
    if not isinstance(num_nodes, int) or num_nodes < 1:
        raise ConfigError(f"--num_nodes={num_nodes!r} must be a positive integer.")
    return accelerator, count


def plan_run(settings: RunSettings) -> RunPlan:
    """Resolve and check everything; raises ``ConfigError``/``DataError`` naming the flag and the fix."""
    train = settings.train
    model_config, model_note = resolve_model_config(settings.model_name, settings.model_config)
    seq_length = train.max_seq_length or model_config.block_size
    if seq_length > model_config.block_size:
        raise ConfigError(f"--train.max_seq_length={seq_length} exceeds the model's block_size {model_config.block_size}. "
                          f"Lower it, or raise --model_config.block_size.")
    accelerator, devices = resolve_devices(settings.accelerator, settings.devices, settings.num_nodes)
    world_size = devices * settings.num_nodes
    precision = settings.precision or ("32-true" if accelerator == "cpu" else _default_gpu_precision())
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision={precision!r} is not one of {', '.join(PRECISIONS)}.")
    early_notices = []
    if precision == "16-true":
        early_notices.append("--precision=16-true trains in float16 with no loss scaling: losses and gradients overflow "
                             "easily (a non-finite one stops the run). bf16-mixed, bf16-true or 32-true are the safe "
                             "choices.")
    if accelerator == "cpu" and precision == "16-mixed":  # what Lightning would run instead, said and recorded
        precision = "bf16-mixed"
        early_notices.append("--precision=16-mixed runs as bf16-mixed on CPU (fp16 autocast is a GPU feature); the run "
                             "records bf16-mixed. Set --precision=bf16-mixed (or 32-true) to say so in the config.")
    compile_model = accelerator == "cuda" if settings.compile is None else bool(settings.compile)
    check_logger(settings.logger_name)
    if settings.eval.max_new_tokens is not None:
        raise ConfigError(f"--eval.max_new_tokens={settings.eval.max_new_tokens} is for fine-tuning; pretraining generates "
                          "nothing. Remove it.")
    if settings.eval.evaluate_example != "first":
        raise ConfigError(f"--eval.evaluate_example={settings.eval.evaluate_example!r} is for fine-tuning; pretraining "
                          "evaluates no examples. Remove it.")
    lit_logger_only = {"teamspace": None, "metadata": None, "checkpoint_name": None, "log_model": False,
                       "save_logs": True}
    for key, default in lit_logger_only.items():
        if getattr(settings.log, key) != default:
            raise ConfigError(f"--log.{key}={getattr(settings.log, key)!r} applies to litgpt's LitLogger, which midtrain "
                              "does not support (use tensorboard, csv or wandb). Remove it.")
    if not isinstance(settings.eval.interval, int) or settings.eval.interval < 1:
        raise ConfigError(f"--eval.interval={settings.eval.interval!r} must be a positive number of steps.")
    dialect, dialect_reason = dialect_of(train)
    fork = dialect == "fork"
    if not fork:
        refuse_fork_only_keys(train)
    budget = resolve_budget(train, world_size, seq_length, fork_dialect=fork)
    configured_lr = optimizer_peak_lr(settings.optimizer, None)
    peak_lr = optimizer_peak_lr(settings.optimizer, train.max_lr)
    optimizer_class, configured_group = configured_optimizer(settings.optimizer, peak_lr)
    optimizer_settings = {k: v for k, v in configured_group.items() if k in hyperparameters(configured_group)}
    schedule = None if fork else resolve_lr_schedule(train, peak_lr, budget.total_steps, budget.accumulation_iters)

    data = settings.data
    if not isinstance(data, ShardedMixedDataset):
        raise ConfigError(
            f"--data is {type(data).__name__ if data is not None else 'not set'}; midtrain pretrain trains on "
            "midtrain.data.ShardedMixedDataset (set data.class_path to it and data.init_args.data_path to your shards)."
        )
    data.connect(tokenizer=None, batch_size=train.micro_batch_size, max_seq_length=seq_length)
    data.setup()  # discovery, weights and held-out shards: every data error now
    run_dir.check_out_dir(settings.out_dir)
    run_dir.check_out_dir_outside(settings.out_dir, {"--data.data_path": data.mixture.train_root,
                                                     "--data.val_data_path": data.mixture.val_root})
    if settings.tokenizer_dir is not None:
        load_tokenizer(settings.tokenizer_dir)
    check_token_ids([*data.mixture.used_shards(), *data.mixture.val_shards], model_config.padded_vocab_size,
                    shard_tokenizer_fingerprint(settings.tokenizer_dir), data.allow_tokenizer_mismatch)
    val_sets = data.val_datasets(settings.eval.max_iters * train.micro_batch_size)
    for domain, held_out in val_sets.items():
        largest, shard_id = held_out.largest_token_id()
        if largest >= model_config.padded_vocab_size:
            raise DataError(f"the {domain} validation set (held-out shard {shard_id!r}) holds token id {largest:,}, but "
                            f"the model's vocabulary has {model_config.padded_vocab_size:,} entries (padded_vocab_size). "
                            "Use the tokenizer the shards were prepared with and a model whose vocabulary covers it.")

    start = find_start(settings, None if fork else budget.total_steps)
    _check_one_run_per_folder(settings)
    payload, start_step = None, 0
    if start.checkpoint is not None:
        payload = load_checkpoint_payload(start.checkpoint, start.flag)
        missing = [k for k in ("model", "optimizer", "train_dataloader", "step_count") if k not in payload]
        if missing:
            raise ConfigError(
                f"{start.flag}: {start.checkpoint.model_file} lacks {', '.join(missing)}, so the run cannot continue from it "
                "(it holds weights only). Use --initial_checkpoint_dir for weights-only initialisation."
            )
        start_step = int(payload["step_count"])
    loader = data.train_dataloader(rank=0, world_size=world_size, start_step=start_step,
                                   samples_per_step=budget.global_batch_size // world_size, num_workers=0)
    # a branch may add shards and drop some; a resume of the same run must find the data as it was
    loader.data_check = lambda state: data.check_data_changes(state, same_run=start.kind == "resume")
    transitions: list[Transition] = []
    mixture_before = None
    start_samples = None
    stream_restored = True
    start_iter, restored_lr = 0, None
    notices: list[str] = ([model_note] if model_note else []) + early_notices
    optimizer_change_list: list[OptimizerChange] = []
    reset_optimizer = False
    if train.reset_optimizer and start.checkpoint is None:
        notices.append("--train.reset_optimizer=true has no effect: this run starts from scratch.")
    if start.checkpoint is not None:
        check_model_state(payload["model"], model_config, start.flag, start.checkpoint.path)
        check_model_config(start.checkpoint.path, model_config, start.flag)
        saved_stream = payload["train_dataloader"]
        stream_restored = is_stream_state(saved_stream) or start.kind != "branch"
        loader.tracker.announce_transitions = False  # describe() prints them
        if stream_restored:
            try:
                loader.load_state_dict(copy.deepcopy(saved_stream))
                transitions = loader.last_transitions
            except MidtrainError as exc:
                raise type(exc)(f"{start.flag}={start.checkpoint.path}: {exc}") from None
            notices += loader.data_notices
            mixture_before = saved_stream.get("phases", [{}])[-1].get("mixture")
            start_samples = {i: v["consumed"] for i, v in saved_stream["shards"].items()}
        else:  # the paper fork's (or litgpt's) checkpoint: litdata's loader state names no shard cursors
            notices.append(f"{start.checkpoint.path} holds another data loader's state (litdata's, as the paper's fork "
                           "and litgpt save it), which names no position per shard: every shard starts at its first "
                           "sample; the weights, the optimizer and the step and iteration counters continue (the fork "
                           "itself restored no loader state either).")
        start_iter = int(payload.get("iter_num", 0))
        restored_lr = _optimizer_lr(payload.get("optimizer"))
        changed, other_class = _compare_optimizer(payload.get("optimizer"), configured_group, optimizer_class,
                                                  start.checkpoint.info)
        reset_optimizer = train.reset_optimizer and start.kind == "branch"
        if reset_optimizer:
            notices.append("--train.reset_optimizer=true: the optimizer starts fresh (no moments restored from the "
                           "checkpoint); weights, step, LR position and data cursors continue.")
        elif train.reset_optimizer:
            notices.append("--train.reset_optimizer=true applies where a branch starts; resuming this run's own "
                           "checkpoint restores its optimizer as saved.")
        if other_class and not reset_optimizer:
            raise ConfigError(
                f"--optimizer: {optimizer_class} is another optimizer class than the one in {start.checkpoint.path} "
                f"({other_class}), so its state cannot be restored. Use the checkpoint's optimizer, or set "
                "--train.reset_optimizer=true to start the new one fresh when branching.")
        if not reset_optimizer:
            optimizer_change_list = changed
        saved_anchor = (payload.get("midtrain") or {}).get("lr_anchor")
        if start.kind == "branch":  # as the run will anchor it (midtrain.train.run._restore), so the plan shows it
            saved_anchor = [start_step, start.checkpoint.info.get("lr_next", restored_lr)]
        if schedule is not None and saved_anchor is not None and saved_anchor[1] is not None:
            schedule = schedule.anchored(int(saved_anchor[0]), float(saved_anchor[1]))
        del payload
    elif start.initial_weights is not None:
        payload = load_checkpoint_payload(files.CheckpointInfo(start.initial_weights.parent, 0, {}),
                                          "--initial_checkpoint_dir")
        start.initial_weights_nested = isinstance(payload.get("model"), dict)
        weights = payload["model"] if start.initial_weights_nested else payload
        check_model_state(weights, model_config, "--initial_checkpoint_dir", start.initial_weights.parent)
        del payload
    if fork:
        saved = start.checkpoint.info if start.kind == "resume" and start.checkpoint is not None else {}
        interrupted = saved.get("dialect") == "fork" and not saved.get("final") and "lr_schedule" in saved
        resolved = resolve_fork_schedule(train, budget.accumulation_iters, ForkStart(
            start_step, start_iter, configured_lr if restored_lr is None else restored_lr,
            saved["lr_schedule"] if interrupted else None, configured_lr), budget.total_steps or None)
        schedule = resolved.schedule
        notices += resolved.notices
        devices_note = device_count_note(train, schedule, ForkStart(
            start_step, start_iter, configured_lr if restored_lr is None else restored_lr, None, configured_lr),
            train.micro_batch_size, budget.global_batch_size, world_size, budget.total_steps or None)
        notices += [devices_note] if devices_note else []
        peak_lr = schedule.peak_lr
        budget = dataclasses.replace(budget, total_steps=resolved.end_step, steps_end_at_iteration_multiples=True)
        if start_iter % budget.accumulation_iters and data.mixture.schedule is not None:
            raise ConfigError(
                f"--data.mix_schedule counts whole steps, but this fork-dialect run starts at micro-iteration "
                f"{start_iter:,}, no multiple of its {budget.accumulation_iters} per step, so its first step is "
                "shorter (the fork's step boundaries). Use one mixture, or --train.dialect=midtrain.")
        if start.checkpoint is not None and resolved.end_step <= start_step:
            start.kind = "finished"
        if start.kind == "resume" and start.checkpoint.info.get("final") and train.max_additional_steps is not None:
            # the fork extended a finished run by max_additional_steps at every rerun (an array's resubmission
            # replaced its final weights); here a finished run stays finished: extending it takes an absolute end
            start.kind = "finished"
            budget = dataclasses.replace(budget, total_steps=start_step)
    jump = None
    if start.checkpoint is not None and start.kind in ("resume", "branch") and start_step < budget.total_steps:
        jump = lr_jump(start.checkpoint.info, schedule.record(), schedule.lr_at(start_step), start_step,
                       budget.global_batch_size, budget.tokens_per_step)
        if jump is not None and not jump.intentional:
            notices.append(jump.describe())
    notices += _clamps_and_gaps(train, budget, data)
    notices += _validation_gaps(settings, data, val_sets)
    notices += _loader_workers_note(data.num_workers, devices)
    if start.checkpoint is not None and start.kind in ("resume", "branch"):
        notices += _continuation_notices(settings, budget, start, start_step, data, val_sets)
    tokenizer_files, tokenizer_note = _tokenizer_files(settings.tokenizer_dir, start)
    notices += [tokenizer_note] if tokenizer_note else []
    if start.kind == "resume" and start.checkpoint.info.get("final") and start_step < budget.total_steps:
        notices.append(f"the run had finished at step {start_step:,} ({start.checkpoint.path.name}); this config's end "
                       f"(step {budget.total_steps:,}) extends it. Its final weights of step {start_step:,} are kept "
                       f"as {files.step_dir_name(start_step)}.")
    with torch.device("meta"):
        from litgpt.model import GPT

        parameters = sum(p.numel() for p in GPT(model_config).parameters())
    remaining_tokens = max(0, budget.total_steps - start_step) * budget.tokens_per_step
    loader.tracker.require_timeline()  # a schedule whose first phase ramps needs a checkpoint to ramp from
    if data.mixture.schedule is not None:
        plan = data.schedule_plan(loader.tracker.timeline, start_step, budget.total_steps, budget.global_batch_size,
                                  start_samples)
    else:
        plan = data.plan(remaining_tokens or None, start_samples)
    mixture_after = loader.tracker.phases[-1]["mixture"]
    return RunPlan(settings, model_config, parameters, accelerator, devices, world_size, precision, compile_model,
                   budget, schedule, peak_lr, start, data, plan, transitions, mixture_before, mixture_after, start_step,
                   dialect, dialect_reason, notices, optimizer_class, optimizer_settings, optimizer_change_list, jump,
                   reset_optimizer, tokenizer_files=tokenizer_files, val_fingerprints=val_fingerprints(data, val_sets),
                   stream_restored=stream_restored)


def _clamps_and_gaps(train: Any, budget: Budget, data: ShardedMixedDataset) -> list[str]:
    """Settings the run cannot honour as written, said instead of applied silently."""
    notes = []
    if isinstance(train.lr_warmup_steps, int) and train.lr_warmup_steps > budget.total_steps:
        notes.append(f"--train.lr_warmup_steps={train.lr_warmup_steps:,} is longer than the run ({budget.total_steps:,} "
                     "steps): the warmup is cut to the run's length, so the LR never reaches its peak-then-decay shape.")
    if not data.mixture.val_shards:
        notes.append("no held-out shards (--data.val_data_path, or a 'val' folder beside 'train'): no validation loss "
                     "will be logged. Make them with 'midtrain prepare --val_fraction 0.01'.")
    if train.save_interval is None and budget.max_time_s is None:
        notes.append("--train.save_interval is unset: checkpoints are written only when the run stops.")
    schedule = data.mixture.schedule
    late = [p for p in (schedule.phases if schedule is not None else ()) if p.start_step >= budget.total_steps]
    if late:
        notes.append(f"--data.mix_schedule[{', '.join(str(p.index) for p in late)}] start(s) at step "
                     f"{', '.join(f'{p.start_step:,}' for p in late)}, at or after the run's end (step "
                     f"{budget.total_steps:,}): never read.")
    beyond = sorted(s for s in train.keep_checkpoint_steps if s > budget.total_steps)
    if beyond:
        notes.append(f"--train.keep_checkpoint_steps {beyond} lie past the run's end (step {budget.total_steps:,}): no "
                     "checkpoint is written there.")
    return notes


def _check_one_run_per_folder(settings: RunSettings) -> None:
    """A folder that already holds a run is resumed only by that run's config: another mixture there is another
    experiment (two configs that share an out_dir), which would continue, or find finished, the first one."""
    previous = _previous_config(settings.out_dir)
    if previous is None:
        return
    changed = mixture_changes(previous, settings.config_dump)
    if changed:
        raise ConfigError(
            f"--out_dir={str(settings.out_dir)!r} holds a run with another mixture ({'; '.join(changed)}; run.json "
            "records it): a run folder holds one run, so this config would continue (or find finished) another "
            "experiment. Give this config an --out_dir of its own; to change a run's mixture, branch from its "
            "checkpoint into a new --out_dir (--branch_from) or plan the change with --data.mix_schedule.")


def _previous_config(out_dir) -> dict | None:
    """The config of the last invocation recorded in a run folder (run.json, else its config.yaml)."""
    record = run_dir.load_run(out_dir) or {}
    if not record.get("invocations"):
        return None
    return next((i["config"] for i in reversed(record["invocations"]) if isinstance(i.get("config"), dict)),
                None) or run_dir.load_config(out_dir)


def _loader_workers_note(num_workers: int, devices: int) -> list[str]:
    """More loader processes than this machine has cores (said once here, instead of torch's warning)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    processes = num_workers * devices
    if num_workers == 0 or processes <= cores:
        return []
    return [f"--data.num_workers={num_workers} per rank x {devices} rank(s) on this node is {processes} loader "
            f"processes for {cores} CPU core(s) here: they compete with training (the sample sequence is the same for "
            f"any number). On this machine, at most {max(1, cores // devices)} per rank."]


def _validation_gaps(settings: RunSettings, data: ShardedMixedDataset, val_sets: dict) -> list[str]:
    """Held-out data that exists but will not be validated on, said instead of dropped silently."""
    domains = list(dict.fromkeys(s.domain for s in data.mixture.val_shards))
    if not domains:
        return []  # said by _clamps_and_gaps
    if data.val_samples_per_domain == 0 or (data.val_samples_per_domain is None and settings.eval.max_iters == 0):
        key = "--data.val_samples_per_domain=0" if data.val_samples_per_domain == 0 else "--eval.max_iters=0"
        return [f"{key} turns validation off: no val/<domain>/loss is logged, although {', '.join(domains)} have "
                "held-out shards."]
    short = [d for d in domains if d not in val_sets]
    if not short:
        return []
    return [f"the held-out shards of {', '.join(short)} hold no whole sequence of {data.block_tokens:,} tokens "
            f"(--train.max_seq_length + 1): no val/<domain>/loss for {'it' if len(short) == 1 else 'them'}. Prepare more "
            "held-out data (midtrain prepare --val_fraction) or lower --train.max_seq_length."]


def val_fingerprints(data: ShardedMixedDataset, val_sets: dict) -> dict[str, str]:
    """Per domain: the identity of its held-out shards and the number of samples validated on."""
    return {domain: f"{set_fingerprint([s for s in data.mixture.val_shards if s.domain == domain])}:{len(blocks)}"
            for domain, blocks in val_sets.items()}


def _continuation_notices(settings: RunSettings, budget: Budget, start: StartPoint, start_step: int,
                          data: ShardedMixedDataset, val_sets: dict) -> list[str]:
    """What a resume or branch changes against its checkpoint that the LR and data tables do not show."""
    info, notes = start.checkpoint.info, []
    old_batch = info.get("global_batch_size")
    if isinstance(old_batch, int) and old_batch != budget.global_batch_size:
        old_tokens = info.get("tokens_per_step", old_batch * budget.seq_length)
        notes.append(f"--train.global_batch_size={budget.global_batch_size:,} differs from the checkpoint's "
                     f"{old_batch:,}: each step now reads {budget.tokens_per_step:,} tokens (was {old_tokens:,}, "
                     f"{budget.tokens_per_step / old_tokens:.3g}×), so the LR schedule, counted in steps, passes over "
                     "another number of tokens from here on.")
    saved_sets, now = info.get("val_sets") or {}, val_fingerprints(data, val_sets)
    swapped = [d for d in now if d in saved_sets and saved_sets[d] != now[d]]
    if swapped:
        notes.append(f"the held-out set of {', '.join(swapped)} differs from the one the checkpoint's run validated on "
                     f"(other shards, contents or size): val/<domain>/loss before and after step {start_step:,} are "
                     "not comparable.")
    if start.kind == "resume":
        notes += _edited_phases(settings, start_step)
    return notes


def _edited_phases(settings: RunSettings, start_step: int) -> list[str]:
    """``mix_schedule`` phases the run has already begun that this invocation's config writes differently."""
    previous = _previous_config(settings.out_dir)
    old = (((previous or {}).get("data") or {}).get("init_args") or {}).get("mix_schedule")
    new = (((settings.config_dump.get("data") or {}).get("init_args")) or {}).get("mix_schedule")
    if not isinstance(old, list) or not isinstance(new, list):
        return []
    edited = [k for k, phase in enumerate(old) if isinstance(phase, dict) and phase.get("start_step", 0) < start_step
              and (k >= len(new) or new[k] != phase)]
    if not edited:
        return []
    return [f"--data.mix_schedule[{', '.join(map(str, edited))}] differ from what the run read (those phases began before "
            f"step {start_step:,}): the ledger and the loss curve record the phases as they were read, not as this "
            "config now writes them. Restore them to keep the config true to the run."]


def _tokenizer_files(tokenizer_dir, start: StartPoint) -> tuple[dict[str, bytes], str | None]:
    """The tokenizer files to copy into every checkpoint, read once (a starting checkpoint may be pruned later)."""
    note = None
    folder = tokenizer_dir
    if folder is None and start.checkpoint is not None:
        if any((start.checkpoint.path / name).is_file() for name in CHECKPOINT_TOKENIZER_FILES):
            folder = start.checkpoint.path
            note = (f"no --tokenizer_dir: the checkpoints get the tokenizer files of {start.checkpoint.path}, where this "
                    "run starts.")
        else:
            note = (f"no --tokenizer_dir, and {start.checkpoint.path} holds no tokenizer files: the checkpoints will "
                    "carry none (litgpt's generate and finetune look for them there). Set --tokenizer_dir.")
    if folder is None:
        return {}, note
    return {name: (folder / name).read_bytes() for name in CHECKPOINT_TOKENIZER_FILES if (folder / name).is_file()}, note


def _compare_optimizer(saved_state: Any, configured_group: dict, configured_class: str,
                       info: dict) -> tuple[list[OptimizerChange], str | None]:
    """(hyperparameter changes, the checkpoint's optimizer class when it is another one)."""
    try:
        saved_group = saved_state["param_groups"][0]
    except (KeyError, IndexError, TypeError):
        return [], None
    recorded = (info.get("optimizer") or {}).get("class_path")
    if recorded and recorded != configured_class:
        return [], recorded
    changes, other = optimizer_changes(saved_group, configured_group, same_class=bool(recorded))
    if other:
        return [], "a class with the hyperparameters " + ", ".join(sorted(hyperparameters(saved_group)))
    return changes, None


def _optimizer_lr(optimizer_state: Any) -> float | None:
    """The LR a saved optimizer holds (its first param group's), if the state says."""
    try:
        return float(optimizer_state["param_groups"][0]["lr"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _default_gpu_precision() -> str:
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
