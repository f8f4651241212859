"""Every key of every config group is consumed or refused: a field that nothing reads and nothing refuses would be
a setting a user writes and the run silently ignores. Every key is pinned with the module that reads it, or with the
refusal it gets (tested), so a new field fails here until it is classified deliberately."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.data.module import ShardedMixedDataset
from midtrain.train.args import EvalArgs, LogArgs, TrainArgs
from midtrain.train.settings import COMMAND_FIELDS
from tests.integration.train_helpers import tiny_config, write_config

PACKAGE = Path(__file__).resolve().parents[2] / "midtrain"

# (group, key) -> (the flags to try, the refusal it must get); every other field must be read somewhere. The fork's
# own keys are read (ignored, with a warning) in its dialect, which they select by themselves; in midtrain's they
# are refused
REFUSED = {
    ("train", "epochs"): ("--train.epochs=3", "is not used by pretraining"),
    ("train", "init_lr"): ("--train.init_lr=0.1 --train.dialect=midtrain", "belong to the paper fork's dialect"),
    ("train", "initial_sampling_rate"): (
        "--train.initial_sampling_rate=x --train.dialect=midtrain",
        "belong to the paper fork's dialect",
    ),
    ("train", "episode_length"): (
        "--train.episode_length=2 --train.dialect=midtrain",
        "belong to the paper fork's dialect",
    ),
    ("train", "freeze_sampling_rate"): (
        "--train.freeze_sampling_rate=true --train.dialect=midtrain",
        "belong to the paper fork's dialect",
    ),
    ("train", "data_scheduler"): (
        "--train.data_scheduler=linear --train.dialect=midtrain",
        "belong to the paper fork's dialect",
    ),
    ("train", "reset_optimizer"): ("--train.reset_optimizer=true", "this run starts from scratch"),
    ("eval", "max_new_tokens"): ("--eval.max_new_tokens=5", "is for fine-tuning"),
    ("eval", "evaluate_example"): ("--eval.evaluate_example=random", "is for fine-tuning"),
    ("log", "teamspace"): ("--log.teamspace=x", "litgpt's LitLogger"),
    ("log", "metadata"): ('--log.metadata={"a":"b"}', "litgpt's LitLogger"),
    ("log", "log_model"): ("--log.log_model=true", "litgpt's LitLogger"),
    ("log", "save_logs"): ("--log.save_logs=false", "litgpt's LitLogger"),
    ("log", "checkpoint_name"): ("--log.checkpoint_name=x", "litgpt's LitLogger"),
    ("log", "project"): ("--log.project=x", "names a wandb project, but --logger_name=csv"),
    ("log", "run"): ("--log.run=x", "names a wandb run, but --logger_name=csv"),
    ("log", "group"): ("--log.group=x", "names a wandb group, but --logger_name=csv"),
}


def fields() -> list[tuple[str, str]]:
    groups = {"train": TrainArgs, "eval": EvalArgs, "log": LogArgs, "data": ShardedMixedDataset}
    keys = [("", name) for name in COMMAND_FIELDS]
    keys += [(group, f.name) for group, cls in groups.items() for f in dataclasses.fields(cls) if f.init]
    return keys


# Every key the pretrain command takes that a run consumes, and the module that reads it: a new key fails
# test_every_key_is_pinned until it is added here (or to REFUSED) deliberately, as torchtitan pins its config.
CONSUMED = {
    "model_name": "train/model_rule.py",
    "model_config": "train/model_rule.py",
    "out_dir": "train/run_dir.py",
    "precision": "train/devices.py",
    "initial_checkpoint_dir": "train/restore.py",
    "resume": "train/restore.py",
    "data": "train/startup.py",
    "train": "train/startup.py",
    "eval": "train/startup.py",
    "log": "train/metrics.py",
    "optimizer": "train/optimizer.py",
    "devices": "train/devices.py",
    "strategy": "train/devices.py",
    "num_nodes": "train/devices.py",
    "tokenizer_dir": "train/checkpointer.py",
    "logger_name": "train/metrics.py",
    "seed": "train/run.py",
    "branch_from": "train/restore.py",
    "branch_from_step": "train/restore.py",
    "anneal": "train/run.py",
    "accelerator": "train/devices.py",
    "compile": "train/devices.py",
    "train.save_interval": "train/loop.py",
    "train.log_interval": "train/loop.py",
    "train.global_batch_size": "train/budget.py",
    "train.micro_batch_size": "train/budget.py",
    "train.lr_warmup_steps": "train/lr_schedule.py",
    "train.lr_warmup_fraction": "train/lr_schedule.py",
    "train.max_tokens": "train/budget.py",
    "train.max_steps": "train/budget.py",
    "train.max_time": "train/budget.py",
    "train.max_seq_length": "train/startup.py",
    "train.tie_embeddings": "train/run.py",
    "train.max_norm": "train/loop.py",
    "train.min_lr": "train/lr_schedule.py",
    "train.max_additional_steps": "train/budget.py",
    "train.max_iters": "train/budget.py",
    "train.lr_scheduler": "train/lr_schedule.py",
    "train.stable_steps": "train/lr_schedule.py",
    "train.decay_fraction": "train/lr_schedule.py",
    "train.max_lr": "train/optimizer.py",
    "train.lr_warmup_iters": "train/lr_schedule.py",
    "train.lr_horizon_iters": "train/lr_schedule.py",
    "train.lr_iter_offset": "train/lr_schedule.py",
    "train.lr_decay_shape": "train/lr_schedule.py",
    "train.steps_from_branch": "train/budget.py",
    "train.tokens_from_branch": "train/budget.py",
    "train.average": "train/averaging.py",
    "train.rewarm_steps": "train/startup.py",
    "train.activation_checkpointing": "train/run.py",
    "train.keep_last_checkpoints": "train/checkpointer.py",
    "train.keep_checkpoint_steps": "train/loop.py",
    "train.dialect": "train/fork_dialect.py",
    "eval.interval": "train/loop.py",
    "eval.max_iters": "train/run.py",
    "eval.initial_validation": "train/loop.py",
    "eval.final_validation": "train/loop.py",
    "eval.gold_sets": "train/startup.py",
    "data.mix_weights_str": "data/spec.py",
    "data.mix_weights": "data/spec.py",
    "data.literal_weights_str": "data/spec.py",
    "data.mix_config_path": "data/spec.py",
    "data.proportional_sampling": "data/spec.py",
    "data.domain_split": "data/spec.py",
    "data.data_path": "data/mixture.py",
    "data.val_data_path": "data/mixture.py",
    "data.mix_schedule": "data/mix_schedule.py",
    "data.mix_controller": "data/mix_controller.py",
    "data.domain_prefixes": "data/domains.py",
    "data.max_passes": "data/plan.py",
    "data.sampling": "data/module.py",
    "data.seed": "data/shard_reader.py",
    "data.num_workers": "data/stream.py",
    "data.allow_tokenizer_mismatch": "data/token_check.py",
    "data.val_samples_per_domain": "data/module.py",
    "data.allow_data_change": "data/module.py",
    "data.order_seed": "data/shard_reader.py",
}


def test_every_key_is_pinned_as_consumed_or_refused():
    keys = {f"{group}.{name}" if group else name for group, name in fields()}
    refused = {f"{group}.{name}" if group else name for group, name in REFUSED}
    assert keys == set(CONSUMED) | refused, (sorted(keys - set(CONSUMED) - refused), sorted(set(CONSUMED) - keys))
    assert not set(CONSUMED) & refused
    wrong = [f"{key}: {module}" for key, module in CONSUMED.items()
             if key.rpartition(".")[2] not in (PACKAGE / module).read_text()]
    assert wrong == []


@pytest.mark.parametrize("key", sorted(REFUSED), ids=lambda k: ".".join(k))
def test_each_refused_field_is_refused_before_anything_is_written(train_root, tmp_path, capsys, key):
    flag, message = REFUSED[key]
    path = write_config(tmp_path / "c.yaml", tiny_config(train_root, tmp_path / "out", max_steps=2))
    assert main(["pretrain", "--config", str(path), *flag.split(), "--dry_run=true"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
