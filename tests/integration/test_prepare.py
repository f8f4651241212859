import gzip
import json
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.commands.prepare import prepare as prepare_shard
from midtrain.data.discovery import read_shard
from midtrain.data.encoding import encode_batch
from midtrain.data.prepare import MANIFEST_FILE
from midtrain.errors import ConfigError, DataError

DOCS = [f"def function_{i}(x):\n    return x * {i}  # document {i}\n" * (1 + i % 5) for i in range(60)]


def write_inputs(folder):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    folder.mkdir()
    lines = [json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)]
    (folder / "a.jsonl").write_text("".join(lines[:15]) + "\n")  # a blank line is skipped
    with gzip.open(folder / "b.jsonl.gz", "wt") as handle:
        handle.write("".join(lines[15:30]))
    (folder / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress("".join(lines[30:45]).encode()))
    pq.write_table(pa.table({"text": DOCS[45:59]}), folder / "d.parquet")
    (folder / "e.txt").write_text(DOCS[59])
    (folder / "notes.md").write_text("ignored: not an input format")


def test_encode_batch_matches_litgpt(tokenizer_dir):
    from litgpt.tokenizer import Tokenizer

    tokenizer = Tokenizer(tokenizer_dir)
    texts = DOCS[:7] + [""]
    assert encode_batch(tokenizer, texts) == [tokenizer.encode(t, eos=True).tolist() for t in texts]


@pytest.mark.slow
def test_prepare_reads_every_format_and_holds_out_validation(tmp_path, tokenizer_dir):
    from litgpt.tokenizer import Tokenizer

    write_inputs(tmp_path / "raw")
    root = tmp_path / "data"
    code = main(["prepare", "--inputs", str(tmp_path / "raw"), "--tokenizer_dir", str(tokenizer_dir),
                 "--output_dir", str(root / "train" / "c1"), "--val_fraction", "0.25", "--num_workers", "2"])
    assert code == 0
    train = json.loads((root / "train" / "c1" / MANIFEST_FILE).read_text())
    val = json.loads((root / "val" / "c1" / MANIFEST_FILE).read_text())
    assert train["documents"] + val["documents"] == len(DOCS)
    assert 0 < val["documents"] < len(DOCS) / 2
    tokenizer = Tokenizer(tokenizer_dir)
    expected_tokens = sum(len(tokenizer.encode(d, eos=True)) for d in DOCS)
    assert train["tokens"] + val["tokens"] == expected_tokens
    assert read_shard(root / "train" / "c1", "c1", "code").tokens == train["tokens"]
    assert len(train["inputs"]) == 5 and train["tokenizer_fingerprint"] and train["eos_after_every_document"]
    assert train["held_out_key"] == "file and line/row number"
    leftovers = [p.name for p in (root / "train").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.slow
def test_the_held_out_split_does_not_depend_on_where_the_inputs_live(tmp_path, tokenizer_dir):
    import shutil

    from midtrain.data.prepare import split_keys

    write_inputs(tmp_path / "raw")
    shutil.copytree(tmp_path / "raw", tmp_path / "elsewhere" / "copy")
    val_tokens = []
    for name, source in (("one", tmp_path / "raw"), ("two", tmp_path / "elsewhere" / "copy")):
        assert main(["prepare", "--inputs", str(source), "--tokenizer_dir", str(tokenizer_dir), "--output_dir",
                     str(tmp_path / name / "train" / "1"), "--val_fraction", "0.3", "--num_workers", "1"]) == 0
        val_tokens.append(json.loads((tmp_path / name / "val" / "1" / MANIFEST_FILE).read_text())["tokens"])
    assert val_tokens[0] == val_tokens[1]
    assert split_keys([tmp_path / "raw" / "a.jsonl", tmp_path / "raw" / "sub" / "a.jsonl"]) == [
        "a.jsonl",
        "sub/a.jsonl",
    ]


@pytest.mark.slow
def test_prepare_refuses_non_empty_output_and_overwrites_atomically(tmp_path, tokenizer_dir):
    raw = tmp_path / "a.jsonl"
    raw.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:10]))
    out = tmp_path / "shard"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match=r"--output_dir='.*shard' is not empty.*--overwrite true"):
        prepare_shard(out, tokenizer_dir, [str(raw)])
    assert (out / "keep.txt").read_text() == "precious"
    prepare_shard(out, tokenizer_dir, [str(raw)], overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "shard"]


