"""Running a set-up run: launch Fabric, build the model, the optimizer and the data stream, restore the starting
checkpoint from the record the set-up read, train, save. ``midtrain.train.startup.setup_run`` has already checked
everything that can be checked without an accelerator.
"""

from __future__ import annotations

import copy
import datetime
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L

from midtrain.config_files import plain
from midtrain.data.decon_shards import decontamination_record
from midtrain.errors import ConfigError
from midtrain.folder_lock import FolderLock
from midtrain.train import checkpoint_files as files
from midtrain.train import run_dir
from midtrain.train.averaging import WeightAverage
from midtrain.train.checkpointer import Checkpointer, CheckpointWriteError
from midtrain.train.continuity import hyperparameters
from midtrain.train.devices import make_strategy, sharded
from midtrain.train.hf_trunk import HF_SOURCE
from midtrain.train.loop import Counters, Diverged, LoopSettings, Trainer
from midtrain.train.metrics import MetricSink, Throughput
from midtrain.train.mix_control import MixControl
from midtrain.train.optimizer import apply_settings, build_optimizer
from midtrain.train.preemption import EXIT_DIVERGED, EXIT_PREEMPTED, StopReason, StopRequest
from midtrain.train.report import describe, diverged_message
from midtrain.train.restore import StartKind
from midtrain.train.startup import RunSetup


