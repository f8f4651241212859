"""Every key of every config group is consumed or refused: a field that nothing reads and nothing refuses would be
a setting a user writes and the run silently ignores. A new field fails this test until it is classified here."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from litgpt.args import LogArgs

from midtrain.cli import main
from midtrain.data.module import ShardedMixedDataset
from midtrain.train.args import EvalArgs, TrainArgs
from midtrain.train.settings import COMMAND_FIELDS
from tests.integration.train_helpers import tiny_config, write_config

PACKAGE = Path(__file__).resolve().parents[2] / "midtrain"
DEFINITIONS = {"train/args.py", "train/settings.py", "data/mixture.py"}

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


def names_read() -> set[str]:
    """Attribute names the package reads, and string keys it looks up, outside the modules that declare fields."""
    read: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if str(path.relative_to(PACKAGE)) in DEFINITIONS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                read.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                read.add(node.value)
            elif isinstance(node, ast.keyword) and node.arg:
                read.add(node.arg)
    return read


def test_every_field_is_consumed_or_refused():
    read = names_read()
    unread = [f"{group}.{name}" if group else name for group, name in fields()
              if (group, name) not in REFUSED and name not in read]
    assert unread == []
    assert set(REFUSED) <= set(fields())  # nothing listed that does not exist


@pytest.mark.parametrize("key", sorted(REFUSED), ids=lambda k: ".".join(k))
def test_each_refused_field_is_refused_before_anything_is_written(train_root, tmp_path, capsys, key):
    flag, message = REFUSED[key]
    path = write_config(tmp_path / "c.yaml", tiny_config(train_root, tmp_path / "out", max_steps=2))
    assert main(["pretrain", "--config", str(path), *flag.split(), "--dry_run=true"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
