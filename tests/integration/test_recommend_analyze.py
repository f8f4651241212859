"""``midtrain recommend`` on shards whose token distributions are known exactly (the ranking and the bridge lengths
computed by hand), and ``midtrain analyze`` on a grid of branches in the layout midtrain writes (run.json lineage,
ledgers, an eval table written by ``midtrain eval``'s own writer), its effects and fit checked against values
computed by hand; bad input refused with exit 2 and nothing written."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from midtrain.cli import main
from tests.helpers import write_documents_shard


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    """Unigram distributions, exact in every 16-token block: P uniform on {1, 2}, code on {1, 2, 3, 4}, math on
    {5, 6}; the targets T on {3, 4} and U on {5, 6}."""
    root = tmp_path_factory.mktemp("corpora")
    patterns = {"pretrain/1": [1, 2], "cands/c1": [1, 2, 3, 4], "cands/m1": [5, 6], "t/1": [3, 4], "u/1": [5, 6]}
    for folder, pattern in patterns.items():
        document = [pattern[k % len(pattern)] for k in range(512)]
        write_documents_shard(root / folder, [document, document])
    return root


def jsd_uniform_half() -> float:
    """JSD (bits) between uniform on {1, 2} and uniform on {1, 2, 3, 4}: the mixture gives 3/8, 3/8, 1/8, 1/8."""
    kl_p = 2 * 0.5 * math.log2(0.5 / 0.375)
    kl_q = 2 * 0.25 * math.log2(0.25 / 0.375) + 2 * 0.25 * math.log2(0.25 / 0.125)
    return (kl_p + kl_q) / 2


def test_recommend_ranks_by_bridge_length_computed_by_hand(corpora, tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["recommend", f"--pretrain=main={corpora / 'pretrain' / '1'}", f"--target=T={corpora / 't' / '1'}",
                 f"--target=U={corpora / 'u' / '1'}",
                 f"--candidates=[code={corpora / 'cands' / 'c1'}, math={corpora / 'cands' / 'm1'}]",
                 f"--out_dir={out}", "--ngram=1", "--seq_length=16", "--sample_tokens=512",
                 f"--decon={decon_report(corpora, tmp_path)}"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "recommend.json").read_text())
    assert report["measure"] == "token" and report["sample_tokens"] == 512
    near = 1 - jsd_uniform_half()  # code is as like P as like T
    t, u = report["targets"]["T"], report["targets"]["U"]
    assert [(e["rank"], e["candidate"], e["kind"]) for e in t] == [(1, "code", "code"), (2, "math", "math")]
    assert t[0]["bridge_length"] == pytest.approx(2 * (1 - near)) and t[1]["bridge_length"] == pytest.approx(2.0)
    assert t[0]["token"] == pytest.approx({"to_pretrain": near, "to_target": near})
    # for U (math's own distribution) math's bridge is (1 - 0) + (1 - 1) = 1; code's (1 - near) + 1
    assert [e["candidate"] for e in u] == ["math", "code"] and u[0]["bridge_length"] == pytest.approx(1.0)
    assert u[1]["bridge_length"] == pytest.approx(2 - near)
    assert report["suggested"]["T"]["mix_weights_str"] == "main:0.8,code:0.2"
    assert report["suggested"]["U"]["mix_weights_str"] == "main:0.88,math:0.12"
    with (out / "recommend.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(r["target"], r["rank"], r["candidate"]) for r in rows] == [("T", "1", "code"), ("T", "2", "math"),
                                                                       ("U", "1", "math"), ("U", "2", "code")]
    assert rows[0]["suggested_mixture"] == "main:0.8,code:0.2" and (out / "recommend.png").stat().st_size > 0
    assert "every measure saw 512 tokens of each corpus" in printed
    # the leak check beside each rank: T's items were found in code's shard; U was checked, and found nowhere
    assert t[0]["leak"]["note"] == "gain may include leaked items: 2 of 10 T items found in c1"
    assert t[1]["leak"]["status"] == "clean" and u[0]["leak"]["note"] == "not checked against U"
    assert rows[0]["leak_check"] == t[0]["leak"]["note"] and "leak check" in printed


def decon_report(corpora: Path, folder: Path) -> Path:
    """A 'midtrain decon' report: two of T's ten items found in the code shard; both candidates' shards scanned."""
    c1, m1 = (str((corpora / "cands" / n).resolve()) for n in ("c1", "m1"))
    report = {"sources": {"T": {"items": 10, "found": {"1": [{"shard": c1, "document": 0, "overlap": 1.0}],
                                                       "7": [{"shard": c1, "document": 1, "overlap": 0.5}]}}},
              "shards": {c1: {}, m1: {}}}
    path = folder / "decon.json"
    path.write_text(json.dumps(report))
    return path


def test_recommend_refuses_bad_input_writing_nothing(corpora, tmp_path, capsys):
    out = tmp_path / "rec"
    common = [f"--pretrain=main={corpora / 'pretrain' / '1'}", f"--target=T={corpora / 't' / '1'}",
              f"--out_dir={out}"]
    assert main(["recommend", *common, f"--candidates=[code={corpora / 'cands' / 'c1'}]"]) == 2
    assert "a ranking needs at least two" in capsys.readouterr().err
    assert main(["recommend", *common, f"--candidates=[code={corpora / 'cands' / 'c1'}, x={tmp_path / 'none'}]"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["recommend", f"--pretrain=main={corpora / 'pretrain' / '1'}", f"--target=T={tmp_path / 'n.json'}",
                 f"--candidates=[code={corpora / 'cands' / 'c1'}, math={corpora / 'cands' / 'm1'}]",
                 f"--out_dir={out}"]) == 2
    assert "T=" in capsys.readouterr().err
    assert not out.exists()


# -- analyze on a grid -----------------------------------------------------------------------------------------
END = 400


def make_run(root: Path, name: str, parent: Path | None, step: int | None, read: dict[str, int],
             model: dict | None = None) -> Path:
    """A run folder as midtrain leaves it: run.json with its lineage, and a final checkpoint with its ledger
    (``read``: tokens per shard since the branch point) and, given ``model``, its model_config.yaml."""
    from midtrain.train.run_dir import branch_record, write_json_atomic

    folder = root / name
    (folder / "final").mkdir(parents=True)
    lineage = []
    if parent is not None:
        lineage = [branch_record({"run_id": f"{parent.name}-id", "out_dir": str(parent)}, parent / f"step-{step:08d}",
                                 step, {"main/1": 1.0}, {})]
    write_json_atomic(folder / "run.json", {"run_id": f"{name}-id", "out_dir": str(folder), "lineage": lineage,
                                            "invocations": []})
    (folder / "final" / "lit_model.pth").write_bytes(b"weights")  # what latest_checkpoint looks for
    if model is not None:
        (folder / "final" / "model_config.yaml").write_text(json.dumps(model))
    write_json_atomic(folder / "final" / "checkpoint.json", {"step": END, "final": True})
    shards = {"main/1": {"domain": "main"}, "c1": {"domain": "code"}}
    stretches = [{"start_step": 0, "tokens": {"main/1": 1000}}]
    if step is not None:
        stretches.append({"start_step": step, "tokens": read})
    write_json_atomic(folder / "final" / "ledger.json", {"shards": shards, "domains": {}, "stretches": stretches})
    return folder


def rows_for(folder: Path, name: str, losses: dict[tuple[str, str], dict[int, float]]) -> list[dict]:
    return [{"run": name, "step": s, "kind": kind, "name": item, "metric": "loss", "value": v,
             "checkpoint": str(folder / f"step-{s:08d}"), "settings": "x"}
            for (kind, item), curve in losses.items() for s, v in curve.items()]


def plane(step: int, share: float) -> float:
    """The Δ on code the grid is built with: centred at step 150 (0.15 thousand) and share 20 points."""
    s, p = step / 1000 - 0.15, share * 100 - 20
    return -0.5 + 2.0 * s - 0.01 * p + 0.1 * s * p


@pytest.fixture
def grid(tmp_path) -> Path:
    from midtrain.eval.results import ResultsTable

    runs = tmp_path / "runs"
    trunk = make_run(runs, "trunk", None, None, {})
    table = ResultsTable(tmp_path / "eval")
    rows = rows_for(trunk, "trunk", {("heldout", "main"): {100: 4.0, 200: 3.8}})
    for step in (100, 200):
        control = make_run(runs, f"control{step}", trunk, step, {"main/1": 1000})
        rows += rows_for(control, f"control{step}", {("heldout", "code"): {step: 5.0, END: 4.0},
                                                      ("heldout", "main"): {step: 3.0, END: 2.9}})
        for share in (0.1, 0.2, 0.3):
            name = f"code{step}-{int(share * 100)}"
            branch = make_run(runs, name, trunk, step, {"main/1": round(1000 * (1 - share)), "c1": round(1000 * share)})
            rows += rows_for(branch, name, {("heldout", "code"): {step: 5.0, END: 4.0 + plane(step, share)},
                                            ("heldout", "main"): {step: 3.0, END: 2.9 + share}})
    lone = make_run(runs, "code300", trunk, 300, {"main/1": 800, "c1": 200})
    rows += rows_for(lone, "code300", {("heldout", "code"): {300: 5.0, END: 3.0}})
    # the 20 % branch at step 100 and its control fine-tuned with two seeds on code_sft
    for base, values in (("code100-20", (1.0, 1.2)), ("control100", (1.5, 1.9))):
        rows += [{"run": f"{base}-sft{k}", "step": 10, "kind": "set", "name": "code_sft", "metric": "loss",
                  "value": v, "base_run": base, "base_step": END, "seed": k, "sft_task": "code_sft",
                  "checkpoint": str(tmp_path / "sft" / f"{base}-{k}" / "final"), "settings": "x"}
                 for k, v in enumerate(values)]
    table.append(rows)
    return tmp_path


def test_analyze_matches_by_lineage_and_fits_the_grid_by_hand(grid, capsys):
    out = grid / "analysis"
    assert main(["analyze", f"--tables={grid / 'eval' / 'eval.csv'}", f"--out_dir={out}"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert result["branches"]["control100"]["control"] and not result["branches"]["code100-10"]["control"]
    assert result["without_control"] == [{"branch": "code300", "step": 300, "targets": ["code"]}]
    effects = {(e["branch"], e["measure"], e["name"]): e for e in result["effects"]}
    code = effects[("code200-30", "target", "code")]
    assert code["control"] == "control200" and code["at_step"] == END
    assert code["delta"] == pytest.approx(plane(200, 0.3)) and code["half_width"] is None
    # over the curve: the gap grows linearly from 0 at the branch point, so its mean is half the end's
    assert code["mean_gap"] == pytest.approx(plane(200, 0.3) / 2)
    assert code["area"] == pytest.approx(plane(200, 0.3) / 2 * (END - 200))
    assert effects[("code100-30", "forgetting", "main")]["delta"] == pytest.approx(0.3)
    tuned = effects[("code100-20", "set", "code_sft")]
    # fine-tuned, two seeds each: Δ 1.1 - 1.7; Welch: variances 0.02/2 and 0.08/2, df (0.05)^2 / (0.01^2 + 0.04^2)
    df = 0.05**2 / (0.01**2 + 0.04**2)
    assert tuned["tuned"] and tuned["delta"] == pytest.approx(-0.6)
    assert df == pytest.approx(1.47, abs=0.01) and tuned["half_width"] == pytest.approx(12.706 * math.sqrt(0.05))
    fit = result["fits"][0]
    assert fit["domain"] == "code" and fit["on"] == "held-out code" and fit["points"] == 6
    terms = {t["term"]: t["estimate"] for t in fit["terms"]}
    assert terms == pytest.approx({"intercept": -0.5, "step (per 1,000)": 2.0, "share (per percentage point)": -0.01,
                                   "step x share": 0.1})
    assert fit["centred_at"] == pytest.approx({"step": 150.0, "share": 0.2})
    report = (out / "report.md").read_text()
    assert "**no control at step 300**" in report and "## Timing × share" in report
    assert (out / "timing_share.png").is_file() and (out / "branches.csv").is_file() and (out / "fit.csv").is_file()
    assert "come from one seed" in report  # most checkpoints here have one


def test_analyze_correlates_bridge_length_with_gain(grid, tmp_path):
    recommend = {"targets": {"code_sft": [{"rank": 1, "candidate": "code", "kind": "code", "bridge_length": 0.7}]}}
    path = tmp_path / "recommend.json"
    path.write_text(json.dumps(recommend))
    out = grid / "analysis"
    assert main(["analyze", f"--tables={grid / 'eval' / 'eval.csv'}", f"--similarity={path}",
                 f"--out_dir={out}"]) == 0
    bridge = json.loads((out / "analysis.json").read_text())["bridge"]
    assert bridge["pairs"] == [{"branch": "code100-20", "domain": "code", "sft": "code_sft", "bridge_length": 0.7,
                                "gain": pytest.approx(0.6)}]
    assert bridge["pearson"]["value"] is None and bridge["pearson"]["low"] is None  # one pair: no correlation
    assert bridge["orders"]["code_sft"] == {"by_bridge": ["code"], "by_gain": ["code"], "match": True,
                                            "mean_gain": {"code": pytest.approx(0.6)}}


def test_analyze_refuses_a_table_without_a_control_and_a_missing_parent(grid, capsys):
    from midtrain.eval.results import read_rows

    rows = [r for r in read_rows(grid / "eval" / "eval.csv") if not r["run"].startswith("control")]
    from midtrain.eval.results import ResultsTable

    ResultsTable(grid / "nocontrol").append(rows)
    out = grid / "analysis"
    assert main(["analyze", f"--tables={grid / 'nocontrol' / 'eval.csv'}", f"--out_dir={out}"]) == 2
    assert "no control branch" in capsys.readouterr().err and not out.exists()
    import shutil

    shutil.rmtree(grid / "runs" / "trunk")
    assert main(["analyze", f"--tables={grid / 'eval' / 'eval.csv'}", f"--out_dir={out}"]) == 2
    assert "its parent run" in capsys.readouterr().err and not out.exists()
    assert main(["analyze", f"--tables={grid / 'missing.csv'}", f"--out_dir={out}"]) == 2
    assert "missing.csv' does not exist" in capsys.readouterr().err and not out.exists()


def test_analyze_reads_several_tables_as_one_grid(grid, capsys):
    from midtrain.eval.results import ResultsTable, read_rows

    rows = read_rows(grid / "eval" / "eval.csv")
    ResultsTable(grid / "first").append([r for r in rows if r["run"] != "control200"])
    ResultsTable(grid / "second").append([r for r in rows if r["run"] == "control200"])
    out = grid / "analysis"
    assert main(["analyze", "--tables", str(grid / "first" / "eval.csv"), "--tables", str(grid / "second" / "eval.csv"),
                 f"--out_dir={out}"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert {e["control"] for e in result["effects"] if e["step"] == 200} == {"control200"}
    assert len(result["tables"]) == 2 and result["fits"][0]["points"] == 6


def test_analyze_reads_a_repeated_table_once_and_refuses_what_would_make_up_a_result(grid, capsys):
    """The same table twice used to count every row as two seeds (every interval ±0.0000); a row given twice with
    another value was averaged (Δ −0.0086 became +0.4914); nan gave +nan and a false order; an unknown --sft_for name
    was ignored."""
    from midtrain.eval.results import ResultsTable, read_rows

    table = grid / "eval" / "eval.csv"
    out = grid / "analysis"
    assert main(["analyze", f"--tables={table}", f"--out_dir={grid / 'once'}"]) == 0
    assert main(["analyze", "--tables", str(table), "--tables", str(table), f"--out_dir={out}"]) == 0
    once, twice = (json.loads((o / "analysis.json").read_text()) for o in (grid / "once", out))
    assert twice["effects"] == once["effects"] and twice["fits"] == once["fits"]
    assert any("repeated as they were" in n for n in twice["notes"])
    capsys.readouterr()
    rows = read_rows(table)
    changed = next(r for r in rows if r["run"] == "code200-30" and r["step"] == END and r["name"] == "code")
    ResultsTable(grid / "other").append([{**changed, "value": changed["value"] + 0.5}])
    assert main(["analyze", "--tables", str(table), "--tables", str(grid / "other" / "eval.csv"),
                 f"--out_dir={grid / 'conflict'}"]) == 2
    err = capsys.readouterr().err
    assert f"run 'code200-30' step {END} heldout 'code' loss is given twice, differently (value:" in err
    assert not (grid / "conflict").exists()
    ResultsTable(grid / "nan").append([{**r, "value": float("nan")} if r is changed else r for r in rows])
    assert main(["analyze", f"--tables={grid / 'nan' / 'eval.csv'}", f"--out_dir={grid / 'n'}"]) == 2
    assert f"run 'code200-30' step {END} heldout 'code' loss is nan" in capsys.readouterr().err
    for sft_for, message in (('{cod: [code_sft]}', "--sft_for names domain 'cod', which no run of the tables reads "
                                                    "or is scored on (domains: code, main). Did you mean 'code'?"),
                             ('{code: [code_stf]}', "--sft_for.code names set 'code_stf', which the tables do not "
                                                    "score (sets: code_sft). Did you mean 'code_sft'?")):
        assert main(["analyze", f"--tables={table}", f"--sft_for={sft_for}", f"--out_dir={grid / 's'}"]) == 2
        assert message in capsys.readouterr().err
    assert not (grid / "s").exists() and not (grid / "n").exists()


def test_analyze_names_a_bad_cell_an_empty_table_two_folders_under_one_name_and_bad_outputs(grid, capsys):
    table = grid / "eval" / "eval.csv"
    lines = table.read_text().splitlines(keepends=True)
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("value")] = "abc"
    (grid / "bad.csv").write_text(lines[0] + lines[1] + lines[2] + ",".join(cells))
    assert main(["analyze", f"--tables={grid / 'bad.csv'}", f"--out_dir={grid / 'a'}"]) == 2
    assert f"--tables='{grid / 'bad.csv'}': line 4, column 'value': 'abc' is not a number" in capsys.readouterr().err
    (grid / "empty.csv").write_text("")
    assert main(["analyze", f"--tables={grid / 'empty.csv'}", f"--out_dir={grid / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert "is empty: no evaluation was written to it" in err and "--out_dir" not in err
    moved = lines[0] + "".join(line.replace(str(grid / "runs" / "control100"), str(grid / "elsewhere" / "control100"))
                               for line in lines[1:] if ",control100," in f",{line}" and "step-00000100" in line)
    (grid / "two.csv").write_text(lines[0] + "".join(lines[1:]) + moved[len(lines[0]):])
    assert main(["analyze", f"--tables={grid / 'two.csv'}", f"--out_dir={grid / 'a'}"]) == 2
    assert "the run name 'control100' stands for two run folders" in capsys.readouterr().err
    (grid / "file").write_text("")
    (grid / "blocked" / "report.md").mkdir(parents=True)
    for out, message in ((grid / "file", "is a file, not a folder"), (grid / "file" / "out", "cannot be created"),
                         (grid / "blocked", "holds a folder named 'report.md'")):
        assert main(["analyze", f"--tables={table}", f"--out_dir={out}"]) == 2
        assert message in capsys.readouterr().err
    assert not (grid / "a").exists()


def test_recommend_names_the_flag_of_a_bad_name_and_refuses_a_sample_below_one_sequence(corpora, tmp_path, capsys):
    c1, m1 = corpora / "cands" / "c1", corpora / "cands" / "m1"
    out = tmp_path / "rec"
    common = [f"--pretrain=main={corpora / 'pretrain' / '1'}", f"--target=T={corpora / 't' / '1'}",
              f"--out_dir={out}", "--seq_length=16"]
    for candidates, message in (
        (f"[code={c1}, code={m1}]", "the corpus name 'code' is given twice"),
        (f"[code={c1}, main={m1}]", "the corpus name 'main' is given in --pretrain and in --candidates"),
        (f"[code={c1}, T={m1}]", "the corpus name 'T' is given in --target and in --candidates"),
        (f"[code={c1}, ' ={m1}']", "--candidates entry"),
        (f"[code={c1}, 🚀={m1}]", "the name '🚀' is not letters, digits, _ . -"),
    ):
        assert main(["recommend", *common, f"--candidates={candidates}"]) == 2
        err = capsys.readouterr().err
        assert message in err and "--corpora" not in err, err
    assert main(["recommend", *common, f"--candidates=[code={c1}, math={m1}]", "--sample_tokens=8"]) == 2
    assert "--sample_tokens=8 is below one sequence (--seq_length=16)" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["recommend", *common[:2], f"--candidates=[code={c1}, math={m1}]",
                 f"--out_dir={tmp_path / 'file'}"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err  # before anything is measured
    assert not out.exists()


def test_analyze_flags_a_gain_on_a_set_whose_items_were_found_in_the_branchs_data(grid, data_root):
    from midtrain.train.run_dir import write_json_atomic

    branch = grid / "runs" / "code100-20"
    run = json.loads((branch / "run.json").read_text())
    run["invocations"] = [{"config": {"data": {"init_args": {"data_path": str(data_root)}}}}]
    write_json_atomic(branch / "run.json", run)
    ledger = json.loads((branch / "final" / "ledger.json").read_text())
    ledger["shards"] = {"main/1": {"domain": "main", "tokens": 1800}, "c1": {"domain": "code", "tokens": 200}}
    write_json_atomic(branch / "final" / "ledger.json", ledger)
    c1 = str((data_root / "train" / "c1").resolve())
    report = {"sources": {"code_sft": {"items": 50, "found": {"4": [{"shard": c1, "document": 2, "overlap": 1.0}]}}},
              "shards": {c1: {}}}
    (grid / "decon.json").write_text(json.dumps(report))
    out = grid / "analysis"
    assert main(["analyze", f"--tables={grid / 'eval' / 'eval.csv'}", f"--decon={grid / 'decon.json'}",
                 f"--out_dir={out}"]) == 0
    effects = {(e["branch"], e["name"]): e for e in json.loads((out / "analysis.json").read_text())["effects"]}
    assert effects[("code100-20", "code_sft")]["leak"]["status"] == "leaked"
    assert "gain may include leaked items: 1 of 50 code_sft items found in c1" in (out / "report.md").read_text()


SMALL = {"name": "tiny", "n_layer": 2, "n_embd": 32, "padded_vocab_size": 4096}
LARGE = {"name": "tiny", "n_layer": 4, "n_embd": 64, "padded_vocab_size": 4096}


def test_analyze_reports_decision_accuracy_across_sizes_by_hand(tmp_path):
    """One grid (a control and code at 10, 20, 30 % from step 100) at two sizes, the small one with two seeds. At the
    large size every metric orders control < 10 < 20 < 30 %. At the small: held-out code loss swaps 10 and 20 % (5 of
    6 pairs alike), gold bpb keeps the order (6 of 6), task accuracy ties all but 30 % (three pairs tied: 4.5 of 6)."""
    from midtrain.eval.results import ResultsTable

    cells = {"control": 0.0, "code10": 0.1, "code20": 0.2, "code30": 0.3}
    values = {  # cell -> (code loss, gold bpb, task acc)
        "LARGE": {"control": (4.0, 1.5, 0.25), "code10": (3.9, 1.4, 0.30), "code20": (3.8, 1.3, 0.35),
                  "code30": (3.7, 1.2, 0.40)},
        "SMALL": {"control": (4.5, 2.0, 0.25), "code10": (4.35, 1.9, 0.25), "code20": (4.4, 1.8, 0.25),
                  "code30": (4.2, 1.7, 0.30)},
    }
    rows = []
    for size, model, seeds in (("LARGE", LARGE, (0,)), ("SMALL", SMALL, (-0.01, 0.01))):
        trunk = make_run(tmp_path / "runs", f"trunk-{size}", None, None, {}, model)
        for cell, share in cells.items():
            for k, spread in enumerate(seeds):
                name = f"{size}-{cell}-s{k}"
                read = {"main/1": round(1000 * (1 - share)), **({"c1": round(1000 * share)} if share else {})}
                folder = make_run(tmp_path / "runs", name, trunk, 100, read, model)
                code, bpb, acc = values[size][cell]
                point = {"run": name, "step": END, "checkpoint": str(folder / "final"), "settings": "x"}
                rows += [{**point, "kind": "heldout", "name": "code", "metric": "loss", "value": code + spread},
                         {**point, "kind": "gold", "name": "arith", "metric": "bpb", "value": bpb + spread},
                         {**point, "kind": "task", "name": "arith_mc", "metric": "acc", "value": acc},
                         {**point, "step": 100, "kind": "heldout", "name": "code", "metric": "loss", "value": 9.0}]
    ResultsTable(tmp_path / "eval").append(rows)
    out = tmp_path / "analysis"
    assert main(["analyze", f"--tables={tmp_path / 'eval' / 'eval.csv'}", f"--out_dir={out}", "--resamples=200"]) == 0
    decisions = json.loads((out / "analysis.json").read_text())["decisions"]
    assert decisions["across"] == "size" and decisions["models"] == ["tiny (2x32)", "tiny (4x64)"]
    same = {(r["kind"], r["name"], r["metric"]): r for r in decisions["same_metric"]}
    assert same["heldout", "code", "loss"]["pairs"] == 6
    assert same["heldout", "code", "loss"]["accuracy"] == pytest.approx(5 / 6)
    # the seeds' spread (0.02) never reorders 10 and 20 % (0.05 apart): the interval is the point
    assert same["heldout", "code", "loss"]["low"] == pytest.approx(5 / 6)
    assert same["heldout", "code", "loss"]["high"] == pytest.approx(5 / 6)
    assert same["gold", "arith", "bpb"]["accuracy"] == 1.0
    assert same["task", "arith_mc", "acc"]["accuracy"] == pytest.approx(4.5 / 6)
    assert decisions["best_metric"]["metric"] == "bpb" and decisions["best_metric"]["kind"] == "gold"
    predictors = {p["target"]: p for p in decisions["predictors"]}
    assert predictors["task/arith_mc/acc"]["best"] == "gold/arith/bpb"  # lower bpb where higher accuracy
    assert predictors["task/arith_mc/acc"]["best_accuracy"] == 1.0
    report = (out / "report.md").read_text()
    assert "## Decision accuracy" in report and "Best: gold arith bpb decides 100% of pairs alike" in report
    assert (out / "decisions.csv").is_file() and (out / "predictors.csv").is_file()
