"""Mixture schedules: parsing, the timeline of phases and ramps, and the stream across its segments (exact within
each segment, cursors carried, resumable anywhere, workers' copies equal)."""

from __future__ import annotations

import pytest

from midtrain.data.discovery import Shard
from midtrain.data.mix_schedule import (
    RAMP_SEGMENTS,
    MixSchedule,
    build_timeline,
    mixture_before,
    parse_phases,
    segment_index_at,
)
from midtrain.data.mixture import MixtureArgs, resolve_mixture
from midtrain.data.stream_state import StreamTracker
from midtrain.errors import ConfigError
from tests.helpers import write_index_only

PHASES = [
    {"start_step": 0, "mix_weights_str": "main:1.0"},
    {"start_step": 4, "mix_weights_str": "main:0.8,code:0.2"},
    {"start_step": 8, "literal_weights_str": "main/1:0.5,m1:0.5", "ramp_steps": 4},
]
WEIGHTS = ({"main/1": 1.0}, {"main/1": 0.8, "c1": 0.2}, {"main/1": 0.5, "m1": 0.5})


def shard(shard_id, domain, tokens):
    return Shard(shard_id, domain, None, ("chunk-0-0.bin",), (tokens,), (1,), "no_header_tensor:16", "f-" + shard_id)


MEMBERS = [shard("main/1", "main", 10_000), shard("c1", "code", 2_000), shard("m1", "math", 2_000),
           shard("i1", "instruct", 500)]


def source(phases=PHASES, weights=WEIGHTS):
    return MixSchedule(parse_phases(phases), weights)


def test_a_ramp_is_constant_segments_at_its_midpoints_then_the_target():
    timeline = source().segments()
    assert [(s.start_step, s.end_step, s.phase, s.ramp) for s in timeline] == [
        (0, 4, 0, None), (4, 8, 1, None), (8, 9, 2, (1, 4)), (9, 10, 2, (2, 4)), (10, 11, 2, (3, 4)),
        (11, 12, 2, (4, 4)), (12, None, 2, None)]
    first_ramp = timeline[2].weights
    assert first_ramp == pytest.approx({"main/1": 0.8 - 0.3 / 8, "c1": 0.2 - 0.2 / 8, "m1": 0.5 / 8})
    long = build_timeline(parse_phases([PHASES[0], {**PHASES[1], "ramp_steps": 1000}]), WEIGHTS[:2], None)
    assert sum(1 for s in long if s.ramp) == RAMP_SEGMENTS and long[-1].start_step == 1004
    assert (
        segment_index_at(timeline, 0) == 0
        and segment_index_at(timeline, 10) == 4
        and segment_index_at(timeline, 99) == 6
    )


@pytest.mark.parametrize(("phases", "match"), [
    ([], r"--data.mix_schedule must be a non-empty list"),
    ([{"start_step": 0}], r"mix_schedule\[0\] gives no mixture"),
    ([{"start_step": 0, "mix_weight_str": "main:1"}], r"unknown key 'mix_weight_str'. Did you mean 'mix_weights_str'"),
    ([{"start_step": -1, "mix_weights_str": "main:1"}], r"mix_schedule\[0\].start_step=-1 must be a step number"),
    ([PHASES[0], {**PHASES[1], "start_step": 0}], r"mix_schedule\[1\].start_step=0 is not after the phase before"),
    ([{**PHASES[0], "ramp_steps": 9}, PHASES[1]], r"mix_schedule\[0\] ramps until step 9, past the start of phase 1"),
    ([{"start_step": 0, "mix_weights_str": "main:1", "literal_weights_str": "c1:1"}],
     r"mix_schedule\[0\].mix_weights_str and --data.mix_schedule\[0\].literal_weights_str are both set"),
    ([{"start_step": 0, "mix_weights_str": "main:x"}], r"mix_schedule\[0\].mix_weights_str gives 'main' the weight"),
])
def test_bad_phases_are_refused_naming_the_phase_and_key(phases, match):
    with pytest.raises(ConfigError, match=match):
        parse_phases(phases)


def test_a_ramp_into_the_first_phase_needs_a_mixture_before_it():
    phases = [{"start_step": 0, "mix_weights_str": "main:0.8,code:0.2", "ramp_steps": 4}]
    with pytest.raises(ConfigError, match=r"ramp_steps=4, but nothing comes before this phase.*--branch_from"):
        build_timeline(parse_phases(phases), WEIGHTS[1:2], None)
    timeline = build_timeline(parse_phases(phases), WEIGHTS[1:2], {"main/1": 1.0})
    assert timeline[0].weights == pytest.approx({"main/1": 1 - 0.2 / 8, "c1": 0.2 / 8})
    saved = [{"mixture": {"main/1": 1.0}}, {"mixture": {"c1": 1.0}, "start_step": 30}]
    assert mixture_before(saved, 30) == {"main/1": 1.0} and mixture_before(saved, 31) == {"c1": 1.0}
    with pytest.raises(ConfigError, match=r"run is at step 2, but the first phase .* starts at step 3"):
        segment_index_at(build_timeline(parse_phases([{**PHASES[0], "start_step": 3}]), WEIGHTS[:1], None), 2)


