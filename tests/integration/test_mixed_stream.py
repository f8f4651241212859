import collections
import json
import logging

import pytest
import torch

from midtrain.data.module import ShardedMixedDataset
from midtrain.data.shard_reader import ShardReader
from midtrain.data.stream_io import decode_mixture
from midtrain.errors import ConfigError, DataError
from tests.integration.stream_helpers import SEQ_LENGTH, first_tokens, make_module, source

MIX = "main:0.6,code:0.3,math:0.1"
TARGETS = {"main/1": 0.3, "main/2": 0.3, "c1": 0.3, "m1": 0.1}


def assert_exact_at_every_prefix(tokens, targets):
    counts = collections.Counter()
    for n, token in enumerate(tokens, start=1):
        counts[source(token)] += 1
        for shard, weight in targets.items():
            assert abs(counts[shard] - round(weight * n)) <= 1, (n, shard, counts)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_at_every_prefix(data_root, num_workers):
    loader = make_module(data_root, mix_weights_str=MIX, num_workers=num_workers).train_dataloader()
    assert_exact_at_every_prefix(first_tokens(loader, 60), TARGETS)


def test_same_sequence_for_any_number_of_workers(data_root):
    sequences = [
        first_tokens(make_module(data_root, mix_weights_str=MIX, num_workers=w).train_dataloader(), 24)
        for w in (0, 1, 2, 4)
    ]
    assert all(s == sequences[0] for s in sequences)
    shifted = first_tokens(make_module(data_root, mix_weights_str=MIX, seed=43).train_dataloader(), 24)
    assert shifted != sequences[0]


def test_samples_are_the_blocks_on_disk(data_root):
    batch = next(iter(make_module(data_root, mix_weights_str=MIX).train_dataloader()))
    assert (
        batch.shape == (4, SEQ_LENGTH + 1) and batch.dtype == torch.int32
    )  # the shard's own width; the training loop casts to long
    assert torch.equal(batch[:, 1:] - batch[:, :-1], torch.ones(4, SEQ_LENGTH, dtype=torch.int32))


def test_small_shard_starts_new_passes_with_fresh_shuffles(data_root):
    loader = make_module(data_root, mix_weights_str="main:0.5,math:0.5").train_dataloader()
    tokens = first_tokens(loader, 40)  # 80 math samples; m1 holds 31 per pass
    math = [t for t in tokens if source(t) == "m1"]
    passes = [math[0:31], math[31:62]]
    assert len(set(passes[0])) == 31 and set(passes[0]) == set(passes[1]) and passes[0] != passes[1]
    main = [t for t in tokens if source(t).startswith("main")]
    assert len(set(main)) == len(main)  # the larger shards were not restarted
    ledger = loader.ledger()
    assert ledger["shards"]["m1"]["completed_passes"] == 2 and ledger["shards"]["m1"]["samples"] == 80
    assert ledger["domains"]["math"]["tokens"] == 80 * SEQ_LENGTH
    assert ledger["domains"]["main"]["samples"] == 80


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop_after", [1, 7])
def test_resume_continues_sample_for_sample(data_root, num_workers, stop_after, tmp_path):
    uninterrupted = first_tokens(
        make_module(data_root, mix_weights_str=MIX, num_workers=num_workers).train_dataloader(), 20
    )
    loader = make_module(data_root, mix_weights_str=MIX, num_workers=num_workers).train_dataloader()
    before = first_tokens(loader, stop_after)
    torch.save({"train_dataloader": loader.state_dict()}, tmp_path / "state.pt")
    resumed_loader = make_module(data_root, mix_weights_str=MIX, num_workers=num_workers).train_dataloader()
    resumed_loader.load_state_dict(torch.load(tmp_path / "state.pt")["train_dataloader"])
    after = first_tokens(resumed_loader, 20 - stop_after)
    assert before + after == uninterrupted
    assert resumed_loader.ledger() == make_ledger_after(data_root, num_workers, 20)


