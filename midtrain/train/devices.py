"""Where a run runs: the accelerator, devices and nodes, the precision that really runs there, compilation, the
Fabric strategy, and loader workers against the machine's cores."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from midtrain.errors import ConfigError

PRECISIONS = ("32-true", "bf16-true", "bf16-mixed", "16-mixed", "16-true")


@dataclass(frozen=True)
class DeviceSetup:
    accelerator: str
    """``cpu`` or ``cuda``."""
    devices: int
    """Devices (processes) per node."""
    num_nodes: int
    precision: str
    """The precision that runs (``16-mixed`` on CPU runs, and is recorded, as ``bf16-mixed``)."""
    compile: bool
    strategy: str = "single"
    """``single`` (one device), ``ddp`` or ``fsdp``: what runs, ``auto`` resolved."""
    notices: tuple[str, ...] = field(default=())

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


def setup_devices(accelerator: str, devices: int | str, num_nodes: int, precision: str | None,
                  compile_model: bool | None, strategy: str = "auto") -> DeviceSetup:
    import torch

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
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ConfigError(f"--num_nodes={num_nodes!r} must be a positive integer.")
    if precision is None:
        precision = "32-true" if accelerator == "cpu" else (
            "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision={precision!r} is not one of {', '.join(PRECISIONS)}.")
    notices = []
    if precision == "16-true":
        notices.append("--precision=16-true trains in float16 with no loss scaling: losses and gradients overflow "
                       "easily (a non-finite one stops the run). bf16-mixed, bf16-true or 32-true are the safe "
                       "choices.")
    if accelerator == "cpu" and precision == "16-mixed":  # what Lightning would run instead, said and recorded
        precision = "bf16-mixed"
        notices.append("--precision=16-mixed runs as bf16-mixed on CPU (fp16 autocast is a GPU feature); the run "
                       "records bf16-mixed. Set --precision=bf16-mixed (or 32-true) to say so in the config.")
    if accelerator == "cuda" and precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--precision={precision}: this GPU ({torch.cuda.get_device_name(0)}) has no bfloat16. Use "
                          "--precision=16-mixed (float16 with loss scaling) or 32-true.")
    compiled = accelerator == "cuda" if compile_model is None else bool(compile_model)
    if compiled and accelerator == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        raise ConfigError("--compile=true on CPU compiles kernels with a C++ compiler (inductor), and none is on the "
                          "PATH here (c++, g++ or clang++). Install one, or set --compile=false to train eagerly.")
    if strategy not in ("auto", "ddp", "fsdp"):
        raise ConfigError(f"--strategy={strategy!r} is not one of auto, ddp, fsdp.")
    world_size = count * num_nodes
    if strategy == "auto":
        strategy = "single" if world_size == 1 else ("fsdp" if accelerator == "cuda" else "ddp")
    elif strategy == "ddp" and world_size == 1:
        strategy = "single"
    return DeviceSetup(accelerator, count, num_nodes, precision, compiled, strategy, tuple(notices))


def loader_workers_note(num_workers: int, devices: int) -> list[str]:
    """More loader processes than this machine has cores (said once, instead of torch's warning per loader)."""
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


def make_strategy(setup: DeviceSetup):
    """Fabric's strategy for the set-up: its default on one device; DDP; or FSDP2 through Fabric's
    ``ModelParallelStrategy``, the same code on CPU processes (gloo) and GPUs (NCCL): ``fully_shard`` per
    transformer ``Block`` and on the whole model, over a 1-D mesh within one node or a 2-D (replicate x shard) mesh
    across nodes. Checkpoints are full state dicts gathered to rank 0 (``lit_model.pth``, as litgpt writes it)."""
    from functools import partial

    from lightning.fabric.strategies import DDPStrategy, ModelParallelStrategy

    backend = "gloo" if setup.accelerator == "cpu" else None
    if setup.strategy == "single":
        return "auto"
    if setup.strategy == "ddp":
        return DDPStrategy(process_group_backend=backend)
    return ModelParallelStrategy(parallelize_fn=partial(shard_model, num_nodes=setup.num_nodes,
                                                        compile_blocks=setup.compile),
                                 data_parallel_size=setup.world_size, tensor_parallel_size=1,
                                 save_distributed_checkpoint=False, process_group_backend=backend)


def checkpoint_blocks(model) -> None:
    """``train.activation_checkpointing``: each transformer block's activations are recomputed in the backward pass
    instead of kept (PyTorch's non-reentrant checkpoint wrapper, as torchtitan applies it; the state dict's keys stay
    litgpt's)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    blocks = model.transformer.h
    for i, block in enumerate(blocks):
        blocks[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def shard_model(model, device_mesh, num_nodes: int = 1, compile_blocks: bool = False):
    """FSDP2 on a litgpt ``GPT``: each ``Block`` a unit, then the rest (embeddings, head, final norm). Across nodes,
    a 2-D mesh shards within a node and replicates across nodes (hybrid sharding, as the paper's fork ran FSDP1's
    HYBRID_SHARD). Compilation is per block, in place, before sharding: a compiled wrapper around the whole model
    would hide its blocks from ``fully_shard``."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    data_parallel = device_mesh["data_parallel"]
    if num_nodes > 1:
        per_node = data_parallel.size() // num_nodes
        mesh = init_device_mesh(data_parallel.device_type, (num_nodes, per_node),
                                mesh_dim_names=("replicate", "shard"))
    else:
        mesh = data_parallel
    for block in model.transformer.h:
        if compile_blocks:
            block.compile()
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def describe_strategy(setup: DeviceSetup) -> str:
    """The strategy as the start-up summary names it, with the mesh FSDP shards over."""
    if setup.strategy != "fsdp":
        return setup.strategy
    if setup.num_nodes == 1:
        return f"fsdp (FSDP2, sharded over {setup.devices} device(s))"
    return (f"fsdp (FSDP2, hybrid: sharded over the {setup.devices} device(s) of a node, replicated across "
            f"{setup.num_nodes} nodes)")


def sharded(strategy) -> bool:
    """Whether the strategy shards the model's state (loading it takes Fabric's own path)."""
    from lightning.fabric.strategies import FSDPStrategy, ModelParallelStrategy

    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))
