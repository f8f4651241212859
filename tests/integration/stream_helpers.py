"""Helpers for mixed-stream tests: build loaders on the session data root and name where samples came from."""

from __future__ import annotations

from midtrain.data.module import ShardedMixedDataset
from tests.helpers import DOMAIN_BASE

SEQ_LENGTH = 31  # samples of 32 tokens
SOURCE = {1: "main/1", 2: "main/2", 3: "c1", 4: "m1"}


def make_module(root, batch_size=4, **kwargs) -> ShardedMixedDataset:
    kwargs.setdefault("num_workers", 0)
    module = ShardedMixedDataset(data_path=root, **kwargs)
    module.connect(batch_size=batch_size, max_seq_length=SEQ_LENGTH)
    return module


def first_tokens(loader, batches: int) -> list[int]:
    """The first token of every sample of the next ``batches`` batches (it names shard and position)."""
    out = []
    iterator = iter(loader)
    for _ in range(batches):
        out.extend(int(t) for t in next(iterator)[:, 0])
    return out


def source(token: int) -> str:
    return SOURCE[token // DOMAIN_BASE]


def distributed_worker(rank: int, world_size: int, port: int, root: str, out_dir: str, mix: str) -> None:
    """One rank of a gloo process group: read 10 batches (2 loader workers) and write the first tokens."""
    import json
    from pathlib import Path

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        loader = make_module(root, mix_weights_str=mix, num_workers=2).train_dataloader()
        tokens = first_tokens(loader, 10)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"tokens": tokens, "ledger": loader.ledger()}))
    finally:
        dist.destroy_process_group()
