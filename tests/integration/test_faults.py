"""Faults and hostile input around a run: every one refused clearly before anything is written, or survived with
the earlier state intact (see docs/faults.md for the table)."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from midtrain.cli import main
from midtrain.folder_lock import FolderLock
from midtrain.train.loop import Trainer
from tests.integration.train_helpers import losses, read_json, run_cli, tiny_config, write_config


def test_keep_last_checkpoints_below_one_is_refused(train_root, tmp_path, capsys):
    path = write_config(tmp_path / "k.yaml", tiny_config(train_root, tmp_path / "k", keep_last_checkpoints=0))
    assert main(["pretrain", "--config", str(path)]) == 2
    assert "--train.keep_last_checkpoints=0 must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_a_second_run_on_the_same_out_dir_is_refused_naming_the_holder(train_root, tmp_path, capsys):
    out = tmp_path / "held"
    with FolderLock(out / ".midtrain.lock", "--out_dir", out, "run"):
        path = write_config(tmp_path / "h.yaml", tiny_config(train_root, out, max_steps=2))
        assert main(["pretrain", "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert (
            f"--out_dir='{out}' is in use by another midtrain run (host {os.uname().nodename}, pid {os.getpid()}" in err
        )
        assert not (out / "run.json").exists()
    assert main(["pretrain", "--config", str(path)]) == 0  # released: the lock dies with its holder


def test_a_stop_signal_during_start_up_exits_75_before_any_step(train_root, tmp_path, capsys):
    """A signal that arrives before the command has read its config (the handlers midtrain installs at its first
    line remember it) stops the run before its first step, with nothing written."""
    from midtrain.train.preemption import catch_stop_signals_early, release_stop_signals

    path = write_config(tmp_path / "s.yaml", tiny_config(train_root, tmp_path / "s", max_steps=2))
    previous = catch_stop_signals_early()  # what midtrain.cli does first, before any import that takes seconds
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert main(["pretrain", "--config", str(path)]) == 75
    finally:
        release_stop_signals(previous)
    assert "Stopped by SIGTERM during start-up, before any step" in capsys.readouterr().out
    assert not (tmp_path / "s").exists()


def stop_at_step(monkeypatch, step: int, signum: int) -> None:
    """Send ``signum`` to this process during optimizer step ``step`` (counted from 1)."""
    real = Trainer.optimizer_step
    calls = {"n": 0}

    def optimizer_step(self, batches, lr, *args):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        return real(self, batches, lr, *args)

    monkeypatch.setattr(Trainer, "optimizer_step", optimizer_step)


def test_ctrl_c_during_training_saves_and_resumes_exactly(train_root, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    assert main(["pretrain", "--config", str(write_config(tmp_path / "r.yaml", tiny_config(train_root, reference,
                                                                                          max_steps=8)))]) == 0
    out = tmp_path / "interrupted"
    path = write_config(tmp_path / "i.yaml", tiny_config(train_root, out, max_steps=8, save_interval=100))
    with monkeypatch.context() as patch:
        stop_at_step(patch, 3, signal.SIGINT)
        assert main(["pretrain", "--config", str(path)]) == 75
    assert "Ctrl-C: stopping after this step and saving" in capsys.readouterr().err
    assert (out / "step-00000003").is_dir()
    assert main(["pretrain", "--config", str(path)]) == 0
    assert losses(out) == pytest.approx(losses(reference), rel=1e-6)


def test_disk_full_while_saving_exits_75_and_keeps_the_earlier_checkpoint(train_root, tmp_path, monkeypatch, capsys):
    from lightning.fabric import Fabric

    out = tmp_path / "full"
    path = write_config(tmp_path / "f.yaml", tiny_config(train_root, out, max_steps=12))
    real_save = Fabric.save

    def save(self, target, state, *args, **kwargs):
        if "step-00000008" in str(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, target, state, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Fabric, "save", save)
        assert main(["pretrain", "--config", str(path)]) == 75
    printed = capsys.readouterr().out
    assert "saving step-00000008 failed ([Errno 28] No space left on device)" in printed
    assert "earlier checkpoints are intact" in printed
    assert (out / "step-00000004" / "lit_model.pth").is_file() and not list(out.glob(".*partial"))
    assert main(["pretrain", "--config", str(path)]) == 0
    assert read_json(out / "run.json")["invocations"][-1]["start_step"] == 4 and (out / "final").is_dir()


def test_branch_points_off_the_save_grid_are_saved_and_kept(train_root, tmp_path):
    out = tmp_path / "grid"
    config = tiny_config(train_root, out, max_steps=12, save_interval=4, keep_last_checkpoints=1,
                         keep_checkpoint_steps=[6])
    assert main(["pretrain", "--config", str(write_config(tmp_path / "g.yaml", config))]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("step-")) == ["step-00000006", "step-00000012"]


def test_silent_clamps_are_said(train_root, tmp_path, capsys):
    config = tiny_config(train_root / "train", tmp_path / "c", max_steps=4, lr_warmup_steps=10)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "c.yaml", config)), "--dry_run=true"]) == 0
    printed = capsys.readouterr().out
    assert "--train.lr_warmup_steps=10 is longer than the run (4 steps)" in printed
    assert "no held-out shards" in printed and "no validation loss will be logged" in printed


@pytest.fixture(scope="module")
def prepared_root(tmp_path_factory, tokenizer_dir):
    """A main shard written by 'midtrain prepare' (its manifest records the tokenizer and the largest token id)."""
    raw = tmp_path_factory.mktemp("raw")
    (raw / "docs.jsonl").write_text("".join(
        f'{{"text": "def f_{i}(x):\\n    return x * {i}\\n"}}\n' for i in range(400)))
    root = tmp_path_factory.mktemp("prepared")
    assert main(["prepare", "--inputs", str(raw), "--tokenizer_dir", str(tokenizer_dir), "--output_dir",
                 str(root / "1")]) == 0
    return root


@pytest.mark.slow
def test_token_ids_beyond_the_vocabulary_are_refused_before_training(prepared_root, tokenizer_dir, tmp_path, capsys):
    config = tiny_config(prepared_root, tmp_path / "v", max_steps=2)
    config["model_config"].update(vocab_size=128, padded_vocab_size=128)
    config["tokenizer_dir"] = str(tokenizer_dir)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "v.yaml", config)), "--dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert "shard 'main/1'" in err and "holds token id" in err and "vocabulary has 128 entries" in err


def test_a_shard_from_another_tokenizer_is_refused_unless_allowed(prepared_root, tokenizer_dir, tmp_path, capsys):
    import shutil

    other = tmp_path / "other-tokenizer"
    shutil.copytree(tokenizer_dir, other)
    config_file = other / "tokenizer_config.json"
    config_file.write_text(config_file.read_text().replace("}", ', "model_max_length": 77}', 1))
    config = tiny_config(prepared_root, tmp_path / "t", max_steps=2)
    config["tokenizer_dir"] = str(other)
    path = write_config(tmp_path / "t.yaml", config)
    assert main(["pretrain", "--config", str(path), "--dry_run=true"]) == 2
    assert "was prepared with another tokenizer" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(path), "--dry_run=true", "--data.allow_tokenizer_mismatch=true"]) == 0


def test_shards_without_a_manifest_are_checked_as_they_are_read(train_root, tmp_path, capsys):
    config = tiny_config(train_root, tmp_path / "n", max_steps=12)
    config["model_config"].update(vocab_size=256, padded_vocab_size=256)  # main/1 holds ids 0..1499
    path = write_config(tmp_path / "n.yaml", config)
    # the fixed validation sets are read before training: val main/1 holds ids 1600..1899
    assert main(["pretrain", "--config", str(path), "--dry_run=true"]) == 2
    assert "the main validation set (held-out shard 'main/1') holds token id 1," in capsys.readouterr().err
    # without validation data, the training stream stops at the first sample out of the vocabulary
    config["data"]["init_args"]["data_path"] = str(train_root / "train")
    assert main(["pretrain", "--config", str(write_config(tmp_path / "n.yaml", config))]) == 2
    err = capsys.readouterr().err
    assert "shard 'main/1'" in err and "in its sample at stream position" in err and "has 256 entries" in err
    assert not (tmp_path / "n" / "final").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--data.mix_weigths_str=main:1"],
            "--data.mix_weigths_str is not a key of 'midtrain pretrain' (data). Did you mean --data.mix_weights_str?",
        ),
        (
            ["--train.max_step=4"],
            "--train.max_step is not a key of 'midtrain pretrain' (train). Did you mean --train.max_steps?",
        ),
        (["--data.num_workers=abc"], "--data.num_workers=abc is not valid: expected int."),
        (["--train.lr_scheduler=foo"], "--train.lr_scheduler=foo is not one of cosine, wsd, linear, constant, decay."),
    ],
)
def test_unknown_keys_and_bad_values_get_one_clear_line(train_root, tmp_path, capsys, args, message):
    path = write_config(tmp_path / "u.yaml", tiny_config(train_root, tmp_path / "u", max_steps=2))
    assert main(["pretrain", "--config", str(path), *args, "--dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" not in err and len(err.splitlines()) == 1


def test_an_unknown_key_in_a_config_file_is_named(train_root, tmp_path, capsys):
    config = tiny_config(train_root, tmp_path / "u", max_steps=2)
    config["data"]["init_args"]["num_workerz"] = 0
    assert main(["pretrain", "--config", str(write_config(tmp_path / "u.yaml", config)), "--dry_run=true"]) == 2
    assert "--data.num_workerz is not a key of 'midtrain pretrain' (data). Did you mean --data.num_workers?" in \
        capsys.readouterr().err
    config = tiny_config(train_root, tmp_path / "u", max_steps=2)
    config["train"]["max_lrr"] = 0.1  # in the file, jsonargparse names the group apart from the key
    assert main(["pretrain", "--config", str(write_config(tmp_path / "t.yaml", config)), "--dry_run=true"]) == 2
    assert "--train.max_lrr is not a key of 'midtrain pretrain' (train). Did you mean --train.max_lr?" in \
        capsys.readouterr().err
    config = tiny_config(train_root, tmp_path / "u", max_steps=2)
    config["data"]["init_args"]["mix_controller"] = [1, 2]
    assert main(["pretrain", "--config", str(write_config(tmp_path / "c.yaml", config)), "--dry_run=true"]) == 2
    assert "--data.mix_controller=[1, 2] is not valid" in capsys.readouterr().err


def test_an_out_dir_that_is_a_dangling_link_is_named_as_such(train_root, tmp_path, capsys):
    (tmp_path / "run").symlink_to(tmp_path / "nowhere" / "run")
    path = write_config(tmp_path / "d.yaml", tiny_config(train_root, tmp_path / "run", max_steps=2))
    for flags in (["--dry_run=true"], []):
        assert main(["pretrain", "--config", str(path), *flags]) == 2
        err = capsys.readouterr().err
        assert f"is a link to {tmp_path / 'nowhere' / 'run'}, which does not exist" in err and "lock" not in err


def _rank_process(parent: int, local_rank: str, timeout: float = 120) -> int:
    """The pid of the process started for ``local_rank`` under ``parent`` (its LOCAL_RANK in its environment)."""
    import time
    from pathlib import Path

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    if f"LOCAL_RANK={local_rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                        return int(entry.name)
            except (OSError, IndexError, ValueError):
                continue
        time.sleep(0.05)
    raise AssertionError(f"no process of local rank {local_rank} under {parent}")


@pytest.fixture
def full_disk(tmp_path):
    """A real file system with no space left: a 1 MB tmpfs filled up (needs root, as on these machines)."""
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root): the full-disk case needs a real full file system")
    try:
        handle = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(handle, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(handle)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_when_the_run_writes_its_records_at_start_up_exits_75_in_one_line(train_root, full_disk, tmp_path,
                                                                                      capsys):
    out = full_disk / "run"
    path = write_config(tmp_path / "f.yaml", tiny_config(train_root, out, max_steps=2))
    assert main(["pretrain", "--config", str(path)]) == 75
    err = capsys.readouterr().err
    assert err.startswith("midtrain: writing ") and len(err.strip().splitlines()) == 1
    assert "failed (No space left on device)" in err and "Exiting with status 75" in err
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left behind


def test_a_full_disk_while_logging_mid_run_exits_75_and_the_resume_keeps_the_curve(train_root, tmp_path, monkeypatch,
                                                                                  capsys):
    from midtrain.train.metrics import TidyCSVLogger

    out = tmp_path / "run"
    path = write_config(tmp_path / "r.yaml", tiny_config(train_root, out, max_steps=8))
    real = TidyCSVLogger._append

    def append(self, rows):
        if any(r["step"] == 6 for r in rows):
            with self.path.open("a") as file:
                file.write("6,train/lo")  # a torn row, as a write cut short by the full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real(self, rows)

    with monkeypatch.context() as patch:
        patch.setattr(TidyCSVLogger, "_append", append)
        assert main(["pretrain", "--config", str(path)]) == 75
    err = capsys.readouterr().err
    assert f"midtrain: writing {out / 'logs' / 'metrics.csv'} failed (No space left on device)" in err
    assert main(["pretrain", "--config", str(path)]) == 0  # resumed from step 4, the torn row dropped
    assert sorted(losses(out)) == list(range(1, 9))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_signalled_or_killed_rank_stops_every_rank_with_75_and_the_resume_finishes(train_root, tmp_path, strategy):
    """SLURM's --signal reaches every process: a rank still importing torch died of SIGUSR1 (the job ended 137 and was
    not requeued); now the signal is remembered from the rank's first line and the ranks agree to stop before their
    first step. kill -9 of one rank mid-training (the OOM killer's way): rank 0 died of gloo's raw 'Connection
    reset by peer' (exit 1), or was killed by Fabric's launcher (137); now the run exits 75 (requeued) with one line
    naming the lost rank. The resume from the last checkpoint trains to the end."""
    import subprocess
    import sys
    import time

    from tests.integration.train_helpers import REPO

    out = tmp_path / strategy
    config = tiny_config(train_root, out, max_steps=40, save_interval=4)
    config.update(devices=2, strategy=strategy)
    path = write_config(tmp_path / "k.yaml", config)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITDATA_DISABLE_VERSION_CHECK": "1"}

    def start():
        return subprocess.Popen([sys.executable, "-m", "midtrain", "pretrain", "--config", str(path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)

    if strategy == "ddp":
        process = start()
        rank1 = _rank_process(process.pid, "1")
        time.sleep(0.5)  # inside its start-up: importing, reading the config, before the process group
        os.kill(rank1, signal.SIGUSR1)
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 75, stderr[-3000:]
        assert "signal on another rank" in stdout and "Exiting with status 75" in stdout
        assert not list(out.glob("step-*")) and not (out / "final").exists()
    process = start()
    rank1 = _rank_process(process.pid, "1")
    deadline = time.monotonic() + 240
    while not (out / "step-00000004").is_dir() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(rank1, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 75, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "Stopped: rank 1 was ended by SIGKILL" in stderr and "Exiting with status 75" in stderr
    assert not (out / "final").exists()
    resumed = run_cli(path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "final").is_dir() and sorted(losses(out)) == list(range(1, 41))
