import json
import math

import pytest

from midtrain.data.discovery import discover_shards
from midtrain.data.domains import DomainRegistry
from midtrain.data.plan import apportion, make_plan, render_plan
from midtrain.data.spec import build_spec, parse_weights_string, resolve_weights
from midtrain.errors import ConfigError, DataError
from tests.helpers import write_index_only


@pytest.fixture
def shards(tmp_path):
    write_index_only(tmp_path / "1", [1000])
    write_index_only(tmp_path / "2", [3000])
    write_index_only(tmp_path / "c1", [100])
    write_index_only(tmp_path / "c2", [300])
    write_index_only(tmp_path / "m1", [400])
    return discover_shards(tmp_path, DomainRegistry())


def resolve(shards, **kwargs):
    return resolve_weights(build_spec(**kwargs), shards, DomainRegistry())


def test_domain_weights_split_equally_by_default(shards):
    weights = resolve(shards, mix_weights_str="main:0.8,code:0.2")
    assert weights == pytest.approx({"main/1": 0.4, "main/2": 0.4, "c1": 0.1, "c2": 0.1, "m1": 0.0})


def test_domain_weights_split_by_size(shards):
    weights = resolve(shards, mix_weights={"main": 8, "code": 2}, domain_split="size")
    assert weights == pytest.approx({"main/1": 0.2, "main/2": 0.6, "c1": 0.05, "c2": 0.15, "m1": 0.0})


def test_literal_weights_are_per_shard_and_normalised(shards):
    weights = resolve(shards, literal_weights_str="main/1:0.8, c2:0.1 ,m1:0.1")
    assert weights == pytest.approx({"main/1": 0.8, "main/2": 0, "c1": 0, "c2": 0.1, "m1": 0.1})


def test_proportional_sampling_with_multipliers(shards):
    weights = resolve(shards, proportional_sampling=True)
    assert weights["main/2"] == pytest.approx(3000 / 4800)
    scaled = resolve(shards, proportional_sampling=True, mix_weights_str="code:2")
    total = 1000 + 3000 + 2 * 400 + 400
    assert scaled["c2"] == pytest.approx(600 / total) and scaled["m1"] == pytest.approx(400 / total)


def test_mix_json_in_the_papers_format(shards, tmp_path):
    path = tmp_path / "mix.json"
    path.write_text(json.dumps({"weights": {"main": 0.88, "math": 0.12}}))
    assert resolve(shards, mix_config_path=path)["m1"] == pytest.approx(0.12)
    path.write_text(json.dumps({"literal_weights": {"c1": 1}}))
    assert resolve(shards, mix_config_path=path)["c1"] == 1.0


