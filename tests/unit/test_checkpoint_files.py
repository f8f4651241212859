"""Checkpoint folders: retention never loses the newest, damaged records are skipped or named, publication syncs."""

from __future__ import annotations

import json
import os

import pytest

from midtrain.errors import ConfigError
from midtrain.train import checkpoint_files as files


def make_checkpoint(out_dir, step, final=False):
    folder = out_dir / (files.FINAL if final else files.step_dir_name(step))
    folder.mkdir(parents=True)
    (folder / files.MODEL_FILE).write_bytes(b"weights")
    (folder / files.INFO_FILE).write_text(json.dumps({"step": step, "final": final}))
    return folder


@pytest.mark.parametrize("keep_last", [0, -3, 1])
def test_pruning_never_removes_the_newest_checkpoint(tmp_path, keep_last):
    for step in (2, 4, 6):
        make_checkpoint(tmp_path, step)
    files.prune(tmp_path, keep_last, keep_steps={2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000006"]


def test_a_damaged_record_is_skipped_by_discovery_and_named_when_given(tmp_path):
    make_checkpoint(tmp_path, 4)
    damaged = make_checkpoint(tmp_path, 8)
    (damaged / files.INFO_FILE).write_text("{truncated")
    assert files.latest_checkpoint(tmp_path).step == 4
    with pytest.raises(ConfigError, match=r"--branch_from=.*step-00000008.*checkpoint.json cannot be read .*damaged"):
        files.checkpoint_folder(damaged, "--branch_from")


def test_weights_without_a_record_or_a_step_name_say_what_is_missing(tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / files.MODEL_FILE).write_bytes(b"weights")
    with pytest.raises(ConfigError, match=r"holds lit_model.pth but no checkpoint.json, and its name is not "
                                          r"step-XXXXXXXX"):
        files.checkpoint_folder(folder, "--resume")


def test_publication_syncs_the_files_before_and_the_folder_after_the_rename(tmp_path, monkeypatch):
    staging = tmp_path / ".step-00000004.partial"
    staging.mkdir()
    (staging / files.MODEL_FILE).write_bytes(b"weights")
    (staging / files.INFO_FILE).write_text("{}")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    files.publish(staging, tmp_path / "step-00000004")
    assert synced[-1] == str(tmp_path)  # the parent folder, after the rename
    assert {str(staging / files.MODEL_FILE), str(staging / files.INFO_FILE), str(staging)} <= set(synced[:-1])


def test_pruning_unlinks_a_linked_step_and_keeps_finished_weights(tmp_path):
    parent = make_checkpoint(tmp_path / "trunk", 2)
    run = tmp_path / "branch"
    run.mkdir()
    (run / parent.name).symlink_to(parent, target_is_directory=True)  # the paper's symlink_chkpts.sh
    make_checkpoint(run, 3, final=True)
    os.replace(run / files.FINAL, run / "step-00000003")  # a finished run's final weights, kept under their step
    for step in (4, 6):
        make_checkpoint(run, step)
    assert files.prune(run, 1, set()) == [run / "step-00000002", run / "step-00000004"]
    assert sorted(p.name for p in run.iterdir()) == ["step-00000003", "step-00000006"]
    assert (parent / files.MODEL_FILE).read_bytes() == b"weights"  # the link was removed, not what it pointed at


def test_a_new_final_keeps_the_old_one_under_its_step(tmp_path):
    make_checkpoint(tmp_path, 6, final=True)
    assert files.keep_finished(tmp_path) == tmp_path / "step-00000006"
    assert not (tmp_path / files.FINAL).exists()
    assert json.loads((tmp_path / "step-00000006" / files.INFO_FILE).read_text()) == {"step": 6, "final": True}
    make_checkpoint(tmp_path, 6, final=True)  # a step folder of that step with other files: another name
    assert files.keep_finished(tmp_path) == tmp_path / "final-step-00000006"
    assert files.keep_finished(tmp_path) is None
    step = make_checkpoint(tmp_path, 8)
    final = tmp_path / files.FINAL
    final.mkdir()
    os.link(step / files.MODEL_FILE, final / files.MODEL_FILE)  # final/ and step-8 of one save
    (final / files.INFO_FILE).write_text(json.dumps({"step": 8, "final": True}))
    assert files.keep_finished(tmp_path) == step and not final.exists()
    assert json.loads((step / files.INFO_FILE).read_text()) == {"step": 8, "final": True}  # never pruned now
