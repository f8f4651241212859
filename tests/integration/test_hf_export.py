"""The Hugging Face hand-off on CPU, offline: ``midtrain export`` folders that ``transformers`` loads with no other
argument (logits equal litgpt's for a Pythia-shaped and a Llama-shaped model), a run as one folder per checkpoint,
and a Hugging Face folder as a branch point (export -> from_pretrained -> save_pretrained -> branch: the same
validation loss at the branch step); bad input refused naming the flag, nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from midtrain.cli import main
from tests.integration.train_helpers import TINY_MODEL, metric, read_json, tiny_config, write_config

transformers = pytest.importorskip("transformers")

LLAMA = {"name": "tiny-llama", "block_size": 32, "vocab_size": 4096, "padded_vocab_size": 4096, "n_layer": 2,
         "n_head": 4, "n_query_groups": 2, "n_embd": 32, "rotary_percentage": 1.0, "parallel_residual": False,
         "bias": False, "norm_class_name": "RMSNorm", "mlp_class_name": "LLaMAMLP", "intermediate_size": 64,
         "norm_eps": 1e-5}


@pytest.fixture(scope="module")
def trunk(train_root, tokenizer_dir, tmp_path_factory):
    """A 12-step tiny Pythia-shaped trunk with its tokenizer in every checkpoint, and an eval table of its final."""
    root = tmp_path_factory.mktemp("hf")
    config = tiny_config(train_root, root / "trunk")
    config["tokenizer_dir"] = str(tokenizer_dir)
    assert main(["pretrain", "--config", str(write_config(root / "trunk.yaml", config))]) == 0
    return root / "trunk"


def litgpt_logits(checkpoint: Path, tokens: torch.Tensor) -> torch.Tensor:
    from litgpt.config import Config
    from litgpt.model import GPT

    model = GPT(Config.from_file(checkpoint / "model_config.yaml")).eval()
    state = torch.load(checkpoint / "lit_model.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("model", state))
    with torch.no_grad():
        return model(tokens)


def hf_logits(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(tokens).logits


def test_exported_pythia_loads_with_no_other_argument_and_computes_litgpts_logits(trunk, tmp_path):
    out = tmp_path / "hf"
    assert main(["export", str(trunk / "final"), "--out_dir", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
            "README.md"} <= names
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing left under a hidden name
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    tokens = torch.tensor([tokenizer("def f(x):\n    return x")["input_ids"][:20]])
    assert json.loads((out / "config.json").read_text())["architectures"] == ["GPTNeoXForCausalLM"]
    assert torch.allclose(hf_logits(out, tokens), litgpt_logits(trunk / "final", tokens), atol=1e-4)
    card = (out / "README.md").read_text()
    assert "step 12" in card and "## Data read (the per-domain token ledger)" in card and "## Learning rate" in card


@pytest.mark.parametrize("rope", [None, {"factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                                           "original_max_seq_len": 8}], ids=["plain", "llama3-rope-scaling"])
def test_exported_llama_computes_litgpts_logits_and_shards_above_the_limit(tmp_path, tokenizer_dir, rope):
    from litgpt.config import Config
    from litgpt.model import GPT

    torch.manual_seed(0)
    checkpoint = tmp_path / "llama" / "final"
    checkpoint.mkdir(parents=True)
    fields = {**LLAMA, "rope_adjustments": rope}
    model = GPT(Config(**fields))
    torch.save({"model": model.state_dict()}, checkpoint / "lit_model.pth")
    (checkpoint / "model_config.yaml").write_text(yaml.safe_dump(fields))
    out = tmp_path / "hf"
    # a 0.0001 GB limit: the weights (about 0.6 MB) are written in several files with an index
    assert main(["export", str(checkpoint), "--out_dir", str(out), f"--tokenizer_dir={tokenizer_dir}",
                 "--max_shard_gb=0.0001"]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (out / "model.safetensors").exists()
    tokens = torch.randint(0, 4096, (2, 16))
    assert json.loads((out / "config.json").read_text())["num_key_value_heads"] == 2
    assert torch.allclose(hf_logits(out, tokens), litgpt_logits(checkpoint, tokens), atol=1e-4)


def test_a_run_exports_as_one_folder_per_checkpoint_with_its_rows_in_each_card(trunk, tmp_path):
    table = tmp_path / "eval"
    assert main(["eval", f"--runs={trunk}", f"--out_dir={table}", "--plot=false"]) == 0
    out = tmp_path / "revisions"
    assert main(["export", str(trunk), "--out_dir", str(out), "--all_steps=true",
                 f"--results={table / 'eval.csv'}"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["final", "step-00000004", "step-00000008", "step-00000012"]
    for folder in out.iterdir():
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "## Evaluation" in (out / "step-00000004" / "README.md").read_text()
    assert "| heldout | main | loss |" in (out / "final" / "README.md").read_text()  # final: its step's rows


def test_a_hugging_face_trunk_branches_with_the_same_weights(trunk, train_root, tokenizer_dir, tmp_path, capsys):
    """export -> from_pretrained -> save_pretrained (what a user downloads) -> branch at step 12: the branch's
    validation at its branch point equals the trunk's at step 12; optimizer and data fresh, said and recorded."""
    exported = tmp_path / "exported"
    assert main(["export", str(trunk / "final"), "--out_dir", str(exported)]) == 0
    saved = tmp_path / "saved"
    transformers.AutoModelForCausalLM.from_pretrained(exported).save_pretrained(saved)
    transformers.AutoTokenizer.from_pretrained(exported).save_pretrained(saved)
    branch = tmp_path / "branch"
    config = tiny_config(train_root, branch, mix="main:0.5,code:0.5", max_steps=14, rewarm_steps=2)
    config.update(tokenizer_dir=str(tokenizer_dir), branch_from=str(saved), branch_from_step=12,
                  eval={"interval": 2, "initial_validation": True, "final_validation": True})
    path = write_config(tmp_path / "branch.yaml", config)
    assert main(["pretrain", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "is a Hugging Face model folder" in out and "the optimizer starts fresh" in out
    for domain in ("main", "code"):
        assert metric(branch, f"val/{domain}/loss")[12] == pytest.approx(metric(trunk, f"val/{domain}/loss")[12],
                                                                         abs=1e-5)
    from midtrain.train.lr_schedule import LRSchedule

    record = json.loads((branch / "final" / "checkpoint.json").read_text())["lr_schedule"]
    assert record["rewarm_start"] == 12 and record["rewarm_steps"] == 2
    plain = LRSchedule(**{k: v for k, v in record.items() if k != "form"}).rewarmed(12, 0)
    lrs = metric(branch, "train/lr")  # logged at step s: the LR of the step from s - 1 to s
    assert lrs[13] == pytest.approx(plain.lr_at(12) / 2) and lrs[14] == pytest.approx(plain.lr_at(13))
    entry = read_json(branch / "run.json")["lineage"][-1]
    assert entry["step"] == 12 and entry["optimizer"] == "fresh"
    config["train"]["max_steps"] = 16  # a resume of the rewarmed branch continues it (the weights are not read again)
    assert main(["pretrain", "--config", str(write_config(path, config))]) == 0
    assert sorted(metric(branch, "train/lr"))[-1] == 16
    assert set(entry["huggingface"]["files"]) == {"config.json", "model.safetensors"}
    assert len(entry["huggingface"]["files"]["model.safetensors"]) == 64


@pytest.mark.parametrize("case, message", [
    ("exists", "--out_dir="),
    ("no_config", "holds no model_config.yaml"),
    ("no_tokenizer", "holds no tokenizer"),
    ("architecture", "has no Hugging Face conversion"),
])
def test_bad_exports_are_refused_writing_nothing(trunk, tmp_path, capsys, case, message):
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(trunk / "final", checkpoint)
    out = tmp_path / "out"
    if case == "exists":
        out.mkdir()
    elif case == "no_config":
        (checkpoint / "model_config.yaml").unlink()
    elif case == "no_tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (checkpoint / name).unlink(missing_ok=True)
    else:
        config = yaml.safe_load((checkpoint / "model_config.yaml").read_text())
        config.update(mlp_class_name="GemmaMLP", norm_class_name="RMSNorm")
        (checkpoint / "model_config.yaml").write_text(yaml.safe_dump(config))
    assert main(["export", str(checkpoint), "--out_dir", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert (case == "exists") == out.exists() and not (tmp_path / ".out.partial").exists()


def test_a_hugging_face_folder_of_another_model_is_refused_before_training(trunk, train_root, tmp_path, capsys):
    exported = tmp_path / "exported"
    assert main(["export", str(trunk / "final"), "--out_dir", str(exported)]) == 0
    config = tiny_config(train_root, tmp_path / "branch", max_steps=14)
    config["model_config"] = {**TINY_MODEL, "n_layer": 3}
    config.update(branch_from=str(exported), branch_from_step=12)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", config)), "--dry_run=true"]) == 2
    error = capsys.readouterr().err
    assert "--branch_from: the folder's config.json does not match the configured model" in error
    assert "num_hidden_layers 2 (config 3)" in error
    config["model_config"] = TINY_MODEL
    del config["branch_from_step"]
    assert main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", config)), "--dry_run=true"]) == 2
    assert "--branch_from_step=N" in capsys.readouterr().err


def test_the_step_is_read_from_the_revision_of_a_hugging_face_cache_folder(trunk, train_root, tmp_path, capsys):
    """A folder as the Hugging Face cache keeps a download at revision step12 (``models--org--tiny/snapshots/<commit>``
    with ``refs/step12``): its step needs no flag, and the dry run names the repository and revision."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = tmp_path / "hub" / "models--org--tiny"
    assert main(["export", str(trunk / "final"), "--out_dir", str(cached / "snapshots" / commit)]) == 0
    (cached / "refs").mkdir()
    (cached / "refs" / "step12").write_text(commit)
    (cached / "refs" / "main").write_text("another")
    config = tiny_config(train_root, tmp_path / "branch", max_steps=14)
    config["branch_from"] = str(cached / "snapshots" / commit)
    assert main(["pretrain", "--config", str(write_config(tmp_path / "b.yaml", config)), "--dry_run=true"]) == 0
    out = capsys.readouterr().out
    assert "is a Hugging Face model folder (org/tiny@step12, step 12)" in out
    assert "Start: branch from" in out and "(step 12)" in out


@pytest.mark.slow
def test_a_hugging_face_trunk_branches_into_fsdp_shards_with_the_same_weights(trunk, train_root, tmp_path):
    """Under FSDP2 on 2 CPU processes the converted weights go straight into each rank's shards: the validation at
    the branch point is the trunk's."""
    from tests.integration.train_helpers import run_cli

    exported = tmp_path / "exported"
    assert main(["export", str(trunk / "final"), "--out_dir", str(exported)]) == 0
    branch = tmp_path / "branch"
    config = tiny_config(train_root, branch, max_steps=14, micro_batch_size=1)
    config.update(branch_from=str(exported), branch_from_step=12, strategy="fsdp", devices=2,
                  eval={"interval": 2, "initial_validation": True})
    result = run_cli(write_config(tmp_path / "fsdp.yaml", config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "strategy fsdp" in result.stdout
    for domain in ("main", "code", "math"):
        assert metric(branch, f"val/{domain}/loss")[12] == pytest.approx(metric(trunk, f"val/{domain}/loss")[12],
                                                                         abs=1e-5)


def test_rewarm_steps_only_where_the_optimizer_starts_fresh(trunk, train_root, tmp_path, capsys):
    def dry_run(**extra) -> int:
        config = tiny_config(train_root, tmp_path / "branch", max_steps=14, rewarm_steps=2)
        config["train"].update(extra.pop("train", {}))
        config.update(extra)
        return main(["pretrain", "--config", str(write_config(tmp_path / "c.yaml", config)), "--dry_run=true"])

    assert dry_run(branch_from=str(trunk / "step-00000008")) == 2
    assert "continues its parent's optimizer state" in capsys.readouterr().err
    assert dry_run() == 2
    assert "this run branches from nothing" in capsys.readouterr().err
    assert dry_run(branch_from=str(trunk / "step-00000008"), train={"reset_optimizer": True}) == 0
    assert "rewarmed from 0 over 2 steps from step 8 (--train.rewarm_steps)" in capsys.readouterr().out
    assert dry_run(branch_from=str(trunk / "step-00000008"), branch_from_step=8) == 2
    assert "applies to a Hugging Face model folder" in capsys.readouterr().err
