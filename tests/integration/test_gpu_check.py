"""benchmarks/gpu_check.py --smoke: the GPU check's code paths (midtrain beside litgpt, loader workers, save and
resume, eval on the same checkpoints) on CPU at toy size, so the script stays runnable for whoever has a GPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.train_helpers import REPO


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_check_and_prints_the_table():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--smoke"], capture_output=True,
                            text=True, cwd=REPO, timeout=900,
                            env={**os.environ, "PYTHONPATH": str(REPO), "LITDATA_DISABLE_VERSION_CHECK": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("midtrain GPU check"):]
    for row in ("litgpt 32-true", "midtrain 32-true", "midtrain/litgpt 32-true", "data wait, 4 workers",
                "resume at step 8", "fsdp on 2 cpu rank(s)", "fsdp compiled on 2 cpu rank(s)",
                "activation checkpointing", "midtrain eval"):
        assert row in table
    assert "largest relative loss difference 0.00e+00" in table  # fp32 on CPU: the resumed run is exact
    fsdp_row = next(line for line in table.splitlines() if line.startswith("fsdp on 2 cpu rank(s)"))
    assert "from ddp" in fsdp_row and fsdp_row.endswith("ok")
    for name in ("fsdp compiled", "activation checkpointing"):
        row = next(line for line in table.splitlines() if line.startswith(name))
        assert row.endswith("ok"), row


@pytest.mark.slow
def test_gpu_check_keeps_to_its_budget_and_still_prints_the_table():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--smoke", "--budget_s", "1"],
                            capture_output=True, text=True, cwd=REPO, timeout=900,
                            env={**os.environ, "PYTHONPATH": str(REPO), "LITDATA_DISABLE_VERSION_CHECK": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("midtrain GPU check"):]
    assert "midtrain/litgpt 32-true" in table  # the first check always runs
    for name in ("activation checkpointing", "fsdp compiled", "midtrain eval"):
        row = next(line for line in table.splitlines() if line.startswith(name))
        assert "not run:" in row and "of the 1 s budget spent" in row
