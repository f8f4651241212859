"""``midtrain anneal``, ``soup`` and ``analyze`` together on real tiny runs (CPU, real shards): the matched pairs of
one set start from one checkpoint, read the planned shares over one budget and decay to LR 0 with their seed; analyze
pairs them by their records, not their names; a soup is the weighted mean of its ingredients and is compared with
them. Bad input is refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch

from midtrain.cli import main
from tests.integration.train_helpers import read_json, tiny_config, write_config

STEP_TOKENS = 4 * 16  # global_batch_size × max_seq_length of tiny_config


@pytest.fixture(scope="module")
def anneal_set(train_root, tiny_trunk, tmp_path_factory):
    root = tmp_path_factory.mktemp("anneals")
    base = write_config(root / "base.yaml", tiny_config(train_root, root / "unused"))
    # the runs get names that do not say what they are: analyze must pair them by their records
    assert main(["anneal", "--config", str(base), "--from", str(tiny_trunk / "step-00000008"),
                 "--tokens", str(3 * STEP_TOKENS), "--candidates", "[code]", "--share", "0.5", "--seeds", "[1, 2]",
                 "--decay_shape", "sqrt", "--out_root", str(root / "set"), "--run", "local"]) == 0
    return root


def runs_of(root):
    return {p.parent.name: read_json(p) for p in sorted((root / "set").glob("*/run.json"))}


def test_every_run_of_a_set_starts_from_one_checkpoint_decays_to_zero_and_reads_its_shares(anneal_set, tiny_trunk):
    runs = runs_of(anneal_set)
    assert sorted(runs) == ["code-seed1", "code-seed2", "control-seed1", "control-seed2"]
    groups = {r["anneal"]["group"] for r in runs.values()}
    assert len(groups) == 1
    for name, run in runs.items():
        record = run["anneal"]
        assert record["seed"] == int(name[-1]) and record["tokens"] == 3 * STEP_TOKENS
        assert record["candidate"] == (None if name.startswith("control") else "code")
        assert run["lineage"][-1]["checkpoint"] == str((tiny_trunk / "step-00000008").resolve())
        final = read_json(anneal_set / "set" / name / "final" / "checkpoint.json")
        assert final["step"] == 11 and final["lr_next"] == 0.0
        ledger = read_json(anneal_set / "set" / name / "final" / "ledger.json")
        stretch = ledger["stretches"][-1]
        assert stretch["start_step"] == 8 and stretch["order_seed"] == record["seed"]
        read = {ledger["shards"][i]["domain"]: t for i, t in stretch["tokens"].items() if t}
        if record["candidate"] is None:
            assert read == {"main": 3 * STEP_TOKENS}
        else:  # half of the 12 samples from code, exactly
            assert read == {"main": 6 * 16, "code": 6 * 16}
    # one seed, one order: the control and the candidate of a seed read main's samples in the same order
    assert runs["code-seed1"]["lineage"][-1]["mixture_before"] == runs["control-seed1"]["lineage"][-1]["mixture_before"]


def test_a_run_folder_of_an_anneal_set_holds_that_one_run(anneal_set, tmp_path, capsys):
    import yaml

    config = yaml.safe_load((anneal_set / "set" / "configs" / "code-seed1.yaml").read_text())
    assert main(["pretrain", "--config", str(write_config(tmp_path / "same.yaml", config)), "--dry_run=true"]) == 0
    capsys.readouterr()
    config["anneal"]["seed"] = 2  # another pair's record into this pair's folder
    assert main(["pretrain", "--config", str(write_config(tmp_path / "c.yaml", config)), "--dry_run=true"]) == 2
    assert "holds another run of an anneal set" in capsys.readouterr().err


def test_analyze_pairs_anneals_by_their_records_and_a_soup_is_the_mean_of_its_ingredients(anneal_set, tmp_path):
    import shutil

    # the runs copied under names that do not say what they are: analyze must pair them by their records
    names = {}
    for k, name in enumerate(sorted(runs_of(anneal_set))):
        shutil.copytree(anneal_set / "set" / name, tmp_path / "runs" / f"r{k}")
        names[f"r{k}"] = name
    run_of = {name: tmp_path / "runs" / r for r, name in names.items()}
    soup = tmp_path / "soup"
    assert main(["soup", "--checkpoints", str(run_of["code-seed1"] / "final"),
                 "--checkpoints", str(run_of["code-seed2"] / "final"), "--weights", "[1, 3]",
                 "--out_dir", str(soup)]) == 0
    averaged = torch.load(soup / "final" / "lit_model.pth", weights_only=True)["model"]
    first, second = (torch.load(run_of[n] / "final" / "lit_model.pth", weights_only=True)["model"]
                     for n in ("code-seed1", "code-seed2"))
    assert set(averaged) == set(first)
    for key, value in averaged.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.25 * first[key] + 0.75 * second[key], rtol=0, atol=1e-6)
    record = read_json(soup / "run.json")["soup"]
    assert record["weights"] == [0.25, 0.75]
    assert [i["anneal"]["seed"] for i in record["ingredients"]] == [1, 2]
    assert record["ingredients"][0]["ledger"]["stretches"][-1]["order_seed"] == 1

    runs = json.dumps([str(tmp_path / "runs" / "*"), str(soup)])
    assert main(["eval", f"--runs={runs}", f"--out_dir={tmp_path / 'eval'}", "--tokens_per_domain=64",
                 "--accelerator=cpu"]) == 0
    assert (tmp_path / "eval" / "plots" / "mixture_lr_r0.png").is_file()  # when its data came, against the LR
    assert main(["analyze", "--tables", str(tmp_path / "eval" / "eval.csv"), "--out_dir", str(tmp_path / "a")]) == 0
    result = read_json(tmp_path / "a" / "analysis.json")
    pairs = {(names[e["branch"]], names[e["control"]]) for e in result["effects"]}
    assert pairs == {("code-seed1", "control-seed1"), ("code-seed2", "control-seed2")}
    verdicts = {(a["measure"], a["name"]): a for a in result["anneals"]}
    code = verdicts[("target", "code")]
    assert code["candidate"] == "code" and code["seeds"] == [1, 2] and len(code["deltas"]) == 2
    assert code["mean_delta"] == pytest.approx(sum(code["deltas"]) / 2) and code["half_width"] is not None
    roles = {(e["against"], e["role"]) for e in result["soups"]}
    assert {names[a] for a, role in roles if role == "ingredient"} == {"code-seed1", "code-seed2"}
    assert {names[a] for a, role in roles if role == "control"} == {"control-seed1", "control-seed2"}
    report = (tmp_path / "a" / "report.md").read_text()
    assert "## Anneals: each candidate against its control" in report and "## Soups against" in report


def test_anneal_refuses_bad_input_before_writing_anything(train_root, tiny_trunk, tmp_path, capsys):
    base = write_config(tmp_path / "base.yaml", tiny_config(train_root, tmp_path / "unused"))
    out = tmp_path / "set"
    good = {"--config": str(base), "--from": str(tiny_trunk / "step-00000008"), "--tokens": str(2 * STEP_TOKENS),
            "--candidates": "[code]", "--out_root": str(out)}
    cases = [
        ({"--from": str(tiny_trunk)}, "--from="),
        ({"--from": str(tmp_path)}, "is not a complete checkpoint"),
        ({"--candidates": "[science]"}, "--candidates: 'science' is neither a domain"),
        ({"--share": "1.0"}, "--share=1.0 must be between 0 and 1"),
        ({"--share": "0"}, "--share=0.0 must be between 0 and 1"),
        ({"--tokens": str(STEP_TOKENS - 1)}, "is less than one optimizer step"),
        ({"--seeds": "[1, 1]"}, "--seeds=[1, 1] repeats a seed"),
    ]
    for change, message in cases:
        argv = ["anneal"] + [w for k, v in {**good, **change}.items() for w in (k, v)]
        assert main(argv) == 2, change
        assert message in capsys.readouterr().err, change
        assert not out.exists(), change


def test_soup_refuses_ingredients_of_another_model_or_tokenizer_naming_the_field(tiny_trunk, tmp_path, capsys):
    import shutil

    other = tmp_path / "other" / "step-00000008"
    shutil.copytree(tiny_trunk / "step-00000008", other)
    config = (other / "model_config.yaml").read_text().replace("n_head: 2", "n_head: 4")
    (other / "model_config.yaml").write_text(config)
    assert main(["soup", "--checkpoints", json.dumps([str(tiny_trunk / "step-00000004"), str(other)]),
                 "--out_dir", str(tmp_path / "s")]) == 2
    assert "model_config n_head: 4 against 2" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    (other / "model_config.yaml").write_text((tiny_trunk / "step-00000004" / "model_config.yaml").read_text())
    (other / "tokenizer.json").write_text("{}")
    assert main(["soup", "--checkpoints", json.dumps([str(tiny_trunk / "step-00000004"), str(other)]),
                 "--out_dir", str(tmp_path / "s")]) == 2
    said = capsys.readouterr().err
    assert "has another tokenizer" in said and "(tokenizer.json is in only one)" in said
    for argv, message in (([str(tiny_trunk / "step-00000004")], "a soup averages two or more"),
                          ([str(tiny_trunk / "step-00000004"), str(tiny_trunk / "step-00000008")],
                           None)):
        code = main(["soup", "--checkpoints", json.dumps(argv), "--weights", "[1, -1]" if message is None else "[1]",
                     "--out_dir", str(tmp_path / "s")])
        assert code == 2
        assert (message or "is not a positive number") in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
