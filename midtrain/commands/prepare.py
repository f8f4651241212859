"""``midtrain prepare``: raw text (JSONL, Parquet, text, a Hugging Face dataset) into one litdata token shard, with
a held-out shard. The work is ``midtrain.data.prepare``'s; this command checks the arguments, holds the output
folders' locks and publishes every split or none.

Every document is encoded in batches, followed by EOS. Output is written to a temporary folder next to the target
and renamed into place only when complete, so a failure or Ctrl-C never leaves a half-written shard where a
finished one is expected.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from midtrain.data.decon import DECON_KEY
from midtrain.data.documents import MIN_PART_BYTES, expand_inputs, load_hf_dataset
from midtrain.data.encoding import EncoderSpec, tokenizer_fingerprint
from midtrain.data.litdata_child import stop_signals_raise
from midtrain.data.prepare import (
    DEFAULT_CHUNK_TOKENS,
    HF_ROWS_PER_UNIT,
    TokenizeUnit,
    check_output,
    default_val_output,
    describe_skipped,
    file_units,
    publish_splits,
    remove_stale_temporaries,
    write_split,
)
from midtrain.distributed import get_logger
from midtrain.errors import ConfigError
from midtrain.folder_lock import FolderLock

log = get_logger(__name__)


def prepare(
    output_dir: Path,
    tokenizer_dir: Path,
    inputs: list[str] | str | None = None,
    hf_dataset: str | None = None,
    hf_split: str = "train",
    hf_subset: str | None = None,
    text_key: str = "text",
    val_fraction: float = 0.0,
    val_output_dir: Path | None = None,
    num_workers: int = 1,
    batch_size: int = 256,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overwrite: bool = False,
    min_part_bytes: int = MIN_PART_BYTES,
    decontaminate: list[str] | None = None,
    decon_out: Path | None = None,
    task_paths: list[Path] | None = None,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Tokenize raw text into one shard (EOS after every document), with an optional held-out shard.

    Returns the manifest of each split written.

    Args:
        output_dir: The shard folder to write, e.g. ``data/train/c1`` (refused if not empty, unless ``overwrite``).
        tokenizer_dir: A litgpt checkpoint or tokenizer folder (``tokenizer.json`` or ``tokenizer.model``).
        inputs: Files, globs or folders of ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet`` or ``.txt``.
        hf_dataset: Instead of ``inputs``: a Hugging Face dataset name or a local ``save_to_disk`` folder.
        hf_split: Split of ``hf_dataset``.
        hf_subset: Config (subset) name of ``hf_dataset``.
        text_key: The JSON key or column holding the text (``.txt`` files are one document each).
        val_fraction: Share of documents held out into ``val_output_dir`` (chosen by a hash of each document's place:
            its file below the inputs' common folder and its position, wherever the files are).
        val_output_dir: Where the held-out shard goes; default: ``<root>/val/<name>`` for ``<root>/train/<name>``.
        num_workers: Tokenizer processes.
        batch_size: Documents encoded per batch.
        chunk_tokens: Tokens per chunk file.
        overwrite: Replace a non-empty ``output_dir`` (atomically, once the new shard is complete).
        min_part_bytes: A ``.jsonl`` or ``.parquet`` file bigger than its share of the work is cut into parts of at
            least this many bytes, read by several workers (the held-out split is the same however it is cut).
        decontaminate: Sources, ``NAME=SOURCE`` as ``midtrain decon --against`` takes them: documents holding one
            of their items are left out while tokenizing (the same matching), counted in each split's manifest
            with the sources and their hashes, and attributed in ``decon_out``'s decon.json and report.md.
        decon_out: Where the decontamination report goes (default ``decon_out/<output_dir's name>``).
        task_paths: Folders of local lm-evaluation-harness task YAMLs, for ``task:NAME`` sources.
        cache_dir: Where evaluation indexes are kept (as ``midtrain decon --cache_dir``).
    """
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    output_dir = Path(output_dir)
    tokenizer_dir = Path(tokenizer_dir)
    if not (tokenizer_dir / "tokenizer.json").is_file() and not (tokenizer_dir / "tokenizer.model").is_file():
        raise ConfigError(
            f"--tokenizer_dir={str(tokenizer_dir)!r} has no tokenizer.json or tokenizer.model. Point it at a litgpt "
            "checkpoint or tokenizer folder."
        )
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"--val_fraction={val_fraction!r} must be at least 0 and below 1, e.g. 0.01.")
    for flag, value in (("--num_workers", num_workers), ("--batch_size", batch_size), ("--chunk_tokens", chunk_tokens),
                        ("--min_part_bytes", min_part_bytes)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{flag}={value!r} must be a positive integer.")
    if bool(inputs) == bool(hf_dataset):
        raise ConfigError("give exactly one of --inputs (files, globs, folders) and --hf_dataset.")
    if hf_dataset:
        dataset = load_hf_dataset(hf_dataset, hf_split, hf_subset)
        if text_key not in dataset.column_names:
            raise ConfigError(f"--text_key={text_key!r} is not a column of {hf_dataset} (columns: "
                              f"{', '.join(dataset.column_names)}).")
        units = [
            (f"{hf_dataset}:{hf_split}:{i}", i, min(i + HF_ROWS_PER_UNIT, len(dataset)))
            for i in range(0, len(dataset), HF_ROWS_PER_UNIT)
        ]
        hf = (hf_dataset, hf_split, hf_subset)
        described_inputs = [f"hf:{hf_dataset}:{hf_split}" + (f":{hf_subset}" if hf_subset else "")]
    else:
        files = expand_inputs(inputs)
        units = file_units(files, num_workers, min_part_bytes)
        hf = None
        described_inputs = [str(p) for p in files]
    targets = [("train", output_dir, "--output_dir")]
    if val_fraction > 0:
        val_output_dir = Path(val_output_dir) if val_output_dir is not None else default_val_output(output_dir)
        train_at, val_at = output_dir.absolute(), val_output_dir.absolute()
        if train_at == val_at or train_at in val_at.parents or val_at in train_at.parents:
            raise ConfigError(f"--val_output_dir={str(val_output_dir)!r} is --output_dir={str(output_dir)!r} or inside "
                              "it (or it inside the other): the held-out shard needs a folder of its own, e.g. "
                              "data/val/c1 beside data/train/c1.")
        targets.append(("val", val_output_dir, "--val_output_dir"))
    for _, target, flag in targets:
        check_output(target, flag, overwrite)
    decon = _decon_index(decontaminate, decon_out, output_dir, task_paths, cache_dir)
    encoder = EncoderSpec.from_tokenizer_dir(tokenizer_dir)
    manifest = {
        "inputs": described_inputs,
        "text_key": text_key,
        "tokenizer_dir": str(tokenizer_dir),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer_dir),
        "vocab_size": encoder.vocab_size,
        "val_fraction": val_fraction,
        "eos_after_every_document": True,
        # which documents are held out: a hash of (file below the inputs' common folder, position in the file), the
        # position being the 0-based line (JSONL) or row (Parquet) number; earlier versions counted documents
        "held_out_key": "file and line/row number",
        **({} if decon is None else {DECON_KEY: decon["record"]}),
    }
    records: list[dict] = []
    locks = [FolderLock(target.parent / f".{target.name}.lock", flag, target, "prepare") for _, target, flag in targets]
    written: list[tuple[Path, Path]] = []
    with stop_signals_raise():  # Ctrl-C or SIGTERM: the temporary folders go, nothing half-done is published
        try:
            for lock in locks:
                lock.acquire()
            for _, target, _ in targets:
                for stale in remove_stale_temporaries(target):
                    log.info("Removed %s, left behind by an earlier prepare that was killed", stale)
            for split, target, _ in targets:
                fn = TokenizeUnit(encoder, text_key, split, val_fraction, batch_size,
                                  str(target.parent / f".{target.name}.stats-{os.getpid()}"), hf,
                                  None if decon is None else decon["path"])
                partial, record, found = write_split(units, fn, target, num_workers, chunk_tokens, manifest)
                written.append((partial, target))
                records.append(record)
                if decon is not None:
                    decon["found"].append((split, target, record, found))
            publish_splits(written)
        except BaseException:
            for partial, _ in written:
                shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            for lock in locks:
                lock.release()
    for (split, target, _), record in zip(targets, records, strict=True):
        log.info("Wrote %s split: %s documents, %s tokens -> %s%s", split, f"{record['documents']:,}",
                 f"{record['tokens']:,}", target, describe_skipped(record))
    if decon is not None:
        _write_decon_report(decon)
    return records


