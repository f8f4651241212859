"""``midtrain eval`` and ``midtrain similarity`` on the tiny demo's real runs: held-out loss identical to the
trainer's validation, skipping on re-runs, litgpt fine-tuning hand-off scored on named SFT sets, lm-evaluation-harness
on local offline tasks through the in-memory adapter, and similarity errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from midtrain.cli import main
from tests.integration.train_helpers import REPO, metric

DOMAINS = ("main", "code", "math", "instruct")


def eval_rows(out: Path) -> list[dict]:
    return json.loads((out / "eval.json").read_text())


@pytest.mark.slow
def test_heldout_loss_matches_the_trainers_validation_and_reruns_skip(tiny_demo, tmp_path, capsys):
    out = tmp_path / "eval"
    # the trainer validated on val_samples_per_domain=4 blocks of 32 tokens: 128 tokens per domain
    args = [
        "eval",
        f"--runs={tiny_demo / 'runs' / 'code'}",
        f"--out_dir={out}",
        "--tokens_per_domain=128",
        "--plot=false",
    ]
    assert main(args) == 0
    rows = [r for r in eval_rows(out) if r["metric"] == "loss"]
    for step in (9, 12):
        for domain in DOMAINS:
            scored = next(r for r in rows if r["step"] == step and r["name"] == domain)
            assert scored["value"] == pytest.approx(
                metric(tiny_demo / "runs" / "code", f"val/{domain}/loss")[step], abs=2e-5
            )
            assert scored["eval_tokens"] == 128 and scored["parent"] == "trunk" and scored["branch_step"] == 6
    assert {r["tokens_seen"] for r in rows} == {9 * 8 * 32, 12 * 8 * 32}
    # bits per byte: the same in the table as in training's metrics (the same bytes, decoded once per set)
    assert sum(r["metric"] == "bpb" for r in eval_rows(out)) == 2 * len(DOMAINS)
    for row in (r for r in eval_rows(out) if r["metric"] == "bpb"):
        trained = metric(tiny_demo / "runs" / "code", f"val/{row['name']}/bpb")[row["step"]]
        loss = next(r["value"] for r in rows if (r["step"], r["name"]) == (row["step"], row["name"]))
        assert row["value"] == pytest.approx(trained, rel=1e-5) and 0 < row["value"] < loss
    captured = capsys.readouterr()  # not a terminal: one plain line per checkpoint, no bar
    assert "code step 12: 4 set(s) scored (8/8)" in captured.out and "midtrain eval:" not in captured.err
    assert main(args) == 0
    assert "2 checkpoint(s) already scored" in capsys.readouterr().out and len(eval_rows(out)) == 2 * 3 * len(DOMAINS)
    assert main([*args[:-2], "--tokens_per_domain=64", "--steps=[12]", "--domains=[math]", "--plot=false"]) == 0
    assert len(eval_rows(out)) == 2 * 3 * len(DOMAINS) + 3  # new settings: scored again, old rows kept
    with (out / "eval.csv").open() as file:
        assert sum(1 for _ in csv.DictReader(file)) == len(eval_rows(out))


@pytest.mark.slow
def test_eval_errors_name_the_flag_before_loading_anything(tiny_demo, tmp_path, capsys):
    runs = f"--runs={tiny_demo / 'runs' / '*'}"
    cases = {
        "--seq_length=64 exceeds the block size 32": ["--seq_length=64"],
        "--domains names 'maths'": ["--domains=[maths]"],
        "--tasks names 'no_such_task'": ["--tasks=no_such_task", "--heldout=false"],
        "and --limit apply to --tasks, which is not set": ["--limit=3"],
        "json_path '/nonexistent.json' does not exist": ["--sets=[{name: x, json_path: /nonexistent.json}]"],
    }
    for message, extra in cases.items():
        assert main(["eval", runs, f"--out_dir={tmp_path / 'e'}", *extra]) == 2
        assert __import__("re").search(message, capsys.readouterr().err), message
    assert not (tmp_path / "e").exists()
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(tiny_demo / "runs" / "trunk" / "step-00000003", moved / "step-00000003")
    (moved / "config.yaml").write_text("data:\n  init_args:\n    data_path: /gone/data\n")
    assert main(["eval", f"--runs={moved}", f"--out_dir={tmp_path / 'e'}"]) == 2
    assert "points at /gone/data, which holds no held-out shards. Set --val_data_path" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_fine_tuned_checkpoint_is_scored_on_named_sets_as_litgpt_scores_it(tiny_demo, tmp_path, method):
    """litgpt finetune_full on a trunk checkpoint as it is (finetune_lora on its litgpt-converted copy, merged at the
    end), then the same validation loss from midtrain eval."""
    data = tmp_path / "sft"
    data.mkdir()
    examples = [
        {"instruction": f"Compute {a} + {b}.", "input": "", "output": str(a + b)}
        for a in range(2, 6)
        for b in range(3, 7)
    ]
    (data / "train.json").write_text(json.dumps(examples[:13]))
    (data / "val.json").write_text(json.dumps(examples[13:]))  # one validation batch: litgpt's mean = token mean
    base = tiny_demo / "runs" / "trunk" / "step-00000006"
    tuned = tmp_path / "ft"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    litgpt = str(Path(sys.executable).with_name("litgpt"))
    source = base
    if method == "lora":
        source = tmp_path / "converted"
        converted = subprocess.run(
            [litgpt, "convert_pretrained_checkpoint", str(base), str(source)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert converted.returncode == 0, converted.stderr[-3000:]
    result = subprocess.run(
        [litgpt, f"finetune_{method}", str(source), "--data", "JSON",
         "--data.json_path", str(data), "--data.prompt_style", '{"class_path": "litgpt.prompts.Default"}',
         "--data.mask_prompt", "true", "--train.epochs", "2", "--train.global_batch_size", "4",
         "--train.micro_batch_size", "4", "--train.max_seq_length", "32", "--eval.interval", "100", "--out_dir",
         str(tuned), "--precision", "32-true", "--devices", "1", "--logger_name", "csv", "--seed", "3"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    litgpt_loss = float(result.stdout.split("Final evaluation | val loss: ")[1].split(" ")[0])
    record = subprocess.run([sys.executable, str(REPO / "util_scripts" / "finetune_grid.py"), "record", str(tuned),
                             str(base), "arith", "3", method], capture_output=True, text=True, timeout=120)
    assert record.returncode == 0, record.stderr
    out = tmp_path / "eval"
    sets = (f"[{{name: arith, json_path: {data / 'val.json'}, prompt_style: default, mask_prompt: true}}, "
            f"{{name: arith_unmasked, json_path: {data / 'val.json'}, prompt_style: default, mask_prompt: false}}, "
            f"{{name: main_shards, shards_path: {tiny_demo / 'data' / 'val'}, domain: main}}]")
    for batch in (1, 3):  # padding in a batch of three must not change the loss
        assert main(["eval", f"--runs={tuned / 'final'}", f"--out_dir={out / str(batch)}", f"--sets={sets}",
                     "--heldout=false", f"--micro_batch_size={batch}", "--tokens_per_domain=128"]) == 0
    rows = {(r["name"], r["metric"]): r for r in eval_rows(out / "1")}
    batched = {(r["name"], r["metric"]): r for r in eval_rows(out / "3")}
    assert rows["arith", "loss"]["value"] == pytest.approx(litgpt_loss, abs=6e-4)
    for key in rows:
        assert batched[key]["value"] == pytest.approx(rows[key]["value"], rel=1e-5)
    masked, unmasked = rows["arith", "loss"], rows["arith_unmasked", "loss"]
    assert masked["eval_tokens"] < unmasked["eval_tokens"] and masked["value"] != unmasked["value"]
    assert rows["main_shards", "loss"]["eval_tokens"] == 4 * 32
    assert (masked["base_run"], masked["base_step"], masked["sft_task"], masked["seed"]) == ("trunk", 6, "arith", 3)


TASKS = {
    "arith_mc": "output_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
                "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer}}\"\nmetric_list:\n  - metric: acc\n",
    "arith_ppl": "output_type: loglikelihood_rolling\ndoc_to_text: \"{{text}}\"\ndoc_to_target: \"{{text}}\"\n"
                 "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n",
    "arith_gen": "output_type: generate_until\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
                 "doc_to_target: \"{{choices[0]}}\"\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 4\n"
                 "metric_list:\n  - metric: exact_match\n",
}


def write_local_tasks(folder: Path) -> Path:
    folder.mkdir()
    with (folder / "arith.jsonl").open("w") as file:
        for a, b in ((2, 3), (4, 5), (6, 7), (3, 3), (8, 2)):
            file.write(json.dumps({"question": f"What is {a} + {b}?", "choices": [str(a + b), str(a * b), str(a - b)],
                                   "answer": 0, "text": f"The sum of {a} and {b} is {a + b}."}) + "\n")
    for name, body in TASKS.items():
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'arith.jsonl'}\n"
            f"test_split: test\n{body}")
    return folder


def multiple_choice_accuracy(checkpoint: Path, documents: Path) -> float:
    """The harness's ``acc``, computed here from the model directly: a document is right when its answer's choice has
    the highest summed log-probability after "Question: …\nAnswer:" (a space before the choice, the continuation's
    tokens being those the context leaves of the whole string's)."""
    import torch
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.tokenizer import Tokenizer

    model = GPT(Config.from_file(checkpoint / "model_config.yaml"))
    state = torch.load(checkpoint / "lit_model.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("model", state))
    model.eval()
    tokenizer = Tokenizer(checkpoint)
    right = []
    for line in documents.read_text().splitlines():
        doc = json.loads(line)
        context = f"Question: {doc['question']}\nAnswer:"
        scores = []
        for choice in doc["choices"]:
            whole = tokenizer.encode(context + " " + choice).tolist()
            context_length = len(tokenizer.encode(context).tolist())
            with torch.no_grad():
                log_probs = torch.log_softmax(model(torch.tensor([whole[:-1]])).float(), -1)[0]
            scores.append(sum(log_probs[i - 1, whole[i]].item() for i in range(context_length, len(whole))))
        right.append(max(range(len(scores)), key=scores.__getitem__) == doc["answer"])
    return sum(right) / len(right)


@pytest.mark.slow
def test_local_lm_eval_tasks_run_offline_into_the_same_table(tiny_demo, tmp_path):
    tasks = write_local_tasks(tmp_path / "tasks")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf"), "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "eval"
    command = [sys.executable, "-m", "midtrain", "eval", f"--runs={tiny_demo / 'runs' / 'trunk' / 'step-00000006'}",
               f"--out_dir={out}", f"--tasks={','.join(TASKS)}", f"--task_paths={tasks}", "--offline=true",
               "--tokens_per_domain=64"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {(r["name"], r["metric"]): r["value"] for r in eval_rows(out)}
    checkpoint = tiny_demo / "runs" / "trunk" / "step-00000006"
    assert rows["arith_mc", "acc"] == pytest.approx(multiple_choice_accuracy(checkpoint, tasks / "arith.jsonl"))
    assert 0 <= rows["arith_gen", "exact_match"] <= 1
    assert rows["arith_ppl", "word_perplexity"] > 1 and rows["arith_ppl", "bits_per_byte"] > 0
    assert ("main", "loss") in rows  # held-out loss and tasks in one table
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and "1 checkpoint(s) already scored" in again.stdout


@pytest.fixture(scope="module")
def harness(tiny_demo):
    pytest.importorskip("lm_eval")
    from midtrain.eval.lm_eval_adapter import LitGPTHarnessModel
    from midtrain.eval.model_loading import load_model

    loaded = load_model(tiny_demo / "runs" / "code" / "final", torch.device("cpu"), torch.float32)
    return LitGPTHarnessModel(loaded.model, loaded.tokenizer, loaded.device, loaded.block_size, batch_size=3)


def reference_logprob(model, tokens: list[int], scored: int) -> float:
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([tokens[:-1]]))[0], dim=-1)
    return sum(log_probs[i - 1, tokens[i]].item() for i in range(len(tokens) - scored, len(tokens)))


@pytest.mark.slow
def test_adapter_log_likelihoods_match_a_direct_forward_pass(harness):
    context, continuation = harness.tok_encode("def add(a, b):"), harness.tok_encode(" return a + b")
    long_context = harness.tok_encode("x = 1\n" * 40)  # longer than the 32-token block: left-truncated
    pairs = [(context, continuation), (long_context, continuation), (context[:2], continuation[:1])]
    scored = harness._score_pairs(pairs)  # batched, right-padded, reordered by length
    for (ctx, cont), (logprob, _) in zip(pairs, scored, strict=True):
        tokens = (ctx + cont)[-33:]
        assert logprob == pytest.approx(reference_logprob(harness.model, tokens, len(cont)), abs=1e-4)

    class Request:
        def __init__(self, *args):
            self.args = args

    text = "The sum of 2 and 3 is 5."
    tokens = [harness.prefix_token_id, *harness.tok_encode(text)]
    (rolling,) = harness.loglikelihood_rolling([Request(text)])
    assert rolling == pytest.approx(reference_logprob(harness.model, tokens, len(tokens) - 1), abs=1e-4)


@pytest.mark.slow
def test_adapter_generation_is_litgpts_greedy_decoding(harness):
    from litgpt.generate.base import generate

    class Request:
        args = ("def add(a, b):", {"until": [], "max_gen_toks": 5})

    (text,) = harness.generate_until([Request()])
    prompt = torch.tensor(harness.tok_encode("def add(a, b):"))
    model = harness.model
    model.set_kv_cache(batch_size=1)
    try:
        expected = generate(
            model, prompt, len(prompt) + 5, temperature=0.0, eos_id=harness.eot_token_id, include_prompt=False
        )
    finally:
        model.clear_kv_cache()
    assert text == harness.tok_decode(expected.tolist())


@pytest.mark.slow
def test_similarity_refuses_unreadable_corpora_and_unknown_names(tiny_demo, tmp_path, capsys):
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    val = tiny_demo / "data" / "val"
    base = [
        "similarity",
        f"--out_dir={tmp_path / 'sim'}",
        f"--tokenizer_dir={tiny_demo / 'tokenizer'}",
        "--seq_length=32",
    ]
    assert main([*base, f"--corpora=[main={val / '1'}, broken={tmp_path / 'broken.jsonl'}]"]) == 2
    assert "broken.jsonl cannot be read" in capsys.readouterr().err
    assert main([*base, f"--corpora=[main={val / '1'}, code={val / 'c1'}]", "--pretrain=main", "--mixes=[code]",
                 "--sft=[gsm8k]"]) == 2
    assert "--sft names 'gsm8k', which is not in --corpora" in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()
    assert main([*base, f"--corpora=[main={val / '1'}, code={val / 'c1'}, code_again={val / 'c1'}]", "--ngram=1"]) == 0
    report = json.loads((tmp_path / "sim" / "similarity.json").read_text())
    token = report["similarity"]["token"]
    assert token[1][2] == pytest.approx(1.0) and token[0][1] < 1.0 and "model" not in report["similarity"]
    assert (tmp_path / "sim" / "similarity_token.png").read_bytes()[:4] == b"\x89PNG"
