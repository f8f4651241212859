"""Running a planned pretraining/midtraining run: launch Fabric, build the model, optimizer and data stream,
restore a checkpoint (resume or branch), train, save. ``midtrain.train.startup.plan_run`` has already checked
everything that can be checked without an accelerator.
"""

from __future__ import annotations

import copy
import datetime
import warnings
from collections.abc import Callable

import lightning as L
import torch
from lightning.fabric.strategies import DDPStrategy, FSDPStrategy
from litgpt.model import GPT, Block
from litgpt.utils import instantiate_torch_optimizer

from midtrain.data.plan import render_plan
from midtrain.data.stream_state import render_transitions
from midtrain.train import checkpoint_files as files
from midtrain.train import run_dir
from midtrain.errors import ConfigError
from midtrain.folder_lock import FolderLock
from midtrain.train.checkpointer import Checkpointer, CheckpointWriteError
from midtrain.train.continuity import hyperparameters, render_optimizer_changes
from midtrain.train.loggers import build_logger, close_logger
from midtrain.train.loop import Counters, Diverged, LoopSettings, Trainer
from midtrain.train.preemption import EXIT_DIVERGED, EXIT_PREEMPTED, StopReason, StopRequest
from midtrain.train.lr_schedule import IterationLRSchedule, LRSchedule
from midtrain.train.startup import RunPlan, optimizer_spec



def describe(plan: RunPlan) -> str:
    """The start-up summary printed before training (and by ``--dry_run``)."""
    b, s, start = plan.budget, plan.schedule, plan.start
    lines = [
        f"Run folder: {plan.settings.out_dir.resolve()}",
        f"Model {plan.model_config.name}: {plan.parameters:,} parameters, context {b.seq_length:,} tokens",
        f"Devices: {plan.world_size} × {plan.accelerator} ({plan.devices} per node × {plan.settings.num_nodes} node(s)), "
        f"precision {plan.precision}, compile {'on' if plan.compile else 'off'}",
        f"Budget: {b.total_steps:,} steps × {b.global_batch_size:,} sequences × {b.seq_length:,} tokens = "
        f"{b.total_steps * b.tokens_per_step:,} tokens; {b.accumulation_iters} micro-batch(es) of "
        f"{b.micro_batch_size} per rank per step",
        f"This invocation: steps {plan.start_step:,} → {b.stop_step(plan.start_step):,}"
        + (f", at most {b.max_time_s:g} s" if b.max_time_s else ""),
        describe_schedule(s, plan.start_step, b.stop_step(plan.start_step)),
    ]
    if plan.dialect == "fork":
        lines.insert(0, f"Dialect: the paper fork's. Why: {plan.dialect_reason}. Set --train.dialect=midtrain for midtrain's "
                        "meaning, or convert the config with 'midtrain port'.")
    if plan.lr_jump is not None and plan.lr_jump.intentional:
        lines.append(plan.lr_jump.describe())
    if plan.optimizer_changes:
        lines += ["Optimizer: the config's settings replace the checkpoint's (checkpoint -> config):",
                  render_optimizer_changes(plan.optimizer_changes)]
    if plan.notices:
        lines += ["", f"WARNING: {len(plan.notices)} setting(s) read in a way you may not expect:"]
        lines += [f"  - {notice}" for notice in plan.notices]
        lines.append("")
    if start.kind == "fresh":
        auto = " (--resume=auto found no checkpoint in the run folder)" if plan.settings.resume == "auto" else ""
        lines.append("Start: from scratch" + (f", weights from {start.initial_weights}" if start.initial_weights else "")
                     + auto)
    else:
        lines.append(f"Start: {start.kind} from {start.checkpoint.path} (step {start.checkpoint.step:,})")
    if plan.transitions and plan.mixture_before != plan.mixture_after:
        lines += ["Data mixture changed; shard cursors carried over by id:", render_transitions(plan.transitions)]
    lines += ["", render_plan(plan.plan)]
    return "\n".join(lines)