def _decon_index(decontaminate, decon_out, output_dir: Path, task_paths, cache_dir) -> dict | None:
    """The sources read and their index built (or found in the cache) before any tokenizing: the index file the
    workers read, the record each manifest gets, and where the report goes."""
    if not decontaminate:
        return None
    from midtrain.data.decon import cached_index, policy_record, sources_digest
    from midtrain.eval.decon_sources import parse_against, read_source
    from midtrain.publish import check_output_dir

    wanted = parse_against(decontaminate, "--decontaminate")
    out = check_output_dir(Path(decon_out) if decon_out else Path("decon_out") / Path(output_dir).name,
                           "--decon_out", ("decon.json", "report.md"))
    sources = [read_source(name, location, task_paths) for name, location in wanted]
    items = [item for source in sources for item in source.items]
    digest = sources_digest([(s.name, s.digest) for s in sources])
    index, _, path = cached_index(items, digest, cache_dir, fallback_dir=out / ".index")
    if path is None:
        raise ConfigError(f"--cache_dir: the evaluation index cannot be written (neither to the cache nor to "
                          f"{out}), and the tokenizer workers read it from a file. Give a writable --cache_dir.")
    record = policy_record(digest, [(s.name, s.location, s.digest, len(s.items)) for s in sources])
    return {"path": str(path), "record": record, "sources": sources, "items": items, "index": index, "out": out,
            "found": []}


