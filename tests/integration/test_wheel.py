"""A built wheel, installed outside the checkout, runs the demo: its configs and the SLURM script are package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_an_installed_wheel_runs_the_tiny_demo_away_from_the_checkout(tmp_path):
    # built from a copy of the sources, so that setuptools' build folders stay out of the checkout
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "demo_out", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, cwd=tmp_path, timeout=300)
    wheel = next((tmp_path / "dist").glob("midtrain-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"midtrain/demo/configs/trunk.yaml", "midtrain/demo/configs/code.yaml",
            "midtrain/slurm/pretrain.sbatch"} <= names
    # a fresh venv with the wheel alone; its dependencies are borrowed from this environment's site-packages by a
    # .pth line (which, unlike a site dir, does not run this environment's editable-install hook for midtrain)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(python), "-c", "import midtrain; print(midtrain.__file__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(site), where
    result = subprocess.run(
        [str(python), "-m", "midtrain", "demo", "--size", "tiny", "--out_dir", "demo_out"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (work / "demo_out" / "summary.md").is_file() and (work / "demo_out" / "eval" / "eval.csv").is_file()
    sweep_script = subprocess.run([str(python), "-c", "from midtrain.commands.sweep import SBATCH_SCRIPT; "
                                   "print(SBATCH_SCRIPT.is_file(), SBATCH_SCRIPT)"], cwd=work, env=env,
                                  check=True, capture_output=True, text=True).stdout
    assert sweep_script.startswith("True " + str(site))
