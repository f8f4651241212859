"""The sharded path on CPU processes: FSDP2 (``--strategy=fsdp``, gloo) trains the run DDP trains, its checkpoints
are full litgpt state dicts that resume on another number of processes and under another strategy, preemption and
per-domain validation work as they do unsharded, and two "nodes" shard within a node and replicate across nodes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.integration.train_helpers import (
    REPO,
    TINY_MODEL,
    losses,
    metric,
    preempt,
    read_json,
    run_cli,
    tiny_config,
    write_config,
)

pytestmark = pytest.mark.slow

MIX = "main:0.6,code:0.25,math:0.15"
STEPS = 12


def config_for(train_root: Path, out: Path, strategy: str, devices: int, **train) -> dict:
    # the in-run weight average rides along: its copy is sharded like the weights and gathered at every save
    train.setdefault("average", {"last_steps": 6, "every_steps": 2})
    config = tiny_config(train_root, out, mix=MIX, max_steps=STEPS, micro_batch_size=1, **train)
    config.update(strategy=strategy, devices=devices)
    return config


def train(path: Path) -> str:
    result = run_cli(path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return result.stdout


def ledger_samples(out: Path) -> dict[str, int]:
    return {shard: v["samples"] for shard, v in read_json(out / "final" / "ledger.json")["shards"].items()}


def final_weights(out: Path, folder: str = "final") -> dict[str, torch.Tensor]:
    return torch.load(out / folder / "lit_model.pth", map_location="cpu", weights_only=True)["model"]


def assert_same_weights(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Equal within float noise, except the attention's key biases: softmax ignores a bias added to every key, so
    their gradient is rounding noise (~1e-10) in any strategy, which Adam normalises into LR-sized steps of random
    sign. (The rotary part of a key bias is learned, but sliced out with the rest.) The tolerance is small against
    the LR (3e-3 a step): Adam turns a rarely seen token's tiny gradient, summed in another order, into ~1e-5."""
    assert ours.keys() == reference.keys()
    n_embd = TINY_MODEL["n_embd"]
    for name, tensor in ours.items():
        other = reference[name]
        if name.endswith("attn.qkv.bias"):
            tensor, other = torch.cat([tensor[:n_embd], tensor[2 * n_embd:]]), torch.cat([other[:n_embd],
                                                                                        other[2 * n_embd:]])
        torch.testing.assert_close(tensor, other, rtol=1e-3, atol=2e-5, msg=name)


@pytest.fixture(scope="module")
def ddp_run(train_root, tmp_path_factory):
    """The reference: the run on two DDP processes, uninterrupted."""
    out = tmp_path_factory.mktemp("fsdp") / "ddp"
    train(write_config(out.parent / "ddp.yaml", config_for(train_root, out, "ddp", 2)))
    return out


