"""Test data: real litdata token shards whose tokens tell where they came from.

Domain ``d`` (0, 1, 2, ...) writes tokens ``DOMAIN_BASE * (d + 1) + position`` so the first token of any sample
names its shard and its position in it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

DOMAIN_BASE = 1_000_000


def _documents(spec):
    import torch

    start, n_tokens, doc_tokens = spec
    for offset in range(0, n_tokens, doc_tokens):
        yield torch.arange(start + offset, start + min(offset + doc_tokens, n_tokens), dtype=torch.int32)


def _yield_document(spec):
    yield from _documents(spec)


def write_token_shard(path: Path, start: int, n_tokens: int, doc_tokens: int = 64, chunk_tokens: int = 4096) -> Path:
    """A real shard written by litdata's own ``BinaryWriter`` (what each ``litdata.optimize`` worker writes with, in
    this process: no worker processes to spawn, 4 s saved per shard): tokens ``start .. start + n_tokens - 1`` in
    documents of ``doc_tokens``, several chunk files. ``write_token_shard_with_optimize`` writes the same bytes
    (tested)."""
    from litdata import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(path), chunk_size=chunk_tokens, item_loader=TokensLoader())
    documents = (doc for spec in _document_specs(start, n_tokens, doc_tokens) for doc in _documents(spec))
    for index, document in enumerate(documents):
        writer[index] = document
    writer.done()
    writer.merge()
    return path


def write_documents_shard(path: Path, documents, chunk_tokens: int = 512) -> Path:
    """A real shard (litdata's ``BinaryWriter``, as ``write_token_shard``) of the given token documents."""
    import torch
    from litdata import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(path), chunk_size=chunk_tokens, item_loader=TokensLoader())
    for index, document in enumerate(documents):
        writer[index] = torch.as_tensor(document, dtype=torch.int32)
    writer.done()
    writer.merge()
    return path


def write_token_shard_with_optimize(path: Path, start: int, n_tokens: int, doc_tokens: int = 64,
                                    chunk_tokens: int = 4096) -> Path:
    """The same shard through ``litdata.optimize`` (one worker process), as a user makes it."""
    from litdata import TokensLoader, optimize

    optimize(
        fn=_yield_document,
        inputs=_document_specs(start, n_tokens, doc_tokens),
        output_dir=str(path),
        chunk_size=chunk_tokens,
        item_loader=TokensLoader(),
        num_workers=1,
        reorder_files=False,
        verbose=False,
    )
    return path


def _document_specs(start: int, n_tokens: int, doc_tokens: int) -> list[tuple[int, int, int]]:
    return [(start + o, min(doc_tokens * 16, n_tokens - o), doc_tokens) for o in range(0, n_tokens, doc_tokens * 16)]


def write_index_only(path: Path, dims: list[int], items: int = 4) -> Path:
    """A shard folder with a litdata-format index.json and sparse chunk files of the right size but no tokens (for
    discovery, plan and dry-run tests only: nothing is read)."""
    path.mkdir(parents=True, exist_ok=True)
    chunks = []
    for i, dim in enumerate(dims):
        name = f"chunk-0-{i}.bin"
        size = (items + 2) * 4 + dim * 4
        with open(path / name, "wb") as handle:
            handle.truncate(size)
        chunks.append({"chunk_bytes": size, "chunk_size": items, "dim": dim, "filename": name})
    config = {
        "chunk_size": 4096,
        "compression": None,
        "data_format": ["no_header_tensor:16"],
        "item_loader": "TokensLoader",
    }
    (path / "index.json").write_text(json.dumps({"chunks": chunks, "config": config}))
    return path


def fork_cosine(it: int, max_lr: float, warmup_iters: int, min_lr: float, horizon_iters: int = 976_560) -> float:
    """The paper fork's cosine LR at micro-iteration ``it`` (its ``get_lr``), written out independently of midtrain."""
    if it < warmup_iters:
        return max_lr * it / warmup_iters
    if it > horizon_iters:
        return min_lr
    ratio = (it - warmup_iters) / (horizon_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


# The defaults of ``midtrain.train.args.TrainArgs`` as plain data, so that pure-logic unit tests (budgets, LR
# schedules) run without importing litgpt and torch; tests/integration/test_compat.py checks they match the class.
TRAIN_ARGS_DEFAULTS = {
    "save_interval": 1000, "log_interval": 1, "global_batch_size": 64, "micro_batch_size": 4, "lr_warmup_steps": None,
    "lr_warmup_fraction": None, "epochs": None, "max_tokens": None, "max_steps": None, "max_time": None,
    "max_seq_length": None, "tie_embeddings": None, "max_norm": None, "min_lr": 6e-05, "max_additional_steps": None,
    "max_iters": None, "lr_scheduler": "cosine", "stable_steps": None, "decay_fraction": None, "max_lr": None,
    "lr_warmup_iters": None, "lr_horizon_iters": None, "lr_iter_offset": None, "dialect": "auto", "init_lr": None,
    "initial_sampling_rate": None, "episode_length": None, "freeze_sampling_rate": None, "data_scheduler": None,
    "reset_optimizer": False, "rewarm_steps": 0, "activation_checkpointing": False, "keep_last_checkpoints": None,
    "keep_checkpoint_steps": [], "lr_decay_shape": None, "steps_from_branch": None, "tokens_from_branch": None,
    "average": None,
}


def train_settings(**overrides):
    """``TrainArgs(**overrides)`` as a plain namespace (same fields, same defaults)."""
    from types import SimpleNamespace

    unknown = set(overrides) - set(TRAIN_ARGS_DEFAULTS)
    if unknown:
        raise TypeError(f"TrainArgs has no field(s) {sorted(unknown)}")
    return SimpleNamespace(**{**TRAIN_ARGS_DEFAULTS, "keep_checkpoint_steps": [], **overrides})


def fork_step_lrs(it0: int, accumulation: int, max_iters: int, lr_at) -> list[float]:
    """The LR of each optimizer step the paper fork's loop made from micro-iteration ``it0`` to ``max_iters``,
    written out from its ``fit``: the LR is set from ``iter_num`` before it is incremented, and a step is taken when
    the incremented ``iter_num`` is a multiple of the accumulation."""
    lrs, it = [], it0
    while it < max_iters:
        lr = lr_at(it)
        it += 1
        if it % accumulation == 0:
            lrs.append(lr)
    return lrs