def execute(setup: RunSetup, stop_request: StopRequest) -> int:
    """Train; returns the process exit status (0, ``EXIT_PREEMPTED`` when stopped early to be requeued, or
    ``EXIT_DIVERGED``). ``stop_request`` has watched the stop signals since the command started."""
    # torch warns about more loader workers than cores at every loader it builds; the start-up notices said it once
    warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
    strategy = make_strategy(setup.devices)
    fabric = L.Fabric(accelerator=setup.devices.accelerator, devices=setup.devices.devices,
                      num_nodes=setup.devices.num_nodes, strategy=strategy, precision=setup.devices.precision)
    fabric.launch()
    lock = _lock_out_dir(fabric, setup.settings.out_dir)
    try:
        return _train(fabric, strategy, setup, stop_request)
    except Exception as exc:
        if fabric.world_size == 1 or not lost_peer(exc):
            raise
        print(f"Stopped on rank {fabric.global_rank}: another rank is gone ({_first_line(exc)}). The checkpoints "
              "published before are intact: rerun with --resume=auto (a requeue does) to continue exactly. Exiting "
              f"with status {EXIT_PREEMPTED}.", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    finally:
        if lock is not None:
            lock.release()


_LOST_PEER_SIGNS = ("connection reset by peer", "connection closed by peer", "broken pipe", "socket closed",
                    "remote process exited", "communicator was aborted", "connection refused", "no route to host")


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another rank is gone (killed, its node lost): gloo's and
    NCCL's errors, through torch's distributed error types or their messages."""
    import torch.distributed as dist

    if isinstance(exc, (getattr(dist, "DistNetworkError", ()), getattr(dist, "DistBackendError", ()))):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(sign in text for sign in _LOST_PEER_SIGNS)


def _first_line(exc: BaseException) -> str:
    """What the collective said, in a few words (gloo's messages run to paragraphs)."""
    text = str(exc).lower()
    sign = next((s for s in _LOST_PEER_SIGNS if s in text), None)
    return f"{type(exc).__name__}: {sign}" if sign else type(exc).__name__


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


def _train(fabric, strategy, setup: RunSetup, stop_request: StopRequest) -> int:
    settings, budget = setup.settings, setup.budget
    run = _open_run(fabric, setup)
    fabric.print(describe(setup))

    model = _build_model(fabric, setup)
    optimizer = build_optimizer(fabric, model, setup.optimizer)
    # the launched processes' ranks, not the environment's (a stale RANK/WORLD_SIZE would shard a one-process run);
    # the set-up printed the transitions and checked the data against the checkpoint already
    loader = setup.data.train_dataloader(rank=fabric.global_rank, world_size=fabric.world_size,
                                         vocab_size=setup.model_config.padded_vocab_size, start_step=setup.start_step,
                                         samples_per_step=budget.global_batch_size // fabric.world_size,
                                         pin_memory=fabric.device.type == "cuda",  # the copy to the GPU overlaps
                                         checked=True, lr_at=setup.schedule.lr_at if setup.lr_weighted else None)
    counters = _restore(fabric, strategy, setup, model, optimizer, loader)
    resuming = setup.start.kind is StartKind.RESUME
    loop_state = {k: v for k, v in setup.loop_state.items() if k != files.AVERAGE}  # the average's tensors: the hook's
    state = {"model": model, "optimizer": optimizer, "train_dataloader": loader, "iter_num": counters.iter_num,
             "step_count": counters.step, "midtrain": copy.deepcopy(loop_state)}
    metrics = MetricSink(settings.logger_name, settings.out_dir, run["run_id"], counters.step if resuming else None,
                         settings.log) if fabric.global_rank == 0 else MetricSink()
    hooks = [Throughput(fabric, setup.model_config, budget, setup.devices.precision)]
    if loader.decisions is not None:
        hooks.append(MixControl(fabric, loader, budget.total_steps, budget.global_batch_size))
    if setup.gold_sets:
        from midtrain.train.gold_scoring import GoldEvaluation

        hooks.append(GoldEvaluation(setup.gold_sets, budget.seq_length, budget.micro_batch_size))
    if setup.average is not None:
        hooks.append(WeightAverage(fabric, model, setup.average, settings.out_dir,
                                   setup.loop_state.get(files.AVERAGE) if resuming else None))
    trainer = Trainer(
        fabric, model, optimizer, loader, budget, setup.schedule,
        LoopSettings(log_interval=settings.train.log_interval, eval_interval=settings.eval.interval,
                     save_interval=settings.train.save_interval, max_norm=settings.train.max_norm,
                     initial_validation=settings.eval.initial_validation,
                     final_validation=settings.eval.final_validation,
                     keep_steps=frozenset(settings.train.keep_checkpoint_steps)),
        setup.data.val_datasets(settings.eval.max_iters * budget.micro_batch_size), _saver(fabric, setup, run, state),
        metrics, hooks,
        loop_state.get("log_window") or () if resuming and loop_state.get("log_window_end") == counters.step else (),
        counters, val_tokens_per_byte=setup.val_tokens_per_byte)
    try:
        reason = trainer.fit(stop_request)
    except CheckpointWriteError as exc:
        fabric.print(f"Stopped at step {counters.step:,}: {exc} Exiting with status {EXIT_PREEMPTED}, so a requeue "
                     "retries.")
        return EXIT_PREEMPTED
    except Diverged as exc:
        fabric.print(diverged_message(exc, settings.out_dir))
        return EXIT_DIVERGED
    finally:
        metrics.finalize()
    signal_name = f" {stop_request.signal_name}" if reason is StopReason.SIGNAL else ""
    fabric.print(f"Stopped at step {counters.step:,} of {budget.total_steps:,}: {reason.value}{signal_name}")
    for line in filter(None, (hook.finished(trainer) for hook in hooks)):
        fabric.print(line)
    if reason.requeue:
        fabric.print(f"Exiting with status {EXIT_PREEMPTED} (preempted): resume with --resume=auto to continue "
                     "exactly.")
        return EXIT_PREEMPTED
    return 0


def _build_model(fabric, setup: RunSetup):
    """The model with the weights of a one-device run for the seed: built whole on every rank, or under FSDP on the
    meta device with each rank writing its own shards (``midtrain.train.model_build``)."""
    from midtrain.train.model_build import build_model

    return build_model(fabric, setup.model_config, setup.settings.seed, setup.budget.seq_length,
                       setup.settings.train.tie_embeddings, setup.devices.compile,
                       on_meta=setup.devices.strategy == "fsdp",
                       activation_checkpointing=setup.settings.train.activation_checkpointing)


def _restore(fabric, strategy, setup: RunSetup, model, optimizer, loader) -> Counters:
    """The starting checkpoint into the model, the optimizer (then given the config's hyperparameters) and the data
    stream, from the record the set-up read; or the initial weights into the model. Sharded strategies load the file
    themselves; every other restores from the record, so the checkpoint is read once."""
    record, start = setup.checkpoint, setup.start
    if record is None:
        return Counters()
    with_optimizer = start.checkpoint is not None and not setup.optimizer.reset and not record.weights_only
    if sharded(strategy) and record.weights_only:  # converted in memory (a Hugging Face folder): no file to hand on
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model.module, record.model_state,
                             options=StateDictOptions(full_state_dict=True, strict=True))
    elif sharded(strategy):
        if start.checkpoint is not None:
            objects = {"model": model, **({"optimizer": optimizer} if with_optimizer else {})}
            fabric.load(start.checkpoint.model_file, objects, strict=False, weights_only=True)
        elif record.nested:
            fabric.load(start.initial_weights, {"model": model}, strict=False, weights_only=True)
        else:
            fabric.load_raw(start.initial_weights, model, weights_only=True)
    else:
        model.load_state_dict(record.model_state)
        if with_optimizer:
            optimizer.load_state_dict(record.optimizer_state)
    counters = Counters()
    if start.checkpoint is not None:
        apply_settings(optimizer, setup.optimizer)
        if setup.data_start.restored and record.loader_state is not None:
            loader.load_state_dict(copy.deepcopy(record.loader_state))
        counters = Counters(step=record.step, iter_num=record.iter_num)
    record.release()
    return counters


def _saver(fabric, setup: RunSetup, run: dict, state: dict) -> Callable[[Counters, bool, dict], Path]:
    settings, schedule = setup.settings, setup.schedule
    checkpointer = Checkpointer(fabric, settings.out_dir, setup.model_config, setup.tokenizer_files,
                                settings.config_dump, settings.train.keep_last_checkpoints,
                                set(settings.train.keep_checkpoint_steps))

    def save(counters: Counters, final: bool, loop_state: dict) -> Path:
        state["step_count"], state["iter_num"] = counters.step, counters.iter_num
        state["midtrain"] = {**state["midtrain"], **loop_state}
        ledger = state["train_dataloader"].ledger()
        info = {
            "iter_num": counters.iter_num,
            "tokens": sum(d["tokens"] for d in ledger["domains"].values()),
            "lr_next": schedule.lr_at(counters.step),
            "lr_schedule": schedule.record(),
            "dialect": setup.dialect,
            "global_batch_size": setup.budget.global_batch_size,
            "tokens_per_step": setup.budget.tokens_per_step,
            "optimizer": {"class_path": setup.optimizer.class_path,
                          "hyperparameters": hyperparameters(setup.optimizer.settings)},
            "run_id": run["run_id"],
            "out_dir": run["out_dir"],
            "lineage": run["lineage"],
            "world_size": fabric.world_size,
            "val_sets": setup.val_identities,
            "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        return checkpointer.save(state, counters.step, final, info, ledger)

    return save


def _open_run(fabric, setup: RunSetup) -> dict:
    """Rank 0 creates or updates ``run.json`` (lineage, this invocation) and the run's config and plan files."""
    out_dir = setup.settings.out_dir
    run = None
    if fabric.global_rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        files.remove_partials(out_dir)
        run = run_dir.load_run(out_dir) or run_dir.new_run(out_dir)
        start, data_start = setup.start, setup.data_start
        changes = {"optimizer_changes": [vars(c) for c in setup.optimizer.changes],
                   "lr_jump": None if setup.lr_jump is None else setup.lr_jump.record()}
        if start.kind is StartKind.BRANCH:
            parent = start.checkpoint.info
            entry = {**run_dir.branch_record(parent, start.checkpoint.path, start.checkpoint.step,
                                             data_start.mixture_before, data_start.mixture_after), **changes}
            if not data_start.restored:
                entry["data_cursors"] = "not restored: the parent's loader state is not midtrain's; shards start at 0"
            if setup.optimizer.reset:
                entry["optimizer"] = "fresh"  # what train.rewarm_steps is allowed after, also at a resume
            if HF_SOURCE in parent:  # a Hugging Face folder: where it came from, and what it could not carry
                source = parent[HF_SOURCE]
                entry.update({HF_SOURCE: source, "parent_out_dir": None, "optimizer": "fresh",
                              "parent_run_id": f"huggingface:{source.get('repo') or source['path']}@"
                                               f"{source.get('commit') or source.get('revision') or ''}",
                              "data_cursors": "a Hugging Face folder holds no data position; shards start at 0"})
            run["lineage"] = list(parent.get("lineage", [])) + [entry]
        started_from = str(start.checkpoint.path) if start.checkpoint else None
        invocation = run_dir.invocation_record(setup.start_step, setup.devices.world_size, started_from)
        invocation.update(dialect=setup.dialect, notices=list(setup.notices), precision=setup.devices.precision,
                          **changes)
        invocation.update(data_start.record())
        invocation["config"] = setup.settings.config_dump  # every invocation's, so an edit of the past can be told
        # whether each shard read was decontaminated, and against what (analyze and recommend check targets by it)
        run.setdefault("decontamination", {}).update(decontamination_record(setup.data.mixture.used_shards()))
        if setup.settings.anneal is not None:  # where analyze finds it, and the same record for every invocation
            run["anneal"] = plain(setup.settings.anneal)
        run["invocations"].append(invocation)
        run_dir.save_run_files(out_dir, run, setup.settings.config_dump, data_start.plan.to_json())
    return fabric.broadcast(run, src=0)