def describe_schedule(s: LRSchedule | IterationLRSchedule, first_step: int, end_step: int) -> str:
    """The schedule's shape, and the LR at this invocation's first and last step with its share of the peak."""
    if isinstance(s, IterationLRSchedule):
        a = s.accumulation_iters
        text = (f"LR (per micro-iteration, {a} per step): {s.name}, peak {s.peak_lr:g}, min {s.min_lr:g}, warmup "
                f"{s.warmup_iters:,} micro-iterations ({s.warmup_steps:,.1f} steps), "
                + ("decays to a tenth at" if s.name == "exp_decay" else
                   "stable until" if s.name == "warmup_stable" else "horizon")
                + f" {s.horizon_iters:,} micro-iterations ({s.horizon_steps:,.1f} steps)")
    else:
        text = (f"LR: {s.name}, peak {s.peak_lr:g}, min {s.min_lr:g}, warmup {s.warmup_steps:,} steps, horizon "
                f"{s.total_steps:,} steps" + (f", decay from step {s.decay_start_step:,}" if s.decay_start_step is not None else ""))
    if end_step > first_step:
        def at(step: int) -> str:
            lr = s.lr_at(step)
            return f"step {step + 1:,}: {lr:.4g} ({100 * lr / s.peak_lr:.1f} % of peak)"

        text += f"\n    this invocation's first {at(first_step)}; last {at(end_step - 1)}"
    return text


def make_strategy(plan: RunPlan):
    if plan.world_size == 1:
        return "auto"
    if plan.accelerator == "cpu":
        return DDPStrategy(process_group_backend="gloo")  # Fabric's FSDP refuses CPU
    return FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full", sharding_strategy="HYBRID_SHARD")


def execute(plan: RunPlan, stop_request: StopRequest) -> int:
    """Train; returns the process exit status (0, or ``EXIT_PREEMPTED`` when stopped early to be requeued).
    ``stop_request`` has watched the stop signals since the command started."""
    settings = plan.settings
    # torch warns about more loader workers than cores at every loader it builds; the start-up notices said it once
    warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
    strategy = make_strategy(plan)
    fabric = L.Fabric(accelerator=plan.accelerator, devices=plan.devices, num_nodes=settings.num_nodes,
                      strategy=strategy, precision=plan.precision)
    fabric.launch()
    lock = _lock_out_dir(fabric, settings.out_dir)
    try:
        return _train(fabric, strategy, plan, stop_request)
    finally:
        if lock is not None:
            lock.release()


def _lock_out_dir(fabric, out_dir) -> FolderLock | None:
    """Rank 0 holds ``out_dir`` for the run's life; every rank learns if another run holds it, and all stop."""
    lock, refusal = None, None
    if fabric.global_rank == 0:
        try:
            lock = FolderLock(out_dir / ".midtrain.lock", "--out_dir", out_dir, "run").acquire()
        except ConfigError as exc:
            refusal = str(exc)
    refusal = fabric.broadcast(refusal, src=0)
    if refusal is not None:
        raise ConfigError(refusal)
    return lock