def test_the_schedule_and_one_mixture_are_exclusive_and_every_phase_is_resolved_up_front(tmp_path):
    for folder in ("1", "c1"):
        write_index_only(tmp_path / folder, [4096])
    with pytest.raises(ConfigError, match=r"--data.mix_schedule and --data.mix_weights_str are both set"):
        resolve_mixture(MixtureArgs(data_path=tmp_path, mix_weights_str="main:1", mix_schedule=PHASES[:2]))
    with pytest.raises(ConfigError, match=r"--data.mix_schedule\[2\].literal_weights_str names shard 'm1'"):
        resolve_mixture(MixtureArgs(data_path=tmp_path, mix_schedule=PHASES))
    mixture = resolve_mixture(MixtureArgs(data_path=tmp_path, mix_schedule=PHASES[:2]))
    assert [s.id for s in mixture.used_shards()] == ["main/1", "c1"] and mixture.weights["c1"] == 0


def tracker(start_step=0, world_size=1, rank=0, schedule=None):
    return StreamTracker(
        MEMBERS,
        [1.0, 0, 0, 0],
        block_tokens=10,
        seed=3,
        sampling="exact",
        rank=rank,
        world_size=world_size,
        timeline=schedule or source(),
        start_step=start_step,
        samples_per_step=4,
    )


def test_each_segment_is_exact_from_its_start_and_every_cursor_carries_on():
    stream = tracker()
    picks = stream.advance(4 * 16, positions=True)  # steps 0-15: every segment, the last one entered
    timeline = stream.timeline
    assert [p.get("start_step") for p in stream.stretches] == [s.start_step for s in timeline]
    assert [p["segment"] for p in stream.stretches][2:4] == ["phase 2 ramp 1/4", "phase 2 ramp 2/4"]
    for segment in timeline:
        first, last = segment.start_step * 4, min(segment.end_step or 16, 16) * 4
        counts: dict[int, int] = {}
        for n, (member, _) in enumerate(picks[first:last], start=1):
            counts[member] = counts.get(member, 0) + 1
            for k, m in enumerate(MEMBERS):
                target = segment.weights.get(m.id, 0.0) * n
                assert abs(counts.get(k, 0) - target) <= 1, (segment, n, m.id)
    for k in range(len(MEMBERS)):  # nothing re-read, nothing skipped: each shard's positions are 0, 1, 2, ...
        positions = [pos for member, pos in picks if member == k]
        assert positions == list(range(len(positions)))
    ledger = stream.ledger()
    assert [sum(p["tokens"].values()) for p in ledger["stretches"]] == [
        16 * 9,
        16 * 9,
        4 * 9,
        4 * 9,
        4 * 9,
        4 * 9,
        16 * 9,
    ]
    assert ledger["domains"]["math"]["samples"] == sum(1 for m, _ in picks if m == 2) > 0


@pytest.mark.parametrize("stop_step", [3, 4, 9, 11, 12, 13])
def test_resume_at_any_step_even_inside_a_ramp_continues_the_same_stream(stop_step):
    whole = tracker().advance(4 * 20, positions=True)
    first = tracker()
    before = first.advance(4 * stop_step, positions=True)
    second = tracker(start_step=stop_step)
    second.load_state_dict(first.state_dict())
    assert before + second.advance(4 * (20 - stop_step), positions=True) == whole
    uninterrupted = tracker()
    uninterrupted.advance(4 * 20)
    assert second.ledger() == uninterrupted.ledger()


def test_a_workers_copy_from_a_snapshot_runs_the_same_segments():
    stream = tracker()
    stream.advance(4 * 7 + 2)
    copy = stream.at(stream.snapshot())
    assert copy.advance(40, positions=True) == stream.advance(40, positions=True)


def test_two_ranks_share_each_segment_without_overlap():
    ranks = [tracker(world_size=2, rank=r) for r in (0, 1)]
    picks = [
        r.advance(2 * 16, positions=True) for r in ranks
    ]  # samples_per_step=4 per rank is 8 per step over both ranks
    for k in range(len(MEMBERS)):
        positions = sorted(pos for rank_picks in picks for member, pos in rank_picks if member == k)
        assert positions == list(range(len(positions)))


def test_a_branch_ramps_from_the_checkpoints_mixture():
    trunk = StreamTracker(MEMBERS[:1], [1.0], block_tokens=10, seed=3, sampling="exact", start_step=0,
                          samples_per_step=4)
    trunk.advance(4 * 5)
    ramp = source([{"start_step": 5, "mix_weights_str": "main:0.8,code:0.2", "ramp_steps": 2}], WEIGHTS[1:2])
    branch = tracker(start_step=5, schedule=ramp)
    with pytest.raises(ConfigError, match="nothing comes before this phase"):
        branch.require_timeline()
    branch.load_state_dict(trunk.state_dict())
    assert branch.timeline[0].weights == pytest.approx({"main/1": 0.95, "c1": 0.05})
    picks = branch.advance(4 * 4, positions=True)
    assert [pos for member, pos in picks if member == 0][0] == 20  # main continues at the trunk's cursor
    assert [p.get("segment") for p in branch.stretches] == [None, "phase 0 ramp 1/2", "phase 0 ramp 2/2", "phase 0"]
