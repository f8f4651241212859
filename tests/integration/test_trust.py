"""Trust: nothing midtrain loads runs code, nothing it writes carries a credential (issue: trust, round 3)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from midtrain.cli import main
from tests.integration.train_helpers import tiny_config, write_config


class _RunsCode:
    """What a crafted checkpoint holds: unpickling it calls ``os.system``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted_checkpoint(parent, folder, marker):
    """A copy of ``parent`` (a checkpoint folder) whose ``lit_model.pth`` would run ``touch marker`` when unpickled."""
    shutil.copytree(parent, folder)
    payload = torch.load(parent / "lit_model.pth", weights_only=True)
    payload["midtrain"] = {"note": _RunsCode(marker)}
    torch.save(payload, folder / "lit_model.pth")
    return folder


@pytest.fixture
def crafted(tiny_trunk, tmp_path):
    marker = tmp_path / "code-ran"
    return crafted_checkpoint(tiny_trunk / "step-00000008", tmp_path / "stranger" / "step-00000008", marker), marker


def _refused(err: str, checkpoint) -> bool:
    line = err.strip().splitlines()[-1]
    return (line.startswith("midtrain.UnsafeCheckpoint: ") and f"{checkpoint / 'lit_model.pth'} needs posix.system"
            in line and "weights_only=True" in line and "Traceback" not in err)


def test_a_crafted_checkpoint_runs_no_code_on_a_dry_run_branch(train_root, crafted, tmp_path, capsys):
    checkpoint, marker = crafted
    config = tiny_config(train_root, tmp_path / "branch", mix="main:0.5,code:0.5")
    config["branch_from"] = str(checkpoint)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", config)), "--dry_run", "true"]) == 2
    assert _refused(capsys.readouterr().err, checkpoint) and not marker.exists()


def test_a_crafted_checkpoint_runs_no_code_in_eval_replay_port_or_similarity(train_root, crafted, tmp_path, capsys):
    checkpoint, marker = crafted
    assert main(["eval", "--runs", str(checkpoint), "--out_dir", str(tmp_path / "eval"),
                 "--val_data_path", str(train_root)]) == 2
    assert _refused(capsys.readouterr().err, checkpoint)
    assert main(["mix", "--replay", str(checkpoint)]) == 2
    assert _refused(capsys.readouterr().err, checkpoint)
    corpora = f'["a={train_root / "val" / "1"}", "b={train_root / "val" / "c1"}"]'
    assert main(["similarity", "--corpora", corpora, "--checkpoint", str(checkpoint),
                 "--out_dir", str(tmp_path / "sim")]) == 2
    assert _refused(capsys.readouterr().err, checkpoint)
    assert not marker.exists()


def test_port_reads_a_fork_checkpoints_iteration_without_running_code(train_root, crafted, tmp_path, capsys):
    from tests.integration.test_fork_configs import fork_config

    checkpoint, marker = crafted
    (checkpoint / "checkpoint.json").unlink()  # as the fork wrote it: port reads iter_num from lit_model.pth
    config = write_config(tmp_path / "fork.yaml", fork_config(train_root, tmp_path / "b", resume=True))
    assert main(["port", "--fork_config", str(config), "--output", str(tmp_path / "n.yaml"), "--branch_from",
                 str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "UnsafeCheckpoint" in err and "needs posix.system" in err and not marker.exists()
    assert not (tmp_path / "n.yaml").exists()


def test_no_credential_from_the_environment_reaches_any_file_a_run_writes(train_root, tmp_path, monkeypatch):
    """A run (and its resume) with credentials in the environment, as on a cluster: no file under out_dir holds one."""
    from tests.integration.train_helpers import run_cli

    secrets = {"HF_TOKEN": "hf_NotARealToken0123456789", "WANDB_API_KEY": "0123456789abcdef0123456789abcdef0123",
               "MY_SERVICE_PASSWORD": "correct-horse-battery-staple"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    config = write_config(tmp_path / "r.yaml", tiny_config(train_root, out, max_steps=4, save_interval=2))
    first = run_cli(config, "--train.max_additional_steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_cli(config)
    assert second.returncode == 0, second.stderr[-2000:]
    for path in [p for p in out.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        leaked = [name for name, value in secrets.items() if value.encode() in data]
        assert not leaked, f"{path} holds {leaked}"
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert not any(value in text for value in secrets.values())
