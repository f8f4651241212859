"""A branch or resume changes exactly what its config says and says what it changed: optimizer settings, LR jumps,
the plan 'mix' and 'pretrain --dry_run' share, one model rule, the launched ranks for the data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from midtrain.cli import main
from midtrain.train.model_rule import resolve_model_config
from tests.integration.train_helpers import REPO, TINY_MODEL, losses, read_json, tiny_config, write_config

TRUNK_STEPS, BRANCH_STEP = 12, 8
MAIN_SAMPLES_PER_PASS = 87


@pytest.fixture
def trunk(tiny_trunk):
    """The session's 12-step trunk on main data, checkpoints every 4 steps (conftest.py)."""
    return tiny_trunk


def branch_config(train_root, trunk, out, **train):
    config = tiny_config(train_root, out, mix="main:0.75,code:0.25", max_steps=TRUNK_STEPS, **train)
    config["branch_from"] = str(trunk / f"step-{BRANCH_STEP:08d}")
    return config


def plan_table(text: str) -> str:
    """The mixture plan's two tables as printed."""
    return (
        text[text.index("Mixture plan:") :]
        .split("\n\n\n")[0]
        .split("\nValidation data")[0]
        .split("\nDry run")[0]
        .strip()
    )


def test_mix_and_dry_run_plan_a_branch_the_same_way(train_root, trunk, tmp_path, capsys):
    path = write_config(tmp_path / "b.yaml", branch_config(train_root, trunk, tmp_path / "b"))
    capsys.readouterr()
    assert main(["mix", "--config", str(path), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    shards = {s["id"]: s for s in payload["shards"]}
    assert (payload["start_step"], payload["end_step"]) == (BRANCH_STEP, TRUNK_STEPS)
    assert shards["main/1"]["start_samples"] == BRANCH_STEP * 4 and shards["c1"]["start_samples"] == 0
    assert shards["main/1"]["planned_samples"] == 12 and shards["c1"]["planned_samples"] == 4  # 4 steps × 4, 3:1
    assert shards["main/1"]["passes"] == pytest.approx((32 + 12) / MAIN_SAMPLES_PER_PASS)
    assert main(["mix", "--config", str(path)]) == 0
    mixed = capsys.readouterr().out
    assert main(["pretrain", "--config", str(path), "--dry_run=true"]) == 0
    dry = capsys.readouterr().out
    assert "read before" in mixed and plan_table(mixed) == plan_table(dry)
    assert "continued" in mixed and "steps 8 → 12 of 12" in mixed
    # the repetition cap counts what the trunk already read, in both
    for command in (["mix"], ["pretrain", "--dry_run=true"]):
        assert main([*command, "--config", str(path), "--data.max_passes=0.45"]) == 2
        assert "after 32 already read" in capsys.readouterr().err


def test_mix_of_a_config_with_only_max_steps_plans_its_budget(train_root, tmp_path, capsys):
    path = write_config(tmp_path / "t.yaml", tiny_config(train_root, tmp_path / "t", max_steps=10))
    assert main(["mix", "--config", str(path), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["max_tokens"] == 10 * 4 * 16 and sum(s["planned_samples"] for s in payload["shards"]) == 40


def test_branch_trains_with_its_own_optimizer_settings_and_says_so(train_root, trunk, tmp_path, capsys):
    config = branch_config(train_root, trunk, tmp_path / "wd")
    config["optimizer"]["init_args"].update(weight_decay=0.3, betas=[0.8, 0.95])
    capsys.readouterr()
    assert main(["pretrain", "--config", str(write_config(tmp_path / "wd.yaml", config))]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"weight_decay\s+0\.1 -> 0\.3", printed) and re.search(
        r"betas\s+\[0\.9, 0\.95\] -> \[0\.8, 0\.95\]", printed
    )
    groups = torch.load(tmp_path / "wd" / "final" / "lit_model.pth", weights_only=False)["optimizer"]["param_groups"]
    assert all(g["weight_decay"] == 0.3 and tuple(g["betas"]) == (0.8, 0.95) for g in groups)
    trunk_groups = torch.load(trunk / f"step-{BRANCH_STEP:08d}" / "lit_model.pth", weights_only=False)["optimizer"][
        "param_groups"
    ]
    assert trunk_groups[0]["weight_decay"] == 0.1
    lineage = read_json(tmp_path / "wd" / "run.json")["lineage"][0]
    assert {"key": "weight_decay", "checkpoint": 0.1, "config": 0.3} in lineage["optimizer_changes"]
    info = read_json(tmp_path / "wd" / "final" / "checkpoint.json")
    assert (
        info["optimizer"]["class_path"] == "torch.optim.AdamW"
        and info["optimizer"]["hyperparameters"]["weight_decay"] == 0.3
    )


def test_another_optimizer_class_is_refused_unless_the_state_is_reset(train_root, trunk, tmp_path, capsys):
    config = branch_config(train_root, trunk, tmp_path / "sgd")
    config["optimizer"] = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9}}
    path = write_config(tmp_path / "sgd.yaml", config)
    assert main(["pretrain", "--config", str(path), "--dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert "torch.optim.SGD is another optimizer class" in err and "torch.optim.AdamW" in err
    assert "--train.reset_optimizer=true" in err
    assert main(["pretrain", "--config", str(path), "--train.reset_optimizer=true"]) == 0
    assert "the optimizer's state (its moments and step counts) is not restored" in capsys.readouterr().out
    state = torch.load(tmp_path / "sgd" / "final" / "lit_model.pth", weights_only=False)["optimizer"]
    assert state["param_groups"][0]["momentum"] == 0.9


def test_extending_a_finished_run_announces_the_lr_jump(train_root, tmp_path, capsys):
    """max_steps 4 -> 6 on a cosine run: the LR jumps back up; both values and the reason are printed and kept."""
    out = tmp_path / "extended"
    path = write_config(tmp_path / "e.yaml", tiny_config(train_root, out, max_steps=4))
    assert main(["pretrain", "--config", str(path)]) == 0
    lr_next = read_json(out / "final" / "checkpoint.json")["lr_next"]
    capsys.readouterr()
    assert main(["pretrain", "--config", str(path), "--train.max_steps=6", "--dry_run=true"]) == 0
    dry = capsys.readouterr().out
    assert f"would have used {lr_next:.4g} next" in dry and "horizon (steps) 4 -> 6" in dry
    assert main(["pretrain", "--config", str(path), "--train.max_steps=6"]) == 0
    jump = read_json(out / "run.json")["invocations"][-1]["lr_jump"]
    assert jump["parent_lr_next"] == pytest.approx(lr_next) and jump["relative_change"] > 0.01
    assert jump["reasons"] == ["horizon (steps) 4 -> 6"]
    kept = read_json(out / "step-00000004" / "checkpoint.json")  # the finished weights, not replaced without a copy
    assert kept["final"] and kept["step"] == 4 and read_json(out / "final" / "checkpoint.json")["step"] == 6
    assert "are kept as step-00000004" in capsys.readouterr().out


def test_a_branch_on_the_trunks_schedule_announces_nothing(train_root, trunk, tmp_path, capsys):
    path = write_config(tmp_path / "b.yaml", branch_config(train_root, trunk, tmp_path / "b"))
    assert main(["pretrain", "--config", str(path), "--dry_run=true"]) == 0
    assert "would have used" not in capsys.readouterr().out


def test_one_model_rule_for_pretrain_mix_and_eval(train_root, tmp_path, capsys):
    """model_name with a different model_config: the model is model_config alone (litgpt's rule), and every
    command says model_name is ignored; the checkpoint (what eval loads) holds that model."""
    config = tiny_config(train_root, tmp_path / "m", max_steps=2)
    config["model_name"] = "pythia-14m"
    path = write_config(tmp_path / "m.yaml", config)
    model, note = resolve_model_config("pythia-14m", dict(TINY_MODEL))
    assert model.n_layer == 2 and "--model_name='pythia-14m' is ignored" in note
    for command in (["mix", "--config", str(path)], ["pretrain", "--config", str(path)]):
        assert main(command) == 0
        assert "--model_name='pythia-14m' is ignored" in capsys.readouterr().out
    import yaml

    saved = yaml.safe_load((tmp_path / "m" / "final" / "model_config.yaml").read_text())
    assert saved["n_layer"] == 2 and saved["n_embd"] == 32
    assert main(["eval", f"--runs={tmp_path / 'm'}", f"--out_dir={tmp_path / 'eval'}", "--tokens_per_domain=64",
                 "--accelerator=cpu"]) == 0


@pytest.mark.slow
def test_a_stale_rank_environment_does_not_shard_a_one_process_run(train_root, tmp_path):
    results = {}
    for name, extra in (("reference", {}), ("stale", {"RANK": "1", "WORLD_SIZE": "2"})):
        out = tmp_path / name
        path = write_config(tmp_path / f"{name}.yaml", tiny_config(train_root, out, max_steps=4))
        env = {**os.environ, **extra, "PYTHONPATH": str(REPO), "LITDATA_DISABLE_VERSION_CHECK": "1"}
        result = subprocess.run(
            [sys.executable, "-m", "midtrain", "pretrain", "--config", str(path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        results[name] = losses(out)
    assert results["stale"] == results["reference"]
