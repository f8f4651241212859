"""``data.mix_schedule`` in real runs: three phases (one ramped) trained, stopped by a signal inside the ramp and
resumed to the ledger of an uninterrupted run; the plan per phase in ``mix`` and ``--dry_run``; a branch that
ramps from its trunk's mixture; the refusal under plain litgpt."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from midtrain.cli import main
from tests.integration.train_helpers import REPO, losses, read_json, run_cli, shard_of, tiny_config, write_config

STEPS = 24
SCHEDULE = [
    {"start_step": 0, "mix_weights_str": "main:1.0"},
    {"start_step": 6, "mix_weights_str": "main:0.5,code:0.5"},
    {"start_step": 12, "mix_weights_str": "main:0.5,math:0.5", "ramp_steps": 6},
]


def scheduled_config(train_root, out, schedule=SCHEDULE, **train):
    config = tiny_config(train_root, out, **{"max_steps": STEPS, "save_interval": 1000, **train})
    init_args = config["data"]["init_args"]
    del init_args["mix_weights_str"]
    init_args["mix_schedule"] = schedule
    return config


@pytest.mark.slow
def test_three_phases_stop_inside_the_ramp_and_resume_to_the_uninterrupted_ledger(train_root, tmp_path):
    reference = tmp_path / "reference"
    assert run_cli(write_config(tmp_path / "ref.yaml", scheduled_config(train_root, reference))).returncode == 0
    path = write_config(tmp_path / "p.yaml", scheduled_config(train_root, tmp_path / "preempted"))
    env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "LITDATA_DISABLE_VERSION_CHECK": "1",
           "MIDTRAIN_PROGRESS": "plain"}
    process = subprocess.Popen([sys.executable, "-m", "midtrain", "pretrain", "--config", str(path)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in process.stdout:
        if line.startswith("step 13/"):  # inside the ramp (steps 12-17)
            process.send_signal(signal.SIGUSR1)
            break
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 75, output
    saved = [p for p in (tmp_path / "preempted").iterdir() if p.name.startswith("step-")]
    assert len(saved) == 1 and 13 <= int(saved[0].name[5:]) < 18, saved
    resumed = run_cli(path)
    assert resumed.returncode == 0, resumed.stderr
    expected, ledger = (read_json(out / "final" / "ledger.json") for out in (reference, tmp_path / "preempted"))
    assert ledger == expected
    assert losses(tmp_path / "preempted") == pytest.approx(losses(reference), rel=1e-6)
    phases = ledger["stretches"]
    assert [p["segment"] for p in phases] == ["phase 0", "phase 1", *(f"phase 2 ramp {k}/6" for k in range(1, 7)),
                                               "phase 2"]
    assert [p["start_step"] for p in phases] == [0, 6, 12, 13, 14, 15, 16, 17, 18]
    tokens_per_step = 4 * 16
    assert [sum(p["tokens"].values()) for p in phases] == [6 * tokens_per_step] * 2 + [tokens_per_step] * 6 + [
        6 * tokens_per_step]
    assert set(phases[1]["tokens"]) == {"main/1", "c1"} and phases[1]["tokens"]["c1"] == 3 * tokens_per_step
    assert phases[-1]["tokens"] == {"main/1": 3 * tokens_per_step, "m1": 3 * tokens_per_step}
    # the ramp moves from main:0.5,code:0.5 to main:0.5,math:0.5: code falls as math rises
    code = [p["tokens"].get("c1", 0) for p in phases[2:8]]
    math = [p["tokens"].get("m1", 0) for p in phases[2:8]]
    assert code == sorted(code, reverse=True) and math == sorted(math) and code[0] > math[0] and math[-1] > code[-1]


def test_mix_and_dry_run_show_each_phase_and_the_totals(train_root, tmp_path, capsys):
    path = write_config(tmp_path / "s.yaml", scheduled_config(train_root, tmp_path / "run"))
    assert main(["mix", "--config", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "mixture: 3 phases (--data.mix_schedule)" in shown
    assert "Phase 0, steps 0 → 6: domains main:1" in shown
    assert ("Phase 2, steps 12 → 24: domains main:0.5,math:0.5, ramped over 6 steps from the mixture before (in 6 "
            "constant segments)") in shown
    assert "Totals over the run:" in shown
    assert main(["mix", "--config", str(path), "--format", "json"]) == 0
    plan = __import__("json").loads(capsys.readouterr().out)
    assert [p["start_step"] for p in plan["phases"]] == [0, 6, 12]
    planned = {s["id"]: s["planned_samples"] for s in plan["shards"]}
    # main: 4 a step for 6 steps, then 2; code: 12 in phase 1 and 2+2+1+1+1+0 over the ramp; math the rest
    assert planned == {"main/1": 24 + 36, "c1": 12 + 7, "m1": 5 + 12}
    assert main(["pretrain", "--config", str(path), "--dry_run", "true"]) == 0
    assert "Totals over the run:" in capsys.readouterr().out and not (tmp_path / "run").exists()
    tight = scheduled_config(train_root, tmp_path / "run", max_steps=200)
    tight["data"]["init_args"]["max_passes"] = 2
    assert main(["pretrain", "--config", str(write_config(tmp_path / "t.yaml", tight)), "--dry_run", "true"]) == 2
    assert "would be read" in (error := capsys.readouterr().err) and "over the whole schedule" in error


def test_a_branch_ramps_into_its_mixture_from_the_trunks(train_root, tmp_path, capsys):
    trunk = tmp_path / "trunk"
    assert main(["pretrain", "--config", str(write_config(tmp_path / "trunk.yaml", tiny_config(
        train_root, trunk, max_steps=12, save_interval=4)))]) == 0
    ramp = [{"start_step": 8, "mix_weights_str": "main:0.5,code:0.5", "ramp_steps": 2}]
    branch = scheduled_config(train_root, tmp_path / "branch", schedule=ramp, max_steps=12)
    branch["branch_from"] = str(trunk / "step-00000008")
    assert main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", branch))]) == 0
    ledger = read_json(tmp_path / "branch" / "final" / "ledger.json")
    assert [p.get("segment") for p in ledger["stretches"]] == [None, "phase 0 ramp 1/2", "phase 0 ramp 2/2", "phase 0"]
    assert [sum(p["tokens"].values()) // 64 for p in ledger["stretches"]] == [8, 1, 1, 2]
    ramp_code = [ledger["stretches"][k]["tokens"].get("c1", 0) // 16 for k in (1, 2, 3)]
    assert ramp_code == [0, 1, 4]  # within one of 1/8 and 3/8 of 4 samples (0.5, 1.5), then 1/2 of 8
    fresh = scheduled_config(train_root, tmp_path / "fresh", schedule=[{**ramp[0], "start_step": 0}])
    assert main(["pretrain", "--config", str(write_config(tmp_path / "f.yaml", fresh)), "--dry_run", "true"]) == 2
    assert "nothing comes before this phase to ramp from" in capsys.readouterr().err


def test_plain_litgpt_cannot_count_the_schedules_steps(train_root, tmp_path):
    from midtrain.data.module import ShardedMixedDataset
    from midtrain.errors import ConfigError

    data = ShardedMixedDataset(data_path=train_root, mix_schedule=SCHEDULE)
    data.connect(batch_size=2, max_seq_length=16)
    with pytest.raises(ConfigError, match=r"only 'midtrain pretrain' tells the data module"):
        data.train_dataloader(rank=0, world_size=1)
    assert shard_of(0) == "main/1"