def test_no_mixture_means_main_only(shards):
    assert resolve(shards)["main/1"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "text, match",
    [
        ("main:0.8,,code:0.2", r"--data.mix_weights_str='main:0.8,,code:0.2' has an empty entry"),
        ("main=0.8", r"has the entry 'main=0.8', which is not name:weight"),
        ("main:abc", r"gives 'main' the weight 'abc', which is not a number"),
        ("main:-1", r"gives 'main' the negative weight -1"),
        ("main:nan", r"Weights must be finite numbers"),
        ("main:1,main:2", r"names 'main' twice"),
        (":1", r"without a name"),
        ("", r"--data.mix_weights_str is empty"),
    ],
)
def test_malformed_weight_strings(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_weights_string(text, "--data.mix_weights_str")


def test_all_zero_weights():
    with pytest.raises(ConfigError, match=r"--data.mix_weights_str gives every entry weight 0"):
        build_spec(mix_weights_str="main:0,code:0")


def test_two_forms_at_once():
    with pytest.raises(ConfigError, match=r"--data.mix_weights_str and --data.literal_weights_str are both set.*Keep "
                                          r"only one"):
        build_spec(mix_weights_str="main:1", literal_weights_str="main/1:1")


def test_literal_with_proportional():
    with pytest.raises(ConfigError, match=r"--data.proportional_sampling=true cannot be combined with per-shard "
                                          r"weights"):
        build_spec(literal_weights_str="main/1:1", proportional_sampling=True)


def test_missing_and_malformed_json(tmp_path):
    with pytest.raises(ConfigError, match=r"--data.mix_config_path='.*nope.json' does not exist"):
        build_spec(mix_config_path=tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"weights": {"main": 0.8,}}')
    with pytest.raises(ConfigError, match=r"is not valid JSON \(.* at line 1, column \d+\)"):
        build_spec(mix_config_path=bad)
    bad.write_text('{"wieghts": {"main": 1}}')
    with pytest.raises(ConfigError, match=r"has no 'weights' or 'literal_weights' mapping"):
        build_spec(mix_config_path=bad)
    bad.write_text('{"weights": {"main": 1}, "extra": 1}')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['extra'\]"):
        build_spec(mix_config_path=bad)
    bad.write_text('{"weights": {"main": "lots"}}')
    with pytest.raises(ConfigError, match=r"gives 'main' the weight 'lots'"):
        build_spec(mix_config_path=bad)


def test_unknown_domain_suggests(shards):
    with pytest.raises(ConfigError, match=r"names domain 'cod', which is not a known domain.*Did you mean 'code'\?"):
        resolve(shards, mix_weights_str="main:1,cod:1")


def test_weighted_domain_without_shards_is_an_error_not_dropped(shards):
    with pytest.raises(ConfigError, match=r"gives domain 'instruct' weight 0.05, but the data root has no instruct "
                                          r"shards.*'i1, i2, \.\.\.'"):
        resolve(shards, mix_weights_str="main:0.95,instruct:0.05")
    assert resolve(shards, mix_weights_str="main:1,instruct:0")["main/1"] == pytest.approx(0.5)


def test_unknown_shard_id_suggests(shards):
    with pytest.raises(ConfigError, match=r"names shard 'main/3'.*Did you mean 'main/[12]'\?"):
        resolve(shards, literal_weights_str="main/3:1")


def test_domain_names_as_literal_shard_weights_point_at_the_domain_form(shards):
    """Two of the paper's configs write literal_weights_str: "main:0.80,web:0.20" (the fork found no such shards)."""
    with pytest.raises(ConfigError, match=r"names domains \(main, code\), not "
                                          r"shards.*mix_weights_str='main:0.8,code:0.2'"):
        resolve(shards, literal_weights_str="main:0.80,code:0.20")


def test_apportion_is_exact_and_within_one():
    weights = {"a": 0.5, "b": 1 / 3, "c": 1 / 6 - 1e-12, "d": 1e-12}
    for total in (0, 1, 7, 1000, 12345):
        counts = apportion(total, weights)
        assert sum(counts.values()) == total
        assert all(abs(counts[k] - w * total) < 1 for k, w in weights.items())


def test_plan_counts_tokens_and_passes(shards):
    weights = resolve(shards, mix_weights_str="main:0.5,math:0.5")
    plan = make_plan(shards, weights, seq_length=9, max_tokens=900)
    rows = {s.id: s for s in plan.shards}
    assert plan.total_samples == 100
    assert rows["m1"].samples == 40 and rows["m1"].planned_samples == 50 and rows["m1"].passes == pytest.approx(1.25)
    assert rows["m1"].planned_tokens == 450
    assert sum(s.planned_tokens for s in plan.shards) == 900
    assert plan.domains()["main"]["planned_tokens"] == 450
    table = render_plan(plan)
    assert "m1" in table and "1.250" in table and "budget 900 tokens = 100 sequences of 9 tokens" in table
    payload = plan.to_json()
    assert set(payload["shards"][0]) >= {"id", "domain", "tokens", "weight", "planned_tokens", "passes"}


def test_plan_refuses_too_many_passes_unless_raised(shards):
    weights = resolve(shards, mix_weights_str="main:0.5,code:0.5")
    with pytest.raises(DataError, match=r"shard 'c1' \(code\) would be read 5\.00 "
                                        r"times.*--data.max_passes=4.*--data.max_passes=5"):
        make_plan(shards, weights, seq_length=9, max_tokens=1800)
    plan = make_plan(shards, weights, seq_length=9, max_tokens=1800, max_passes=5)
    assert max(s.passes for s in plan.shards) == pytest.approx(5.0)


def test_plan_refuses_shard_smaller_than_one_sequence(shards):
    weights = resolve(shards, mix_weights_str="main:0.5,code:0.5")
    with pytest.raises(
        DataError,
        match=r"shard 'c1' .* no chunk that holds one sequence of 129 tokens .* largest chunk "
        r"holds 100 tokens .*midtrain prepare --chunk_tokens",
    ):
        make_plan(shards, weights, seq_length=128, max_tokens=None)


def test_plan_names_the_largest_chunk_when_the_shard_total_would_suffice(tmp_path):
    # 10,240 tokens in five chunks of 2,048: more than one 2,049-token sequence in total, yet no sample fits a chunk
    write_index_only(tmp_path / "1", [2048] * 5)
    shards = discover_shards(tmp_path, DomainRegistry())
    with pytest.raises(
        DataError,
        match=r"largest chunk holds 2,048 tokens \(10,240 in 5 chunk\(s\)\), and a sample never "
        r"crosses a chunk\. Re-chunk it with 'midtrain prepare --chunk_tokens N'",
    ):
        make_plan(shards, resolve(shards), seq_length=2048, max_tokens=None)


def test_plan_without_budget(shards):
    plan = make_plan(shards, resolve(shards), seq_length=9, max_tokens=None)
    assert plan.total_samples is None and all(math.isclose(s.passes, 0) for s in plan.shards)
    assert "no token budget given" in render_plan(plan)


def test_huge_weights_keep_their_shares(shards):
    weights = resolve(shards, mix_weights_str="main:1e308,code:1e308")
    assert weights["main/1"] == pytest.approx(0.25) and weights["c1"] == pytest.approx(0.25) and weights["m1"] == 0
    plan = make_plan(shards, weights, seq_length=9, max_tokens=900)
    assert {s.domain for s in plan.shards if s.planned_samples} == {"main", "code"}
    with pytest.raises(ConfigError, match=r"overflow\. Only their ratios matter"):
        resolve(shards, proportional_sampling=True, mix_weights_str="main:1e308")


def test_a_folder_given_as_the_mix_json_is_named_as_such(tmp_path):
    with pytest.raises(ConfigError, match=r"--data.mix_config_path='.*' is a folder"):
        build_spec(mix_config_path=tmp_path)
