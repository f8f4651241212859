"""Raw text inputs for ``midtrain prepare``: expand files, globs and folders; read documents from each.

Supported: ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet`` (the text under ``text_key``) and ``.txt``
(one document per file). A Hugging Face dataset is read through the ``datasets`` library.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from midtrain.errors import ConfigError, DataError, Problems

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".txt")
INPUTS_FLAG = "--inputs"


def input_format(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Every input file, sorted and de-duplicated, from files, globs and folders (searched recursively)."""
    problems = Problems()
    files: set[Path] = set()
    for item in inputs:
        matches = [Path(p) for p in sorted(glob.glob(str(item), recursive=True))] if glob.has_magic(str(item)) else [Path(item)]
        if not matches:
            problems.add(f"{INPUTS_FLAG} pattern {item!r} matches no files. Fix the pattern or the path.")
        for path in matches:
            if path.is_dir():
                found = [p for p in path.rglob("*") if p.is_file() and input_format(p)]
                if not found:
                    problems.add(f"{INPUTS_FLAG} folder {str(path)!r} holds no {', '.join(SUFFIXES)} files. Point at the data files.")
                files.update(found)
            elif not path.exists():
                problems.add(f"{INPUTS_FLAG} file {str(path)!r} does not exist. Fix the path.")
            elif input_format(path) is None:
                problems.add(f"{INPUTS_FLAG} file {str(path)!r} is not one of {', '.join(SUFFIXES)}. Convert it or leave it out.")
            else:
                files.add(path)
    problems.raise_if_any(ConfigError)
    if not files and not problems:
        raise ConfigError(f"{INPUTS_FLAG} is empty. Give files, globs or folders of {', '.join(SUFFIXES)} files.")
    return sorted(files)


def _text_lines(path: Path) -> Iterator[str]:
    fmt = input_format(path)
    if fmt == ".jsonl.gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            yield from handle
    elif fmt == ".jsonl.zst":
        import zstandard

        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            yield from io.TextIOWrapper(reader, encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as handle:
            yield from handle


def read_documents(path: Path, text_key: str) -> Iterator[str]:
    """The documents of one input file, in file order."""
    fmt = input_format(path)
    if fmt == ".txt":
        yield path.read_text(encoding="utf-8")
        return
    if fmt == ".parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        if text_key not in table.schema_arrow.names:
            raise DataError(
                f"{path} has no column {text_key!r} (columns: {', '.join(table.schema_arrow.names)}). "
                "Set --text_key to the column that holds the text."
            )
        for batch in table.iter_batches(columns=[text_key]):
            yield from (t for t in batch.column(0).to_pylist() if t is not None)
        return
    for line_number, line in enumerate(_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line_number} is not valid JSON ({exc.msg}). Fix or remove that line.") from None
        if not isinstance(record, dict) or text_key not in record:
            keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(
                f"{path}:{line_number} has no key {text_key!r} (has: {keys}). Set --text_key to the key that holds the text."
            )
        if not isinstance(record[text_key], str):
            raise DataError(f"{path}:{line_number}: {text_key!r} is {type(record[text_key]).__name__}, not text.")
        yield record[text_key]


def load_hf_dataset(name: str, split: str, subset: str | None):
    """A Hugging Face dataset by hub name, local dataset folder (``save_to_disk``) or loading script folder."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "--hf_dataset needs the 'datasets' package. Install it with: pip install 'midtrain[hf]'"
        ) from None
    local = Path(name)
    try:
        if (local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file():
            dataset = datasets.load_from_disk(str(local))
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise ConfigError(f"--hf_split={split!r} is not in {name} (splits: {', '.join(dataset)}).")
                dataset = dataset[split]
            return dataset
        return datasets.load_dataset(name, subset, split=split)
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        raise DataError(f"--hf_dataset={name!r} could not be loaded ({type(exc).__name__}: {exc}).") from None
