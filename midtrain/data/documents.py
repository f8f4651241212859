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
from dataclasses import dataclass
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
        matches = (
            [Path(p) for p in sorted(glob.glob(str(item), recursive=True))]
            if glob.has_magic(str(item))
            else [Path(item)]
        )
        if not matches:
            problems.add(f"{INPUTS_FLAG} pattern {item!r} matches no files. Fix the pattern or the path.")
        for path in matches:
            if path.is_dir():
                found = [p for p in path.rglob("*") if p.is_file() and input_format(p)]
                if not found:
                    problems.add(f"{INPUTS_FLAG} folder {str(path)!r} holds no {', '.join(SUFFIXES)} files. Point at "
                                 "the data files.")
                files.update(found)
            elif not path.exists():
                problems.add(f"{INPUTS_FLAG} file {str(path)!r} does not exist. Fix the path.")
            elif input_format(path) is None:
                problems.add(f"{INPUTS_FLAG} file {str(path)!r} is not one of {', '.join(SUFFIXES)}. Convert it or "
                             "leave it out.")
            else:
                files.add(path)
    problems.raise_if_any(ConfigError)
    if not files and not problems:
        raise ConfigError(f"{INPUTS_FLAG} is empty. Give files, globs or folders of {', '.join(SUFFIXES)} files.")
    return sorted(files)


# A file is cut only into parts of at least this much: a part becomes (at least) one chunk file of its own, and a
# pass over a shard reads chunk after chunk (items shuffled within each), so cutting a small corpus would change
# how well its stream is mixed; at this size a shard has many chunks anyway.
MIN_PART_BYTES = 32 << 20
MAX_PART_BYTES = 256 << 20  # a part is at most this big, so a 50 GB file keeps every worker busy to the end
SPLITTABLE = (".jsonl", ".parquet")  # compressed streams cannot be entered in the middle


@dataclass(frozen=True)
class FilePart:
    """A piece of one input file that a worker reads on its own: bytes ``[start, stop)`` of a JSONL file (both at
    line starts) or row groups ``[start, stop)`` of a Parquet file; ``first_position`` is the position (0-based
    line or row number) of its first document. ``stop`` None means to the end."""

    start: int = 0
    stop: int | None = None
    first_position: int = 0


WHOLE_FILE = FilePart()


