"""The grid analysis and the recommendation's pure logic, against values computed by hand: intervals, Δ and the
area between curves, the least-squares fit and its standard errors, bootstrap intervals, lineage matching, ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from midtrain.analysis.grid import (
    Branch,
    bootstrap_interval,
    branch_of,
    compare,
    difference,
    least_squares,
    loss_samples,
    match_controls,
    mean_interval,
    t_quantile,
)
from midtrain.analysis.recommend import rank_candidates, suggest_mixture
from midtrain.analysis.similarity import pearson


def test_t_quantiles():
    assert t_quantile(1) == 12.706 and t_quantile(4.7) == 2.776 and t_quantile(30) == 2.042
    assert t_quantile(1000) == pytest.approx(1.962, abs=1e-3)


def test_intervals_and_differences_by_hand():
    m, half = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert mean_interval([5.0]) == (5.0, None)
    d = difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    # each mean's variance 1/3; Welch's degrees of freedom (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    assert d["delta"] == -1.0 and d["half_width"] == pytest.approx(2.776 * math.sqrt(2 / 3))
    assert difference([1.0], [2.0, 3.0])["half_width"] is None


def test_the_gap_at_the_end_and_the_area_between_curves():
    branch = {0: [3.0], 10: [2.0], 20: [1.0], 30: [0.5]}
    control = {0: [3.0], 10: [3.0], 20: [3.0]}
    out = compare(branch, control, start=0)
    # common steps 0, 10, 20; gaps 0, -1, -2: area (0 - 1) / 2 * 10 + (-1 - 2) / 2 * 10 = -20, per step -1
    assert (out["at_step"], out["delta"], out["area"], out["mean_gap"]) == (20, -2.0, -20.0, -1.0)
    assert compare(branch, {40: [1.0]}, start=0) is None


def test_least_squares_by_hand():
    # y on share alone: shares 10, 20, 30 pp (centred -10, 0, 10), y 1, 2, 4
    fit = least_squares([(1000, 0.1, 1.0), (1000, 0.2, 2.0), (1000, 0.3, 4.0)])
    terms = {t["term"]: t for t in fit["terms"]}
    assert set(terms) == {"intercept", "share (per percentage point)"} and fit["residual_df"] == 1
    assert terms["share (per percentage point)"]["estimate"] == pytest.approx(30 / 200)
    assert terms["intercept"]["estimate"] == pytest.approx(7 / 3)
    rss = (1 / 6) ** 2 + (1 / 3) ** 2 + (1 / 6) ** 2  # residuals 1/6, -1/3, 1/6
    assert terms["share (per percentage point)"]["se"] == pytest.approx(math.sqrt(rss / 200))
    assert terms["intercept"]["se"] == pytest.approx(math.sqrt(rss / 3))
    # an exact plane through five points: the effects come back, centred at the means (step 18k, share 18 %)
    points = [(s, p, 0.5 + 0.1 * s / 1000 - 0.05 * p * 100) for s, p in
              ((10_000, 0.1), (20_000, 0.1), (10_000, 0.2), (20_000, 0.2), (30_000, 0.3))]
    terms = {t["term"]: t for t in least_squares(points)["terms"]}
    assert terms["step (per 1,000)"]["estimate"] == pytest.approx(0.1)
    assert terms["share (per percentage point)"]["estimate"] == pytest.approx(-0.05)
    assert terms["step x share"]["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert terms["intercept"]["estimate"] == pytest.approx(0.5 + 1.8 - 0.9)
    exact = least_squares([(1000, 0.1, 1.0), (1000, 0.2, 2.0)])
    assert exact["residual_df"] == 0 and all(t["se"] is None for t in exact["terms"])


def test_bootstrap_interval():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    low, high, used = bootstrap_interval(x, [2 * v for v in x], pearson, resamples=200)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0) and 0 < used <= 200
    assert bootstrap_interval([1.0, 2.0], [1.0, 2.0], pearson) == (None, None, 0)


def ledger(after_branch: dict[str, int], step: int = 100) -> dict:
    return {"shards": {"main/1": {"domain": "main"}, "c1": {"domain": "code"}, "m1": {"domain": "math"}},
            "stretches": [{"start_step": 0, "tokens": {"main/1": 1000}},
                          {"start_step": step, "tokens": after_branch}]}


def run_json(step: int = 100, parent: str = "trunk-id") -> dict:
    return {"lineage": [{"parent_run_id": parent, "parent_out_dir": "/runs/trunk", "step": step,
                         "mixture_before": {"main/1": 1.0}, "mixture_after": {}}]}


def test_lineage_makes_the_grid_and_matches_controls():
    code = branch_of("code", run_json(), ledger({"main/1": 800, "c1": 200}))
    assert code.targets == ("code",) and code.shares == {"main": 0.8, "code": 0.2} and not code.is_control
    assert code.pretraining_domains == ("main",)
    control = branch_of("plain", run_json(), ledger({"main/1": 1000}))
    assert control.is_control and control.targets == ()
    late = branch_of("late", run_json(step=200), ledger({"main/1": 500, "m1": 500}, step=200))
    assert late.targets == ("math",)
    unread = branch_of("unread", run_json(step=300), ledger({"main/1": 500}, step=200))
    assert unread.shares == {} and not unread.is_control
    trunk = branch_of("trunk", {"lineage": []}, ledger({}))
    assert trunk.step is None and not trunk.is_control
    matched, notes = match_controls([code, control, late, trunk])
    assert matched == {"code": control, "late": None} and notes == []
    twin = Branch("again", "trunk-id", "/runs/trunk", 100, {"main": 1.0}, {"main": 1.0})
    _, notes = match_controls([code, control, twin])
    assert notes and "again is used" in notes[0]


def test_fine_tuned_rows_win_over_the_checkpoints_own():
    rows = [{"run": "code", "step": 10, "kind": "set", "name": "s", "metric": "loss", "value": 2.0,
             "base_run": None, "base_step": None}]
    assert loss_samples(rows, "code", "set", "s") == ({10: [2.0]}, False)
    rows += [{"run": f"code-ft{k}", "step": 5, "kind": "set", "name": "s", "metric": "loss", "value": v,
              "base_run": "code", "base_step": 10} for k, v in enumerate((1.0, 1.5))]
    assert loss_samples(rows, "code", "set", "s") == ({10: [1.0, 1.5]}, True)


def test_ranking_and_suggestion_by_hand():
    names = ["P", "T", "A", "B"]
    token = np.eye(4)
    for (i, j), v in {(0, 2): 0.5, (2, 1): 0.5, (0, 3): 0.9, (3, 1): 0.2}.items():
        token[i, j] = token[j, i] = v
    ranked = rank_candidates({"token": token}, names, "P", ["A", "B"], "T", "token")
    # bridge lengths: A (1 - 0.5) + (1 - 0.5) = 1.0; B (1 - 0.9) + (1 - 0.2) = 0.9
    assert [(e["rank"], e["candidate"]) for e in ranked] == [(1, "B"), (2, "A")]
    assert ranked[0]["bridge_length"] == pytest.approx(0.9) and ranked[0]["token"] == {"to_pretrain": 0.9,
                                                                                      "to_target": 0.2}
    assert suggest_mixture("starcoder", "code")["mix_weights_str"] == "main:0.8,code:0.2"
    assert suggest_mixture("gsm", "math")["share"] == 0.12
    other = suggest_mixture("flan", "flan")
    assert other["share"] == 0.2 and "no paper branch of kind 'flan'" in other["rule"]


def test_a_gain_on_a_set_is_flagged_when_its_items_were_found_in_the_data_read(tmp_path):
    from midtrain.analysis.leaks import leak_check

    c1, c2 = str(tmp_path / "c1"), str(tmp_path / "c2")
    report = {"sources": {"code_sft": {"items": 40, "found": {"3": [{"shard": c1, "document": 7, "overlap": 1.0}],
                                                              "9": [{"shard": c2, "document": 1, "overlap": 0.6}]}}},
              "shards": {c1: {}, c2: {}}}
    leaked = leak_check("code_sft", {c1: None}, [report])
    assert leaked["status"] == "leaked" and leaked["found"] == 1 and leaked["shards"] == ["c1"]
    assert leaked["note"] == "gain may include leaked items: 1 of 40 code_sft items found in c1"
    cleaned = {"sources": [{"name": "code_sft", "sha256": "ab"}]}
    assert leak_check("code_sft", {c1: cleaned, c2: cleaned}, [])["status"] == "clean"
    assert leak_check("code_sft", {c1: cleaned, c2: None}, [])["status"] == "unchecked"
    other = {"sources": {"math_sft": {"items": 5, "found": {}}}, "shards": {c1: {}}}
    assert leak_check("math_sft", {c1: None}, [other])["note"] == "no math_sft item found (decon report)"
    assert leak_check("math_sft", {}, [other])["status"] == "unchecked"  # a text corpus: no shards to check
