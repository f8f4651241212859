"""Where a run runs: the accelerator, devices and nodes, the precision that really runs there, compilation, the
Fabric strategy, and loader workers against the machine's cores."""

from __future__ import annotations

import os
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
    notices: tuple[str, ...] = field(default=())

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


def setup_devices(accelerator: str, devices: int | str, num_nodes: int, precision: str | None,
                  compile_model: bool | None) -> DeviceSetup:
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
    compiled = accelerator == "cuda" if compile_model is None else bool(compile_model)
    return DeviceSetup(accelerator, count, num_nodes, precision, compiled, tuple(notices))


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
    """One process: Fabric's default; several CPU processes: DDP over gloo (Fabric's FSDP refuses CPU); several GPUs:
    FSDP as litgpt's pretrain uses it."""
    from lightning.fabric.strategies import DDPStrategy, FSDPStrategy
    from litgpt.model import Block

    if setup.world_size == 1:
        return "auto"
    if setup.accelerator == "cpu":
        return DDPStrategy(process_group_backend="gloo")
    return FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full", sharding_strategy="HYBRID_SHARD")


def sharded(strategy) -> bool:
    """Whether the strategy shards the model's state (loading it takes Fabric's own path)."""
    from lightning.fabric.strategies import FSDPStrategy

    return isinstance(strategy, FSDPStrategy)