def _write_decon_report(decon: dict) -> None:
    """decon.json and report.md of a decontaminating prepare, in ``midtrain decon``'s form: per source, the items
    found and where (the input line or row); per split, its documents and those left out."""
    from midtrain import reports
    from midtrain.commands.decon import render_report
    from midtrain.publish import write_text_atomic

    by_item: dict[int, list[dict]] = {}
    for split, _, _, found in decon["found"]:
        for where, item_ids in found:
            for item_id in item_ids:
                by_item.setdefault(item_id, []).append({"input": where, "split": split})
    sources, first = {}, 0
    too_short = set(decon["index"].too_short)
    for source in decon["sources"]:
        ids = range(first, first + len(source.items))
        sources[source.name] = {"location": source.location, "sha256": source.digest, "items": len(source.items),
                                "too_short": [i - first for i in ids if i in too_short],
                                "found": {str(i - first): by_item[i] for i in ids if i in by_item}}
        first += len(source.items)
    shards = {}
    for _, target, record, found in decon["found"]:
        counts: dict[str, int] = {}
        for _, item_ids in found:
            for name in {decon["items"][i].source for i in item_ids}:
                counts[name] = counts.get(name, 0) + 1
        shards[str(target)] = {"documents": record[DECON_KEY]["documents_before"], "tokens": record["tokens"],
                               "contaminated": len(found), "tokens_removed": None, "by_source": counts}
    report = {**decon["record"], "index_from_cache": None, "sources": sources, "shards": shards}
    reports.write_json(decon["out"] / "decon.json", report)
    write_text_atomic(decon["out"] / "report.md", render_report(report, [], decon["items"]))
    removed = sum(len(f) for *_, f in decon["found"])
    log.info("Decontamination: left out %s document(s) holding one of %s items; report %s", f"{removed:,}",
             f"{len(decon['items']):,}", decon["out"] / "report.md")
