"""``midtrain pretrain``: litgpt's pretrain config schema plus trunk/branch runs, exact resume and preemption."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from litgpt.args import LogArgs
from litgpt.config import Config
from litgpt.data import DataModule

from midtrain.train.args import EvalArgs, TrainArgs
from midtrain.train.preemption import EXIT_PREEMPTED


def pretrain(
    model_name: str | None = None,
    model_config: Config | None = None,
    out_dir: Path = Path("out/pretrain"),
    precision: Literal["32-true", "bf16-true", "bf16-mixed", "16-mixed", "16-true"] | None = None,
    initial_checkpoint_dir: Path | None = None,
    resume: bool | Literal["auto"] | Path = False,
    data: DataModule | None = None,
    train: TrainArgs = TrainArgs(
        save_interval=1000, log_interval=1, global_batch_size=512, micro_batch_size=4, max_norm=1.0, min_lr=4e-5,
        tie_embeddings=False,
    ),
    eval: EvalArgs = EvalArgs(interval=1000, max_iters=100),
    log: LogArgs = LogArgs(),
    optimizer: str | dict = "AdamW",
    devices: int | str = "auto",
    num_nodes: int = 1,
    tokenizer_dir: Path | None = None,
    logger_name: str = "tensorboard",
    seed: int = 42,
    branch_from: Path | None = None,
    accelerator: str = "auto",
    compile: bool | None = None,
    dry_run: bool = False,
) -> int:
    """Pretrain (trunk) or midtrain (branch) a litgpt model on a sharded data mixture.

    Same keys as ``litgpt pretrain`` plus midtrain's. Exit status: 0 when done (or stopped by
    ``train.max_additional_steps``/``train.max_iters``); 75 when stopped by SIGUSR1/SIGTERM or ``train.max_time``
    after saving a checkpoint (requeue and rerun with ``--resume auto`` to continue exactly); 3 when the loss or a
    gradient norm became non-finite (nothing saved after it; not to be requeued); 2 for bad input.

    Args:
        model_name: A litgpt model name (e.g. pythia-160m); ``model_config`` overrides it.
        model_config: A litgpt ``Config`` (e.g. a tiny model for tests).
        out_dir: The run directory: checkpoints ``step-XXXXXXXX/`` and ``final/``, logs, ``run.json`` (lineage),
            ``config.yaml`` and ``plan.json``.
        precision: Default ``32-true`` on CPU (bf16 is ~3× slower there), ``bf16-mixed`` on GPUs that have it.
        initial_checkpoint_dir: Weights only to start from (litgpt's meaning); optimizer, step and data start fresh.
        resume: ``auto`` continues from the newest complete checkpoint in ``out_dir`` if any; ``true`` requires one;
            a path continues from that checkpoint. A checkpoint written by another run (e.g. a trunk checkpoint
            copied into ``out_dir``) starts a branch of it, continuing its data cursors under the new mixture.
        data: ``midtrain.data.ShardedMixedDataset`` (``litgpt.data.ShardedMixedDataset`` is accepted as an alias).
        train: Budget (``max_tokens`` or ``max_steps``), stop criteria, batch sizes, LR schedule, retention.
        eval: Validation interval and size; ``val/<domain>/loss`` per domain with held-out shards.
        log: wandb project/run/group (``logger_name: wandb``).
        optimizer: An optimizer name (AdamW) or ``{class_path, init_args}``; its ``lr`` is the peak unless
            ``train.max_lr`` is set.
        devices: Devices per node (``auto``: all GPUs, or 1 CPU process). Several CPU processes use DDP with gloo;
            several GPUs use FSDP, as litgpt.
        num_nodes: Nodes (under SLURM, Fabric reads the job's environment).
        tokenizer_dir: Tokenizer files copied into every checkpoint (so litgpt's generate/finetune can use it).
        logger_name: ``tensorboard``, ``csv`` or ``wandb``; files inside ``out_dir``, one curve across restarts.
        seed: Seed of the model initialisation.
        branch_from: Start a new run (this ``out_dir``) from another run's checkpoint (its step folder or its
            ``lit_model.pth``): weights, optimizer, step, LR position and data cursors, with this config's mixture.
            Restarts of the branch resume from its own checkpoints.
        accelerator: ``auto``, ``cpu`` or ``cuda``.
        compile: ``torch.compile`` the model; default on for CUDA, off on CPU.
        dry_run: Check everything a run needs at start-up (config, tokenizer, data plan, model on the meta device,
            the checkpoint to start from), print the plan, and exit without training.
    """
    from midtrain.train.preemption import StopRequest

    # stop signals are watched from the start: one during start-up ends the run before its first step
    with StopRequest() as stop_request:
        from midtrain.train.report import describe
        from midtrain.train.restore import StartKind
        from midtrain.train.run import execute
        from midtrain.train.startup import setup_run

        setup = setup_run(run_settings(
            model_name=model_name, model_config=model_config, out_dir=out_dir, precision=precision,
            initial_checkpoint_dir=initial_checkpoint_dir, resume=resume, data=data, train=train, eval=eval, log=log,
            optimizer=optimizer, devices=devices, num_nodes=num_nodes, tokenizer_dir=tokenizer_dir,
            logger_name=logger_name, seed=seed, branch_from=branch_from, accelerator=accelerator, compile=compile,
        ))
        if dry_run:
            print(describe(setup))
            print("\nDry run: configuration, data, model and checkpoint check out; nothing was trained.")
            return 0
        if setup.start.kind is StartKind.FINISHED:
            print(f"The run in {out_dir} is already finished ({setup.start.checkpoint.path}, step "
                  f"{setup.start.checkpoint.step:,}); nothing to do. To extend it, give a later absolute end"
                  + (" (--train.max_iters without --train.max_additional_steps: the paper's fork would have added "
                     "max_additional_steps again and replaced final/)." if setup.dialect == "fork" else
                     " (--train.max_steps or --train.max_tokens)."))
            return 0
        if stop_request.signal_name is not None:
            print(f"Stopped by {stop_request.signal_name} during start-up, before any step; nothing was changed. "
                  f"Exiting with status {EXIT_PREEMPTED}: rerun to start.")
            return EXIT_PREEMPTED
        return execute(setup, stop_request)


def run_settings(**arguments: Any):
    """The run's settings from ``pretrain``'s arguments (also how ``midtrain mix`` reads a pretrain config)."""
    from midtrain.train.settings import RunSettings

    settings = RunSettings(**{**arguments, "out_dir": Path(arguments["out_dir"])})
    settings.config_dump = config_dump(settings)
    return settings


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_dump(settings) -> dict:
    """The resolved config as litgpt-style YAML data (saved as ``config.yaml`` and ``hyperparameters.yaml``)."""
    data = settings.data
    data_section = None if data is None else {
        "class_path": f"{type(data).__module__}.{type(data).__qualname__}",
        "init_args": _plain(data),
    }
    out = {k: _plain(getattr(settings, k)) for k in (
        "model_name", "model_config", "out_dir", "precision", "initial_checkpoint_dir", "resume")}
    out["data"] = data_section
    out.update({k: _plain(getattr(settings, k)) for k in (
        "train", "eval", "log", "optimizer", "devices", "num_nodes", "tokenizer_dir", "logger_name", "seed",
        "branch_from", "accelerator", "compile")})
    return out


__all__ = ["pretrain", "EXIT_PREEMPTED"]