def part_bytes(total_bytes: int, num_workers: int, min_part_bytes: int = MIN_PART_BYTES) -> int:
    """How big the parts are: the inputs shared evenly by the workers, within [min_part_bytes, MAX_PART_BYTES]. The
    parts change only what each worker reads, never which documents are held out (see ``read_documents``)."""
    return min(MAX_PART_BYTES, max(min_part_bytes, -(-total_bytes // max(1, num_workers))))


def file_parts(path: Path, target_bytes: int) -> list[FilePart]:
    """``path`` cut into parts of about ``target_bytes``: JSONL at line starts, Parquet at row groups."""
    fmt = input_format(path)
    size = input_bytes(path)
    if fmt not in SPLITTABLE or size <= target_bytes:
        return [WHOLE_FILE]
    if fmt == ".parquet":
        return _row_group_parts(path, target_bytes)
    return _line_parts(path, -(-size // target_bytes))


def input_bytes(path: Path) -> int:
    """The bytes a file's reader goes through: Parquet's uncompressed size (its text compresses several-fold), the
    file's size otherwise."""
    if input_format(path) == ".parquet":
        metadata = _parquet_metadata(path)
        return sum(metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups))
    return path.stat().st_size


def _parquet_metadata(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} cannot be read as Parquet ({exc}). Re-create or remove the file.") from None


def _line_parts(path: Path, pieces: int) -> list[FilePart]:
    size = path.stat().st_size
    starts = [0]
    with open(path, "rb") as handle:
        for k in range(1, pieces):
            handle.seek(k * size // pieces - 1)
            handle.readline()  # to the end of the line that holds the cut: the next part starts at a line start
            if starts[-1] < handle.tell() < size:
                starts.append(handle.tell())
        # every part's first line number: the newlines before it (one read of the file, at memory speed per block)
        first_lines, newlines = [0], 0
        for start, stop in zip(starts, starts[1:], strict=False):
            handle.seek(start)
            remaining = stop - start
            while remaining:
                block = handle.read(min(remaining, 16 << 20))
                newlines += block.count(b"\n")
                remaining -= len(block)
            first_lines.append(newlines)
    stops = starts[1:] + [None]
    return [FilePart(a, b, n) for a, b, n in zip(starts, stops, first_lines, strict=True)]


def _row_group_parts(path: Path, target_bytes: int) -> list[FilePart]:
    metadata = _parquet_metadata(path)
    parts, start, first_row, rows, size = [], 0, 0, 0, 0
    for group in range(metadata.num_row_groups):
        rows += metadata.row_group(group).num_rows
        size += metadata.row_group(group).total_byte_size
        if size >= target_bytes and group + 1 < metadata.num_row_groups:
            parts.append(FilePart(start, group + 1, first_row))
            start, first_row, size = group + 1, rows, 0
    parts.append(FilePart(start, None, first_row))
    return parts


def _byte_lines(path: Path, part: FilePart) -> Iterator[bytes]:
    """The lines of ``part`` as bytes (decompressed), decoded one by one by the caller so a bad byte names its line."""
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
            handle.seek(part.start)
            position = part.start
            for line in handle:
                if part.stop is not None and position >= part.stop:
                    return
                yield line
                position += len(line)


def read_documents(path: Path, text_key: str, part: FilePart = WHOLE_FILE) -> Iterator[tuple[int, str | None]]:
    """``(position, text)`` for the documents of one input file (or ``part`` of it), in file order; a ``DataError``
    naming the file (and line) for anything that is not what its name says. A record whose text is null (JSON
    ``null``, a Parquet null) comes as ``None``: the caller skips it and says how many there were.

    ``position`` is the document's place in its file: its 0-based line number (JSONL), row number (Parquet) or 0
    (``.txt``). It keys the held-out split, so the split is the same however the file is cut into parts."""
    fmt = input_format(path)
    if fmt == ".txt":
        try:
            yield 0, path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path} is not valid UTF-8 text ({exc.reason} at byte {exc.start:,}). Re-encode it as UTF-8 "
                "or remove it from --inputs."
            ) from None
        return
    if fmt == ".parquet":
        yield from _parquet_documents(path, text_key, part)
        return
    for line_number, line in _numbered_lines(path, fmt, part):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line_number} is not valid JSON ({exc.msg}). Fix or remove that line.") from None
        if not isinstance(record, dict) or text_key not in record:
            keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(
                f"{path}:{line_number} has no key {text_key!r} (has: {keys}). Set --text_key to the key that holds the "
                "text."
            )
        if record[text_key] is not None and not isinstance(record[text_key], str):
            raise DataError(
                f"{path}:{line_number}: {text_key!r} is {type(record[text_key]).__name__}, not text. Fix or "
                "remove that line."
            )
        yield line_number - 1, record[text_key]


def _numbered_lines(path: Path, fmt: str | None, part: FilePart) -> Iterator[tuple[int, str]]:
    lines, line_number = _byte_lines(path, part), part.first_position
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
            raise DataError(
                f"{path}:{line_number} is not valid UTF-8 ({exc.reason} at byte {exc.start:,} of the line). "
                "Fix or remove that line, or re-encode the file as UTF-8."
            ) from None


def _parquet_documents(path: Path, text_key: str, part: FilePart) -> Iterator[tuple[int, str | None]]:
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
    stop = table.metadata.num_row_groups if part.stop is None else part.stop
    row = part.first_position
    for batch in table.iter_batches(columns=[text_key], row_groups=range(part.start, stop)):
        texts = batch.column(0).to_pylist()
        bad = next((t for t in texts if t is not None and not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(
                f"{path}: column {text_key!r} holds {type(bad).__name__}, not text. Set --text_key to a text column."
            )
        for text in texts:
            yield row, text
            row += 1


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
