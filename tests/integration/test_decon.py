"""``midtrain decon`` on shards written by ``midtrain prepare`` with planted items: exact copies, copies with other
case, whitespace and punctuation, copies inside longer documents and short items are found and attributed; near
misses and clean documents are kept; clean shards carry their provenance; bad input is refused before anything is
written."""

from __future__ import annotations

import json
import random

import pytest

from midtrain.cli import main

WORDS = ("river stone garden window paper cloud market silver engine forest letter bridge candle winter harbor "
         "mirror basket thunder meadow lantern copper valley orchard whistle compass ladder pepper velvet canyon "
         "anchor tunnel saddle pillow hammer button violin glacier desert island castle").split()
LONG_ITEMS = [
    "Which planet in the solar system has the largest number of known moons orbiting around it today",
    "Explain why the boiling point of water decreases as the altitude above sea level increases steadily",
    "A train leaves the station at noon travelling sixty miles per hour toward a distant city",
    "Describe the process by which green plants convert sunlight water and carbon dioxide into sugar",
    "List three reasons why the ancient library of the city was considered a wonder of the world",
]
SHORT_ITEM = "What is the capital of Peru"  # 6 words: matched whole
TOO_SHORT = "Name a colour"  # 3 words: never matched, reported


def prose(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tokenizer_dir):
    rng = random.Random(3)
    root = tmp_path_factory.mktemp("decon")
    sft = [{"instruction": text, "output": "ok"} for text in LONG_ITEMS] + \
        [{"instruction": SHORT_ITEM, "output": "Lima"}, {"instruction": TOO_SHORT, "output": "red"}]
    (root / "sft.json").write_text(json.dumps(sft))
    documents = [prose(rng, 60) for _ in range(40)]
    documents[3] = LONG_ITEMS[0] + "\nok zqxplant"  # an exact copy (the SFT item's two parts)
    documents[11] = "  " + LONG_ITEMS[1].upper().replace(" ", "   ,  ") + "?!  ok zqxplant"  # case, spacing, commas
    documents[20] = prose(rng, 200) + " " + LONG_ITEMS[2].lower() + " ok. " + prose(rng, 200) + " zqxplant"
    documents[27] = prose(rng, 30) + " what is the Capital of PERU? Lima. zqxplant"
    near = LONG_ITEMS[3].split()
    documents[30] = " ".join(near[:7]) + " " + prose(rng, 40) + " zqxnear"  # a shared phrase, not the item
    changed = [w if k % 2 else rng.choice(WORDS) for k, w in enumerate(LONG_ITEMS[4].split())]
    documents[33] = " ".join(changed) + " zqxnear"  # every other word replaced: under half of its 13-grams
    documents[35] = f"{TOO_SHORT} please. " + prose(rng, 20)
    (root / "raw").mkdir()
    (root / "raw" / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    assert main(["prepare", "--inputs", str(root / "raw"), "--tokenizer_dir", str(tokenizer_dir), "--output_dir",
                 str(root / "data" / "train" / "q1"), "--num_workers", "1"]) == 0
    return root


def test_planted_items_are_found_and_attributed_and_nothing_else_is_removed(planted, tmp_path, tokenizer_dir):
    from midtrain.data.decon_shards import documents, open_shard
    from midtrain.tokenizer import decode_texts, load_tokenizer

    shard_path = planted / "data" / "train" / "q1"
    cache = tmp_path / "cache"
    argv = ["decon", "--shards", str(shard_path), "--against", f"sft={planted / 'sft.json'}",
            "--out_dir", str(tmp_path / "report"), "--cache_dir", str(cache), "--write_clean", str(tmp_path / "clean")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report" / "decon.json").read_text())
    source = report["sources"]["sft"]
    assert source["items"] == 7 and source["too_short"] == [6]
    assert sorted(source["found"]) == ["0", "1", "2", "5"]  # the four copies; not the near misses (3, 4)
    shard, _ = open_shard(shard_path, "--shards")
    texts = decode_texts(load_tokenizer(tokenizer_dir), list(documents(shard)))
    for item, places in source["found"].items():
        assert len(places) == 1 and "zqxplant" in texts[places[0]["document"]], item
    found_documents = {p["document"] for places in source["found"].values() for p in places}
    assert found_documents == {k for k, t in enumerate(texts) if "zqxplant" in t}  # no clean document removed
    summary = report["shards"][str(shard_path)]
    assert summary["documents"] == 40 and summary["contaminated"] == 4 and summary["by_source"] == {"sft": 4}
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| sft | 7 | 4 | 1 |" in markdown and "holds **sft item 0**" in markdown

    clean = tmp_path / "clean" / "train" / "q1"
    manifest = json.loads((clean / "midtrain_manifest.json").read_text())
    record = manifest["decontamination"]
    assert manifest["documents"] == 36 and record["documents_removed"] == 4 and record["documents_before"] == 40
    assert record["sources"][0]["name"] == "sft" and record["n"] == 13 and record["index"] == report["index"]
    kept, _ = open_shard(clean, "--shards")
    kept_texts = decode_texts(load_tokenizer(tokenizer_dir), list(documents(kept)))
    assert kept_texts == [t for t in texts if "zqxplant" not in t]  # the rest, in order, token for token

    # a run on the clean root records what each shard it read was decontaminated against
    from tests.integration.train_helpers import tiny_config, write_config

    config = tiny_config(tmp_path / "clean", tmp_path / "run", mix="qa:1.0", max_steps=1)
    config["data"]["init_args"]["val_samples_per_domain"] = None
    config["eval"] = {"interval": 100, "final_validation": False}
    assert main(["pretrain", "--config", str(write_config(tmp_path / "run.yaml", config))]) == 0
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["decontamination"]["q1"]
    assert recorded["sources"] == [{"name": "sft", "sha256": record["sources"][0]["sha256"]}]
    assert recorded["documents_removed"] == 4

    # the same sources again: the index comes from the cache
    assert main(argv[:-2] + ["--out_dir", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "decon.json").read_text())["index_from_cache"] is True


def test_decon_refuses_bad_input_before_writing_anything(planted, tmp_path, capsys):
    from tests.helpers import write_token_shard

    shard = str(planted / "data" / "train" / "q1")
    (tmp_path / "empty.jsonl").write_text("\n")
    foreign = write_token_shard(tmp_path / "foreign" / "q2", 100, 500)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    good = {"--shards": shard, "--against": f"sft={planted / 'sft.json'}", "--out_dir": str(tmp_path / "r")}
    cases = [
        ({"--against": f"sft={tmp_path / 'missing.json'}"}, "--against sft="),
        ({"--against": f"sft={tmp_path / 'empty.jsonl'}"}, "holds no items"),
        ({"--against": "sft"}, "is not NAME=SOURCE"),
        ({"--shards": str(foreign)}, "no readable midtrain_manifest.json"),
        ({"--shards": str(tmp_path)}, "is not a shard"),
        ({"--write_clean": str(planted / "data" / "clean")}, "lies inside the data root"),
        ({"--write_clean": str(tmp_path / "full")}, "exists and is not empty"),
    ]
    for change, message in cases:
        argv = ["decon"] + [w for k, v in {**good, **change}.items() for w in (k, v)]
        assert main(argv) == 2, change
        assert message in capsys.readouterr().err, change
        assert not (tmp_path / "r").exists() and not (planted / "data" / "clean").exists(), change


def test_prepare_leaves_out_the_same_documents_while_tokenizing(planted, tmp_path, tokenizer_dir):
    out = tmp_path / "data" / "train" / "q1"
    assert main(["prepare", "--inputs", str(planted / "raw"), "--tokenizer_dir", str(tokenizer_dir), "--output_dir",
                 str(out), "--decontaminate", f"sft={planted / 'sft.json'}", "--decon_out", str(tmp_path / "report"),
                 "--cache_dir", str(tmp_path / "cache")]) == 0
    manifest = json.loads((out / "midtrain_manifest.json").read_text())
    record = manifest["decontamination"]
    assert manifest["documents"] == 36 and record["documents_removed"] == 4 and record["documents_before"] == 40
    assert record["from"] == "prepare" and record["sources"][0]["name"] == "sft"
    report = json.loads((tmp_path / "report" / "decon.json").read_text())
    found = report["sources"]["sft"]["found"]
    assert sorted(found) == ["0", "1", "2", "5"]
    assert {p["input"] for places in found.values() for p in places} == {
        f"line {n} of {planted / 'raw' / 'docs.jsonl'}" for n in (4, 12, 21, 28)}
    # the same index as midtrain decon's, and the same documents left: its clean copy and this shard agree
    from midtrain.data.decon_shards import documents, open_shard
    from midtrain.tokenizer import decode_texts, load_tokenizer

    shard, _ = open_shard(out, "--shards")
    texts = decode_texts(load_tokenizer(tokenizer_dir), list(documents(shard)))
    assert len(texts) == 36 and not any("zqxplant" in t for t in texts) and sum("zqxnear" in t for t in texts) == 2


@pytest.mark.slow
def test_an_lm_eval_task_is_a_source_of_its_formatted_documents_and_gold_answers(tmp_path, monkeypatch):
    from midtrain.data.decon import EvalIndex
    from midtrain.eval.decon_sources import read_source
    from tests.integration.test_eval import write_local_tasks

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    source = read_source("arith", "task:arith_mc", [write_local_tasks(tmp_path / "tasks")])
    assert [i.text for i in source.items][:2] == ["Question: What is 2 + 3?\nAnswer: 5",
                                                   "Question: What is 4 + 5?\nAnswer: 9"]
    index = EvalIndex.build(source.items)
    assert index.found_in("notes: question - what is 4+5? answer: 9. next") == {1: 1.0}
    assert index.found_in("question what is 4 5 answer 20") == {}
