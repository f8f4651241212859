"""Reading configs strictly (duplicate keys, alias bombs, deep nesting, encodings, empty files) and the command line
rewritten for the parser (placeholders in flags, the optimizer's flags over a config)."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from midtrain.commands.argv import merge_optimizer, prepare_argv
from midtrain.config_files import MAX_EXPANDED_NODES, load_config, parse_yaml, read_yaml_mapping
from midtrain.errors import ConfigError


def write(tmp_path, text: str | bytes, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_key_written_twice_is_refused_naming_both_lines(tmp_path):
    path = write(tmp_path, "out_dir: a\ntrain:\n  max_steps: 5\n  global_batch_size: 4\ntrain:\n  micro_batch_size: "
                           "2\n")
    with pytest.raises(ConfigError, match=r"gives key 'train' twice in one mapping \(lines 2 and 5\)"):
        read_yaml_mapping(path)
    nested = write(tmp_path, "train:\n  max_steps: 5\n  max_steps: 6\n", "n.yaml")
    with pytest.raises(ConfigError, match=r"key 'max_steps' twice in one mapping \(lines 2 and 3\)"):
        read_yaml_mapping(nested)


def test_merge_keys_still_override_without_counting_as_duplicates(tmp_path):
    path = write(tmp_path, "base: &b {max_steps: 5, log_interval: 1}\ntrain:\n  <<: *b\n  max_steps: 6\n")
    assert read_yaml_mapping(path)["train"] == {"max_steps": 6, "log_interval": 1}


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert len(path.read_bytes()) < 1000
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=f"expands to more than {MAX_EXPANDED_NODES:,} values through its aliases"):
        read_yaml_mapping(path)
    assert time.perf_counter() - started < 5  # the 387-million-node document is never built (minutes, gigabytes)


def test_aliases_that_repeat_a_block_are_fine(tmp_path):
    path = write(tmp_path, "opt: &o {class_path: AdamW, init_args: {lr: 0.1}}\nfirst: *o\nsecond: *o\n")
    assert read_yaml_mapping(path)["second"]["init_args"]["lr"] == 0.1


@pytest.mark.parametrize("text", [
    "a: " + "{a: " * 5000 + "${X}" + "}" * 5000,
    "a:\n" + "".join("  " * i + "  b:\n" for i in range(2000)) + "  " * 2001 + "  c: 1\n",
])
def test_deep_nesting_is_refused_with_a_message(tmp_path, text):
    with pytest.raises(ConfigError, match="nests (too deeply to be read|deeper than 64 levels)"):
        read_yaml_mapping(write(tmp_path, text))


def test_encodings_empty_files_and_non_mappings_name_the_file(tmp_path):
    utf16 = write(tmp_path, "train:\n  max_steps: 5\n".encode("utf-16"), "u16.yaml")
    with pytest.raises(ConfigError, match=r"--config='.*u16.yaml' is UTF-16 or UTF-32 encoded; configs are UTF-8"):
        read_yaml_mapping(utf16)
    latin = write(tmp_path, "out_dir: caf\xe9\n".encode("latin-1"), "l.yaml")
    with pytest.raises(ConfigError, match=r"is not UTF-8 \(byte 12 is 0xe9\)"):
        read_yaml_mapping(latin)
    bom = write(tmp_path, "\ufeffout_dir: x\n".encode("utf-8"), "bom.yaml")
    assert read_yaml_mapping(bom) == {"out_dir": "x"}
    with pytest.raises(ConfigError, match=r"--config='.*e.yaml' is empty"):
        read_yaml_mapping(write(tmp_path, "", "e.yaml"))
    with pytest.raises(ConfigError, match=r"--config='.*list.yaml' holds a list, not a mapping"):
        read_yaml_mapping(write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(ConfigError, match=r"--spec='.*bad.yaml' cannot be read as YAML"):
        read_yaml_mapping(write(tmp_path, "a: [1, 2\n", "bad.yaml"), "--spec")


def test_placeholders_expand_and_a_missing_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MT_ROOT", "/scratch/me")
    path = write(tmp_path, "out_dir: ${MT_ROOT}/runs/a\ndata:\n  class_path: litgpt.data.ShardedMixedDataset\n")
    config = load_config(path)
    assert config["out_dir"] == "/scratch/me/runs/a"
    assert config["data"]["class_path"] == "midtrain.data.ShardedMixedDataset" and config["train"]["dialect"] == "fork"
    monkeypatch.delenv("MT_ROOT")
    with pytest.raises(ConfigError, match=r"uses \$\{MT_ROOT\} but the environment does not set MT_ROOT"):
        load_config(path)


def command(out_dir: str = "out", optimizer: str | dict = "AdamW", dry_run: bool = False) -> int:
    """A stand-in command with an optimizer key, like pretrain's."""
    return 0


def test_placeholders_in_command_line_values_expand_like_in_files(monkeypatch):
    monkeypatch.setenv("MYROOT", "/data/runs")
    assert prepare_argv(command, ["--out_dir", "${MYROOT}/a", "--dry_run=true"]) == ["--out_dir", "/data/runs/a",
                                                                                   "--dry_run", "true"]
    assert prepare_argv(command, ["--out_dir=${MYROOT}/b"]) == ["--out_dir", "/data/runs/b"]
    monkeypatch.delenv("MYROOT")
    with pytest.raises(ConfigError, match=r"--out_dir='\$\{MYROOT\}/a' uses \$\{MYROOT\} but the environment"):
        prepare_argv(command, ["--out_dir", "${MYROOT}/a"])


def test_optimizer_flags_override_a_config_mapping_key_by_key(tmp_path):
    config = write(tmp_path, "optimizer:\n  class_path: torch.optim.AdamW\n  init_args: {lr: 0.003, weight_decay: "
                             "0.1}\n")
    argv = prepare_argv(command, ["--config", str(config), "--optimizer.init_args.lr", "1e6"])
    assert "optimizer" not in yaml.safe_load(argv[1])  # the config's optimizer key moved into one flag
    assert json.loads(argv[-1].split("=", 1)[1]) == {"class_path": "torch.optim.AdamW",
                                                     "init_args": {"lr": "1e6", "weight_decay": 0.1}}
    assert merge_optimizer({"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.1}},
                           [("--optimizer.class_path", "torch.optim.SGD"), ("--optimizer.lr", 0.5)]) == {
        "class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}}
    assert merge_optimizer("AdamW", [("--optimizer", {"class_path": "torch.optim.SGD", "init_args": {"lr": 1}})]) == {
        "class_path": "torch.optim.SGD", "init_args": {"lr": 1}}
    assert merge_optimizer("AdamW", [("--optimizer.init_args.lr", 0.2)]) == {"class_path": "AdamW",
                                                                           "init_args": {"lr": 0.2}}


def test_yaml_values_are_read_by_the_strict_reader_too():
    with pytest.raises(ConfigError, match="gives key 'lr' twice"):
        parse_yaml("{lr: 1, lr: 2}", "--optimizer")
