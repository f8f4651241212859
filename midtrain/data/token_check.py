"""Do the shards' token ids fit the model and the tokenizer? Read from each shard's ``midtrain_manifest.json``
(written by ``midtrain prepare``) before training; shards without one are checked sample by sample as they are read
(``midtrain.data.stream``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from midtrain.data.content import MANIFEST_FILE
from midtrain.data.discovery import Shard
from midtrain.errors import DataError, Problems


def read_manifest(shard: Shard) -> dict | None:
    try:
        return json.loads((shard.path / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None


def check_token_ids(shards: Sequence[Shard], vocab_size: int, tokenizer_fingerprint: str | None,
                    allow_tokenizer_mismatch: bool) -> None:
    """Every shard's largest token id below the model's ``vocab_size``, and its tokenizer the run's (when both
    are known); all problems at once."""
    problems = Problems()
    for shard in shards:
        manifest = read_manifest(shard)
        if manifest is None:
            continue
        largest = manifest.get("max_token_id")
        if isinstance(largest, int) and largest >= vocab_size:
            problems.add(
                f"shard {shard.id!r} ({shard.path}) holds token id {largest:,}, but the model's vocabulary has "
                f"{vocab_size:,} entries (padded_vocab_size). Use the tokenizer the shard was prepared with "
                "and a model whose vocabulary covers it, or re-prepare the shard."
            )
        saved = manifest.get("tokenizer_fingerprint")
        if tokenizer_fingerprint and saved and saved != tokenizer_fingerprint and not allow_tokenizer_mismatch:
            problems.add(f"shard {shard.id!r} was prepared with another tokenizer ({manifest.get('tokenizer_dir')}, "
                         f"fingerprint {saved}) than --tokenizer_dir (fingerprint {tokenizer_fingerprint}). Use that "
                         "tokenizer, re-prepare the shard, or set --data.allow_tokenizer_mismatch=true if they agree.")
    problems.raise_if_any(DataError)


def out_of_vocabulary(shard: Shard, position: int, largest: int, vocab_size: int) -> DataError:
    return DataError(f"shard {shard.id!r} ({shard.path}) holds token id {largest:,} (in its sample at stream position "
                     f"{position:,}), but the model's vocabulary has {vocab_size:,} entries (padded_vocab_size). Use "
                     "the tokenizer the shard was prepared with and a model whose vocabulary covers it.")


def shard_tokenizer_fingerprint(tokenizer_dir: Path | None) -> str | None:
    if tokenizer_dir is None:
        return None
    from midtrain.data.encoding import tokenizer_fingerprint

    return tokenizer_fingerprint(tokenizer_dir)
