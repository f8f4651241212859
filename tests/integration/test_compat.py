"""Compatibility: litgpt's own tools on our checkpoints, and plain ``litgpt pretrain`` with our data module (the
paper fork's configs: tests/integration/test_fork_configs.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from midtrain.cli import main
from tests.integration.train_helpers import REPO, SEQ_LENGTH, TINY_MODEL, tiny_config, write_config


def litgpt_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "LITDATA_DISABLE_VERSION_CHECK": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "litgpt", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


@pytest.mark.slow
def test_litgpt_convert_and_generate_accept_our_checkpoint(train_root, tokenizer_dir, tmp_path):
    config = tiny_config(train_root, tmp_path / "run", max_steps=4)
    config["tokenizer_dir"] = str(tokenizer_dir)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "t.yaml", config))]) == 0
    final = tmp_path / "run" / "final"
    assert (final / "tokenizer.json").is_file() and (final / "tokenizer_config.json").is_file()
    converted = tmp_path / "converted"
    result = litgpt_cli("convert_pretrained_checkpoint", str(final), str(converted))
    assert result.returncode == 0, result.stderr[-3000:]
    result = litgpt_cli("generate", str(converted), "--prompt", "def main", "--max_new_tokens", "4",
                        "--precision", "32-true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "def main" in result.stdout
    # util_scripts/export_hf.sh: midtrain export, a folder from_pretrained loads
    exported = subprocess.run(["bash", str(REPO / "util_scripts" / "export_hf.sh"), str(final), str(tmp_path / "hf")],
                              capture_output=True, text=True, cwd=REPO,
                              env={"PATH": "/usr/bin:/bin", "MIDTRAIN": str(Path(sys.executable).with_name("midtrain")),
                                   "LITDATA_DISABLE_VERSION_CHECK": "1"})
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "config.json").is_file()


@pytest.mark.slow
def test_plain_litgpt_pretrain_trains_and_resumes_with_our_data_module(train_root, tmp_path):
    out = tmp_path / "litgpt-run"
    tokens_per_step = 4 * SEQ_LENGTH
    config = {
        "model_name": "pythia-14m",  # required by litgpt; model_config overrides it
        "model_config": dict(TINY_MODEL),
        "out_dir": str(out),
        "precision": "32-true",
        "data": {
            "class_path": "midtrain.data.ShardedMixedDataset",
            "init_args": {"data_path": str(train_root), "mix_weights_str": "main:0.75,code:0.25", "num_workers": 0},
        },
        "train": {
            "save_interval": 2,
            "log_interval": 1,
            "global_batch_size": 4,
            "micro_batch_size": 2,
            "max_tokens": 4 * tokens_per_step,
            "lr_warmup_fraction": 0.5,
            "lr_warmup_steps": None,
            "max_seq_length": SEQ_LENGTH,
            "max_norm": 1.0,
            "min_lr": 1e-5,
        },
        "eval": {"interval": 2, "max_iters": 2},
        "devices": 1,
        "logger_name": "csv",
    }
    path = tmp_path / "litgpt.yaml"
    path.write_text(yaml.safe_dump(config))
    result = litgpt_cli("pretrain", "--config", str(path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (out / "step-00000004" / "lit_model.pth").is_file()
    config["train"]["max_tokens"] = 6 * tokens_per_step
    path.write_text(yaml.safe_dump(config))
    result = litgpt_cli("pretrain", "--config", str(path), "--resume", "auto")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Resuming training from" in result.stdout and (out / "step-00000006").is_dir()
    import torch

    stream = torch.load(out / "step-00000006" / "lit_model.pth", weights_only=False)["train_dataloader"]
    consumed = {shard: info["consumed"] for shard, info in stream["shards"].items()}
    assert consumed == {"main/1": 18, "c1": 6}  # 6 steps × 4 samples, exactly 3:1, continued across the resume


def test_config_placeholders_come_from_the_environment(train_root, tmp_path, monkeypatch, capsys):
    config = tiny_config(train_root, tmp_path / "run", max_steps=2)
    config["data"]["init_args"]["data_path"] = "${MIDTRAIN_TEST_DATA}"
    config["data"]["class_path"] = "litgpt.data.ShardedMixedDataset"
    path = write_config(tmp_path / "p.yaml", config)
    assert main(["pretrain", "--config", str(path), "--dry_run=true"]) == 2
    assert "uses ${MIDTRAIN_TEST_DATA} but the environment does not set MIDTRAIN_TEST_DATA" in capsys.readouterr().err
    monkeypatch.setenv("MIDTRAIN_TEST_DATA", str(train_root))
    assert main(["pretrain", "--config", str(path), "--dry_run=true"]) == 0
    assert main(["mix", "--config", str(path)]) == 0


def test_the_unit_tests_train_settings_are_train_args_defaults():
    import dataclasses

    from midtrain.train.args import TrainArgs
    from tests.helpers import TRAIN_ARGS_DEFAULTS

    defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(TrainArgs)}
    assert TRAIN_ARGS_DEFAULTS == defaults
