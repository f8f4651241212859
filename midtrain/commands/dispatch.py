"""Running one command from its argument list: the table of commands, each imported only when it runs, and the
parsing of its config files and flags (jsonargparse, as litgpt's CLI). ``midtrain.cli`` maps what this raises to
exit statuses; the demo and ``sweep`` run other commands through it."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable

from midtrain.commands.invocation import record
from midtrain.commands.parsing import call_with_args

# Each command is imported only when it runs, so that `midtrain --help`, `mix` and `sweep` start without loading
# torch, litgpt or lightning (`pretrain`, `eval` and `similarity` need them anyway).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": ("midtrain.commands.prepare", "prepare", "Tokenize raw text into one shard, with a held-out shard."),
    "mix": ("midtrain.commands.mix", "mix", "Print the mixture plan (for a pretrain config: the plan of that run)."),
    "pretrain": ("midtrain.commands.pretrain", "pretrain", "Pretrain (trunk) or midtrain (branch) on a mixture."),
    "port": ("midtrain.commands.port", "port", "Write a native config from a paper-fork config, same schedule."),
    "sweep": ("midtrain.commands.sweep", "sweep", "Expand a sweep spec into configs and an sbatch array."),
    "soup": ("midtrain.commands.soup", "soup", "Average the weights of several checkpoints into one."),
    "anneal": ("midtrain.commands.anneal", "anneal", "Matched anneals to LR 0 that judge data against a control."),
    "decon": ("midtrain.commands.decon", "decon", "Find evaluation and SFT items in shards; write clean shards."),
    "export": ("midtrain.commands.export", "export", "Checkpoints as Hugging Face model folders, with model cards."),
    "eval": ("midtrain.commands.eval", "evaluate", "Score every checkpoint of some runs into one table."),
    "similarity": ("midtrain.commands.similarity", "similarity", "Similarity of corpora and bridge lengths."),
    "recommend": ("midtrain.commands.recommend", "recommend", "Rank midtraining data for a target, before training."),
    "analyze": ("midtrain.commands.analyze", "analyze", "A grid's effects against its controls, with intervals."),
    "demo": ("midtrain.commands.demo", "demo", "The whole idea on a laptop, offline."),
}


# flags of a list a user may give several times (``--target a=x --target b=y``), as well as one list
REPEATABLE = {"recommend": ("--target", "--decon"), "analyze": ("--tables", "--decon"), "soup": ("--checkpoints",),
              "decon": ("--shards", "--against"), "prepare": ("--decontaminate",)}


def merge_repeated(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """Each repeatable flag given more than once (or once, as a plain value) becomes one JSON list, so the
    parser sees one value; a value that is already a list is kept as it is."""
    values: dict[str, list[str]] = {}
    rest, i = [], 0
    while i < len(argv):
        arg = argv[i]
        flag, _, inline = arg.partition("=")
        if flag in flags and (inline or i + 1 < len(argv)):
            value = inline if inline else argv[i + 1]
            i += 1 if inline else 2
            if value.lstrip().startswith("["):  # a list, as JSON or YAML writes it ('[a/final, b/final]')
                values.setdefault(flag, []).extend(_as_list(value))
            else:
                values.setdefault(flag, []).append(value)
            continue
        rest.append(arg)
        i += 1
    return rest + [f"{flag}={json.dumps(items)}" for flag, items in values.items()]


def _as_list(text: str) -> list:
    """The items of a list written as JSON or YAML (flow style); the text itself when it is no list."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return [text]
    return value if isinstance(value, list) else [text]


# flags a command also takes under another name: ``--from`` is a Python keyword, so no parameter's name; anneal's
# ``--config`` is the base config of the runs it writes, not a file of its own arguments
ALIASES = {"anneal": {"--from": "--from_checkpoint", "--config": "--base_config"}}


# commands whose first argument may be given without its flag (``midtrain export runs/code/final --out_dir hf``)
POSITIONAL = {"export": "--source"}


def rename_flags(argv: list[str], aliases: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        flag, equals, value = arg.partition("=")
        out.append(aliases[flag] + equals + value if flag in aliases else arg)
    return out


def load_command(name: str) -> Callable:
    module_name, function_name, _ = COMMANDS[name]
    return getattr(importlib.import_module(module_name), function_name)


def run_command(argv: list[str]) -> int:
    """Run ``midtrain <argv>``; returns the command's status (0 when it returns none). Raises ``ConfigError`` for
    arguments it cannot parse, and whatever the command raises."""
    record(argv)
    name = argv[0]
    function = load_command(name)
    words = argv[1:]
    if name in POSITIONAL and words and not words[0].startswith("-"):
        words = [f"{POSITIONAL[name]}={words[0]}", *words[1:]]
    words = rename_flags(merge_repeated(words, REPEATABLE.get(name, ())), ALIASES.get(name, {}))
    init = call_with_args(function, words, prog=f"midtrain {name}")
    status = function(**init)
    return status if isinstance(status, int) and not isinstance(status, bool) else 0
