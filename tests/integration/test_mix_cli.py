import json

import pytest
import yaml

from midtrain.cli import main
from midtrain.commands.dispatch import COMMANDS


def run_json(capsys, *args):
    capsys.readouterr()
    assert main(["mix", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_mix_prints_an_exact_plan(data_root, capsys):
    plan = run_json(capsys, "--data.data_path", str(data_root), "--data.mix_weights_str", "main:0.7,code:0.2,math:0.1",
                    "--max_tokens", "6400", "--seq_length", "31")
    rows = {s["id"]: s for s in plan["shards"]}
    assert list(rows) == ["main/1", "main/2", "c1", "m1"]
    assert [rows[k]["tokens"] for k in rows] == [6000, 4000, 2000, 1000]
    assert rows["c1"]["weight"] == pytest.approx(0.2) and rows["main/1"]["weight"] == pytest.approx(0.35)
    assert sum(s["planned_tokens"] for s in plan["shards"]) == 6400 // 31 * 31
    assert plan["domains"]["math"]["planned_tokens"] == rows["m1"]["planned_tokens"]
    assert plan["validation_tokens"] == {"main": 600, "code": 400, "math": 300}
    # m1: 1000 tokens in chunks of <= 4096 tokens hold 1000 // 32 = 31 samples of 32 tokens
    assert rows["m1"]["passes"] == pytest.approx(rows["m1"]["planned_tokens"] / 31 / 31)


def test_mix_table_is_readable(data_root, capsys):
    assert main(["mix", "--data.data_path", str(data_root), "--data.mix_weights_str", "main:0.5,code:0.5",
                 "--max_tokens", "3200", "--seq_length", "31"]) == 0
    out = capsys.readouterr().out
    assert "Mixture plan: budget 3,200 tokens" in out and "c1" in out and "planned tokens" in out
    assert "Validation data" in out and "code 400 tokens" in out


def test_mix_reads_a_pretrain_config(data_root, tmp_path, capsys):
    """A pretrain config is planned as 'pretrain --dry_run' plans it; the model is model_config alone (litgpt's
    rule), which the output says since it differs from model_name's."""
    config = {
        "model_name": "pythia-14m",
        "model_config": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 63, "padded_vocab_size": 8_000_000},
        "out_dir": str(tmp_path / "out"),
        "data": {"class_path": "midtrain.data.ShardedMixedDataset",
                 "init_args": {"data_path": str(data_root), "mix_weights_str": "main:0.9,math:0.1", "num_workers": 0}},
        "train": {"max_tokens": 4032, "micro_batch_size": 2, "global_batch_size": 4},
        "optimizer": {"class_path": "torch.optim.AdamW"},
        "accelerator": "cpu", "devices": 1,
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    plan = run_json(capsys, "--config", str(path))
    assert plan["seq_length"] == 63 and plan["max_tokens"] == 4032 and plan["start_step"] == 0
    assert plan["domains"]["math"]["weight"] == pytest.approx(0.1)
    # dotted overrides apply on top of the config; --max_tokens is read as --train.max_tokens
    plan = run_json(capsys, "--config", str(path), "--data.mix_weights_str", "main:0.5,math:0.5", "--max_tokens", "504")
    assert plan["domains"]["math"]["weight"] == pytest.approx(0.5) and plan["max_tokens"] == 504
    assert main(["mix", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "--model_name='pythia-14m' is ignored" in out and "n_layer 2 (not 6)" in out


def test_mix_rejects_other_data_modules(tmp_path, capsys):
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump({"model_name": "pythia-14m", "data": {"class_path": "litgpt.data.TinyLlama"}}))
    assert main(["mix", "--config", str(path)]) == 2
    assert "--data.class_path is 'litgpt.data.TinyLlama'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data.mix_weights_str", "main:0.8,maths:0.2"], "Did you mean 'math'?"),
        (["--data.mix_weights_str", "main:0.8,web:0.2"], "data root has no web shards"),
        (["--data.literal_weights_str", "main/1:1,c9:1"], "names shard 'c9'"),
        (["--data.mix_weights_str", "main:0.5,code:0.5", "--max_tokens", "100000"], "would be read"),
        (["--data.mix_weights_str", "main:1", "--data.mix_config_path", "x.json"], "are both set"),
        (["--max_tokens", "0"], "--max_tokens=0 must be a positive number of tokens"),
        (["--format", "xml"], "--format=xml is not one of table, json."),
    ],
)
def test_mix_errors_exit_non_zero_with_the_flag(data_root, capsys, args, message):
    assert main(["mix", "--data.data_path", str(data_root), "--seq_length", "31", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("midtrain.") and message in err


def test_console_script_and_module_entry_point(data_root):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "midtrain", "mix", "--data.data_path", str(data_root / "nope")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "midtrain.DataError: data root" in result.stderr


# a key of that command, as its --help must show it (its description: tests/integration/test_help.py)
OWN_KEY = {"prepare": "--tokenizer_dir", "mix": "--data.mix_weights_str", "pretrain": "--train.max_steps",
           "port": "--fork_config", "sweep": "--spec", "eval": "--runs", "similarity": "--corpora",
           "demo": "--branch_step", "recommend": "--candidates", "analyze": "--sft_for",
           "anneal": "--candidates", "soup": "--checkpoints", "decon": "--against",
           "export": "--all_steps"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_for_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: midtrain {command} ")
    assert OWN_KEY[command] in text


@pytest.mark.parametrize("argv", [["mix", "--data.data_path", "{root}", "--max_tokens", "3200", "--seq_length", "31"],
                                  ["--help"], ["sweep", "--help"], ["prepare", "--help"]])
def test_light_commands_load_neither_torch_nor_litgpt_nor_lightning(data_root, argv):
    import subprocess
    import sys

    code = ("import sys\nfrom midtrain.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'litgpt', 'lightning') if m in sys.modules), file=sys.stderr)")
    args = [a.replace("{root}", str(data_root)) for a in argv]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr[-2000:]


def test_an_unknown_command_suggests_the_close_one(capsys):
    assert main(["prepar"]) == 2
    assert "Did you mean 'prepare'?" in capsys.readouterr().err


def test_mix_takes_every_key_of_a_pretrain_config():
    """mix's one parser reads a pretrain config by its keys; a key pretrain gains must be added to mix too."""
    from midtrain.commands.mix import RUN_KEYS
    from midtrain.train.settings import COMMAND_FIELDS

    assert set(RUN_KEYS) == set(COMMAND_FIELDS) - {"data"}
