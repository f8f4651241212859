"""A run's identity under hostile use: one lineage per folder, a diverging run that publishes nothing untrusted, a
model or data changed under a resume refused, settings the user may not expect said, paths and values that cannot
work refused before anything is written (see docs/faults.md for the table)."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import subprocess

import pytest
import torch

from midtrain.cli import main
from tests.helpers import write_token_shard
from tests.integration.train_helpers import losses, read_json, tiny_config, write_config

TRUNK_STEPS = 6


@pytest.fixture(scope="module")
def trunk(train_root, tmp_path_factory):
    """A 6-step trunk with checkpoints at steps 2 and 4 and final/ at 6."""
    out = tmp_path_factory.mktemp("integrity") / "trunk"
    config = tiny_config(train_root, out, max_steps=TRUNK_STEPS, save_interval=2)
    assert main(["pretrain", "--config", str(write_config(out.parent / "t.yaml", config))]) == 0
    return out


def copy_run(run, tmp_path, name="copy"):
    return pathlib.Path(shutil.copytree(run, tmp_path / name, symlinks=True))


def pretrain(config, tmp_path, *flags, name="c.yaml") -> int:
    return main(["pretrain", "--config", str(write_config(tmp_path / name, config)), *flags])


def folders(out) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(("step-", "final")))


# ---- one lineage per run folder ----

def test_a_branch_into_its_trunks_own_folder_is_refused(train_root, trunk, tmp_path, capsys):
    run = copy_run(trunk, tmp_path)
    before = (run / "config.yaml").read_bytes(), folders(run)
    config = tiny_config(train_root, run, mix="main:0.5,code:0.5", max_steps=TRUNK_STEPS)
    config["branch_from"] = str(run / "step-00000002")
    assert pretrain(config, tmp_path) == 2
    assert "is a checkpoint of the run in --out_dir=" in capsys.readouterr().err
    assert ((run / "config.yaml").read_bytes(), folders(run)) == before
    ledger = read_json(run / "final" / "ledger.json")
    assert set(ledger["domains"]) == {"main"}  # the trunk read no code


def test_a_re_pointed_branch_and_a_branch_at_the_horizon_are_refused(train_root, trunk, tmp_path, capsys):
    config = tiny_config(train_root, tmp_path / "b", mix="main:0.5,code:0.5", max_steps=TRUNK_STEPS,
                         max_additional_steps=1)
    config["branch_from"] = str(trunk / "step-00000002")
    assert pretrain(config, tmp_path) == 0
    config["branch_from"] = str(trunk / "step-00000004")
    assert pretrain(config, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"holds a branch from {trunk / 'step-00000002'} (step 2), but --branch_from=" in err
    assert folders(tmp_path / "b") == ["step-00000003"]
    config.update(out_dir=str(tmp_path / "late"), branch_from=str(trunk / "final"))
    assert pretrain(config, tmp_path) == 2
    assert "is at step 6, at or past this run's end (step 6" in capsys.readouterr().err
    assert not (tmp_path / "late").exists()


# ---- divergence ----

@pytest.mark.parametrize("max_norm", [None, 1.0])
def test_a_diverging_run_stops_with_one_line_and_publishes_nothing_after_it(train_root, tmp_path, capsys, max_norm):
    out = tmp_path / "d"
    config = tiny_config(train_root, out, max_steps=8, save_interval=1, keep_last_checkpoints=1, max_norm=max_norm)
    config["optimizer"]["init_args"]["lr"] = 1e6
    assert pretrain(config, tmp_path) == 3
    output = capsys.readouterr().out
    assert "Diverged: train/loss is nan at step 3 (the first non-finite value)" in output
    assert f"the last good checkpoint is {out / 'step-00000002'} (step 2)" in output
    assert "total norm" not in output and folders(out) == ["step-00000002"]
    weights = torch.load(out / "step-00000002" / "lit_model.pth", weights_only=False)["model"]
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_peak_lrs_that_cannot_work_are_refused_before_training(train_root, tmp_path, capsys, monkeypatch):
    config = tiny_config(train_root, tmp_path / "lr", max_steps=4)
    assert pretrain(config, tmp_path, "--train.max_lr=.inf", "--dry_run=true") == 2
    assert "--train.max_lr=inf: the peak LR must be a positive, finite number" in capsys.readouterr().err
    config["optimizer"]["init_args"]["lr"] = "abc"
    assert pretrain(config, tmp_path, "--dry_run=true") == 2
    assert "--optimizer.init_args.lr='abc' is not a number" in capsys.readouterr().err
    monkeypatch.setenv("MIDTRAIN_TEST_LR", "0.001 # the peak")
    config["optimizer"]["init_args"]["lr"] = "${MIDTRAIN_TEST_LR}"
    assert pretrain(config, tmp_path, "--dry_run=true") == 2
    assert "--optimizer.init_args.lr='0.001 # the peak' is not a number" in capsys.readouterr().err
    assert not (tmp_path / "lr").exists()


# ---- the same model, the same data ----

def test_another_model_under_a_resume_is_refused_naming_each_field(train_root, trunk, tmp_path, capsys):
    run = copy_run(trunk, tmp_path)
    shutil.rmtree(run / "final")
    config = tiny_config(train_root, run, max_steps=TRUNK_STEPS, save_interval=2)
    config["model_config"].update(rope_base=20000, parallel_residual=False)  # the tensors keep their shapes
    assert pretrain(config, tmp_path, "--dry_run=true") == 2
    err = capsys.readouterr().err
    assert "the configured model differs from the one the checkpoint" in err
    assert "parallel_residual True -> False" in err and "rope_base 10000 -> 20000" in err


def rewrite_in_place(chunk: pathlib.Path) -> None:
    """Other bytes, the same size: what a re-prepared shard with reordered documents looks like to a stat."""
    data = bytearray(chunk.read_bytes())
    body = data[-64:]
    data[-64:] = body[32:] + body[:32]
    chunk.write_bytes(bytes(data))


def test_a_shard_changed_under_a_resume_is_refused_unless_allowed(train_root, tmp_path, capsys):
    root = pathlib.Path(shutil.copytree(train_root, tmp_path / "data"))
    write_token_shard(root / "train" / "2", 2500, 400, doc_tokens=50, chunk_tokens=512)
    out = tmp_path / "run"
    config = tiny_config(root, out, max_steps=6, save_interval=2)
    assert pretrain(config, tmp_path, "--train.max_additional_steps=2") == 0
    rewrite_in_place(sorted((root / "train" / "1").glob("chunk-*.bin"))[0])
    assert pretrain(config, tmp_path, "--dry_run=true") == 2
    err = capsys.readouterr().err
    assert "is not what the checkpoint read, so its cursors would point at other samples" in err
    assert "changed: main/1" in err and "records no content hashes" in err
    assert pretrain(config, tmp_path, "--data.allow_data_change=true", "--train.max_additional_steps=1") == 0
    last = read_json(out / "run.json")["invocations"][-1]
    assert any("--data.allow_data_change=true: continuing although the data changed" in n for n in last["notices"])
    write_token_shard(root / "train" / "3", 3500, 400, doc_tokens=50, chunk_tokens=512)  # a main shard added
    assert pretrain(config, tmp_path, "--dry_run=true") == 2
    assert "added: main/3" in capsys.readouterr().err
    shutil.rmtree(root / "train" / "3")
    shutil.rmtree(root / "train" / "2")
    assert pretrain(config, tmp_path, "--dry_run=true") == 2
    assert "removed: main/2 (read by the checkpoint's run)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def prepared_data(tmp_path_factory, tokenizer_dir):
    """main and code shards (with held-out splits) written by 'midtrain prepare': manifests with chunk hashes."""
    raw = tmp_path_factory.mktemp("raw")
    (raw / "main.jsonl").write_text(
        "".join(f'{{"text": "the {i} river runs past {i} hills"}}\n' for i in range(300))
    )
    (raw / "code.jsonl").write_text("".join(f'{{"text": "def f_{i}(x):\\n    return x * {i}\\n"}}\n'
                                            for i in range(300)))
    root = tmp_path_factory.mktemp("prepared")
    for name, source in (("1", "main"), ("c1", "code")):
        assert main(["prepare", "--inputs", str(raw / f"{source}.jsonl"), "--tokenizer_dir", str(tokenizer_dir),
                     "--output_dir", str(root / "train" / name), "--val_fraction", "0.1", "--chunk_tokens", "256"]) == 0
    return root


@pytest.mark.slow
def test_a_copied_root_resumes_and_a_chunk_rewritten_in_place_is_named(prepared_data, tmp_path, capsys):
    out = tmp_path / "run"
    config = tiny_config(prepared_data, out, mix="main:0.5,code:0.5", max_steps=6, save_interval=2)
    assert pretrain(config, tmp_path, "--train.max_additional_steps=2") == 0
    copied = pathlib.Path(shutil.copytree(prepared_data, tmp_path / "copied", copy_function=shutil.copy))  # new mtimes
    moved = {**config, "data": {**config["data"], "init_args": {**config["data"]["init_args"],
                                                                "data_path": str(copied)}}}
    assert pretrain(moved, tmp_path, "--dry_run=true") == 0  # equal contents: the hashes agree
    chunk = sorted((copied / "train" / "c1").glob("chunk-*.bin"))[0]
    times = chunk.stat()
    rewrite_in_place(chunk)
    os.utime(chunk, ns=(times.st_atime_ns, times.st_mtime_ns))  # its time put back, as cp -p and rsync -a do
    assert chunk.stat().st_mtime_ns == times.st_mtime_ns
    assert pretrain(moved, tmp_path, "--dry_run=true") == 2
    assert "holds other bytes than its manifest records (rewritten in place)" in capsys.readouterr().err


# ---- what a user may not expect is said ----

def test_resume_notices_batch_validation_precision_and_the_run_folder(train_root, trunk, tmp_path, capsys, monkeypatch):
    run = copy_run(trunk, tmp_path)
    shutil.rmtree(run / "final")
    config = tiny_config(train_root, run, max_steps=TRUNK_STEPS, save_interval=2)
    assert pretrain(config, tmp_path, "--train.global_batch_size=8", "--data.val_samples_per_domain=0",
                    "--precision=16-mixed", "--dry_run=true") == 0
    printed = capsys.readouterr().out
    assert (
        "--train.global_batch_size=8 differs from the checkpoint's 4: each step now reads 128 tokens (was 64" in printed
    )
    assert "--data.val_samples_per_domain=0 turns validation off" in printed
    assert "--precision=16-mixed runs as bf16-mixed on CPU" in printed and "precision bf16-mixed" in printed
    monkeypatch.chdir(tmp_path)
    fresh = tiny_config(train_root, "relative/out", max_steps=4)
    fresh["eval"]["max_iters"] = 0
    fresh["data"]["init_args"]["val_samples_per_domain"] = None
    assert pretrain(fresh, tmp_path, "--dry_run=true") == 0
    printed = capsys.readouterr().out
    assert f"Run folder: {tmp_path / 'relative' / 'out'}" in printed
    assert "Start: from scratch (--resume=auto found no checkpoint in the run folder)" in printed
    assert "--eval.max_iters=0 turns validation off" in printed


def test_schedule_phases_past_the_end_or_edited_after_reading_are_said(train_root, tmp_path, capsys):
    config = tiny_config(train_root, tmp_path / "s", max_steps=6, save_interval=2)
    init_args = config["data"]["init_args"]
    init_args.pop("mix_weights_str")
    init_args["mix_schedule"] = [{"start_step": 0, "mix_weights_str": "main:1.0"},
                                 {"start_step": 1, "mix_weights_str": "main:0.5,code:0.5"},
                                 {"start_step": 9, "mix_weights_str": "main:0.5,math:0.5"}]
    assert pretrain(config, tmp_path, "--train.max_additional_steps=2") == 0
    assert "--data.mix_schedule[2] start(s) at step 9, at or after the run's end (step 6): never read" in \
        capsys.readouterr().out
    init_args["mix_schedule"][1]["mix_weights_str"] = "main:0.25,code:0.75"
    assert pretrain(config, tmp_path, "--dry_run=true") == 0
    assert "--data.mix_schedule[1] differ from what the run read (those phases began before step 2)" in \
        capsys.readouterr().out
    assert (
        len(read_json(tmp_path / "s" / "run.json")["invocations"][0]["config"]["data"]["init_args"]["mix_schedule"])
        == 3
    )


def test_short_or_swapped_held_out_sets_and_missing_tokenizer_files_are_said(train_root, trunk, tokenizer_dir, tmp_path,
                                                                            capsys):
    root = pathlib.Path(shutil.copytree(train_root, tmp_path / "data"))
    shutil.rmtree(root / "val" / "m1")
    write_token_shard(root / "val" / "m1", 3700, 12, doc_tokens=12, chunk_tokens=12)  # shorter than one sequence
    shutil.rmtree(root / "val" / "c1")
    write_token_shard(root / "val" / "c1", 2950, 100, doc_tokens=50, chunk_tokens=512)  # another set, the same size
    start = copy_run(trunk / "step-00000004", tmp_path, "start")
    shutil.copy(tokenizer_dir / "tokenizer.json", start / "tokenizer.json")
    config = tiny_config(root, tmp_path / "b", mix="main:0.5,code:0.5", max_steps=TRUNK_STEPS, max_additional_steps=1)
    config["branch_from"] = str(start)
    assert pretrain(config, tmp_path) == 0
    printed = capsys.readouterr().out
    assert "the held-out shards of math hold no whole sequence of 17 tokens" in printed
    assert f"no --tokenizer_dir: the checkpoints get the tokenizer files of {start}" in printed
    assert "the held-out set of code differs from the one the checkpoint's run validated on" in printed
    assert (tmp_path / "b" / "step-00000005" / "tokenizer.json").read_bytes() == (
        tokenizer_dir / "tokenizer.json"
    ).read_bytes()


def test_logged_losses_are_the_same_whatever_the_interruptions(train_root, tmp_path):
    reference, interrupted = tmp_path / "r", tmp_path / "i"
    assert pretrain(tiny_config(train_root, reference, max_steps=12, log_interval=4), tmp_path, name="r.yaml") == 0
    config = tiny_config(train_root, interrupted, max_steps=12, log_interval=4, save_interval=100)
    assert pretrain(config, tmp_path, "--train.max_additional_steps=6") == 0  # saves at step 6, between log steps
    assert pretrain(config, tmp_path) == 0
    assert sorted(losses(interrupted)) == [4, 8, 12]
    assert losses(interrupted) == pytest.approx(losses(reference), rel=1e-6)


# ---- where a run may live ----

def test_out_dirs_that_cannot_hold_a_run_are_refused_by_the_dry_run(train_root, tmp_path, capsys):
    config = tiny_config(train_root, train_root / "train" / "runs" / "a", max_steps=4)
    assert pretrain(config, tmp_path, "--dry_run=true") == 2
    assert "is inside the data root --data.data_path=" in capsys.readouterr().err
    assert pretrain(config, tmp_path, f"--out_dir={tmp_path / ('x' * 300) / 'run'}", "--dry_run=true") == 2
    assert "bytes long; this file system allows 255" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert pretrain(config, tmp_path, f"--out_dir={tmp_path / 'a-file'}", "--dry_run=true") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("neither chattr nor permission bits can make a folder read-only for root here")
        locked.chmod(0o500)
    try:
        assert pretrain(config, tmp_path, f"--out_dir={locked / 'run'}", "--dry_run=true") == 2
        assert f"--out_dir='{locked / 'run'}' cannot be created: {locked} cannot be written" in capsys.readouterr().err
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
        locked.chmod(0o700)


def test_a_save_that_cannot_create_its_folder_exits_75(train_root, tmp_path, capsys, monkeypatch):
    real = pathlib.Path.mkdir

    def no_inodes(self, *args, **kwargs):
        if self.name.endswith(".partial") and self.name.startswith(".step-00000004"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", no_inodes)
    out = tmp_path / "n"
    assert pretrain(tiny_config(train_root, out, max_steps=8, save_interval=2), tmp_path) == 75
    printed = capsys.readouterr().out
    assert "saving step-00000004 failed ([Errno 28] No space left on device" in printed
    assert folders(out) == ["step-00000002"]


def test_linked_parent_steps_are_unlinked_by_retention_never_followed(train_root, trunk, tmp_path, capsys):
    out = tmp_path / "linked"
    out.mkdir()
    (out / "step-00000004").symlink_to(trunk / "step-00000004", target_is_directory=True)
    config = tiny_config(train_root, out, mix="main:0.5,code:0.5", max_steps=TRUNK_STEPS, save_interval=1,
                         keep_last_checkpoints=1)
    config["resume"] = True
    assert pretrain(config, tmp_path) == 0
    assert folders(out) == ["final", "step-00000006"]
    assert (trunk / "step-00000004" / "lit_model.pth").is_file()
    assert "Could not remove" not in capsys.readouterr().err


def test_a_damaged_run_config_given_to_eval_is_named(trunk, tmp_path, capsys):
    run = copy_run(trunk, tmp_path)
    (run / "config.yaml").write_text("train: [unclosed\n")
    assert main(["eval", f"--runs={run}", f"--out_dir={tmp_path / 'eval'}", "--plot=false"]) == 2
    err = capsys.readouterr().err
    assert f"--runs: {run / 'config.yaml'} cannot be read as YAML" in err and "repair it" in err


def test_similarity_refuses_a_control_the_table_does_not_have(train_root, tmp_path, capsys):
    from midtrain.eval.results import COLUMNS, ResultsTable

    table = ResultsTable(tmp_path / "eval")
    table.append([{**dict.fromkeys(COLUMNS), "run": run, "kind": "set", "name": "sft", "metric": "loss", "value": 1.0,
                   "step": 4, "settings": "s", "checkpoint": f"/c/{run}"} for run in ("code", "trunk")])
    corpora = [
        f"main={train_root / 'val' / '1'}",
        f"code={train_root / 'val' / 'c1'}",
        f"sft={train_root / 'val' / 'm1'}",
    ]
    assert main(["similarity", f"--corpora={json.dumps(corpora)}", "--pretrain=main", "--mixes=[code]", "--sft=[sft]",
                 f"--eval_table={tmp_path / 'eval' / 'eval.csv'}", "--control=control",
                 f"--out_dir={tmp_path / 'sim'}"]) == 2
    assert "--control='control' is not a run of --eval_table=" in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()


def test_optimizer_flags_override_a_config_that_gives_a_mapping(train_root, tmp_path, capsys):
    from midtrain.commands.parsing import call_with_args
    from midtrain.commands.pretrain import pretrain as pretrain_command

    path = write_config(tmp_path / "o.yaml", tiny_config(train_root, tmp_path / "o", max_steps=4))
    assert call_with_args(pretrain_command, ["--config", str(path), "--optimizer.init_args.lr", "0.5"])[
        "optimizer"
    ] == {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.5, "weight_decay": 0.1, "betas": [0.9, 0.95]}}
    sgd = call_with_args(pretrain_command, ["--config", str(path), "--optimizer",
                                            "{class_path: torch.optim.SGD, init_args: {lr: 0.1}}"])["optimizer"]
    assert sgd == {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}
    assert main(["pretrain", "--config", str(path), "--optimizer.init_args.lr", "1e-2", "--dry_run=true"]) == 0
    assert "LR: cosine, peak 0.01," in capsys.readouterr().out


def test_a_sweep_submitted_without_sbatch_and_its_list_file(train_root, tmp_path, capsys, monkeypatch):
    write_config(tmp_path / "base.yaml", tiny_config(train_root, tmp_path / "unused", max_steps=4))
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"base": "base.yaml", "out_root": "${MIDTRAIN_TEST_RUNS2}",
                                "axes": {"log.run": ["one\ntwo", "x" * 300]}}))
    monkeypatch.setenv("MIDTRAIN_TEST_RUNS2", str(tmp_path / "runs"))
    monkeypatch.setenv("MIDTRAIN_TEST_SWEEP", str(tmp_path / "sweep"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert main(["sweep", "--spec", str(spec), "--out_dir", "${MIDTRAIN_TEST_SWEEP}", "--validate=false",
                 "--submit=true"]) == 2
    assert "--submit=true, but sbatch is not on PATH here" in capsys.readouterr().err
    listed = (tmp_path / "sweep" / "configs.txt").read_text().splitlines()
    assert len(listed) == 2 and all(pathlib.Path(p).is_file() and len(pathlib.Path(p).name) <= 69 for p in listed)


def test_a_duplicate_key_in_a_run_config_is_refused_before_anything_is_written(train_root, tmp_path, capsys):
    path = write_config(tmp_path / "d.yaml", tiny_config(train_root, tmp_path / "d", max_steps=4))
    path.write_text(path.read_text() + "train:\n  global_batch_size: 512\n")
    assert main(["pretrain", "--config", str(path)]) == 2
    assert "gives key 'train' twice in one mapping" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_two_configs_that_share_an_out_dir_are_two_experiments_not_one(train_root, trunk, tmp_path, capsys):
    """The paper's 1b FLAN and KnowledgeQA branches name one out_dir: the second must not continue the first."""
    out = tmp_path / "shared"
    out.mkdir()
    (out / "step-00000004").symlink_to(trunk / "step-00000004", target_is_directory=True)
    first = tiny_config(train_root, out, mix="main:0.5,code:0.5", max_steps=TRUNK_STEPS)
    first["resume"] = True
    assert pretrain(first, tmp_path, name="flan.yaml") == 0
    second = {**first, "data": {**first["data"], "init_args": {**first["data"]["init_args"],
                                                               "mix_weights_str": "main:0.5,math:0.5"}}}
    assert pretrain(second, tmp_path, "--dry_run=true", name="qa.yaml") == 2
    err = capsys.readouterr().err
    assert "holds a run with another mixture (mix_weights_str 'main:0.5,code:0.5' -> 'main:0.5,math:0.5'" in err
    assert pretrain(first, tmp_path, name="flan.yaml") == 0  # the first, rerun, is finished as before
    assert "already finished" in capsys.readouterr().out
