"""Gold-answer metrics: ``eval.gold_sets`` in training (an SFT set and a local offline multiple-choice task) equal
``midtrain eval --gold_sets`` on the same checkpoint; the multiple-choice accuracy equals lm-evaluation-harness's own
``acc``; the SFT set's summed gold log-probability equals the masked SFT loss that ``--sets`` scores; bad input is
refused before training, naming the key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from midtrain.cli import main
from tests.integration.test_eval import eval_rows, write_local_tasks
from tests.integration.train_helpers import metric, tiny_config, write_config

pytest.importorskip("lm_eval")


def sft_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    examples = [{"instruction": f"What is {a} + {b}?", "input": "", "output": str(a + b)}
                for a in range(2, 5) for b in range(3, 5)]
    path = folder / "qa.json"
    path.write_text(json.dumps(examples))
    return path


def gold_config(train_root: Path, tokenizer_dir: Path, out: Path, qa: Path, tasks: Path, **eval_overrides) -> dict:
    config = tiny_config(train_root, out, max_steps=4, save_interval=4, max_seq_length=32)
    config["tokenizer_dir"] = str(tokenizer_dir)
    config["eval"] = {"interval": 2, "final_validation": True, "gold_sets": [
        {"name": "qa", "json_path": str(qa), "prompt_style": "default"},
        {"name": "arith", "task": "arith_mc", "task_paths": [str(tasks)], "max_items": 4},
    ], **eval_overrides}
    return config


@pytest.fixture(scope="module")
def gold_run(train_root, tokenizer_dir, tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("gold")
    monkeypatch_module.setenv("HF_HOME", str(root / "hf"))
    qa, tasks = sft_file(root / "sft"), write_local_tasks(root / "tasks")
    out = root / "run"
    config = write_config(root / "run.yaml", gold_config(train_root, tokenizer_dir, out, qa, tasks))
    assert main(["pretrain", "--config", str(config)]) == 0
    return out, qa, tasks


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.slow
def test_training_and_eval_give_the_same_gold_metrics(gold_run, tmp_path, capsys):
    out, qa, tasks = gold_run
    trained = {name: metric(out, f"gold/{name}") for name in
               ("qa/logprob", "qa/bpb", "arith/logprob", "arith/bpb", "arith/acc", "arith/gold_prob")}
    assert all(sorted(values) == [2, 4] for values in trained.values())  # at each evaluation, the last the final one
    assert "gold/qa/acc" not in {f"gold/{k}" for k in trained}  # one answer per prompt: no accuracy
    gold = (f"[{{name: qa, json_path: {qa}, prompt_style: default}}, "
            f"{{name: arith, task: arith_mc, task_paths: [{tasks}], max_items: 4}}]")
    sets = f"[{{name: qa_masked, json_path: {qa}, prompt_style: default, mask_prompt: true}}]"
    assert main(["eval", f"--runs={out / 'final'}", f"--out_dir={tmp_path / 'eval'}", f"--gold_sets={gold}",
                 f"--sets={sets}", "--tasks=arith_mc", f"--task_paths={tasks}", "--limit=4", "--heldout=false",
                 "--micro_batch_size=2", "--offline=true", "--plot=true"]) == 0
    rows = {(r["kind"], r["name"], r["metric"]): r for r in eval_rows(tmp_path / "eval")}
    for key, values in trained.items():
        name, measure = key.split("/")
        assert rows["gold", name, measure]["value"] == pytest.approx(values[4], rel=1e-6, abs=1e-9), key
    assert rows["gold", "arith", "acc"]["value"] == rows["task", "arith_mc", "acc"]["value"]
    masked = rows["set", "qa_masked", "loss"]
    # the SFT gold answers are litgpt's masked SFT targets: the same summed log-probability
    assert rows["gold", "qa", "logprob"]["value"] * 6 == pytest.approx(-masked["value"] * masked["eval_tokens"],
                                                                       rel=1e-5)
    assert rows["gold", "qa", "logprob"]["eval_tokens"] == masked["eval_tokens"]
    assert (tmp_path / "eval" / "plots" / "gold_qa.png").is_file()


@pytest.mark.slow
def test_startup_states_the_gold_sets_cost(gold_run, train_root, tokenizer_dir, tmp_path, capsys):
    out, qa, tasks = gold_run
    config = write_config(tmp_path / "dry.yaml",
                          gold_config(train_root, tokenizer_dir, tmp_path / "dry", qa, tasks))
    assert main(["pretrain", "--config", str(config), "--dry_run", "true"]) == 0
    text = capsys.readouterr().out
    assert "Gold sets (--eval.gold_sets), scored at each evaluation (every 2 steps)" in text
    assert "× the held-out validation's" in text
    assert "qa: 6 item(s), SFT answers" in text and "arith: 4 item(s), multiple choice" in text


@pytest.mark.parametrize("gold, message", [
    ({"name": "x", "json_path": "QA", "prompt_style": "alpaca"}, "--eval.gold_sets[0] (x): item 0's prompt is"),
    ({"name": "x", "json_path": "NOANSWER", "prompt_style": "default"}, "example 1 has no answer"),
    ({"name": "x", "task": "no_such_task", "task_paths": ["TASKS"]}, "--eval.gold_sets[0].task='no_such_task' is "
                                                                     "not a task"),
    ({"name": "x", "task": "arith_gen", "task_paths": ["TASKS"]}, "is a generate_until task"),
    ({"name": "x", "task": "arith_remote", "task_paths": ["TASKS"]}, "cannot be loaded offline"),
    ({"name": "x"}, "give exactly one of json_path"),
    ({"name": "x", "json_path": "QA", "max_items": 0}, "--eval.gold_sets[0].max_items=0 must be at least 1"),
])
def test_bad_gold_sets_are_refused_before_training(train_root, tokenizer_dir, tmp_path, capsys, monkeypatch, gold,
                                                   message):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    qa, tasks = sft_file(tmp_path / "sft"), write_local_tasks(tmp_path / "tasks")
    (tasks / "arith_remote.yaml").write_text(
        "task: arith_remote\ndataset_path: midtrain-tests/no-such-dataset\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: \"{{question}}\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: 0\n")
    no_answer = tmp_path / "sft" / "no_answer.json"
    no_answer.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]))
    paths = {"QA": str(qa), "NOANSWER": str(no_answer), "TASKS": str(tasks)}
    gold = {k: ([paths.get(p, p) for p in v] if isinstance(v, list) else paths.get(v, v)) for k, v in gold.items()}
    config = tiny_config(train_root, tmp_path / "out", max_steps=2)
    config["tokenizer_dir"] = str(tokenizer_dir)
    config["eval"] = {"interval": 2, "gold_sets": [gold]}
    path = write_config(tmp_path / "bad.yaml", config)
    assert main(["pretrain", "--config", str(path), "--dry_run", "true"]) == 2
    error = capsys.readouterr().err
    assert message in error, error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("step-*"))


def test_gold_sets_without_a_tokenizer_are_refused(train_root, tmp_path, capsys):
    config = tiny_config(train_root, tmp_path / "out", max_steps=2)
    config["eval"] = {"interval": 2, "gold_sets": [{"name": "x", "json_path": str(sft_file(tmp_path / "sft"))}]}
    assert main(["pretrain", "--config", str(write_config(tmp_path / "c.yaml", config)), "--dry_run", "true"]) == 2
    assert "--eval.gold_sets needs the run's tokenizer" in capsys.readouterr().err


def test_ranks_shares_add_up_to_one_process_and_every_rank_runs_the_same_forwards():
    """Items split over 3 ranks (one rank's share shorter; choices per item differ) sum to the one-process scores,
    and every rank runs as many forward passes as the busiest one (a sharded model needs every rank in each)."""
    import torch
    from litgpt.config import Config
    from litgpt.model import GPT

    from midtrain.train.gold import CHOICE, SFT, GoldItem, PreparedGold
    from midtrain.train.gold_scoring import gold_metrics, gold_sums
    from tests.integration.train_helpers import TINY_MODEL

    torch.manual_seed(0)
    model = GPT(Config(**TINY_MODEL)).eval()
    g = torch.Generator().manual_seed(1)

    def ids(n: int) -> tuple[int, ...]:
        return tuple(torch.randint(0, 4096, (n,), generator=g).tolist())

    sft = PreparedGold("s", SFT, tuple(GoldItem(((ids(5 + i), ids(3)),), 0, 7) for i in range(4)), "x")
    choice = PreparedGold("c", CHOICE, tuple(GoldItem(tuple((ids(6), ids(2 + k)) for k in range(2 + i % 2)), i % 2, 4)
                                             for i in range(5)), "x")
    whole = gold_sums(model, [sft, choice], 32, 2, torch.device("cpu"))
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    per_rank = []
    for rank in range(3):
        calls.clear()
        per_rank.append(gold_sums(model, [sft, choice], 32, 2, torch.device("cpu"), rank, 3))
        per_rank[-1] = (per_rank[-1], len(calls))
    handle.remove()
    assert len({forwards for _, forwards in per_rank}) == 1  # the same count on every rank
    summed = sum(sums for sums, _ in per_rank)
    assert torch.allclose(summed, whole, rtol=1e-6, atol=1e-9)
    metrics = gold_metrics([sft, choice], whole)
    assert set(metrics["s"]) == {"logprob", "bpb"} and set(metrics["c"]) == {"logprob", "bpb", "acc", "gold_prob"}
    assert 0 <= metrics["c"]["acc"] <= 1 and 0 < metrics["c"]["gold_prob"] < 1
    assert metrics["s"]["bpb"] == pytest.approx(-whole[0, 0].item() / math.log(2) / 28)