def make_ledger_after(data_root, num_workers, batches):
    loader = make_module(data_root, mix_weights_str=MIX, num_workers=num_workers).train_dataloader()
    first_tokens(loader, batches)
    return loader.ledger()


def test_breaking_off_an_iteration_loses_nothing(data_root):
    uninterrupted = first_tokens(make_module(data_root, mix_weights_str=MIX, num_workers=2).train_dataloader(), 12)
    loader = make_module(data_root, mix_weights_str=MIX, num_workers=2).train_dataloader()
    # workers prefetch ahead; a new iteration restarts from what was handed out, not from what was prefetched
    assert first_tokens(loader, 5) + first_tokens(loader, 7) == uninterrupted


def shard_order(data_root, shard_id, count):
    """The first ``count`` samples of one shard's own stream (rank 0 of 1), as first tokens."""
    module = make_module(data_root)
    shard = next(s for s in module.mixture.shards if s.id == shard_id)
    reader = ShardReader(shard, SEQ_LENGTH + 1, module.seed)
    return [int(reader.read(q)[0]) for q in range(count)]


def test_mixture_change_continues_shared_shards_and_keeps_dropped_ones(data_root, caplog):
    trunk = make_module(data_root, mix_weights_str="main:0.7,code:0.3").train_dataloader()
    trunk_tokens = first_tokens(trunk, 10)
    state = trunk.state_dict()

    branch = make_module(data_root, mix_weights_str="main:0.5,math:0.5").train_dataloader()
    with caplog.at_level(logging.INFO, logger="midtrain"):
        branch.load_state_dict(state)
    statuses = {t.shard: t.status for t in branch.last_transitions}
    assert statuses == {"main/1": "continued", "main/2": "continued", "m1": "started", "c1": "dropped"}
    assert "Data mixture changed" in caplog.text and "dropped" in caplog.text
    branch_tokens = first_tokens(branch, 10)
    assert_exact_at_every_prefix(branch_tokens, {"main/1": 0.25, "main/2": 0.25, "m1": 0.5})

    # nothing re-read, nothing skipped: main/1 across trunk then branch is exactly its own stream order
    for shard_id in ("main/1", "main/2"):
        seen = [t for t in trunk_tokens + branch_tokens if source(t) == shard_id]
        assert seen == shard_order(data_root, shard_id, len(seen))
    assert [t for t in branch_tokens if source(t) == "m1"] == shard_order(data_root, "m1", 20)

    # a later branch that uses code again continues it where the trunk left it
    back = make_module(data_root, mix_weights_str="main:0.5,code:0.5").train_dataloader()
    back.load_state_dict(branch.state_dict())
    code_seen = [t for t in trunk_tokens + first_tokens(back, 5) if source(t) == "c1"]
    assert code_seen == shard_order(data_root, "c1", len(code_seen))
    ledger = back.ledger()
    assert [p["index"] for p in ledger["stretches"]] == [0, 1, 2]
    assert ledger["stretches"][0]["tokens"]["c1"] == 12 * SEQ_LENGTH
    assert ledger["stretches"][1]["tokens"]["m1"] == 20 * SEQ_LENGTH
    assert ledger["domains"]["main"]["samples"] == 28 + 20 + 10


def test_weight_only_change_is_a_new_phase_with_exact_shares(data_root):
    trunk = make_module(data_root, mix_weights_str="main:0.9,code:0.1").train_dataloader()
    first_tokens(trunk, 7)
    saved = trunk.state_dict()
    branch = make_module(data_root, mix_weights_str="main:0.2,code:0.8").train_dataloader()
    branch.load_state_dict(saved)
    stretches = branch.state_dict()["stretches"]
    # a new stretch begins where the trunk stopped, under the new weights, every cursor carried
    assert len(stretches) == 2 and stretches[0]["shares"] == saved["stretches"][0]["shares"]
    assert decode_mixture(stretches[-1]) == pytest.approx({"main/1": 0.1, "main/2": 0.1, "c1": 0.8}, abs=1e-6)
    assert {t.shard: t.cursor for t in branch.last_transitions} == {
        shard: entry["consumed"] for shard, entry in saved["shards"].items()}
    assert_exact_at_every_prefix(first_tokens(branch, 10), {"main/1": 0.1, "main/2": 0.1, "c1": 0.8})


