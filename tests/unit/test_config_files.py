"""Reading configs strictly (duplicate keys, alias bombs, deep nesting, encodings, empty files) and the command line
rewritten for the parser (placeholders in flags, the optimizer's flags over a config)."""

from __future__ import annotations

import json
import re
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
    monkeypatch.setenv("MIDTRAIN_TEST_ROOT", "/scratch/me")
    path = write(tmp_path, "out_dir: ${MIDTRAIN_TEST_ROOT}/runs/a\ndata:\n  class_path: "
                           "litgpt.data.ShardedMixedDataset\n")
    config = load_config(path)
    assert config["out_dir"] == "/scratch/me/runs/a"
    assert config["data"]["class_path"] == "midtrain.data.ShardedMixedDataset" and config["train"]["dialect"] == "fork"
    monkeypatch.delenv("MIDTRAIN_TEST_ROOT")
    with pytest.raises(ConfigError, match=r"uses \$\{MIDTRAIN_TEST_ROOT\} but the environment does not set "):
        load_config(path)


def command(out_dir: str = "out", optimizer: str | dict = "AdamW", dry_run: bool = False) -> int:
    """A stand-in command with an optimizer key, like pretrain's."""
    return 0


def test_placeholders_in_command_line_values_expand_like_in_files(monkeypatch):
    monkeypatch.setenv("MIDTRAIN_MYROOT", "/data/runs")
    assert prepare_argv(command, ["--out_dir", "${MIDTRAIN_MYROOT}/a", "--dry_run=true"]) == [
        "--out_dir", "/data/runs/a", "--dry_run", "true"]
    assert prepare_argv(command, ["--out_dir=${MIDTRAIN_MYROOT}/b"]) == ["--out_dir", "/data/runs/b"]
    monkeypatch.delenv("MIDTRAIN_MYROOT")
    with pytest.raises(ConfigError, match=r"--out_dir='\$\{MIDTRAIN_MYROOT\}/a' uses \$\{MIDTRAIN_MYROOT\} but the "):
        prepare_argv(command, ["--out_dir", "${MIDTRAIN_MYROOT}/a"])


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


SECRET = "hf_SecretValue0123456789"


@pytest.mark.parametrize("name", ["HF_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
                                  "MIDTRAIN_HF_TOKEN", "GITHUB_TOKEN"])
def test_a_credential_variable_is_never_expanded_and_never_printed(tmp_path, monkeypatch, name):
    monkeypatch.setenv(name, SECRET)
    monkeypatch.setenv("MIDTRAIN_ALLOW_VARS", name)  # not even when a site allows it by name
    path = write(tmp_path, f"out_dir: runs/a\nlogger_name: wandb\nlog: {{project: '${{{name}}}'}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"uses ${{{name}}}. ${{{name}}} names a credential" in str(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        prepare_argv(command, ["--out_dir", f"${{{name}}}"])
    assert "names a credential" in str(caught.value) and SECRET not in str(caught.value)


def test_only_the_variables_a_config_needs_are_expanded(tmp_path, monkeypatch):
    for name, value in (("MIDTRAIN_DATA", "/d"), ("SLURM_JOB_ID", "42"), ("HOME", "/home/me"), ("SCRATCH", "/s"),
                        ("DSDIR", "/site"), ("OTHER", "/o")):
        monkeypatch.setenv(name, value)
    text = ("out_dir: ${SCRATCH}/${SLURM_JOB_ID}\ntokenizer_dir: ${HOME}/tok\n"
            "data: {init_args: {data_path: '${MIDTRAIN_DATA}'}}\n")
    config = load_config(write(tmp_path, text))
    assert (config["out_dir"], config["tokenizer_dir"], config["data"]["init_args"]["data_path"]) == \
        ("/s/42", "/home/me/tok", "/d")
    site = write(tmp_path, "out_dir: ${DSDIR}/runs\n", "site.yaml")
    with pytest.raises(ConfigError, match=r"uses \$\{DSDIR\}\. \$\{DSDIR\} is not a variable midtrain expands "
                                          r".* rename it MIDTRAIN_DSDIR, or add it to MIDTRAIN_ALLOW_VARS"):
        load_config(site)
    monkeypatch.setenv("MIDTRAIN_ALLOW_VARS", "DSDIR, OTHER")
    assert load_config(site)["out_dir"] == "/site/runs"


def test_a_credentials_value_typed_into_a_config_or_a_flag_is_refused_naming_the_variable(tmp_path, monkeypatch):
    """The shell expands ``$HF_TOKEN`` before midtrain sees it: the value itself is recognised."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(ConfigError) as caught:
        prepare_argv(command, ["--out_dir", f"runs/{SECRET}"])
    assert "--out_dir holds the value of $HF_TOKEN, a credential" in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"out_dir: runs\nlog: {{note: {SECRET}}}\n"))
    assert "holds the value of $HF_TOKEN" in str(caught.value) and SECRET not in str(caught.value)
    monkeypatch.setenv("SHORT_TOKEN", "1")  # too short to be a secret: ordinary values stay accepted
    assert prepare_argv(command, ["--out_dir", "runs/1"]) == ["--out_dir", "runs/1"]


@pytest.mark.parametrize("text, dotted, dotted_line, block_line", [
    ("train:\n  max_steps: 10\n  log_interval: 1\ntrain.max_steps: 5\n", "train.max_steps", 4, 1),
    ("train.lr_warmup_steps: 3\ntrain:\n  max_steps: 10\n", "train.lr_warmup_steps", 1, 2),
    ("data:\n  init_args: {data_path: /d}\ndata.init_args.mix_weights_str: main:1.0\n",
     "data.init_args.mix_weights_str", 3, 1),
])
def test_a_dotted_key_beside_its_block_is_refused_naming_both_lines(tmp_path, text, dotted, dotted_line, block_line):
    """jsonargparse lets the later of the two silently replace the earlier (train.max_steps: 5 after a train: block
    with max_steps: 10 ran 5 steps; before it, it was dropped)."""
    head = dotted.split(".")[0]
    with pytest.raises(ConfigError, match=rf"gives '{dotted}' \(line {dotted_line}\) beside a '{head}' block \(line "
                                          rf"{block_line}\): one would silently replace the other"):
        read_yaml_mapping(write(tmp_path, text))
    assert read_yaml_mapping(write(tmp_path, "train.max_steps: 5\nout_dir: x\n"))["train.max_steps"] == 5  # alone: fine


def test_a_missing_config_file_is_said_to_be_missing_not_a_string(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"--config='runs/trunk\.yaml' does not exist\. Fix the path \(relative paths "
                                          rf"start at {tmp_path}\)"):
        prepare_argv(command, ["--config", "runs/trunk.yaml"])
    with pytest.raises(ConfigError, match=r"--config='.*' is a folder, not a config file"):
        prepare_argv(command, ["--config", str(tmp_path)])
    assert "out_dir: x" in prepare_argv(command, ["--config", "out_dir: x"])[1]  # YAML text is still YAML text


@pytest.mark.parametrize("line, shown", [("~: 3", "~ (null)"), ("7: 3", "7"), ("null: x", "~ (null)")])
def test_a_key_that_is_not_a_name_is_refused_naming_its_line(tmp_path, line, shown):
    with pytest.raises(ConfigError, match=rf"has the key {re.escape(shown)} on line 2: config keys are names"):
        read_yaml_mapping(write(tmp_path, f"out_dir: x\n{line}\n"))