@pytest.mark.slow
def test_prepare_failure_leaves_no_partial_shard(tmp_path, tokenizer_dir):
    raw = tmp_path / "a.jsonl"
    raw.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "wrong key"}) + "\n")
    with pytest.raises(DataError, match="has no key 'text'"):
        prepare_shard(tmp_path / "shard", tokenizer_dir, [str(raw)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]


@pytest.mark.slow
def test_prepare_from_a_local_hugging_face_dataset(tmp_path, tokenizer_dir):
    import datasets

    datasets.Dataset.from_dict({"content": DOCS[:20]}).save_to_disk(str(tmp_path / "hf"))
    records = prepare_shard(tmp_path / "m1", tokenizer_dir, hf_dataset=str(tmp_path / "hf"), text_key="content")
    assert records[0]["documents"] == 20 and records[0]["inputs"] == [f"hf:{tmp_path / 'hf'}:train"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"inputs": ["missing.jsonl"]}, ConfigError, r"--inputs file 'missing.jsonl' does not exist"),
        ({"inputs": ["*.nothing"]}, ConfigError, r"--inputs pattern '\*.nothing' matches no files"),
        (
            {"inputs": ["x.jsonl"], "val_fraction": 1.5},
            ConfigError,
            r"--val_fraction=1.5 must be at least 0 and below 1",
        ),
        (
            {"inputs": ["x.jsonl"], "val_fraction": 0.1},
            ConfigError,
            r"--val_fraction is set but --val_output_dir is not",
        ),
        ({"inputs": []}, ConfigError, r"give exactly one of --inputs"),
        ({"inputs": ["x.jsonl"], "num_workers": 0}, ConfigError, r"--num_workers=0 must be a positive integer"),
    ],
)
def test_prepare_input_errors(tmp_path, tokenizer_dir, monkeypatch, kwargs, error, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(error, match=match):
        prepare_shard(tmp_path / "out", tokenizer_dir, **kwargs)


def test_prepare_needs_a_tokenizer(tmp_path):
    with pytest.raises(ConfigError, match=r"--tokenizer_dir='.*' has no tokenizer.json or tokenizer.model"):
        prepare_shard(tmp_path / "out", tmp_path, ["x.jsonl"])


def test_documents_errors_name_the_line(tmp_path):
    from midtrain.data.documents import read_documents

    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(DataError, match=r"a.jsonl:2 has no key 'text' \(has: body\)\. Set --text_key"):
        list(read_documents(path, "text"))
    path.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match=r"a.jsonl:2 is not valid JSON"):
        list(read_documents(path, "text"))


def test_prepare_needs_an_eos_token(tmp_path, tokenizer_dir):
    import shutil

    broken = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, broken)
    config = json.loads((broken / "tokenizer_config.json").read_text())
    del config["eos_token"]
    (broken / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "x.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(ConfigError, match=r"defines no EOS token.*Add \"eos_token\""):
        prepare_shard(tmp_path / "out", broken, [str(tmp_path / "x.jsonl")])


