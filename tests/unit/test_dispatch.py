"""Repeatable list flags (``recommend --target``, ``analyze --tables``): given several times, once, or as a list,
the parser sees one JSON list."""

from __future__ import annotations

import json

from midtrain.commands.dispatch import merge_repeated


def test_repeated_flags_become_one_list():
    argv = ["--target", "a=x.json", "--out_dir", "o", "--target=b=y.json", "--candidates", "[c=1, d=2]"]
    merged = merge_repeated(argv, ("--target",))
    assert merged[:4] == ["--out_dir", "o", "--candidates", "[c=1, d=2]"]
    flag, _, value = merged[-1].partition("=")
    assert flag == "--target" and json.loads(value) == ["a=x.json", "b=y.json"]


def test_a_list_or_a_single_value_is_kept_as_a_list():
    assert merge_repeated(["--tables", '["a.csv", "b.csv"]'], ("--tables",)) == ['--tables=["a.csv", "b.csv"]']
    assert merge_repeated(["--tables=a.csv"], ("--tables",)) == ['--tables=["a.csv"]']
    assert merge_repeated(["--tables", "[not json"], ("--tables",)) == ['--tables=["[not json"]']
    # a list as YAML writes it (the docs' '[runs/a/final, runs/b/final]'), given once or with another entry
    assert merge_repeated(["--c", "[a/final, b/final]", "--c", "c/final"], ("--c",)) == \
        ['--c=["a/final", "b/final", "c/final"]']
    assert merge_repeated(["--other", "x"], ("--tables",)) == ["--other", "x"]
