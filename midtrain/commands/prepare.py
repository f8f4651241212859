"""``midtrain prepare``: tokenize raw text into a litdata token shard."""

from __future__ import annotations

from pathlib import Path

from midtrain.data.prepare import DEFAULT_CHUNK_TOKENS, prepare_shard


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
) -> list[dict]:
    """Tokenize raw text into one shard (EOS after every document), with an optional held-out shard.

    Args:
        output_dir: The shard folder to write, e.g. ``data/train/c1`` (refused if not empty, unless ``overwrite``).
        tokenizer_dir: A litgpt checkpoint or tokenizer folder (``tokenizer.json`` or ``tokenizer.model``).
        inputs: Files, globs or folders of ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet`` or ``.txt``.
        hf_dataset: Instead of ``inputs``: a Hugging Face dataset name or a local ``save_to_disk`` folder.
        hf_split: Split of ``hf_dataset``.
        hf_subset: Config (subset) name of ``hf_dataset``.
        text_key: The JSON key or column holding the text (``.txt`` files are one document each).
        val_fraction: Share of documents held out into ``val_output_dir`` (chosen by a hash of each document's place).
        val_output_dir: Where the held-out shard goes; default: ``<root>/val/<name>`` for ``<root>/train/<name>``.
        num_workers: Tokenizer processes.
        batch_size: Documents encoded per batch.
        chunk_tokens: Tokens per chunk file.
        overwrite: Replace a non-empty ``output_dir`` (atomically, once the new shard is complete).
    """
    return prepare_shard(
        output_dir=output_dir,
        tokenizer_dir=tokenizer_dir,
        inputs=[inputs] if isinstance(inputs, str) else (inputs or []),
        hf_dataset=hf_dataset,
        hf_split=hf_split,
        hf_subset=hf_subset,
        text_key=text_key,
        val_fraction=val_fraction,
        val_output_dir=val_output_dir,
        num_workers=num_workers,
        batch_size=batch_size,
        chunk_tokens=chunk_tokens,
        overwrite=overwrite,
    )
