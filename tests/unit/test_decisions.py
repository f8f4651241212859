"""Decision accuracy on orders worked out by hand: pairs alike, ties, directions, seeds, the best metric."""

from __future__ import annotations

import pytest

from midtrain.analysis.decisions import (
    RunPoint,
    accuracy_interval,
    agreement,
    cell_of,
    decision_accuracy,
    direction,
    estimated_parameters,
    final_values,
)


def test_pairs_ordered_alike_ties_and_directions():
    large = {"a": 1.0, "b": 2.0, "c": 3.0}
    assert agreement({"a": 1.0, "b": 2.0, "c": 3.0}, large) == (3, 3)
    assert agreement({"a": 2.0, "b": 1.0, "c": 3.0}, large) == (2, 3)  # a-b swapped
    assert agreement({"a": 1.0, "b": 1.0, "c": 3.0}, large) == (2.5, 3)  # a tie at the small size counts half
    assert agreement({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 1.0}) == (0, 0)  # a tie at the reference decides nothing
    # accuracy rises where loss falls: opposite directions that agree
    assert agreement({"a": 3.0, "b": 2.0, "c": 1.0}, {"a": 0.1, "b": 0.2, "c": 0.3}, -1, 1) == (3, 3)
    assert agreement({"a": 1.0, "x": 5.0}, {"a": 1.0, "y": 5.0}) == (0, 0)  # only cells both sizes have
    assert direction("acc") == 1 and direction("acc_norm[none]") == 1 and direction("bpb") == -1
    assert direction("loss") == -1 and direction("logprob") == 1


def test_the_interval_resamples_seeds_and_is_none_for_one_seed():
    small = {"a": [1.0, 3.0], "b": [2.0, 2.0]}
    large = {"a": [1.0], "b": [2.0]}
    low, high = accuracy_interval(small, large, -1, -1, 500, 0)
    # a's resampled mean is 1 (agree), 2 (tie: half) or 3 (disagree): the interval spans all three
    assert (low, high) == (0.0, 1.0)
    assert accuracy_interval({"a": [1.0], "b": [2.0]}, large, -1, -1, 100, 0) == (None, None)


def test_sizes_ordered_by_parameters_and_the_best_predictor():
    values = {
        ("heldout", "code", "loss"): {"big": {"a": [1.0], "b": [2.0], "c": [3.0]},
                                      "small": {"a": [2.0], "b": [1.0], "c": [3.0]}},
        ("task", "t", "acc"): {"big": {"a": [0.9], "b": [0.5], "c": [0.1]},
                               "small": {"a": [0.6], "b": [0.5], "c": [0.4]}},
    }
    result = decision_accuracy(values, {"big": 1000, "small": 10}, resamples=10)
    assert result["models"] == ["small", "big"] and result["across"] == "size"
    same = {r["metric"]: r["accuracy"] for r in result["same_metric"]}
    assert same == {"loss": pytest.approx(2 / 3), "acc": 1.0}
    assert result["best_metric"]["metric"] == "acc"
    by_target = {p["target"]: p for p in result["predictors"]}
    # the big model's loss order (a < b < c) is the small model's accuracy order (a > b > c): acc predicts it
    assert by_target["heldout/code/loss"]["best"] == "task/t/acc"
    assert by_target["heldout/code/loss"]["best_accuracy"] == 1.0


def test_one_model_several_seeds_compares_seed_with_seed():
    values = {("gold", "g", "bpb"): {"m": {"a": [1.0, 1.0, 3.0], "b": [2.0, 2.0, 2.0]}}}
    result = decision_accuracy(values, {"m": 1})
    # seed pairs (0,1) alike, (0,2) and (1,2) reversed: 1 of 3
    assert result["across"] == "seed" and result["same_metric"][0]["accuracy"] == pytest.approx(1 / 3)


def test_final_values_take_each_runs_latest_step_and_group_replicates():
    runs = {"r1": RunPoint("m", 1, ("c",), 1), "r2": RunPoint("m", 1, ("c",), 2), "r3": RunPoint("m", 1, ("d",), 1)}
    rows = [{"run": "r1", "step": 5, "kind": "heldout", "name": "x", "metric": "loss", "value": 9.0},
            {"run": "r1", "step": 10, "kind": "heldout", "name": "x", "metric": "loss", "value": 1.0},
            {"run": "r2", "step": 10, "kind": "heldout", "name": "x", "metric": "loss", "value": 3.0},
            {"run": "r3", "step": 10, "kind": "heldout", "name": "x", "metric": "ppl", "value": 3.0},
            {"run": "t1", "step": 2, "kind": "set", "name": "s", "metric": "loss", "value": 4.0, "base_run": "r3",
             "base_step": 10},
            {"run": "t2", "step": 2, "kind": "set", "name": "s", "metric": "loss", "value": 6.0, "base_run": "r3",
             "base_step": 10}]
    values = final_values(rows, runs)
    assert values == {("heldout", "x", "loss"): {"m": {("c",): [1.0, 3.0]}},
                      ("set", "s", "loss"): {"m": {("d",): [5.0]}}}  # two fine-tuning seeds: their mean


def test_cells_and_parameter_estimates():
    assert cell_of(100, {"main": 0.8, "code": 0.2001, "math": 0.001}) == (100, (("code", 0.2), ("main", 0.8)))
    small = estimated_parameters({"n_layer": 6, "n_embd": 512, "padded_vocab_size": 50304})
    large = estimated_parameters({"n_layer": 24, "n_embd": 1024, "padded_vocab_size": 50304})
    assert 60e6 < small < 80e6 and 350e6 < large < 450e6  # pythia-70m and -410m, near their sizes