def test_changed_shard_contents_are_an_error(data_root):
    loader = make_module(data_root, mix_weights_str=MIX).train_dataloader()
    first_tokens(loader, 2)
    state = loader.state_dict()
    state["shards"]["c1"]["fingerprint"] = "0000000000000000"
    with pytest.raises(DataError, match=r"shard contents changed since the checkpoint was saved: c1"):
        make_module(data_root, mix_weights_str=MIX).train_dataloader().load_state_dict(state)


def test_seed_and_length_changes_are_errors(data_root):
    state = make_module(data_root, mix_weights_str=MIX).train_dataloader().state_dict()
    with pytest.raises(ConfigError, match=r"--data.seed=7 differs from the checkpoint's seed 42.*Set --data.seed=42"):
        make_module(data_root, mix_weights_str=MIX, seed=7).train_dataloader().load_state_dict(state)
    module = ShardedMixedDataset(data_path=data_root, mix_weights_str=MIX, num_workers=0)
    module.connect(batch_size=4, max_seq_length=15)
    with pytest.raises(ConfigError, match=r"Set --train.max_seq_length=31"):
        module.train_dataloader().load_state_dict(state)
    with pytest.raises(DataError, match="not a midtrain mixed-stream state"):
        module.train_dataloader().load_state_dict({"current_epoch": 0})


def test_ranks_from_the_environment_read_disjoint_samples(data_root, monkeypatch):
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        per_rank.append(first_tokens(make_module(data_root, mix_weights_str=MIX).train_dataloader(), 15))
    assert not set(per_rank[0]) & set(per_rank[1])
    for tokens in per_rank:
        assert_exact_at_every_prefix(tokens, TARGETS)


def test_random_sampling_is_reproducible_and_resumable(data_root):
    def make():
        return make_module(data_root, mix_weights_str=MIX, sampling="random").train_dataloader()

    whole = first_tokens(make(), 30)
    assert whole == first_tokens(make(), 30)
    loader = make()
    head = first_tokens(loader, 11)
    resumed = make()
    resumed.load_state_dict(loader.state_dict())
    assert head + first_tokens(resumed, 19) == whole
    counts = collections.Counter(source(t) for t in whole)
    assert set(counts) == set(TARGETS)


def test_validation_loaders_per_domain(data_root):
    module = make_module(data_root, mix_weights_str=MIX)
    loaders = module.val_dataloaders()
    # val/1: 600 tokens -> 18 samples of 32; val/c1: 400 -> 12; val/m1: 300 -> 9
    assert {d: len(loader.dataset) for d, loader in loaders.items()} == {"main": 18, "code": 12, "math": 9}
    code = torch.cat(list(loaders["code"]))
    assert code.shape == (12, 32) and all(source_val(int(t)) == "val/c1" for t in code[:, 0])
    assert torch.equal(code, torch.cat(list(module.val_dataloaders()["code"])))  # a fixed set
    assert len(module.val_dataloader().dataset) == 39
    capped = make_module(data_root, mix_weights_str=MIX, val_samples_per_domain=5)
    capped_sizes = {d: len(loader.dataset) for d, loader in capped.val_dataloaders().items()}
    assert capped_sizes == {"main": 5, "code": 5, "math": 5}


