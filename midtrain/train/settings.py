"""The arguments of ``midtrain pretrain`` — litgpt's pretrain keys plus midtrain's — declared once: the record the
set-up reads (``RunSettings``), and the command's signature and ``--help`` made from it (``command_signature``).

No ``from __future__ import annotations`` here: jsonargparse reads these annotations to build the CLI.
"""

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from litgpt.config import Config

from midtrain.anneal import AnnealRecord
from midtrain.config_files import plain
from midtrain.data.module import ShardedMixedDataset
from midtrain.field_docs import field_descriptions
from midtrain.train.args import EvalArgs, LogArgs, TrainArgs


def _litgpt_train_defaults() -> TrainArgs:
    # litgpt pretrain's own defaults for its train group
    return TrainArgs(save_interval=1000, log_interval=1, global_batch_size=512, micro_batch_size=4, max_norm=1.0,
                     min_lr=4e-5, tie_embeddings=False)


@dataclass
class RunSettings:
    """The command's arguments, as parsed (and ``config_dump``, the resolved config as YAML data)."""

    model_name: str | None = None
    """A litgpt model name (e.g. pythia-160m); ``model_config`` overrides it."""
    model_config: Config | None = None
    """A litgpt ``Config`` (e.g. a tiny model for tests)."""
    out_dir: Path = Path("out/pretrain")
    """The run directory: checkpoints ``step-XXXXXXXX/`` and ``final/``, logs, ``run.json`` (lineage),
    ``config.yaml`` and ``plan.json``."""
    precision: Literal["32-true", "bf16-true", "bf16-mixed", "16-mixed", "16-true"] | None = None
    """Default ``32-true`` on CPU (bf16 is ~3× slower there), ``bf16-mixed`` on GPUs that have it."""
    initial_checkpoint_dir: Path | None = None
    """Weights only to start from (litgpt's meaning); optimizer, step and data start fresh."""
    resume: bool | Literal["auto"] | Path = False
    """``auto`` continues from the newest complete checkpoint in ``out_dir`` if any; ``true`` requires one; a path
    continues from that checkpoint. A checkpoint written by another run (e.g. a trunk checkpoint copied into
    ``out_dir``) starts a branch of it, continuing its data cursors under the new mixture."""
    data: ShardedMixedDataset | None = None
    """The training data: ``{class_path: midtrain.data.ShardedMixedDataset, init_args: {...}}`` (the paper fork's
    ``litgpt.data.ShardedMixedDataset`` is an alias); its keys: ``--data.help midtrain.data.ShardedMixedDataset``."""
    train: TrainArgs = field(default_factory=_litgpt_train_defaults)
    """Budget (``max_tokens`` or ``max_steps``), stop criteria, batch sizes, LR schedule, retention."""
    eval: EvalArgs = field(default_factory=lambda: EvalArgs(interval=1000, max_iters=100))
    """Validation interval and size; ``val/<domain>/loss`` per domain with held-out shards."""
    log: LogArgs = field(default_factory=LogArgs)
    """wandb's project, run and group (``logger_name: wandb`` only; refused with another logger); litgpt's other
    ``log`` keys are for its LitLogger, which midtrain does not support (refused)."""
    optimizer: str | dict = "AdamW"
    """An optimizer name (AdamW) or ``{class_path, init_args}``; its ``lr`` is the peak unless ``train.max_lr`` is
    set."""
    devices: int | str = "auto"
    """Devices per node (``auto``: all GPUs, or 1 CPU process)."""
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """How several devices train one model. ``ddp``: a full copy per device (gloo on CPU, NCCL on GPUs). ``fsdp``:
    FSDP2, every transformer block's parameters, gradients and optimizer state sharded over the devices of a node
    (and replicated across nodes: hybrid sharding), on CPU processes (gloo) and GPUs (NCCL) alike. ``auto``: fsdp on
    several GPUs, as litgpt; ddp on several CPU processes; neither on one device."""
    num_nodes: int = 1
    """Nodes (under SLURM, Fabric reads the job's environment)."""
    tokenizer_dir: Path | None = None
    """Tokenizer files copied into every checkpoint (so litgpt's generate/finetune can use it)."""
    logger_name: str = "tensorboard"
    """``tensorboard``, ``csv`` or ``wandb``; files inside ``out_dir``, one curve across restarts."""
    seed: int = 42
    """Seed of the model initialisation."""
    branch_from: Path | None = None
    """Start a new run (this ``out_dir``) from another run's checkpoint (its step folder or its ``lit_model.pth``):
    weights, optimizer, step, LR position and data cursors, with this config's mixture. Restarts of the branch
    resume from its own checkpoints. Or a Hugging Face model folder (GPT-NeoX or Llama, as ``from_pretrained`` or
    ``huggingface-cli download`` leaves it): its weights, converted, at its step; a fresh optimizer and data cursors
    (said at start-up; see ``train.rewarm_steps``)."""
    branch_from_step: int | None = None
    """The step of a ``branch_from`` Hugging Face folder whose revision does not name it (a revision such as
    ``step40000`` in the Hugging Face cache does)."""
    anneal: AnnealRecord | None = None
    """This run's place in a set of anneals (written by ``midtrain anneal``: its group, candidate, share, data-order
    seed and budget); kept in ``run.json``, where ``midtrain analyze`` pairs each candidate with its control. A run
    folder holds one: a resume with another is refused."""
    accelerator: str = "auto"
    """``auto``, ``cpu`` or ``cuda``."""
    compile: bool | None = None
    """``torch.compile`` the model; default on for CUDA, off on CPU."""
    config_dump: dict = field(default_factory=dict, metadata={"command": False})
    """The resolved config as litgpt-style YAML data (``config.yaml``, ``hyperparameters.yaml``, ``run.json``)."""


COMMAND_FIELDS = tuple(f.name for f in dataclasses.fields(RunSettings) if f.metadata.get("command", True))


def command_signature(extra: list[inspect.Parameter]) -> inspect.Signature:
    """``RunSettings``'s fields as keyword parameters (what jsonargparse reads), then ``extra``."""
    parameters = []
    for f in dataclasses.fields(RunSettings):
        if f.name not in COMMAND_FIELDS:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=f.type))
    return inspect.Signature([*parameters, *extra], return_annotation=int)


def command_args_section(extra: dict[str, str]) -> str:
    """The ``Args:`` section of the command's docstring: each field's own docstring, then ``extra``'s."""
    docs = {**field_descriptions(RunSettings), **extra}
    return "Args:\n" + "\n".join(f"    {name}: {docs[name]}" for name in (*COMMAND_FIELDS, *extra))


def settings_from(arguments: dict[str, Any]) -> RunSettings:
    return RunSettings(**{name: arguments[name] for name in COMMAND_FIELDS if name in arguments})


def dump(settings: RunSettings) -> dict:
    """The resolved config as litgpt-style YAML data (saved as ``config.yaml`` and ``hyperparameters.yaml``), in the
    keys' own order; the data module as ``{class_path, init_args}``."""
    out = {}
    for name in COMMAND_FIELDS:
        value = getattr(settings, name)
        if name == "data" and value is not None:
            out[name] = {
                "class_path": f"{type(value).__module__}.{type(value).__qualname__}",
                "init_args": plain(value),
            }
        else:
            out[name] = plain(value)
    return out
