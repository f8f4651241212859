"""``pretrain.sbatch``'s own logic, run by bash outside SLURM with ``srun`` and ``scontrol`` stand-ins on PATH (the
real SLURM runs are in test_slurm.py): which config an array task runs and what it says when the list does not
fit, and when a job is requeued (a rank lost while the others stopped with 75)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from midtrain.cli import STATUS_DIR_VARIABLE, main

SCRIPT = Path(__file__).resolve().parents[2] / "midtrain" / "slurm" / "pretrain.sbatch"


def run_script(tmp_path: Path, srun: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("srun", srun), ("scontrol", 'echo "$@" >> "$SCONTROL_LOG"\n')):
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    environment = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "7", "SLURM_SUBMIT_DIR": str(tmp_path),
                   "SCONTROL_LOG": str(tmp_path / "scontrol.log"), "HOME": os.environ.get("HOME", "/root"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=environment, capture_output=True, text=True, timeout=60)


ECHO_CONFIG = 'echo "ran: $*"\n'


@pytest.mark.parametrize("lines, task, message", [
    ("a.yaml\r\nb.yaml\r\n", "2", None),  # Windows line ends: the \r is not part of the path
    ("a.yaml\nb.yaml\n", "0", "array task '0' of CONFIG_LIST={list}: its lines are numbered from 1 (it has 2): "
                              "submit with --array=1-2"),
    ("a.yaml\nb.yaml\n", "3", "array task 3, but CONFIG_LIST={list} has 2 line(s): submit with --array=1-2"),
    ("a.yaml\n\nc.yaml\n", "2", "array task 2: line 2 of CONFIG_LIST={list} is empty"),
])
def test_an_array_task_runs_its_line_or_says_which_task_which_list_and_how_many_lines(tmp_path, lines, task,
                                                                                      message):
    listing = tmp_path / "configs.txt"
    listing.write_bytes(lines.encode())
    result = run_script(tmp_path, ECHO_CONFIG, CONFIG_LIST=str(listing), SLURM_ARRAY_TASK_ID=task)
    if message is None:
        assert result.returncode == 0, result.stderr
        assert "ran: --kill-on-bad-exit=1 midtrain pretrain --config b.yaml --resume auto" in result.stdout
    else:
        assert result.returncode == 2 and message.format(list=listing) in result.stderr, result.stderr
        assert "sed:" not in result.stderr and "ran:" not in result.stdout


def test_a_lost_rank_is_requeued_when_the_others_stopped_with_75_and_nothing_else_is(tmp_path):
    lost = ('mkdir -p "$MIDTRAIN_STATUS_DIR"; echo 75 > "$MIDTRAIN_STATUS_DIR/rank-0"\n'
            'echo 75 > "$MIDTRAIN_STATUS_DIR/rank-2"; exit 137\n')
    result = run_script(tmp_path, lost, "run.yaml")
    assert result.returncode == 0 and "requeueing job 7" in result.stdout, result.stdout + result.stderr
    assert "srun ended with status 137 (a rank was lost)" in result.stdout
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "7"]
    assert not any((tmp_path / ".midtrain-status").iterdir())  # cleaned up
    (tmp_path / "scontrol.log").unlink()
    for body, status in (("exit 137\n", 137),  # every rank killed (no status written): not requeued
                         ('mkdir -p "$MIDTRAIN_STATUS_DIR"; echo 3 > "$MIDTRAIN_STATUS_DIR/rank-0"; '
                          'echo 75 > "$MIDTRAIN_STATUS_DIR/rank-1"; exit 137\n', 137),  # one diverged: not requeued
                         ("exit 2\n", 2)):
        result = run_script(tmp_path, body, "run.yaml")
        assert result.returncode == status and not (tmp_path / "scontrol.log").exists()


def test_every_pretrain_process_records_its_status_for_the_script(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(STATUS_DIR_VARIABLE, str(tmp_path / "status"))
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert main(["pretrain", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert (tmp_path / "status" / "rank-3").read_text() == "2\n"