def source_val(token):
    return {5: "val/1", 6: "val/c1", 7: "val/m1"}[token // 1_000_000]


def test_no_validation_data_gives_no_loaders_and_a_clear_error_for_litgpt(data_root):
    module = make_module(data_root / "train", mix_weights_str=MIX)
    assert module.val_dataloaders() == {} and module.val_datasets() == {}
    with pytest.raises(DataError, match=r"no held-out shards .* litgpt pretrain needs validation data"):
        module.val_dataloader()


def test_data_module_from_a_litgpt_style_config(data_root):
    from jsonargparse import ArgumentParser
    from litgpt.data import DataModule

    parser = ArgumentParser()
    parser.add_argument("--data", type=DataModule)
    config = parser.parse_object({"data": {"class_path": "midtrain.data.ShardedMixedDataset",
                                           "init_args": {"data_path": str(data_root), "mix_weights_str": MIX}}})
    module = parser.instantiate_classes(config).data
    assert isinstance(module, ShardedMixedDataset) and module.mixture.weights["c1"] == pytest.approx(0.3)


@pytest.mark.slow
def test_two_gloo_processes_read_disjoint_exact_streams(data_root, tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    from tests.integration.stream_helpers import distributed_worker

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(distributed_worker, args=(2, port, str(data_root), str(tmp_path), MIX), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    tokens = [r["tokens"] for r in results]
    assert len(tokens[0]) == len(tokens[1]) == 40
    assert not set(tokens[0]) & set(tokens[1])
    for per_rank in tokens:
        assert_exact_at_every_prefix(per_rank, TARGETS)
    # the ledger is global: both ranks report the samples of both
    assert results[0]["ledger"] == results[1]["ledger"]
    assert sum(s["samples"] for s in results[0]["ledger"]["shards"].values()) == 80
    # together the ranks walk each shard's stream without gaps: rank r takes positions r, r + 2, ...
    for shard_id in ("main/1", "c1"):
        per_rank = [[t for t in tk if source(t) == shard_id] for tk in tokens]
        merged = [t for pair in zip(*per_rank, strict=False) for t in pair]
        assert merged == shard_order(data_root, shard_id, len(merged))


def test_open_chunk_files_stay_bounded_and_samples_stay_right(data_root):
    """Many shards × chunks never exhaust file handles: the least recently used chunk files are closed."""
    import os

    from midtrain.data.shard_reader import _OPEN_FILES

    capacity = _OPEN_FILES.capacity
    try:
        _OPEN_FILES.resize(0)
        before = len(os.listdir("/proc/self/fd"))
        _OPEN_FILES.resize(2)
        module = make_module(data_root, mix_weights_str="main:0.4,code:0.3,math:0.3", num_workers=0)
        tokens = first_tokens(module.train_dataloader(), 100)
        assert len(_OPEN_FILES.files) <= 2 and len(os.listdir("/proc/self/fd")) <= before + 2
        _OPEN_FILES.resize(capacity)
        reference = make_module(data_root, mix_weights_str="main:0.4,code:0.3,math:0.3", num_workers=0)
        assert first_tokens(reference.train_dataloader(), 100) == tokens
    finally:
        _OPEN_FILES.resize(capacity)


def test_test_shards_are_the_bytes_litdata_optimize_writes(tmp_path):
    """The tests' shards come from litdata's writer in-process; ``litdata.optimize`` writes the same files."""
    from tests.helpers import write_token_shard, write_token_shard_with_optimize

    ours = write_token_shard(tmp_path / "writer", 3000, 1500, doc_tokens=50, chunk_tokens=512)
    theirs = write_token_shard_with_optimize(tmp_path / "optimize", 3000, 1500, doc_tokens=50, chunk_tokens=512)
    names = sorted(p.name for p in theirs.iterdir())
    assert names == sorted(p.name for p in ours.iterdir()) and len(names) > 2
    for name in names:
        if name == "index.json":  # the same but for when it was written
            ours_index, their_index = (json.loads((folder / name).read_text()) for folder in (ours, theirs))
            ours_index.pop("updated_at"), their_index.pop("updated_at")
            assert ours_index == their_index
        else:
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