def _train(fabric, strategy, plan: RunPlan, stop_request: StopRequest) -> int:
    settings, budget = plan.settings, plan.budget
    run = _open_run(fabric, plan)
    fabric.print(describe(plan))

    model, optimizer = _build_model_and_optimizer(fabric, plan, empty_init=isinstance(strategy, FSDPStrategy))
    # the launched processes' ranks, not the environment's (a stale RANK/WORLD_SIZE would shard a one-process run)
    loader = plan.data.train_dataloader(rank=fabric.global_rank, world_size=fabric.world_size,
                                        vocab_size=plan.model_config.padded_vocab_size, start_step=plan.start_step,
                                        samples_per_step=budget.global_batch_size // fabric.world_size)
    loader.tracker.announce_transitions = False  # describe() printed them
    loader.data_check = None  # the planning checked the data against the checkpoint
    state = {"model": model, "optimizer": optimizer, "train_dataloader": loader, "iter_num": 0, "step_count": 0,
             "midtrain": {}}
    schedule = _restore(fabric, plan, state)
    counters = Counters(step=int(state["step_count"]), iter_num=int(state["iter_num"]))
    save = _saver(fabric, plan, run, state, schedule)

    resume_step = counters.step if plan.start.kind == "resume" else None
    saved_window = state["midtrain"].get("log_window") if plan.start.kind == "resume" else None
    log_window = saved_window if saved_window and state["midtrain"].get("log_window_end") == counters.step else ()
    logger = build_logger(settings.logger_name, settings.out_dir, run["run_id"], resume_step, settings.log,
                          settings.out_dir.name) if fabric.global_rank == 0 else None
    metrics = _MetricSink(logger)
    loop_settings = LoopSettings(
        log_interval=settings.train.log_interval,
        eval_interval=settings.eval.interval,
        save_interval=settings.train.save_interval,
        max_norm=settings.train.max_norm,
        initial_validation=settings.eval.initial_validation,
        final_validation=settings.eval.final_validation,
        keep_steps=frozenset(settings.train.keep_checkpoint_steps),
    )
    val_sets = plan.data.val_datasets(settings.eval.max_iters * budget.micro_batch_size)
    trainer = Trainer(fabric, model, optimizer, loader, budget, schedule, loop_settings, val_sets, save,
                      lambda: {d: v["tokens"] for d, v in loader.ledger()["domains"].items()}, metrics, log_window)
    try:
        reason = trainer.fit(counters, stop_request)
    except CheckpointWriteError as exc:
        metrics.finalize()
        fabric.print(f"Stopped at step {counters.step:,}: {exc} Exiting with status {EXIT_PREEMPTED}, so a requeue "
                     "retries.")
        return EXIT_PREEMPTED
    except Diverged as exc:
        metrics.finalize()
        fabric.print(diverged_message(exc, settings.out_dir))
        return EXIT_DIVERGED
    metrics.finalize()
    signal_name = f" {stop_request.signal_name}" if reason is StopReason.SIGNAL else ""
    fabric.print(f"Stopped at step {counters.step:,} of {budget.total_steps:,}: {reason.value}{signal_name}")
    if fabric.device.type == "cuda":
        fabric.print(f"Peak memory: {torch.cuda.max_memory_allocated(fabric.device) / 1e9:.2f} GB")
    if reason.requeue:
        fabric.print(f"Exiting with status {EXIT_PREEMPTED} (preempted): resume with --resume=auto to continue exactly.")
        return EXIT_PREEMPTED
    return 0


def _build_model_and_optimizer(fabric, plan: RunPlan, empty_init: bool):
    settings = plan.settings
    fabric.seed_everything(settings.seed)
    with fabric.init_module(empty_init=empty_init):
        model = GPT(plan.model_config)
    from litgpt.pretrain import initialize_weights  # litgpt's GPT-NeoX initialisation, as `litgpt pretrain`

    initialize_weights(fabric, model, n_layer=plan.model_config.n_layer, n_embd=plan.model_config.n_embd)
    if settings.train.tie_embeddings:
        model.transformer.wte.weight = model.lm_head.weight
    model.max_seq_length = plan.budget.seq_length
    if plan.compile:
        model = torch.compile(model)
    model = fabric.setup(model)
    optimizer = instantiate_torch_optimizer(optimizer_spec(settings.optimizer), model.parameters(),
                                            fused=fabric.device.type == "cuda", lr=plan.peak_lr)
    return model, fabric.setup_optimizers(optimizer)


def _restore(fabric, plan: RunPlan, state: dict) -> LRSchedule:
    """Load the starting checkpoint into ``state``, then give every param group the config's optimizer settings
    (the LR stays the schedule's); returns the LR schedule, anchored where ``decay`` starts."""
    start = plan.start
    if start.checkpoint is not None:
        loaded = {k: v for k, v in state.items() if (k != "optimizer" or not plan.reset_optimizer)
                  and (k != "train_dataloader" or plan.stream_restored)}
        fabric.load(start.checkpoint.model_file, loaded, strict=False)
        state.update(loaded)
        for group in state["optimizer"].param_groups:
            group.update(copy.deepcopy(plan.optimizer_settings))
        if start.kind == "branch":  # 'decay' anneals from the LR the parent would have used next
            anchor_lr = start.checkpoint.info.get("lr_next", state["optimizer"].param_groups[0]["lr"])
            state["midtrain"] = {"lr_anchor": [state["step_count"], anchor_lr]}
    elif start.initial_weights is not None:
        if start.initial_weights_nested:  # one of our (or litgpt pretrain's) full checkpoints
            fabric.load(start.initial_weights, {"model": state["model"]}, strict=False)
        else:  # a raw state dict, as litgpt's downloaded/converted checkpoints
            fabric.load_raw(start.initial_weights, state["model"])
    anchor = (state.get("midtrain") or {}).get("lr_anchor")
    return plan.schedule if anchor is None else plan.schedule.anchored(int(anchor[0]), float(anchor[1]))


def diverged_message(exc: Diverged, out_dir) -> str:
    good = files.latest_checkpoint(out_dir)
    if good is not None:
        then = (f"the last good checkpoint is {good.path} (step {good.step:,}). Continue from it with a lower LR "
                "(--train.max_lr or --optimizer.init_args.lr) or gradient clipping (--train.max_norm)")
    else:
        then = ("the run has no checkpoint yet. Start it again with a lower LR (--train.max_lr or "
                "--optimizer.init_args.lr) or gradient clipping (--train.max_norm)")
    return (f"Diverged: {exc} (the first non-finite value); nothing from that step on was saved, and {then}; see "
            f"docs/training.md. Exiting with status {EXIT_DIVERGED} (not requeued: a rerun would diverge again).")


def _saver(fabric, plan: RunPlan, run: dict, state: dict, schedule: LRSchedule) -> Callable[[Counters, bool, dict], None]:
    settings = plan.settings
    checkpointer = Checkpointer(fabric, settings.out_dir, plan.model_config, plan.tokenizer_files,
                                settings.config_dump, settings.train.keep_last_checkpoints,
                                set(settings.train.keep_checkpoint_steps))

    def save(counters: Counters, final: bool, loop_state: dict) -> None:
        state["step_count"], state["iter_num"] = counters.step, counters.iter_num
        state["midtrain"] = {**state["midtrain"], **loop_state}
        ledger = state["train_dataloader"].ledger()
        info = {
            "iter_num": counters.iter_num,
            "tokens": sum(d["tokens"] for d in ledger["domains"].values()),
            "lr_next": schedule.lr_at(counters.step),
            "lr_schedule": schedule.record(),
            "dialect": plan.dialect,
            "global_batch_size": plan.budget.global_batch_size,
            "tokens_per_step": plan.budget.tokens_per_step,
            "optimizer": {"class_path": plan.optimizer_class, "hyperparameters": hyperparameters(plan.optimizer_settings)},
            "run_id": run["run_id"],
            "out_dir": run["out_dir"],
            "lineage": run["lineage"],
            "world_size": fabric.world_size,
            "val_sets": plan.val_fingerprints,
            "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        checkpointer.save(state, counters.step, final, info, ledger)

    return save


def _open_run(fabric, plan: RunPlan) -> dict:
    """Rank 0 creates or updates ``run.json`` (lineage, this invocation) and the run's config and plan files."""
    out_dir = plan.settings.out_dir
    run = None
    if fabric.global_rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        files.remove_partials(out_dir)
        run = run_dir.load_run(out_dir) or run_dir.new_run(out_dir)
        start = plan.start
        changes = {"optimizer_changes": [vars(c) for c in plan.optimizer_changes],
                   "lr_jump": None if plan.lr_jump is None else plan.lr_jump.record()}
        if start.kind == "branch":
            parent = start.checkpoint.info
            entry = {**run_dir.branch_record(parent, start.checkpoint.path, start.checkpoint.step, plan.mixture_before,
                                             plan.mixture_after), **changes}
            if not plan.stream_restored:
                entry["data_cursors"] = "not restored: the parent's loader state is not midtrain's; shards start at 0"
            run["lineage"] = list(parent.get("lineage", [])) + [entry]
        started_from = str(start.checkpoint.path) if start.checkpoint else None
        invocation = run_dir.invocation_record(plan.start_step, plan.world_size, started_from)
        invocation.update(dialect=plan.dialect, notices=plan.notices, precision=plan.precision, **changes)
        invocation["config"] = plan.settings.config_dump  # every invocation's, so an edit of the past can be told
        run["invocations"].append(invocation)
        run_dir.save_run_files(out_dir, run, plan.settings.config_dump, plan.plan.to_json())
    return fabric.broadcast(run, src=0)


class _MetricSink:
    """Metrics go to the logger on rank 0 only."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def log_dict(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)

    def finalize(self) -> None:
        if self.logger is not None:
            close_logger(self.logger)
