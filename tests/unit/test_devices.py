"""Where a run runs: the strategy ``auto`` resolves to, the refusals, the strategy Fabric gets, the FLOPs MFU counts."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.strategies import DDPStrategy, ModelParallelStrategy
from litgpt.config import Config
from litgpt.model import GPT
from litgpt.utils import estimate_flops

from midtrain.errors import ConfigError
from midtrain.train.devices import describe_strategy, make_strategy, setup_devices, sharded
from midtrain.train.metrics import flops_per_step


@pytest.mark.parametrize("strategy, devices, nodes, resolved", [
    ("auto", 1, 1, "single"), ("auto", 2, 1, "ddp"), ("auto", 1, 2, "ddp"),  # CPU processes: DDP (litgpt: FSDP)
    ("ddp", 1, 1, "single"), ("ddp", 4, 1, "ddp"), ("fsdp", 1, 1, "fsdp"), ("fsdp", 2, 2, "fsdp"),
])
def test_the_strategy_that_runs_on_cpu(strategy, devices, nodes, resolved):
    setup = setup_devices("cpu", devices, nodes, None, None, strategy)
    assert setup.strategy == resolved and setup.world_size == devices * nodes


def test_an_unknown_strategy_is_refused_naming_the_flag():
    with pytest.raises(ConfigError, match=r"--strategy='deepspeed' is not one of auto, ddp, fsdp"):
        setup_devices("cpu", 2, 1, None, None, "deepspeed")


def test_fabric_gets_fsdp2_over_gloo_on_cpu_and_the_summary_names_the_mesh():
    fsdp = setup_devices("cpu", 2, 2, None, None, "fsdp")
    strategy = make_strategy(fsdp)
    assert isinstance(strategy, ModelParallelStrategy) and sharded(strategy)
    assert strategy.process_group_backend == "gloo"
    assert describe_strategy(fsdp) == ("fsdp (FSDP2, hybrid: sharded over the 2 device(s) of a node, replicated "
                                       "across 2 nodes)")
    ddp = make_strategy(setup_devices("cpu", 2, 1, None, None, "ddp"))
    assert isinstance(ddp, DDPStrategy) and not sharded(ddp)
    assert make_strategy(setup_devices("cpu", 1, 1, None, None, "auto")) == "auto"


def test_mfu_counts_the_measured_flops_of_a_micro_batch():
    """Counted on the meta device as litgpt counts them: a fixed share of the 6N-plus-attention estimate (the
    estimate also counts the embedding lookup as a matmul), and linear in the batch."""
    config = Config.from_name("pythia-160m")
    one, two = flops_per_step(config, 1, 512), flops_per_step(config, 2, 512)
    assert two == pytest.approx(2 * one)
    with torch.device("meta"):
        model = GPT(config)
        model.max_seq_length = 512
        estimate = estimate_flops(model, training=True)
    assert 0.6 < one / estimate < 1.0
