import random

import pytest

from midtrain.data.sample_order import SCALE, ExactOrder, RandomOrder, quantise, scan_exact


def random_mixture(rng: random.Random) -> list[float]:
    k = rng.choice([1, 2, 3, 5, 8, 13, 30])
    mode = rng.random()
    if mode < 0.3:
        raw = [rng.random() ** 4 + 1e-9 for _ in range(k)]
    elif mode < 0.6:
        raw = [1.0] + [rng.random() * 0.01 + 1e-9 for _ in range(k - 1)]
    else:
        raw = [rng.random() + 1e-9 for _ in range(k)]
    return raw


def test_quantise_sums_exactly_and_keeps_proportions():
    weights = quantise([0.88, 0.12])
    assert sum(weights) == SCALE and abs(weights[1] / SCALE - 0.12) < 1e-12
    assert sum(quantise([1 / 3] * 3)) == SCALE


def test_exact_schedule_holds_every_prefix_within_one_sample():
    rng = random.Random(1234)
    for _ in range(300):
        int_weights = quantise(random_mixture(rng))
        schedule = ExactOrder(int_weights)
        counts = [0] * len(int_weights)
        for n, chosen in enumerate(schedule.run(0, counts[:], 2000), start=1):
            counts[chosen] += 1
            for i, w in enumerate(int_weights):
                assert abs(counts[i] - round(w * n / SCALE)) <= 1, (int_weights, n, i)


def test_exact_schedule_replays_from_any_position():
    schedule = ExactOrder(quantise([0.5, 0.3, 0.15, 0.05]))
    whole = schedule.run(0, [0] * 4, 500)
    counts = [0] * 4
    first = schedule.run(0, counts, 137)
    assert first + schedule.run(137, counts, 363) == whole


def test_exact_schedule_paper_mixture_per_batch():
    # main 0.95 + instruct 0.05: every 1024-sample batch holds 51 or 52 instruct samples (random draws vary ~±7)
    schedule = ExactOrder(quantise([0.95, 0.05]))
    counts = [0, 0]
    for step in range(20):
        before = counts[1]
        schedule.run(step * 1024, counts, 1024)
        assert counts[1] - before in (51, 52)


def test_random_schedule_is_counter_based_and_resumable():
    weights = quantise([0.7, 0.2, 0.1])
    whole = RandomOrder(weights, seed=7, stretch=0).run(0, [0] * 3, 9000)
    counts = [0] * 3
    resumed = RandomOrder(weights, seed=7, stretch=0).run(0, counts, 4100)
    resumed += RandomOrder(weights, seed=7, stretch=0).run(4100, counts, 4900)
    assert resumed == whole
    assert abs(whole.count(2) / 9000 - 0.1) < 0.02
    assert RandomOrder(weights, seed=8, stretch=0).run(0, [0] * 3, 100) != whole[:100]


def test_schedule_rejects_bad_weights():
    with pytest.raises(ValueError, match="int_weights must be positive and sum to SCALE"):
        ExactOrder([1, 2])


@pytest.mark.parametrize("seed", range(6))
def test_the_class_heaps_give_the_scanning_greedys_sequence(seed):
    """Equal weights (a domain split over its shards, and the +1 quantisation leaves) and distinct ones, from a
    fresh start and from a resumed state, calls of several lengths."""
    rng = random.Random(seed)
    domains = [rng.random() for _ in range(rng.randint(1, 4))]
    raw = [w for w in domains for _ in range(rng.randint(1, 40))] + [rng.random() for _ in range(rng.randint(0, 5))]
    int_weights = quantise(raw)
    position = rng.choice([0, 0, 1234])
    start = scan_exact(int_weights, 0, [0] * len(raw), position)
    counts_a = [start.count(i) for i in range(len(raw))]
    counts_b = list(counts_a)
    schedule = ExactOrder(int_weights)
    for length in (1, 7, 64, 300):
        assert schedule.run(position, counts_a, length) == scan_exact(int_weights, position, counts_b, length)
        position += length
    assert counts_a == counts_b


def test_ten_thousand_equal_shards_cost_little_per_sample():
    """Not a timing test: the work per sample is a handful of class heads, not 10,000 shards."""
    schedule = ExactOrder(quantise([1.0] * 10_000))
    assert len(schedule.weights) == 10_000
    counts = [0] * 10_000
    chosen = schedule.run(0, counts, 20_000)
    assert len(schedule._classes) <= 2 and max(counts) - min(counts) <= 1 and len(set(chosen[:10_000])) == 10_000


def _reader(chunk_items):
    from types import SimpleNamespace

    from midtrain.data.shard_reader import ShardReader

    shard = SimpleNamespace(id="web/1", chunk_tokens=[n * 4 for n in chunk_items], data_format="no_header_tensor:1",
                            path="/nonexistent", chunk_files=[f"c{i}" for i in range(len(chunk_items))],
                            chunk_items=chunk_items)
    return ShardReader(shard, 4, seed=7)


@pytest.mark.parametrize("from_position", [0, 1, 5, 8, 12, 24, 25, 29, 53])
def test_a_data_order_seed_reorders_only_the_unread_samples_of_each_pass(from_position):
    chunk_items = [5, 3, 0, 7, 4, 6]
    plain = _reader(chunk_items)
    per_pass = plain.samples_per_pass
    assert per_pass == 25
    reference = [plain.locate(q) for q in range(3 * per_pass)]
    reordered = _reader(chunk_items)
    reordered.set_reorders([(from_position, 11)])
    order = [reordered.locate(q) for q in range(3 * per_pass)]
    assert order[:from_position] == reference[:from_position]  # what was read stays read
    for p in range(3):  # every pass still reads every sample once
        assert sorted(order[p * per_pass:(p + 1) * per_pass]) == sorted(reference[p * per_pass:(p + 1) * per_pass])
    assert order[from_position:] != reference[from_position:]
    stacked = _reader(chunk_items)  # a second seed later keeps the first one's order up to its own start
    stacked.set_reorders([(from_position, 11), (from_position + 6, 12)])
    again = [stacked.locate(q) for q in range(3 * per_pass)]
    assert again[:from_position + 6] == order[:from_position + 6]
    assert again[from_position + 6:] != order[from_position + 6:]
    for p in range(3):
        assert sorted(again[p * per_pass:(p + 1) * per_pass]) == sorted(reference[p * per_pass:(p + 1) * per_pass])
