"""What only a GPU runs: bf16 precisions, compilation, pinned-memory loading, MFU, and FSDP2 over NCCL on every visible
GPU. ``pytest -m gpu`` on a GPU machine; skipped without CUDA (the same paths on CPU are the other tests')."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.integration.train_helpers import TINY_MODEL, losses, metric, read_json, run_cli, tiny_config, write_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

MIX = "main:0.6,code:0.25,math:0.15"


def gpu_config(train_root, out, precision: str, devices: int = 1, strategy: str = "auto", compile_model=False,
               **train):
    config = tiny_config(train_root, out, mix=MIX, max_steps=12, micro_batch_size=1, **train)
    config.update(accelerator="cuda", devices=devices, strategy=strategy, precision=precision, compile=compile_model)
    return config


def train(path):
    result = run_cli(path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return result.stdout


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_trains_resumes_and_logs_mfu(train_root, tmp_path, precision):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    stdout = train(write_config(tmp_path / "w.yaml", gpu_config(train_root, whole, precision)))
    assert f"precision {precision}" in stdout
    for _ in range(2):
        train(write_config(tmp_path / "r.yaml", gpu_config(train_root, resumed, precision, max_additional_steps=6)))
    reference = losses(whole)
    assert all(math.isfinite(v) for v in reference.values()) and len(reference) == 12
    assert losses(resumed) == pytest.approx(reference, rel=2e-2)
    mfu = metric(whole, "train/mfu")
    assert mfu and all(0 < v < 1 for v in mfu.values())  # measured FLOPs against the device's peak
    assert metric(whole, "train/tokens_per_s_per_device")


def test_compiled_training_matches_eager(train_root, tmp_path):
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    train(write_config(tmp_path / "e.yaml", gpu_config(train_root, eager, "bf16-mixed")))
    stdout = train(write_config(tmp_path / "c.yaml", gpu_config(train_root, compiled, "bf16-mixed",
                                                                compile_model=True)))
    assert "compile on" in stdout
    assert losses(compiled) == pytest.approx(losses(eager), rel=2e-2)


@pytest.mark.parametrize("compile_model", [False, True])
def test_fsdp_on_every_visible_gpu_trains_saves_and_resumes_on_one(train_root, tmp_path, compile_model):
    """FSDP2 over NCCL on all visible GPUs (one GPU: a one-rank mesh), against DDP on as many; the checkpoint is a
    full litgpt state dict and resumes on one GPU."""
    import lightning as L
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.utils import load_checkpoint

    ranks = torch.cuda.device_count()
    sharded, replicated = tmp_path / "fsdp", tmp_path / "ddp"
    stdout = train(write_config(tmp_path / "f.yaml", gpu_config(train_root, sharded, "bf16-mixed", ranks, "fsdp",
                                                                compile_model, global_batch_size=4 * ranks,
                                                                max_additional_steps=6)))
    assert "strategy fsdp (FSDP2" in stdout
    train(write_config(tmp_path / "d.yaml", gpu_config(train_root, replicated, "bf16-mixed", ranks, "ddp",
                                                       compile_model, global_batch_size=4 * ranks)))
    train(write_config(tmp_path / "f1.yaml", gpu_config(train_root, sharded, "bf16-mixed", 1, "auto", compile_model,
                                                        global_batch_size=4 * ranks)))
    assert [i["world_size"] for i in read_json(sharded / "run.json")["invocations"]] == [ranks, 1]
    first = {step: loss for step, loss in losses(sharded).items() if step <= 6}  # on as many ranks as DDP's
    assert first == pytest.approx({s: v for s, v in losses(replicated).items() if s <= 6}, rel=2e-2)
    assert sorted(losses(sharded)) == list(range(1, 13)) and all(map(math.isfinite, losses(sharded).values()))
    model = GPT(Config(**TINY_MODEL))
    load_checkpoint(L.Fabric(accelerator="cpu", devices=1), model, sharded / "final" / "lit_model.pth", strict=True)


@pytest.mark.parametrize("signal", ["val_loss", "train_loss"])
def test_a_mixture_controller_decides_on_the_gpu_as_it_replays(train_root, tmp_path, signal):
    """The controller's signal on CUDA (float64 sums, the broadcast of rank 0's numbers over NCCL), its decisions
    taken on every visible GPU, and their replay as a schedule reading the same stream."""
    from midtrain.cli import main

    ranks = torch.cuda.device_count()
    out = tmp_path / "controlled"
    config = gpu_config(train_root, out, "bf16-mixed", ranks, "ddp" if ranks > 1 else "auto",
                        global_batch_size=4 * ranks)
    config["data"]["init_args"]["mix_controller"] = {"signal": signal, "every_steps": 4, "eta": 1.0}
    train(write_config(tmp_path / "c.yaml", config))
    stretches = read_json(out / "final" / "ledger.json")["stretches"]
    assert [s["segment"] for s in stretches] == ["prior", "decision 1", "decision 2"]
    assert metric(out, "mix/code/weight") and all(math.isfinite(v) for v in metric(out, "mix/code/signal").values())
    assert main(["mix", "--replay", str(out / "final"), "--out", str(tmp_path / "replay.yaml")]) == 0
    train(tmp_path / "replay.yaml")
    import yaml

    replayed_out = Path(yaml.safe_load((tmp_path / "replay.yaml").read_text())["out_dir"])
    replayed = read_json(replayed_out / "final" / "ledger.json")
    assert [s["tokens"] for s in replayed["stretches"]] == [s["tokens"] for s in stretches]


@pytest.mark.parametrize("strategy", ["auto", "fsdp"])
def test_activation_checkpointing_trains_the_run_without_it(train_root, tmp_path, strategy):
    """Each block recomputed in the backward pass, on one GPU and under FSDP on every visible GPU (bf16-mixed):
    the losses of the run without it, and a lower peak memory is not required at this toy size."""
    ranks = torch.cuda.device_count() if strategy == "fsdp" else 1
    plain, checkpointed = tmp_path / "plain", tmp_path / "ac"
    for out, ac in ((plain, False), (checkpointed, True)):
        stdout = train(write_config(tmp_path / f"{out.name}.yaml",
                                    gpu_config(train_root, out, "bf16-mixed", ranks, strategy,
                                               global_batch_size=4 * ranks, activation_checkpointing=ac)))
    assert "activation checkpointing per block" in stdout
    assert losses(checkpointed) == pytest.approx(losses(plain), rel=1e-3)


def test_fsdp_bf16_true_compiled_resumes_exactly_on_the_gpus(train_root, tmp_path):
    """bf16-true, compiled block by block, under FSDP on every visible GPU: preempted halfway (max_additional_steps)
    and resumed, the losses of the uninterrupted run."""
    ranks = torch.cuda.device_count()
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(write_config(tmp_path / "w.yaml", gpu_config(train_root, whole, "bf16-true", ranks, "fsdp", True,
                                                       global_batch_size=4 * ranks)))
    for _ in range(2):
        train(write_config(tmp_path / "r.yaml", gpu_config(train_root, resumed, "bf16-true", ranks, "fsdp", True,
                                                           global_batch_size=4 * ranks, max_additional_steps=6)))
    assert losses(resumed) == pytest.approx(losses(whole), rel=2e-2)
