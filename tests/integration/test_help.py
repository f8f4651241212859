"""Every key of every command is described in its ``--help`` (litgpt's words for the keys midtrain inherits, ours
for ours), the data module's init args included."""

from __future__ import annotations

import argparse

import pytest
from jsonargparse._formatters import empty_help

from midtrain.commands.dispatch import COMMANDS, load_command
from midtrain.commands.parsing import command_parser

# jsonargparse's own actions (help, --print_config, a group's config file) describe themselves
_OWN = {"help", "print_config", "config"}


def undescribed(parser) -> list[str]:
    missing = []
    for action in parser._actions:
        if action.dest in _OWN or action.dest.endswith(".help") or isinstance(action, argparse._HelpAction):
            continue
        text = (action.help or "").replace(empty_help, "").strip()
        if not text or text.startswith("(type:") or action.help == argparse.SUPPRESS:  # a type alone is no help
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_key_of_every_command_has_a_description(name):
    parser = command_parser(load_command(name), prog=f"midtrain {name}")
    keys = [a for a in parser._actions if a.dest not in _OWN]
    assert len(keys) >= 3
    assert undescribed(parser) == []


def test_the_data_modules_init_args_are_described_too():
    from jsonargparse import ArgumentParser

    from midtrain.data.module import ShardedMixedDataset

    parser = ArgumentParser()
    parser.add_class_arguments(ShardedMixedDataset, "data")
    assert undescribed(parser) == []
    schedule = next(a for a in parser._actions if a.dest == "data.mix_schedule")
    assert "start_step" in schedule.help and "ramp" in schedule.help


def test_inherited_keys_read_litgpts_words_and_ours_where_the_meaning_differs(capsys):
    from midtrain.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--train.save_interval SAVE_INTERVAL Number of optimizer steps between saving checkpoints" in text
    assert "--train.log_interval LOG_INTERVAL Optimizer steps between log lines" in text  # litgpt says iterations


def test_the_check_finds_a_key_without_a_description():
    def command(documented: int = 1, bare: int = 2) -> int:
        """A command.

        Args:
            documented: Described.
        """
        return 0

    assert undescribed(command_parser(command)) == ["--bare"]