@pytest.mark.slow
@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9 \xff"}\n', r"bad.jsonl:2 is not valid UTF-8"),
    ("key.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', r"key.jsonl:2 has no key 'text'"),
    ("type.jsonl", b'{"text": "ok"}\n{"text": 42}\n', r"type.jsonl:2: 'text' is int, not text"),
    ("garbage.jsonl.gz", bytes(range(256)) * 8, r"garbage.jsonl.gz cannot be read as .jsonl.gz after line 0"),
    ("garbage.parquet", b"PAR1 not really", r"garbage.parquet cannot be read as Parquet"),
    ("latin.txt", b"caf\xe9", r"latin.txt is not valid UTF-8 text"),
])
def test_bad_input_files_exit_2_naming_the_file_and_line(tmp_path, tokenizer_dir, capsys, name, content, message):
    import re

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / name).write_bytes(content)
    out = tmp_path / "data" / "train" / "c1"
    assert (
        main(
            [
                "prepare",
                "--inputs",
                str(raw / name),
                "--tokenizer_dir",
                str(tokenizer_dir),
                "--output_dir",
                str(out),
                "--val_fraction",
                "0.5",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("midtrain.DataError: ") and re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "data" / "val").exists() or not any((tmp_path / "data" / "val").iterdir())
    train = tmp_path / "data" / "train"  # a damaged Parquet is found while planning the parts: before any folder
    assert not train.exists() or [p.name for p in train.iterdir()] == []  # nothing published, nothing hidden left


def test_a_second_prepare_into_the_same_output_is_refused(tmp_path, tokenizer_dir, capsys):
    from midtrain.folder_lock import FolderLock

    (tmp_path / "a.jsonl").write_text('{"text": "a"}\n')
    out = tmp_path / "shard"
    with FolderLock(tmp_path / ".shard.lock", "--output_dir", out, "prepare"):
        assert main(["prepare", "--inputs", str(tmp_path / "a.jsonl"), "--tokenizer_dir", str(tokenizer_dir),
                     "--output_dir", str(out)]) == 2
    assert "--output_dir=" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(2, 130), (15, 143)])
