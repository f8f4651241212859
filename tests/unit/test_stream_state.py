import pytest

from midtrain.data.discovery import Shard
from midtrain.data.stream_io import render_transitions
from midtrain.data.stream_state import StreamTracker
from midtrain.distributed import RankZeroFilter, rank_and_world_size


def shard(shard_id, domain, tokens, fingerprint="f0"):
    return Shard(shard_id, domain, None, ("chunk-0-0.bin",), (tokens,), (1,), "no_header_tensor:16", fingerprint)


def tracker(members, weights, world_size=1):
    return StreamTracker(members, weights, block_tokens=10, seed=1, sampling="exact", rank=0, world_size=world_size)


def test_tracker_state_round_trip_and_ledger():
    main, code = shard("main/1", "main", 1000), shard("c1", "code", 100)
    first = tracker([main, code], [0.75, 0.25], world_size=2)
    first.advance(40)
    state = first.state_dict()
    assert state["shards"]["c1"]["consumed"] == 10 * 2 and state["shards"]["main/1"]["consumed"] == 30 * 2
    second = tracker([main, code], [0.75, 0.25], world_size=2)
    rows = second.load_state_dict(state)
    assert second.snapshot()["cursors"] == first.snapshot()["cursors"]
    assert second.snapshot()["weights"] == first.snapshot()["weights"]
    assert {r.shard: r.status for r in rows} == {"main/1": "continued", "c1": "continued"}
    ledger = second.ledger()
    assert ledger["shards"]["c1"] == {
        "domain": "code",
        "samples": 20,
        "tokens": 180,
        "passes": 2.0,
        "completed_passes": 2,
    }
    assert ledger["domains"]["main"]["tokens"] == 60 * 9
    assert second.advance(12, positions=True) == first.advance(12, positions=True)


def test_new_world_size_starts_a_new_phase_at_the_same_cursors():
    main = shard("main/1", "main", 1000)
    first = tracker([main], [1.0], world_size=4)
    first.advance(5)
    second = tracker([main], [1.0], world_size=2)
    second.load_state_dict(first.state_dict())
    assert second.position == 0 and second.consumed(0) == 20 and len(second.stretches) == 2
    second.advance(3)
    assert second.consumed(0) == 26


def test_transition_table_lists_every_status():
    first = tracker([shard("main/1", "main", 1000), shard("c1", "code", 100)], [0.5, 0.5])
    first.advance(4)
    second = tracker([shard("main/1", "main", 1000), shard("m1", "math", 100)], [0.5, 0.5])
    table = render_transitions(second.load_state_dict(first.state_dict()))
    assert "continued" in table and "started" in table and "dropped" in table
    assert second.ledger()["stretches"][0]["tokens"] == {"main/1": 18, "c1": 18}


def test_rank_from_the_launcher_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("GLOBAL_RANK", "3")
    assert rank_and_world_size() == (3, 4)
    monkeypatch.setenv("RANK", "2")
    assert rank_and_world_size() == (2, 4)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert rank_and_world_size() == (0, 1)


def test_tracker_needs_a_member():
    with pytest.raises(ValueError, match="a mixed stream needs at least one shard with positive weight"):
        tracker([], [])


def test_library_messages_only_on_rank_zero(monkeypatch, caplog):
    import logging

    from midtrain.distributed import get_logger

    logger = get_logger("midtrain.data.example")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with caplog.at_level(logging.INFO, logger="midtrain"):
        logger.info("from rank one")
        monkeypatch.setenv("RANK", "0")
        logger.info("from rank zero")
    assert "from rank zero" in caplog.text and "from rank one" not in caplog.text
    assert sum(isinstance(f, RankZeroFilter) for f in get_logger("midtrain.data.example").filters) == 1


def test_a_saved_state_of_the_first_format_is_read():
    """Checkpoints written before stretches were named (format 1: every cursor in every record, under "phases")."""
    main, code = shard("main/1", "main", 1000), shard("c1", "code", 100)
    first = tracker([main, code], [0.75, 0.25])
    first.advance(40)
    state = first.state_dict()
    old = {**{k: v for k, v in state.items() if k != "stretches"}, "format": "midtrain.mixed_stream/1",
           "phases": [{**p, "start": {"main/1": 0, "c1": 0}} for p in state["stretches"]]}
    second = tracker([main, code], [0.5, 0.5])  # another mixture: a new stretch at the saved cursors
    second.load_state_dict(old)
    assert second.consumed(0) == 30 and second.consumed(1) == 10 and len(second.stretches) == 2
    assert second.ledger()["stretches"][0]["tokens"] == {"main/1": 30 * 9, "c1": 10 * 9}


def test_stretch_records_hold_only_the_cursors_that_moved():
    members = [shard(f"main/{k}", "main", 1000) for k in range(1, 101)]
    stream = tracker(members, [1.0] * 100)
    stream.advance(10)  # ten shards read
    state = stream.state_dict()
    second = tracker(members, [0.5] + [0.5 / 99] * 99)
    second.load_state_dict(state)
    assert len(second.stretches[1]["start"]) == 10  # not 100
    assert sum(second.ledger()["stretches"][0]["tokens"].values()) == 10 * 9


def weighed_tracker(members, weights, world_size=1, start_step=0):
    from midtrain.data.mix_schedule import ConstantMixture

    t = StreamTracker(members, weights, block_tokens=10, seed=1, sampling="exact", rank=0, world_size=world_size,
                      timeline=ConstantMixture({s.id: w for s, w in zip(members, weights, strict=True)}),
                      start_step=start_step, samples_per_step=4)
    t.lr_at = lambda step: 1.0 / (step + 3)
    return t


def test_lr_weighted_samples_are_each_steps_lr_times_its_draws_however_the_steps_are_batched():
    """A sample weighs the LR of the step that trains it; batches of any size, a save and a load in between, give the
    same sums as one sample at a time, added up by hand."""
    main, code = shard("main/1", "main", 1000), shard("c1", "code", 500)
    by_hand = tracker([main, code], [0.7, 0.3], world_size=2)
    expected = {"main": 0.0, "code": 0.0}
    for n in range(40):
        (member,) = by_hand.advance(1, members=True)
        expected[by_hand.members[member].domain] += 2 * (1.0 / (n // 4 + 3))  # two ranks draw alike
    uneven = weighed_tracker([main, code], [0.7, 0.3], world_size=2)
    for length in (3, 5, 2, 6, 4):
        uneven.advance(length)
    resumed = weighed_tracker([main, code], [0.7, 0.3], world_size=2, start_step=5)
    resumed.load_state_dict(uneven.state_dict())
    resumed.advance(20)
    whole = weighed_tracker([main, code], [0.7, 0.3], world_size=2)
    whole.advance(40)
    ledger = whole.ledger()
    assert resumed.ledger() == ledger
    per_token = 9
    for domain, value in expected.items():
        assert ledger["domains"][domain]["lr_weighted_tokens"] == pytest.approx(value * per_token, rel=1e-12)
        assert ledger["stretches"][0]["lr_weighted_tokens"][domain] == pytest.approx(value * per_token, rel=1e-12)
    assert ledger["shards"]["c1"]["lr_weighted_tokens"] == ledger["domains"]["code"]["lr_weighted_tokens"]
    assert "lr_weighted_tokens" not in tracker([main], [1.0]).ledger()["domains"]["main"]  # no LR told: none