@pytest.fixture(scope="module")
def fsdp_run(train_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp") / "fsdp"
    stdout = train(write_config(out.parent / "fsdp.yaml", config_for(train_root, out, "fsdp", 2)))
    return out, stdout


def test_fsdp_trains_the_run_ddp_trains(ddp_run, fsdp_run):
    fsdp, stdout = fsdp_run
    assert "strategy fsdp (FSDP2, sharded over 2 device(s))" in stdout
    assert losses(fsdp) == pytest.approx(losses(ddp_run), rel=1e-5)
    assert len(losses(fsdp)) == STEPS
    for name in ("val/main/loss", "val/code/loss", "val/math/loss", "val/overall/loss"):
        assert metric(fsdp, name) == pytest.approx(metric(ddp_run, name), rel=1e-5), name
    assert ledger_samples(fsdp) == ledger_samples(ddp_run)
    assert_same_weights(final_weights(fsdp), final_weights(ddp_run))
    assert_same_weights(final_weights(fsdp, "average"), final_weights(ddp_run, "average"))
    assert read_json(fsdp / "average" / "checkpoint.json")["average"]["count"] == 3  # steps 8, 10 and 12


def test_an_fsdp_checkpoint_is_a_full_litgpt_checkpoint(fsdp_run):
    """litgpt's own loader reads ``lit_model.pth`` written by two sharded ranks into a one-device model."""
    import lightning as L
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.utils import load_checkpoint

    fsdp, _ = fsdp_run
    model = GPT(Config(**TINY_MODEL))
    load_checkpoint(L.Fabric(accelerator="cpu", devices=1), model, fsdp / "final" / "lit_model.pth", strict=True)
    saved = final_weights(fsdp)
    for name, tensor in model.state_dict().items():
        if name in saved:
            assert torch.equal(tensor, saved[name]), name
    assert read_json(fsdp / "final" / "checkpoint.json")["world_size"] == 2


def test_a_sharded_checkpoint_resumes_on_other_process_counts_and_strategies(train_root, tmp_path):
    """FSDP on 2 processes preempted; resumed on 1 process unsharded (sharded optimizer state into a plain
    optimizer); then on 4 FSDP processes (a plain state sharded again). The same chain of world sizes under DDP
    gives the same losses: the state travelled whole through every change."""
    fsdp = tmp_path / "fsdp"
    first = write_config(tmp_path / "f0.yaml", config_for(train_root, fsdp, "fsdp", 2))
    saved, _ = preempt(first, at_step=3)
    assert 3 <= saved < STEPS - 3
    train(write_config(tmp_path / "f1.yaml", config_for(train_root, fsdp, "ddp", 1, max_additional_steps=3)))
    fourth = train(write_config(tmp_path / "f2.yaml", config_for(train_root, fsdp, "fsdp", 4)))
    assert "strategy fsdp (FSDP2, sharded over 4 device(s))" in fourth

    ddp = tmp_path / "ddp"
    for devices, extra in ((2, {"max_additional_steps": saved}), (1, {"max_additional_steps": 3}), (4, {})):
        train(write_config(tmp_path / "d.yaml", config_for(train_root, ddp, "ddp", devices, **extra)))

    assert [i["world_size"] for i in read_json(fsdp / "run.json")["invocations"]] == [2, 1, 4]
    assert losses(fsdp) == pytest.approx(losses(ddp), rel=1e-5)
    assert sorted(losses(fsdp)) == list(range(1, STEPS + 1))
    assert metric(fsdp, "val/overall/loss") == pytest.approx(metric(ddp, "val/overall/loss"), rel=1e-5)
    assert ledger_samples(fsdp) == ledger_samples(ddp)
    assert sum(ledger_samples(fsdp).values()) == STEPS * 4  # every global batch whole, nothing re-read
    assert_same_weights(final_weights(fsdp), final_weights(ddp))


def test_fsdp_preempted_and_resumed_on_the_same_ranks_is_the_uninterrupted_run(train_root, fsdp_run, tmp_path):
    out = tmp_path / "preempted"
    path = write_config(tmp_path / "p.yaml", config_for(train_root, out, "fsdp", 2))
    preempt(path, at_step=5)
    train(path)
    assert losses(out) == pytest.approx(losses(fsdp_run[0]), rel=1e-6)
    assert ledger_samples(out) == ledger_samples(fsdp_run[0])
    assert_same_weights(final_weights(out), final_weights(fsdp_run[0]))
    lineage = read_json(out / "run.json")
    assert [i["world_size"] for i in lineage["invocations"]] == [2, 2]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_shard_within_a_node_and_replicate_across(train_root, tmp_path):
    """Two "nodes" × two processes on localhost, launched as a multi-node allocation launches them: hybrid sharding
    over a (replicate, shard) mesh trains what four DDP processes on one node train."""
    config = config_for(train_root, tmp_path / "nodes", "fsdp", 2)
    config["num_nodes"] = 2
    path = write_config(tmp_path / "n.yaml", config)
    port = free_port()
    processes = []
    for node in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node),
               "PYTHONPATH": str(REPO), "LITDATA_DISABLE_VERSION_CHECK": "1"}
        processes.append(subprocess.Popen([sys.executable, "-m", "midtrain", "pretrain", "--config", str(path)],
                                          env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, out[-2000:] + err[-3000:]
    assert ("strategy fsdp (FSDP2, hybrid: sharded over the 2 device(s) of a node, replicated across 2 nodes)"
            in outputs[0][0])

    reference = tmp_path / "ddp4"
    train(write_config(tmp_path / "d.yaml", config_for(train_root, reference, "ddp", 4)))
    out = tmp_path / "nodes"
    assert [i["world_size"] for i in read_json(out / "run.json")["invocations"]] == [4]
    assert losses(out) == pytest.approx(losses(reference), rel=1e-5)
    assert metric(out, "val/overall/loss") == pytest.approx(metric(reference, "val/overall/loss"), rel=1e-5)
    assert ledger_samples(out) == ledger_samples(reference)
    assert_same_weights(final_weights(out), final_weights(reference))


TINY_LLAMA = {"name": "tiny-llama", "block_size": 32, "vocab_size": 4096, "padded_vocab_size": 4096, "n_layer": 2,
              "n_head": 4, "n_query_groups": 2, "n_embd": 32, "rotary_percentage": 1.0, "parallel_residual": False,
              "bias": False, "norm_class_name": "RMSNorm", "mlp_class_name": "LLaMAMLP", "intermediate_size": 64}


def test_the_meta_device_build_writes_the_one_device_weights_into_the_shards():
    """Built on the meta device and sharded over 2 processes, each writing its own shards: the gathered weights are
    bit-identical to the whole model initialised on every rank (the one-device initialisation) for the seed, for a
    GPT-NeoX model, the same with tied embeddings, and a Llama model with grouped-query attention."""
    import json

    configs = [TINY_MODEL, {**TINY_MODEL, "tie": True}, TINY_LLAMA]
    command = [sys.executable, str(REPO / "benchmarks" / "meta_init.py"), "--check_configs", json.dumps(configs)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for name in ("tiny:", "tiny tied:", "tiny-llama:"):
        assert f"{name} weights bit-identical: True" in result.stdout, result.stdout


def test_fsdp_compiled_block_by_block_trains_the_eager_run(train_root, fsdp_run, tmp_path):
    """``--compile true`` under FSDP on 2 CPU processes (inductor, each block compiled before it is sharded): the
    per-step losses are the eager FSDP run's within 1e-4 (kernels of another fusion sum in another order)."""
    out = tmp_path / "compiled"
    config = config_for(train_root, out, "fsdp", 2)
    config["compile"] = True
    stdout = train(write_config(tmp_path / "c.yaml", config))
    assert "compile on" in stdout
    assert losses(out) == pytest.approx(losses(fsdp_run[0]), abs=1e-4)
    assert metric(out, "val/overall/loss") == pytest.approx(metric(fsdp_run[0], "val/overall/loss"), abs=1e-4)


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_fsdp_in_bf16_trains_saves_and_resumes_exactly(train_root, tmp_path, precision):
    """bf16 under FSDP on CPU processes: preempted and resumed, the run is the uninterrupted one loss for loss."""
    whole, parted = tmp_path / "whole", tmp_path / "parted"
    reference = config_for(train_root, whole, "fsdp", 2)
    reference["precision"] = precision
    stdout = train(write_config(tmp_path / "w.yaml", reference))
    assert f"precision {precision}" in stdout
    interrupted = {**reference, "out_dir": str(parted)}
    path = write_config(tmp_path / "p.yaml", interrupted)
    preempt(path, at_step=5)
    train(path)
    assert losses(parted) == losses(whole)
    assert sorted(losses(parted)) == list(range(1, STEPS + 1))
    assert final_weights(parted)["lm_head.weight"].dtype == (torch.bfloat16 if precision == "bf16-true"
                                                               else torch.float32)
    for name, tensor in final_weights(parted).items():
        assert torch.equal(tensor, final_weights(whole)[name]), name


def test_activation_checkpointing_under_ddp_and_fsdp_trains_the_same_run(train_root, ddp_run, fsdp_run, tmp_path):
    """Each block recomputed in the backward pass, on 2 DDP processes and 2 FSDP processes: the runs without it,
    losses and weights (and the average) alike."""
    for strategy, reference in (("ddp", ddp_run), ("fsdp", fsdp_run[0])):
        out = tmp_path / strategy
        stdout = train(write_config(tmp_path / f"{strategy}.yaml",
                                    config_for(train_root, out, strategy, 2, activation_checkpointing=True)))
        assert "activation checkpointing per block" in stdout
        assert losses(out) == pytest.approx(losses(reference), rel=1e-6), strategy
        assert_same_weights(final_weights(out), final_weights(reference))
        assert_same_weights(final_weights(out, "average"), final_weights(reference, "average"))
