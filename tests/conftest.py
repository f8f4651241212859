from __future__ import annotations

import os

import pytest

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A byte-level BPE trained offline on Python's own sources, in litgpt's tokenizer folder format."""
    import inspect
    import json as json_module
    import textwrap

    from midtrain.tokenizer import train_bpe_tokenizer

    texts = [inspect.getsource(m) for m in (json_module, textwrap, inspect)]
    return train_bpe_tokenizer(texts, tmp_path_factory.mktemp("tokenizer"), vocab_size=600)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """Real litdata shards: train main/1, main/2, c1, m1 and val main/1, c1, m1, each domain its own token range.

    Shard k's tokens start at ``(k + 1) * DOMAIN_BASE``; sizes differ so that passes differ.
    """
    from tests.helpers import DOMAIN_BASE, write_token_shard

    root = tmp_path_factory.mktemp("data")
    layout = {
        "train/1": 6000,
        "train/2": 4000,
        "train/c1": 2000,
        "train/m1": 1000,
        "val/1": 600,
        "val/c1": 400,
        "val/m1": 300,
    }
    for k, (name, n_tokens) in enumerate(layout.items()):
        write_token_shard(root / name, (k + 1) * DOMAIN_BASE, n_tokens)
    return root


@pytest.fixture(scope="session")
def train_root(tmp_path_factory):
    """Shards for training a tiny model: main/1, c1, m1 and their held-out sets, token ids inside a 4096 vocab,
    each shard its own contiguous range (see ``tests/integration/train_helpers.py``)."""
    from tests.helpers import write_token_shard
    from tests.integration.train_helpers import TRAIN_SHARDS, VAL_SHARDS

    root = tmp_path_factory.mktemp("train_data")
    for name, (start, n_tokens) in {**TRAIN_SHARDS, **VAL_SHARDS}.items():
        write_token_shard(root / name, start, n_tokens, doc_tokens=50, chunk_tokens=512)
    return root


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """``midtrain demo --size tiny``: real text domains, a BPE tokenizer, shards, a trunk and three branches (tiny
    2-layer models), their evaluation and similarity reports; shared by the demo, eval and SLURM tests."""
    from midtrain.cli import main

    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--out_dir", str(out), "--size", "tiny", "--num_workers", "1"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_trunk(train_root, tmp_path_factory):
    """A 12-step trunk of a tiny model on main data, checkpoints every 4 steps (``tiny_config``'s defaults). Shared by
    every test that needs a parent: copy what you change."""
    from midtrain.cli import main
    from tests.integration.train_helpers import tiny_config, write_config

    out = tmp_path_factory.mktemp("tiny_trunk") / "trunk"
    config = write_config(out.parent / "trunk.yaml", tiny_config(train_root, out))
    assert main(["pretrain", "--config", str(config)]) == 0
    return out
