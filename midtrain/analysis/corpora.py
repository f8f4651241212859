"""Corpora for ``midtrain similarity``: token shards or text files, read into a fixed-size sample of token
sequences. A corpus that cannot be read is an error, never replaced by placeholder text."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midtrain.data.discovery import shards_at
from midtrain.data.domains import DomainRegistry
from midtrain.data.shard_reader import ShardReader
from midtrain.errors import ConfigError, DataError

TEXT_SUFFIXES = (".json", ".jsonl")
SFT_FIELDS = ("instruction", "input", "output")


@dataclass
class CorpusSpec:
    """One corpus. ``name=path`` on the command line is shorthand for ``{name: ..., path: ...}``."""

    name: str
    path: Path
    """A token shard folder (``index.json``), a folder of shards, or a ``.json``/``.jsonl`` text file (SFT
    examples with ``instruction``/``input``/``output``, or documents with ``text``)."""
    domain: str | None = None
    """With ``path`` a folder of shards: only this domain's shards."""

    @property
    def is_text(self) -> bool:
        return Path(self.path).suffix in TEXT_SUFFIXES


def parse_corpora(values: list) -> list[CorpusSpec]:
    specs = []
    for value in values:
        if isinstance(value, CorpusSpec):
            specs.append(value)
        elif isinstance(value, dict):
            specs.append(CorpusSpec(value.get("name", ""), Path(value.get("path", "")), value.get("domain")))
        elif isinstance(value, str) and "=" in value:
            name, path = value.split("=", 1)
            specs.append(CorpusSpec(name.strip(), Path(path.strip())))
        else:
            raise ConfigError(f"--corpora entry {value!r} is not 'name=path' or {{name: ..., path: ...}}.")
    names = [s.name for s in specs]
    if len(specs) < 2:
        raise ConfigError(f"--corpora names {len(specs)} corpus; similarity needs at least two.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates or not all(names):
        raise ConfigError(f"--corpora: every corpus needs its own non-empty name (repeated: {duplicates}).")
    missing = [f"{s.name}={s.path}" for s in specs if not Path(s.path).exists()]
    if missing:
        raise DataError(f"--corpora: {', '.join(missing)} does not exist. Point each at a shard folder or a "
                        ".json/.jsonl file.")
    return specs


def document_text(record, name: str, path: Path, line: int) -> str:
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record["text"]
    if (
        isinstance(record, dict)
        and isinstance(record.get("instruction"), str)
        and isinstance(record.get("output"), str)
    ):
        return "\n".join(str(record[f]) for f in SFT_FIELDS if record.get(f))
    raise DataError(f"--corpora {name}: {path} record {line} has neither 'text' nor 'instruction' and 'output'.")


def read_text_sample(spec: CorpusSpec, tokenizer, sample_tokens: int, seq_length: int, seed: int) -> list[np.ndarray]:
    """Documents in a seeded random order, tokenized and cut into sequences of at most ``seq_length``, until
    ``sample_tokens`` tokens are collected."""
    path = Path(spec.path)
    if tokenizer is None:
        raise ConfigError(f"--corpora {spec.name} is text ({path}); set --tokenizer_dir (or --checkpoint) to tokenize "
                          "it.")
    try:
        raw = path.read_text(encoding="utf-8")
        records = (
            json.loads(raw)
            if path.suffix == ".json"
            else [json.loads(line) for line in raw.splitlines() if line.strip()]
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"--corpora {spec.name}: {path} cannot be read ({type(exc).__name__}: {exc}).") from None
    if not isinstance(records, list) or not records:
        raise DataError(f"--corpora {spec.name}: {path} holds no records.")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    sequences, total = [], 0
    for index in order:
        ids = tokenizer.encode(document_text(records[index], spec.name, path, index + 1), bos=False, eos=False).numpy()
        for start in range(0, len(ids), seq_length):
            piece = ids[start : start + seq_length][: sample_tokens - total]
            if len(piece):
                sequences.append(piece.astype(np.int64))
                total += len(piece)
        if total >= sample_tokens:
            break
    if total == 0:
        raise DataError(f"--corpora {spec.name}: {path} tokenizes to no tokens.")
    return sequences


def read_shard_sample(
    spec: CorpusSpec, registry: DomainRegistry, sample_tokens: int, seq_length: int, seed: int
) -> list[np.ndarray]:
    """``sample_tokens // seq_length`` blocks drawn without replacement (seeded) from the corpus's shards."""
    path = Path(spec.path)
    flag = f"--corpora {spec.name}"
    if not path.is_dir():
        raise DataError(f"{flag}: {path} is neither a shard folder nor a .json/.jsonl file.")
    shards = shards_at(path, registry, spec.domain, flag)
    readers = [ShardReader(shard, seq_length, seed=0) for shard in shards]
    slots = [(r, i) for r, reader in enumerate(readers) for i in range(reader.samples_per_pass)]
    if not slots:
        raise DataError(f"{flag}: {path} holds no sequence of {seq_length} tokens. Lower --seq_length.")
    wanted = max(1, sample_tokens // seq_length)
    chosen = sorted(random.Random(seed).sample(range(len(slots)), min(wanted, len(slots))))
    return [readers[slots[k][0]].read_natural(slots[k][1]).astype(np.int64) for k in chosen]


def read_sample(spec: CorpusSpec, tokenizer, registry: DomainRegistry, sample_tokens: int, seq_length: int,
                seed: int) -> list[np.ndarray]:
    if spec.is_text:
        return read_text_sample(spec, tokenizer, sample_tokens, seq_length, seed)
    return read_shard_sample(spec, registry, sample_tokens, seq_length, seed)


def truncate(sequences: list[np.ndarray], tokens: int) -> list[np.ndarray]:
    """The first ``tokens`` tokens of a sample (whole sequences, the last one cut)."""
    kept, total = [], 0
    for sequence in sequences:
        if total >= tokens:
            break
        kept.append(sequence[: tokens - total])
        total += len(kept[-1])
    return kept
