"""``training_scripts/pretrain.sbatch`` on a real one-node SLURM started on this machine (tests/slurm/local_slurm.sh):
an array job of two configs, and a job preempted by signal, requeued, and resumed to the uninterrupted result."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.train_helpers import REPO, losses, run_cli, tiny_config, write_config

LOCAL_SLURM = REPO / "tests" / "slurm" / "local_slurm.sh"
SBATCH_SCRIPT = REPO / "training_scripts" / "pretrain.sbatch"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm():
    started = subprocess.run(["bash", str(LOCAL_SLURM), "start"], capture_output=True, text=True, timeout=600)
    if started.returncode == 3:
        pytest.skip(f"SLURM cannot be set up on this machine: {started.stderr.strip()}")
    assert started.returncode == 0, started.stderr
    yield
    subprocess.run(["bash", str(LOCAL_SLURM), "stop"], capture_output=True, timeout=60)


def job_env(**extra: str) -> dict:
    return {**os.environ, "MIDTRAIN": str(Path(sys.executable).with_name("midtrain")), "PYTHONUNBUFFERED": "1",
            "LITDATA_DISABLE_VERSION_CHECK": "1", "MIDTRAIN_ENV_FILE": "/nonexistent", **extra}


def sbatch(*args: str, cwd: Path, env: dict, script: Path = SBATCH_SCRIPT) -> str:
    result = subprocess.run(["sbatch", "--parsable", f"--chdir={cwd}", *args, str(script)], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def wait_for(job: str, timeout: float = 300, release_requeued: bool = False, until: Path | None = None) -> None:
    """Until the job leaves the queue (and ``until`` exists: a requeued job can be briefly absent from squeue)."""
    deadline = time.time() + timeout
    released = False
    while time.time() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T %r"], capture_output=True, text=True).stdout
        if not queued.strip() and (until is None or until.exists()):
            return
        if release_requeued and "BeginTime" in queued and not released:
            # SLURM holds a requeued job for 120 s. Release it sooner, but not within the second of the requeue:
            # slurmd refuses a credential issued in the same second as the revoked one ("Job credential revoked").
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+5"], capture_output=True)
            released = True
        time.sleep(0.5)
    pytest.fail(f"job {job} did not finish within {timeout} s")


def test_sweep_submits_an_array_job_that_runs_one_config_per_task(slurm, train_root, tmp_path, monkeypatch, capsys):
    for key, value in job_env().items():
        monkeypatch.setenv(key, value)
    write_config(tmp_path / "base.yaml", tiny_config(train_root, tmp_path / "unused", max_steps=6))
    spec = {"base": "base.yaml", "out_root": str(tmp_path / "runs"), "specialised_domain": "code",
            "axes": {"share": [0.0, 0.25]}}
    write_config(tmp_path / "spec.yaml", spec)
    from midtrain.cli import main

    assert (
        main(
            [
                "sweep",
                "--spec",
                str(tmp_path / "spec.yaml"),
                "--out_dir",
                str(tmp_path / "configs"),
                "--submit=true",
                f"--sbatch_args=--chdir={tmp_path} --output={tmp_path}/slurm-%A_%a.out --parsable",
            ]
        )
        == 0
    )
    job = capsys.readouterr().out.strip().splitlines()[-1].split(";")[0]
    wait_for(job)
    for name in ("share0", "share0.25"):
        assert (tmp_path / "runs" / name / "final" / "lit_model.pth").is_file(), (
            tmp_path / f"slurm-{job}_1.out"
        ).read_text()
        assert read_invocation(tmp_path / "runs" / name)["slurm_job_id"]
    assert read_invocation(tmp_path / "runs" / "share0.25")["slurm_array_task_id"] == "2"
    ledger = __import__("json").loads((tmp_path / "runs" / "share0.25" / "final" / "ledger.json").read_text())
    assert set(ledger["domains"]) == {"main", "code"}


def read_invocation(run: Path) -> dict:
    import json

    return json.loads((run / "run.json").read_text())["invocations"][-1]


def test_preempted_job_is_requeued_and_ends_where_an_uninterrupted_run_ends(slurm, train_root, tmp_path):
    config = tiny_config(train_root, tmp_path / "reference", max_steps=300, save_interval=1000)
    config["data"]["init_args"]["max_passes"] = 20
    assert run_cli(write_config(tmp_path / "reference.yaml", config)).returncode == 0
    config["out_dir"] = str(tmp_path / "preempted")
    path = write_config(tmp_path / "preempted.yaml", config)
    output = tmp_path / "job.out"
    job = sbatch(f"--output={output}", cwd=tmp_path, env=job_env(model_config_file=str(path)))
    deadline = time.time() + 120
    while "step 3/" not in (output.read_text() if output.exists() else ""):
        assert time.time() < deadline, output.read_text() if output.exists() else "no output"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    wait_for(job, release_requeued=True, until=tmp_path / "preempted" / "final")
    log = output.read_text()
    assert "preempted with a checkpoint saved: requeueing" in log and "restart 1" in log, log
    assert (tmp_path / "preempted" / "final").is_dir()
    invocations = __import__("json").loads((tmp_path / "preempted" / "run.json").read_text())["invocations"]
    assert len(invocations) == 2 and invocations[1]["slurm_restart_count"] == "1"
    assert losses(tmp_path / "preempted") == pytest.approx(losses(tmp_path / "reference"), rel=1e-6)


def test_finetune_then_evaluate_array_fills_one_table(slurm, tiny_demo, tmp_path):
    """training_scripts/finetune_eval.sbatch: one checkpoint x one task x two seeds, litgpt finetune_full then
    midtrain eval of the task's validation set and a forgetting set, both tasks appending to one table."""
    import json

    sft = tmp_path / "sft" / "arith"
    sft.mkdir(parents=True)
    examples = [
        {"instruction": f"Add {a} and {b}.", "input": "", "output": str(a + b)} for a in range(6) for b in range(4)
    ]
    (sft / "train.json").write_text(json.dumps(examples[:20]))
    (sft / "val.json").write_text(json.dumps(examples[20:]))
    checkpoint = tiny_demo / "runs" / "trunk" / "step-00000006"
    grid = tmp_path / "grid.txt"
    made = subprocess.run([sys.executable, str(REPO / "util_scripts" / "finetune_grid.py"), "grid", str(checkpoint),
                           "--tasks", "arith", "--seeds", "1", "2", "-o", str(grid)], capture_output=True, text=True)
    assert made.returncode == 0 and "--array=1-2" in made.stdout, made.stderr
    bin_dir = Path(sys.executable).parent
    env = job_env(GRID=str(grid), SFT_DATA_ROOT=str(tmp_path / "sft"), FT_ROOT=str(tmp_path / "ft"),
                  EVAL_OUT=str(tmp_path / "eval"), PYTHON=sys.executable, LITGPT=str(bin_dir / "litgpt"),
                  CUDA_VISIBLE_DEVICES="", PROMPT_STYLE="default",
                  FINETUNE_ARGS="--train.epochs 1 --train.global_batch_size 4 --train.micro_batch_size 4 "
                                "--train.max_seq_length 32 --eval.interval 100 --precision 32-true --devices 1 "
                                "--logger_name csv",
                  FORGET_SETS=f"{{name: main, shards_path: {tiny_demo / 'data' / 'val'}, domain: main}}",
                  EVAL_ARGS="--tokens_per_domain=64")
    job = sbatch("--array=1-2", f"--output={tmp_path}/ft-%A_%a.out", cwd=tmp_path, env=env,
                 script=REPO / "training_scripts" / "finetune_eval.sbatch")
    wait_for(job, timeout=400)
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("ft-*.out")))
    rows = json.loads((tmp_path / "eval" / "eval.json").read_text())
    losses = {(r["seed"], r["name"]): r for r in rows if r["metric"] == "loss"}
    assert set(losses) == {(1, "arith"), (2, "arith"), (1, "main"), (2, "main")}, logs
    for row in losses.values():
        assert (row["base_run"], row["base_step"], row["sft_task"]) == ("trunk", 6, "arith")
    assert losses[1, "arith"]["value"] != losses[2, "arith"]["value"]  # the seeds shuffled the data differently
