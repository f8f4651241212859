"""The demo end to end at its reduced size, and every config under pretrain_configs/ and midtrain_configs/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from midtrain.cli import main
from midtrain.demo.corpus import math_problems, split_prose_and_code
from midtrain.demo.pipeline import BRANCHES, RAMPED, SIZES, ramp_override

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "pretrain_configs" / "demo").rglob("*.yaml")) + sorted(
    (REPO / "midtrain_configs" / "demo").rglob("*.yaml")
)


@pytest.mark.slow
def test_tiny_demo_runs_every_stage_and_writes_the_report(tiny_demo, capsys):
    table = (tiny_demo / "summary.md").read_text()
    for name in BRANCHES:
        assert f"| {name} |" in table
    png = tiny_demo / "loss_by_domain.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    summary = json.loads((tiny_demo / "summary.json").read_text())
    assert summary["branch_step"] == SIZES["tiny"]["branch_step"]
    assert set(summary["final"]) == set(BRANCHES) and set(summary["final"]["code"]) == {
        "main",
        "code",
        "math",
        "instruct",
    }
    for name in BRANCHES:
        lineage = json.loads((tiny_demo / "runs" / name / "run.json").read_text())["lineage"]
        assert lineage[0]["step"] == SIZES["tiny"]["branch_step"]
    code_ledger = json.loads((tiny_demo / "runs" / "code" / "final" / "ledger.json").read_text())
    assert set(code_ledger["domains"]) == {"main", "code"}
    ramp_ledger = json.loads((tiny_demo / "runs" / "code_ramp" / "final" / "ledger.json").read_text())
    assert [p.get("segment") for p in ramp_ledger["stretches"]] == [None, "phase 0 ramp 1/3", "phase 0 ramp 2/3",
                                                                  "phase 0 ramp 3/3", "phase 0"]
    rows = json.loads((tiny_demo / "eval" / "eval.json").read_text())
    scored = {(r["run"], r["step"], r["name"]) for r in rows if r["metric"] == "loss"}
    names = {"main", "code", "math", "instruct", "code_sft", "math_sft"}
    runs = {"trunk": (3, 6), **{branch: (9, 12) for branch in BRANCHES}}
    assert scored == {(run, step, name) for run, steps in runs.items() for step in steps for name in names}
    assert {p.name for p in (tiny_demo / "eval" / "plots").iterdir()} == {
        f"heldout_{d}.png" for d in names - {"code_sft", "math_sft"}
    } | {"set_code_sft.png", "set_math_sft.png"} | {f"mixture_lr_{run}.png" for run in runs}
    report = json.loads((tiny_demo / "similarity" / "similarity.json").read_text())
    assert list(report["corpora"]) == ["main", "code", "math", "instruct", "code_sft", "math_sft"]
    assert set(report["similarity"]) == {"token", "model"}
    assert {(p["mix"], p["sft"]) for p in report["bridge"]["pairs"]} == {
        (m, s) for m in ("code", "math") for s in ("code_sft", "math_sft")
    }
    assert report["bridge"]["correlation"]["pairs"] == 4
    recommended = json.loads((tiny_demo / "recommend" / "recommend.json").read_text())
    assert recommended["measure"] == "model" and set(recommended["targets"]) == {"code_sft", "math_sft"}
    for ranking in recommended["targets"].values():
        assert sorted(e["candidate"] for e in ranking) == ["code", "math"] and [e["rank"] for e in ranking] == [1, 2]
    analysis = json.loads((tiny_demo / "analysis" / "analysis.json").read_text())
    assert analysis["branches"]["control"]["control"] and analysis["without_control"] == []
    assert {e["branch"] for e in analysis["effects"]} == {"code", "code_ramp", "math"}
    assert analysis["branches"]["code"]["targets"] == ["code"] and analysis["branches"]["math"]["targets"] == ["math"]
    assert {p["sft"] for p in analysis["bridge"]["pairs"]} == {"code_sft", "math_sft"}
    assert "## Bridge length against gain" in (tiny_demo / "analysis" / "report.md").read_text()


@pytest.mark.slow
def test_running_the_demo_again_reuses_data_and_finished_runs(tiny_demo, capsys):
    assert main(["demo", "--out_dir", str(tiny_demo), "--size", "tiny", "--num_workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "reusing the corpus" in printed and "reusing the tokenizer" in printed and "main: reusing" in printed
    assert printed.count("already finished") == len(BRANCHES)
    assert "Saved checkpoint" not in printed
    assert (
        f"{2 + 2 * len(BRANCHES)} checkpoint(s) already scored with these settings: skipped." in printed
        and "Wrote 0 row(s)" in printed
    )


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_demo_config_parses_and_passes_a_dry_run(config, tiny_demo, tmp_path):
    """Paths are pointed at the tiny demo's data and trunk, sizes at the tiny preset; everything else is the file's."""
    raw = yaml.safe_load(config.read_text())
    args = ["pretrain", "--config", str(config), f"--data.data_path={tiny_demo / 'data'}",
            f"--tokenizer_dir={tiny_demo / 'tokenizer'}", f"--out_dir={tmp_path / 'run'}", "--dry_run=true",
            *SIZES["tiny"]["overrides"]]
    if raw.get("branch_from"):
        args.append(f"--branch_from={tiny_demo / 'runs' / 'trunk' / 'step-00000006'}")
    if config.stem == RAMPED:  # its ramp starts at the branch point, which the tiny demo moves to step 6
        args += ramp_override(SIZES["tiny"]["branch_step"], {"max_steps": 12})
    controller = raw["data"]["init_args"].get("mix_controller")
    if controller:  # decisions on the tiny preset's evaluation steps (every 3)
        args.append(f"--data.mix_controller={json.dumps({**controller, 'every_steps': 3})}")
    assert main(args) == 0


def test_demo_corpus_separates_prose_from_code():
    source = '"""Module doc with several words."""\n# a comment about the next line here\nx = 1  # trailing note\n\n' \
             'def f(a):\n    """Return a plus one, always."""\n    return a + 1\n'
    prose, code = split_prose_and_code(source)
    assert "Module doc with several words." in prose and "Return a plus one, always." in prose
    assert any("a comment about the next line here" in p for p in prose)
    assert code == ["x = 1", "def f(a):\n    return a + 1"]
    problems = list(math_problems(50, seed=3))
    assert problems == list(math_problems(50, seed=3)) and all("Answer:" in p for p in problems)
