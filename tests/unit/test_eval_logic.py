"""Pure logic of evaluation: the results table, checkpoint discovery, similarity maths, bridge gains, plot series."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from midtrain.analysis.bridge import bridge_report, set_losses, sft_gain
from midtrain.analysis.corpora import CorpusSpec, parse_corpora, read_text_sample, truncate
from midtrain.analysis.similarity import (
    bridge_length,
    cosine_matrix,
    jensen_shannon,
    ngram_distribution,
    pearson,
    spearman,
    token_similarity_matrix,
)
from midtrain.errors import ConfigError, DataError
from midtrain.eval.named_sets import NamedSet, check_sets
from midtrain.eval.plots import curves
from midtrain.eval.results import COLUMNS, ResultsTable, read_rows
from midtrain.eval.targets import find_targets


def row(**values) -> dict:
    base = dict.fromkeys(COLUMNS)
    base.update({"kind": "heldout", "metric": "loss", "settings": "s"})
    base.update(values)
    return base


# ---- results table ----

def test_table_appends_rereads_and_knows_what_is_done(tmp_path):
    table = ResultsTable(tmp_path)
    table.append([row(run="a", step=3, tokens_seen=96, name="main", value=2.5, eval_tokens=64, checkpoint="/c/3")])
    table.append([row(run="a", step=6, name="code", value=float("inf"), checkpoint="/c/6")])
    again = ResultsTable(tmp_path)
    assert again.done("/c/3", "heldout", "main", "s") and not again.done("/c/3", "heldout", "main", "other settings")
    assert [r["value"] for r in again.rows] == [2.5, math.inf]
    assert again.rows[0]["step"] == 3 and again.rows[0]["tokens_seen"] == 96 and again.rows[1]["tokens_seen"] is None
    assert json.loads((tmp_path / "eval.json").read_text())[0]["name"] == "main"
    assert (tmp_path / "eval.csv").read_text().count("\n") == 3  # header and two rows: appended, not rewritten


def test_a_foreign_csv_is_refused(tmp_path):
    (tmp_path / "eval.csv").write_text("step,loss\n1,2\n")
    with pytest.raises(ConfigError, match="not a midtrain eval table"):
        read_rows(tmp_path / "eval.csv")


# ---- targets ----

def make_checkpoint(folder, step=None, tokens=None, lineage=None):
    folder.mkdir(parents=True)
    (folder / "lit_model.pth").write_bytes(b"")
    (folder / "model_config.yaml").write_text("block_size: 32\n")
    if step is not None:
        (folder / "checkpoint.json").write_text(json.dumps({"step": step, "tokens": tokens, "lineage": lineage or []}))


def test_targets_cover_runs_and_checkpoints_with_lineage(tmp_path, caplog):
    lineage = [{"parent_out_dir": str(tmp_path / "runs" / "trunk"), "step": 4}]
    make_checkpoint(tmp_path / "runs" / "trunk" / "step-00000004", 4, 100)
    make_checkpoint(tmp_path / "runs" / "code" / "step-00000008", 8, 200, lineage)
    make_checkpoint(tmp_path / "runs" / "code" / "final", 8, 200, lineage)  # same step as step-8: scored once
    make_checkpoint(tmp_path / "ft" / "step-000010")  # litgpt's fine-tuning layout: the step is in the name
    (tmp_path / "runs" / "code" / "partial").mkdir()
    targets = find_targets([str(tmp_path / "runs" / "*"), str(tmp_path / "ft" / "step-000010")])
    assert [(t.run, t.step, t.tokens_seen, t.lineage.label) for t in targets] == [
        ("code", 8, 200, "trunk@4"), ("trunk", 4, 100, ""), ("ft", 10, None, "")]
    assert [t.step for t in find_targets([str(tmp_path / "runs" / "*")], steps=[4])] == [4]
    with caplog.at_level(logging.WARNING):  # a step a run lacks is said, not silently skipped
        assert [t.step for t in find_targets([str(tmp_path / "runs" / "*")], steps=[4, 99])] == [4]
    assert "--steps: trunk has no checkpoint at step 99 (it has 4): not scored there." in caplog.text
    assert "code has no checkpoint at step 4, 99 (it has 8)" in caplog.text


def test_target_errors_name_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--runs pattern .* matches no folder"):
        find_targets([str(tmp_path / "nothing*")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        find_targets([str(tmp_path / "empty")])
    make_checkpoint(tmp_path / "run" / "step-00000004", 4)
    with pytest.raises(ConfigError, match="--steps=\\[5\\] selects none"):
        find_targets([str(tmp_path / "run")], steps=[5])


def test_runs_with_the_same_folder_name_are_told_apart(tmp_path):
    for size in ("70m", "160m"):
        make_checkpoint(tmp_path / size / "trunk" / "step-00000001", 1)
        make_checkpoint(tmp_path / size / "code" / "step-00000002", 2, lineage=[
            {"parent_out_dir": str(tmp_path / size / "trunk"), "step": 1}])
    targets = find_targets([str(tmp_path / "*" / "*")])
    assert sorted(t.run for t in targets) == ["160m/code", "160m/trunk", "70m/code", "70m/trunk"]
    assert sorted(t.lineage.label for t in targets if t.lineage.parent_run) == ["160m/trunk@1", "70m/trunk@1"]


# ---- named sets ----

def test_named_set_problems_are_collected(tmp_path):
    sets = [NamedSet("a", json_path=tmp_path / "missing.json"), NamedSet("a", shards_path=tmp_path),
            NamedSet("b"), NamedSet("c", json_path=tmp_path / "x.json", prompt_style="nope")]
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ConfigError) as error:
        check_sets(sets)
    message = str(error.value)
    assert "names 'a' twice" in message and "does not exist" in message and "exactly one of json_path" in message
    assert "prompt_style 'nope' is not a litgpt prompt style" in message


# ---- similarity ----

def test_jensen_shannon_bounds_and_a_known_value():
    p = ngram_distribution([np.array([1, 1, 2, 2])], 1, 8)
    assert jensen_shannon(p, p) == pytest.approx(0.0)
    assert jensen_shannon(p, ngram_distribution([np.array([5, 6])], 1, 8)) == pytest.approx(1.0)
    # P = (1/2, 1/2, 0), Q = (0, 1/2, 1/2): JSD = 1/2 bit
    q = ngram_distribution([np.array([2, 3])], 1, 8)
    assert jensen_shannon(p, q) == pytest.approx(0.5)


def test_bigrams_are_counted_within_sequences_only():
    keys, probabilities = ngram_distribution([np.array([1, 2]), np.array([3, 4])], 2, 8)
    assert len(keys) == 2 and probabilities.tolist() == [0.5, 0.5]  # no (2, 3) across the boundary
    with pytest.raises(ConfigError, match="--ngram=4 is too long"):
        ngram_distribution([np.array([1])], 4, 50_000)


def test_token_similarity_matrix_is_symmetric_with_unit_diagonal():
    rng = np.random.default_rng(0)
    samples = {"a": [rng.integers(0, 50, 500)], "b": [rng.integers(0, 50, 500)], "c": [rng.integers(50, 100, 500)]}
    matrix = token_similarity_matrix(samples, 1)
    assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1)
    assert matrix[0, 1] > 0.8 and matrix[0, 2] == pytest.approx(0.0)


def test_cosine_bridge_and_correlations():
    assert np.allclose(cosine_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))[0], [1, 0, math.sqrt(0.5)])
    sim = np.array([[1.0, 0.6, 0.1], [0.6, 1.0, 0.5], [0.1, 0.5, 1.0]])
    assert bridge_length(sim, ["P", "M", "S"], "P", "M", "S") == pytest.approx(0.4 + 0.5)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [10, 20, 15, 40]) == pytest.approx(0.8)
    assert pearson([1, 2], [1, 2]) is None and pearson([1, 1, 1], [1, 2, 3]) is None


def test_sft_gain_prefers_fine_tuned_rows_and_the_latest_shared_step():
    rows = [row(kind="set", run="code", step=10, name="gsm", value=2.0),
            row(kind="set", run="ctl", step=10, name="gsm", value=2.5),
            row(kind="set", run="ft1", base_run="code", base_step=10, seed=1, name="gsm", value=1.0),
            row(kind="set", run="ft2", base_run="code", base_step=10, seed=2, name="gsm", value=1.2),
            row(kind="set", run="ft3", base_run="ctl", base_step=10, seed=1, name="gsm", value=1.5),
            row(kind="set", run="ft4", base_run="ctl", base_step=20, seed=1, name="gsm", value=1.4)]
    assert set_losses(rows, "code", "gsm") == {10: pytest.approx(1.1)}
    assert sft_gain(rows, "code", "ctl", "gsm") == (pytest.approx(0.4), 10)
    assert sft_gain(rows, "code", "ctl", "other") is None
    report = bridge_report(np.eye(3), ["P", "M", "S"], "P", ["M"], ["S"], rows, "ctl", {"M": "code"}, {"S": "gsm"})
    assert report["pairs"][0]["gain"] == pytest.approx(0.4) and report["correlation"]["pairs"] == 1


# ---- corpora ----

class CharTokenizer:
    def encode(self, text, bos=False, eos=False):
        import torch

        return torch.tensor([ord(c) % 256 for c in text])


def test_unreadable_or_empty_corpora_are_errors_never_placeholders(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl cannot be read"):
        read_text_sample(CorpusSpec("bad", tmp_path / "bad.jsonl"), CharTokenizer(), 100, 8, 0)
    (tmp_path / "odd.json").write_text('[{"title": "no text"}]')
    with pytest.raises(DataError, match="neither 'text' nor 'instruction'"):
        read_text_sample(CorpusSpec("odd", tmp_path / "odd.json"), CharTokenizer(), 100, 8, 0)
    with pytest.raises(DataError, match="does not exist"):
        parse_corpora(["a=" + str(tmp_path / "missing"), "b=" + str(tmp_path / "odd.json")])
    with pytest.raises(ConfigError, match="--corpora names 1 corpus; this needs at least 2"):
        parse_corpora(["a=" + str(tmp_path / "odd.json")])


def test_text_samples_are_seeded_and_cut_to_the_budget(tmp_path):
    (tmp_path / "sft.json").write_text(
        json.dumps([{"instruction": f"q{i}", "input": "", "output": "a" * 20} for i in range(30)])
    )
    first = read_text_sample(CorpusSpec("s", tmp_path / "sft.json"), CharTokenizer(), 100, 8, seed=3)
    again = read_text_sample(CorpusSpec("s", tmp_path / "sft.json"), CharTokenizer(), 100, 8, seed=3)
    assert sum(len(s) for s in first) == 100 and all(len(s) <= 8 for s in first)
    assert len(first) == len(again) and all((a == b).all() for a, b in zip(first, again, strict=True))
    assert sum(len(s) for s in truncate(first, 37)) == 37


# ---- plots ----

def test_branch_curves_start_at_the_parent_point():
    rows = [row(run="trunk", step=s, tokens_seen=s * 10, name="main", value=v) for s, v in ((2, 5.0), (4, 4.0))]
    rows += [row(run="code", parent="trunk", branch_step=4, step=s, tokens_seen=s * 10, name="main", value=v)
             for s, v in ((6, 3.5), (8, 3.0))]
    figure = curves(rows)[("heldout", "main", None)]
    assert figure["axis"] == "tokens seen"
    assert figure["series"]["code"] == [(40, 4.0), (60, 3.5), (80, 3.0)] and figure["branches"] == {"code": (40, 4.0)}


def test_a_runs_weight_average_is_a_point_beside_its_final_not_a_point_of_its_curve():
    from midtrain.eval.report import latest_table

    rows = [row(run="a", step=s, tokens_seen=s * 10, name="main", value=v, checkpoint=f"/r/a/{c}")
            for s, v, c in ((4, 4.0, "step-00000004"), (8, 3.0, "final"), (8, 2.9, "average"))]
    figure = curves(rows)[("heldout", "main", None)]
    assert figure["series"]["a"] == [(40, 4.0), (80, 3.0)] and figure["averages"] == {"a": (80, 2.9)}
    table = latest_table(rows, {r["checkpoint"] for r in rows})
    assert "| a | 8 | 80 | 3.0000 |" in table and "| a (average) | 8 | 80 | 2.9000 |" in table


def test_a_torn_last_row_is_cut_off_before_the_next_is_appended(tmp_path, caplog):
    table = ResultsTable(tmp_path)
    table.append([row(run="a", step=3, name="main", value=2.5, checkpoint="/c/3")])
    with (tmp_path / "eval.csv").open("a") as file:
        file.write("a,,,6,,heldout,code,loss,2.")  # a job killed mid-row
    assert [r["step"] for r in read_rows(tmp_path / "eval.csv")] == [3]  # read without the torn row
    table.append([row(run="a", step=9, name="main", value=1.5, checkpoint="/c/9")])
    rows = read_rows(tmp_path / "eval.csv")
    assert [(r["step"], r["value"]) for r in rows] == [(3, 2.5), (9, 1.5)]
    assert "torn row" in caplog.text
    assert all(line.count(",") == len(COLUMNS) - 1 for line in (tmp_path / "eval.csv").read_text().splitlines())


def test_two_evaluations_of_one_table_never_write_a_row_twice(tmp_path):
    first, second = ResultsTable(tmp_path), ResultsTable(tmp_path)  # both started before either wrote
    wanted = [("heldout", "main", "s"), ("heldout", "code", "s")]
    assert second.pending("/c/3", wanted) == wanted
    first.append([row(run="a", step=3, name="main", value=2.5, checkpoint="/c/3")])
    assert second.pending("/c/3", wanted) == [("heldout", "code", "s")]  # decided under the lock, from the file
    second.append([row(run="a", step=3, name="main", value=2.5, checkpoint="/c/3"),
                   row(run="a", step=3, name="code", value=3.5, checkpoint="/c/3")])
    assert [(r["name"], r["value"]) for r in read_rows(tmp_path / "eval.csv")] == [("main", 2.5), ("code", 3.5)]


def test_a_run_folder_of_two_models_or_a_repeated_step_is_refused(tmp_path):
    make_checkpoint(tmp_path / "run" / "step-00000004", step=4)
    make_checkpoint(tmp_path / "run" / "step-00000008", step=8)
    (tmp_path / "run" / "step-00000008" / "model_config.yaml").write_text("block_size: 32\nn_head: 4\n")
    with pytest.raises(ConfigError, match=r"holds checkpoints of two models \(step-00000004 and step-00000008 differ "
                                          r"in n_head None vs 4\)"):
        find_targets([str(tmp_path / "run")])
    make_checkpoint(tmp_path / "dup" / "step-00000004", step=4)
    make_checkpoint(tmp_path / "dup" / "step-4", step=4)
    with pytest.raises(ConfigError, match=r"both hold step 4 of .*dup"):
        find_targets([str(tmp_path / "dup")])
    make_checkpoint(tmp_path / "same" / "step-00000004", step=4)
    make_checkpoint(tmp_path / "same" / "final", step=4)
    assert [t.checkpoint.name for t in find_targets([str(tmp_path / "same")])] == ["step-00000004"]


def test_bits_per_byte_is_the_summed_loss_over_ln2_over_the_bytes_the_targets_decode_to(tokenizer_dir):
    import math

    import torch

    from midtrain.tokenizer import load_tokenizer
    from midtrain.train.validation import bits_per_byte, tokens_per_byte

    tokenizer = load_tokenizer(tokenizer_dir)
    ids = tokenizer.encode("def double(x):\n    return x * 2  # twice é\n" * 4).tolist()
    samples = [torch.tensor(ids[:17]), torch.tensor(ids[17:34]), torch.tensor(ids[34:51])]
    text_bytes = sum(len(tokenizer.decode(s[1:]).encode("utf-8")) for s in samples[:2])
    per_byte = tokens_per_byte({"code": samples[:2], "math": samples[2:]}, tokenizer)
    assert per_byte["code"] == 32 / text_bytes
    overall = text_bytes + len(tokenizer.decode(samples[2][1:]).encode("utf-8"))
    assert per_byte["overall"] == 48 / overall
    bpb = bits_per_byte({"code": 1.5, "overall": 2.0, "instruct": 3.0}, per_byte)
    assert bpb == {"code": 1.5 * 32 / text_bytes / math.log(2), "overall": 2.0 * 48 / overall / math.log(2)}