def test_an_interrupted_prepare_exits_non_zero_publishes_nothing_and_leaves_no_process(tmp_path, tokenizer_dir,
                                                                                        signum, status):
    import os
    import subprocess
    import time

    process, root = _start_a_long_prepare(tmp_path, tokenizer_dir)
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    os.kill(process.pid, signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status, err[-2000:]
    assert "Interrupted" in err and "temporary folders were removed" in err
    assert sorted(p.name for p in (root / "train").iterdir()) == []  # nothing published, no hidden folder left
    assert not (root / "val").exists() or not any((root / "val").iterdir())
    for pid in children:  # the optimize child and, through its process group, litdata's workers
        deadline = time.monotonic() + 10
        while (running := _running_in_group(pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running == [], f"processes left running in group {pid}: {running}"


def _start_a_long_prepare(tmp_path, tokenizer_dir):
    """``midtrain prepare`` of ~10 MB in a subprocess, returned once its litdata process is writing."""
    import os
    import subprocess
    import sys
    import time

    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(4):
        (raw / f"{k}.jsonl").write_text("".join(json.dumps({"text": DOCS[i % 60] * 20}) + "\n" for i in range(6000)))
    root = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "LITDATA_DISABLE_VERSION_CHECK": "1"}
    process = subprocess.Popen([sys.executable, "-m", "midtrain", "prepare", "--inputs", str(raw), "--tokenizer_dir",
                                str(tokenizer_dir), "--output_dir", str(root / "train" / "1"), "--val_fraction", "0.1",
                                "--num_workers", "2", "--batch_size", "8"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((root / "train").glob(".1.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "prepare finished before it could be interrupted; give it more input"
    return process, root


@pytest.mark.slow
def test_a_prepare_killed_with_sigkill_leaves_no_worker_no_lock_and_no_lasting_temporaries(tmp_path, tokenizer_dir):
    import os
    import signal
    import subprocess
    import time

    process, root = _start_a_long_prepare(tmp_path, tokenizer_dir)
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    os.kill(process.pid, signal.SIGKILL)  # no handler runs: the children must notice by themselves
    process.communicate(timeout=60)
    for pid in children:
        deadline = time.monotonic() + 10
        while (running := _running_in_group(pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running == [], f"processes left running in group {pid} after the parent was killed: {running}"
    assert any(p.name.startswith(".1.") for p in (root / "train").iterdir())  # what the killed run left behind
    assert main(["prepare", "--inputs", str(tmp_path / "raw" / "0.jsonl"), "--tokenizer_dir", str(tokenizer_dir),
                 "--output_dir", str(root / "train" / "1"), "--val_fraction", "0.1"]) == 0  # the lock is free
    assert sorted(p.name for p in (root / "train").iterdir()) == ["1"]
    assert sorted(p.name for p in (root / "val").iterdir()) == ["1"]


def test_a_held_out_folder_that_is_the_output_folder_is_refused(tmp_path, tokenizer_dir, capsys):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": DOCS[0]}) + "\n")
    out = tmp_path / "train" / "1"
    for val in (out, out / "val"):
        assert main(["prepare", "--inputs", str(tmp_path / "a.jsonl"), "--tokenizer_dir", str(tokenizer_dir),
                     "--output_dir", str(out), "--val_fraction", "0.5", "--val_output_dir", str(val)]) == 2
        assert "the held-out shard needs a folder of its own" in capsys.readouterr().err
    assert not out.exists()


def _running_in_group(pgid: str) -> list[str]:
    """Members of a process group that still run (killed ones may linger as zombies until init reaps them)."""
    import subprocess

    members = subprocess.run(["pgrep", "-g", pgid], capture_output=True, text=True).stdout.split()
    running = []
    for pid in members:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            running.append(pid)
    return running


def big_inputs(folder, documents=6000):
    """A ~2.5 MB JSONL file (with blank lines) and a Parquet file of many row groups, both above the part size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    texts = [f"document {i}: " + "word " * (40 + i % 150) for i in range(documents)]
    lines = [json.dumps({"text": t}) + ("\n\n" if i % 97 == 0 else "\n") for i, t in enumerate(texts)]
    (folder / "big.jsonl").write_text("".join(lines))
    pq.write_table(pa.table({"text": texts}), folder / "big.parquet", row_group_size=250)
    return texts


def test_large_files_are_cut_into_parts_that_read_every_document_once_with_their_positions(tmp_path):
    from midtrain.data.documents import file_parts, input_bytes, read_documents

    texts = big_inputs(tmp_path / "raw")
    for name in ("big.jsonl", "big.parquet"):
        path = tmp_path / "raw" / name
        assert input_bytes(path) > 2 << 20
        whole = list(read_documents(path, "text"))
        assert [t for _, t in whole] == texts
        for pieces in (2, 3, 7):
            parts = file_parts(path, -(-input_bytes(path) // pieces))
            assert len(parts) > 1
            assert [d for part in parts for d in read_documents(path, "text", part)] == whole


@pytest.mark.slow
def test_a_large_file_is_shared_by_the_workers_with_the_same_documents_and_held_out_split(tmp_path, tokenizer_dir):
    from midtrain.data.prepare import file_units

    big_inputs(tmp_path / "raw")
    files = [tmp_path / "raw" / "big.jsonl", tmp_path / "raw" / "big.parquet"]
    small_parts = 1 << 20  # the default keeps files this small whole; the cut is the same code at any size
    assert len(file_units(files, 3)) == 2 and len(file_units(files, 1, small_parts)) == 2
    assert len(file_units(files, 3, small_parts)) >= 4
    results = []
    for workers in (1, 3):
        out = tmp_path / f"w{workers}"
        records = prepare_shard(out / "train" / "x", tokenizer_dir, [str(p) for p in files], val_fraction=0.1,
                                num_workers=workers, min_part_bytes=small_parts)
        results.append([(r["documents"], r["tokens"], r["max_token_id"]) for r in records])
    assert results[0] == results[1]
    assert results[0][1][0] > 0  # some documents were held out


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _good_shard(tmp_path, tokenizer_dir, root):
    (tmp_path / "good.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    assert main(["prepare", "--inputs", str(tmp_path / "good.jsonl"), "--tokenizer_dir", str(tokenizer_dir),
                 "--output_dir", str(root / "train" / "1"), "--val_fraction", "0.1"]) == 0
    return {split: (root / split / "1" / MANIFEST_FILE).read_bytes() for split in ("train", "val")}


@pytest.mark.slow
def test_a_tokenizer_worker_killed_by_sigkill_fails_prepare_and_keeps_the_previous_shard(tmp_path, tokenizer_dir):
    """The OOM killer's way: one litdata worker gets SIGKILL. litdata returns as if all were done; prepare must not
    publish the three quarters the other worker wrote (it did: exit 0, 60,000 of 80,000 documents)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "data"
    before = _good_shard(tmp_path, tokenizer_dir, root)
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(4):
        (raw / f"{k}.jsonl").write_text("".join(json.dumps({"text": DOCS[i % 60] * 20}) + "\n" for i in range(2500)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "LITDATA_DISABLE_VERSION_CHECK": "1"}
    process = subprocess.Popen([sys.executable, "-m", "midtrain", "prepare", "--inputs", str(raw), "--tokenizer_dir",
                                str(tokenizer_dir), "--output_dir", str(root / "train" / "1"), "--val_fraction", "0.1",
                                "--num_workers", "2", "--batch_size", "8", "--overwrite", "true"], env=env,
                               stderr=subprocess.PIPE, text=True)
    deadline, workers = time.monotonic() + 120, []
    while not workers and time.monotonic() < deadline and process.poll() is None:
        workers = [pid for pid in _descendants(process.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        time.sleep(0.05)
    assert workers, "no litdata worker was seen"
    while len(list((root / "train").glob(".1.stats-*/*.progress"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # both workers are encoding (the items of a worker killed before it takes one are not lost)
    os.kill(workers[0], signal.SIGKILL)
    _, err = process.communicate(timeout=180)
    assert process.returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("midtrain.DataError: a tokenizer worker died") and ".jsonl" in last, last
    assert "Nothing was published" in last and "Traceback" not in err
    assert {split: (root / split / "1" / MANIFEST_FILE).read_bytes() for split in ("train", "val")} == before
    assert sorted(p.name for p in (root / "train").iterdir()) == ["1"]  # no temporary left


@pytest.mark.slow
def test_a_worker_that_runs_out_of_memory_on_one_huge_document_names_it(tmp_path, tokenizer_dir):
    """A 12 MB line under a 3 GB address-space limit: the tokenizer aborts inside Rust, the worker dies; prepare
    names the line, exits 2, and the shard it was to overwrite stays as it was (it published 50 documents, 0 tokens)."""
    import os
    import resource
    import subprocess
    import sys

    root = tmp_path / "data"
    before = _good_shard(tmp_path, tokenizer_dir, root)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text("".join(json.dumps({"text": f"small document {i}"}) + "\n" for i in range(50)))
    huge = " ".join(f"w{i % 997}" for i in range(2_500_000))
    (raw / "b.jsonl").write_text(json.dumps({"text": huge}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "LITDATA_DISABLE_VERSION_CHECK": "1"}

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    result = subprocess.run([sys.executable, "-m", "midtrain", "prepare", "--inputs", str(raw), "--tokenizer_dir",
                             str(tokenizer_dir), "--output_dir", str(root / "train" / "1"), "--val_fraction", "0.1",
                             "--num_workers", "2", "--overwrite", "true"], env=env, capture_output=True, text=True,
                            preexec_fn=limit_memory, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert f"died while encoding line 1 of {raw / 'b.jsonl'} (a {len(huge) / 1e6:.1f} MB document)" in last, last
    assert {split: (root / split / "1" / MANIFEST_FILE).read_bytes() for split in ("train", "val")} == before


def test_null_texts_are_skipped_and_counted_in_every_format_and_lone_surrogates_replaced(tmp_path, tokenizer_dir,
                                                                                         caplog):
    import logging

    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text('{"text": "first"}\n{"text": null}\n{"text": "bad \\ud800 here"}\n')
    pq.write_table(pa.table({"text": ["x", None, "y", None]}), raw / "b.parquet")
    out = tmp_path / "data" / "train" / "c1"
    with caplog.at_level(logging.INFO):
        records = prepare_shard(out, tokenizer_dir, [str(raw)])
    record = records[0]
    assert record["documents"] == 4 and record["skipped_null_texts"] == 3
    assert record["first_null_text"] == f"line 2 of {raw / 'a.jsonl'}"
    assert record["replaced_lone_surrogates_documents"] == 1
    assert record["first_lone_surrogate"] == f"line 3 of {raw / 'a.jsonl'}"
    assert "skipped 3 record(s) whose text is null" in caplog.text and "U+FFFD in 1 document(s)" in caplog.text
    from litgpt.tokenizer import Tokenizer

    tokens = Tokenizer(tokenizer_dir)
    expected = sum(len(tokens.encode(t, eos=True)) for t in ("first", "bad \ufffd here", "x", "y"))
    assert record["tokens"] == expected == read_shard(out, "c1", "code").tokens
