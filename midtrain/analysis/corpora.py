"""Corpora for ``midtrain similarity``: token shards or text files, read into a fixed-size sample of token
sequences. A corpus that cannot be read is an error, never replaced by placeholder text."""

from __future__ import annotations

import json
import random
import re
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


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def parse_corpus(value, flag: str) -> CorpusSpec:
    """One corpus from ``name=path``, a mapping or a ``CorpusSpec``; its name checked (it becomes a column, a file
    name and a domain name in a suggested mixture)."""
    if isinstance(value, CorpusSpec):
        spec = value
    elif isinstance(value, dict):
        spec = CorpusSpec(value.get("name", ""), Path(value.get("path", "")), value.get("domain"))
    elif isinstance(value, str) and "=" in value:
        name, path = value.split("=", 1)
        spec = CorpusSpec(name.strip(), Path(path.strip()))
    else:
        raise ConfigError(f"{flag} entry {value!r} is not 'name=path' or {{name: ..., path: ...}}.")
    if not _NAME.match(spec.name or ""):
        raise ConfigError(f"{flag} entry {value if isinstance(value, str) else spec.name!r}: the name "
                          f"{spec.name!r} {'is empty' if not spec.name else 'is not letters, digits, _ . -'}. Name it "
                          "like a domain, e.g. code=/data/val/c1 (it names columns, files and mixture domains).")
    return spec


def parse_corpora(values: list, flag: str = "--corpora", at_least: int = 2) -> list[CorpusSpec]:
    """The corpora of one flag, or (``values`` as ``(flag, value)`` pairs, ``flag`` None) of several: names unique
    across all of them, every path existing."""
    pairs = list(values) if flag is None else [(flag, v) for v in values]
    specs = [parse_corpus(value, given) for given, value in pairs]
    if len(specs) < at_least:
        raise ConfigError(f"{flag or 'the corpora'} names {len(specs)} corpus; this needs at least {at_least}.")
    seen: dict[str, str] = {}
    for (given, _), spec in zip(pairs, specs, strict=True):
        if spec.name in seen:
            where = "twice" if seen[spec.name] == given else f"in {seen[spec.name]} and in {given}"
            raise ConfigError(f"the corpus name {spec.name!r} is given {where}: every corpus needs its own name. "
                              "Rename one.")
        seen[spec.name] = given
    missing = [(given, f"{s.name}={s.path}") for (given, _), s in zip(pairs, specs, strict=True)
               if not Path(s.path).exists()]
    if missing:
        raise DataError(f"{missing[0][0]}: {', '.join(m for _, m in missing)} does not exist. Point each at a shard "
                        "folder or a .json/.jsonl file.")
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
