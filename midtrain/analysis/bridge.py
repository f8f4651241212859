"""The bridge analysis (pure logic): bridge lengths of each midtraining mix between the pretraining corpus and
each SFT set, the SFT gain of each mix over the control from the ``midtrain eval`` table, and their correlation."""

from __future__ import annotations

from statistics import mean

import numpy as np

from midtrain.analysis.grid import loss_samples
from midtrain.analysis.similarity import bridge_length, pearson, spearman


def set_losses(rows: list[dict], run: str, set_name: str) -> dict[int, float]:
    """Loss on a named set by step for a run: fine-tuned checkpoints of the run (by base step, mean over seeds)
    when the table has any, else the run's own checkpoints."""
    samples, _ = loss_samples(rows, run, "any", set_name)
    return {step: mean(values) for step, values in samples.items()}


def sft_gain(rows: list[dict], run: str, control: str, set_name: str) -> tuple[float, int] | None:
    """(control loss - run loss, step) at the latest step both have; None if they share none."""
    ours, theirs = set_losses(rows, run, set_name), set_losses(rows, control, set_name)
    common = sorted(set(ours) & set(theirs))
    if not common:
        return None
    step = common[-1]
    return theirs[step] - ours[step], step


def bridge_report(matrix: np.ndarray, names: list[str], pretrain: str, mixes: list[str], sft_sets: list[str],
                  rows: list[dict] | None = None, control: str | None = None, mix_runs: dict[str, str] | None = None,
                  set_names: dict[str, str] | None = None) -> dict:
    """Bridge length per (mix, SFT set); with an eval table, the SFT gain over the control and the correlations."""
    pairs = []
    for mix in mixes:
        for sft in sft_sets:
            entry = {"mix": mix, "sft": sft, "bridge_length": bridge_length(matrix, names, pretrain, mix, sft)}
            if rows is not None and control is not None:
                run = (mix_runs or {}).get(mix, mix)
                gain = sft_gain(rows, run, control, (set_names or {}).get(sft, sft))
                entry.update(
                    {"run": run, "gain": None if gain is None else gain[0], "step": None if gain is None else gain[1]}
                )
            pairs.append(entry)
    report: dict = {"pretrain": pretrain, "pairs": pairs}
    scored = [p for p in pairs if p.get("gain") is not None]
    if rows is not None:
        lengths, gains = [p["bridge_length"] for p in scored], [p["gain"] for p in scored]
        report["correlation"] = {
            "pairs": len(scored),
            "pearson": pearson(lengths, gains),
            "spearman": spearman(lengths, gains),
        }
    return report
