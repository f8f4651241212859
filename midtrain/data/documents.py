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


def _byte_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes (decompressed), decoded one by one by the caller so a bad byte names its line."""
    fmt = input_format(path)
    if fmt == ".jsonl.gz":
        with gzip.open(path, "rb") as handle:
            yield from handle
    elif fmt == ".jsonl.zst":
        import zstandard

        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            yield from io.BufferedReader(reader)
    else:
        with open(path, "rb") as handle:
            yield from handle


def read_documents(path: Path, text_key: str) -> Iterator[str]:
    """The documents of one input file, in file order; a ``DataError`` naming the file (and line) for anything
    that is not what its name says."""
    fmt = input_format(path)
    if fmt == ".txt":
        try:
            yield path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not valid UTF-8 text ({exc.reason} at byte {exc.start:,}). Re-encode it as UTF-8 "
                            "or remove it from --inputs.") from None
        return
    if fmt == ".parquet":
        yield from _parquet_documents(path, text_key)
        return
    for line_number, line in _numbered_lines(path, fmt):
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
            raise DataError(f"{path}:{line_number}: {text_key!r} is {type(record[text_key]).__name__}, not text. Fix or "
                            "remove that line.")
        yield record[text_key]


def _numbered_lines(path: Path, fmt: str | None) -> Iterator[tuple[int, str]]:
    lines, line_number = _byte_lines(path), 0
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            return
        except Exception as exc:  # a damaged or mislabelled archive: gzip's BadGzipFile, zstandard's ZstdError, EOF
            raise DataError(f"{path} cannot be read as {fmt} after line {line_number:,} ({type(exc).__name__}: {exc}). "
                            "Re-create or remove the file.") from None
        line_number += 1
        try:
            yield line_number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{line_number} is not valid UTF-8 ({exc.reason} at byte {exc.start:,} of the line). "
                            "Fix or remove that line, or re-encode the file as UTF-8.") from None


def _parquet_documents(path: Path, text_key: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} cannot be read as Parquet ({exc}). Re-create or remove the file.") from None
    if text_key not in table.schema_arrow.names:
        raise DataError(
            f"{path} has no column {text_key!r} (columns: {', '.join(table.schema_arrow.names)}). "
            "Set --text_key to the column that holds the text."
        )
    for batch in table.iter_batches(columns=[text_key]):
        texts = batch.column(0).to_pylist()
        bad = next((t for t in texts if t is not None and not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"{path}: column {text_key!r} holds {type(bad).__name__}, not text. Set --text_key to a text "
                            "column.")
        yield from (t for t in texts if t is not None)


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
