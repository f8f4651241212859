import json

import pytest

from midtrain.data.discovery import discover_shards, resolve_data_roots, shard_sort_key
from midtrain.data.domains import DomainRegistry
from midtrain.errors import ConfigError, DataError
from tests.helpers import write_index_only


def test_default_registry_knows_the_paper_domains():
    """The shard prefixes the paper's data layout uses (c1, m1, … beside main's numbered shards), written out."""
    registry = DomainRegistry.with_extra(None)
    assert registry.domains() == ["main", "code", "math", "instruct", "qa", "books", "news", "papers", "web"]
    assert [registry.domain_of_prefix(p) for p in "cmiqbnpw"] == registry.domains()[1:]


def test_registry_extends_from_config():
    registry = DomainRegistry.with_extra({"s": "science", "lg": "legal"})
    assert registry.domain_of_prefix("s") == "science" and registry.domain_of_prefix("lg") == "legal"


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"S1": "science"}, r"--data.domain_prefixes has prefix 'S1'.*lowercase letters"),
        ({"c": "chemistry"}, r"'c' already means 'code'. Pick another prefix"),
        ({"s": "main"}, r"not a valid domain name"),
        ({"x": "code"}, r"which prefix 'c' already names"),
    ],
)
def test_registry_rejects_bad_prefixes(extra, match):
    with pytest.raises(ConfigError, match=match):
        DomainRegistry.with_extra(extra)


def test_check_domain_suggests_the_closest():
    message = DomainRegistry.with_extra(None).check_domain("maths", "--data.mix_weights_str")
    assert "--data.mix_weights_str names domain 'maths'" in message and "Did you mean 'math'?" in message


def test_discovery_reads_exact_sizes_in_stable_order(tmp_path):
    for name, dims in {"10": [100], "2": [50, 7], "1": [30], "c10": [5], "c2": [6], "m1": [9], "s3": [11]}.items():
        write_index_only(tmp_path / name, dims)
    (tmp_path / "val").mkdir()  # not shard-like: ignored
    shards = discover_shards(tmp_path, DomainRegistry.with_extra({"s": "science"}))
    assert [s.id for s in shards] == ["main/1", "main/2", "main/10", "c2", "c10", "m1", "s3"]
    assert [s.domain for s in shards] == ["main", "main", "main", "code", "code", "math", "science"]
    by_id = {s.id: s for s in shards}
    assert by_id["main/2"].tokens == 57
    assert by_id["main/2"].samples(10) == 5 + 0  # blocks never cross chunks
    assert by_id["main/10"].samples(33) == 3


def test_discovery_has_no_cap_on_shard_count(tmp_path):
    for n in range(1, 61):
        write_index_only(tmp_path / str(n), [10])
    assert len(discover_shards(tmp_path, DomainRegistry())) == 60


def test_discovery_reports_every_broken_shard(tmp_path):
    write_index_only(tmp_path / "1", [10])
    (tmp_path / "2").mkdir()  # no index.json
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "index.json").write_text("{not json")
    write_index_only(tmp_path / "m1", [0])  # no tokens
    write_index_only(tmp_path / "z1", [10])  # unregistered prefix
    with pytest.raises(DataError) as info:
        discover_shards(tmp_path, DomainRegistry())
    message = str(info.value)
    assert message.startswith("4 problems")
    assert "looks like shard 'main/2' but has no index.json" in message
    assert "c1/index.json is not a valid litdata index" in message
    assert "shard 'm1'" in message and "holds no tokens" in message
    assert "prefix 'z' is not registered" in message and "--data.domain_prefixes" in message


def test_discovery_rejects_missing_chunks_and_non_token_shards(tmp_path):
    write_index_only(tmp_path / "1", [10])
    (tmp_path / "1" / "chunk-0-0.bin").unlink()
    write_index_only(tmp_path / "2", [10])
    index = json.loads((tmp_path / "2" / "index.json").read_text())
    index["config"]["item_loader"] = "PyTreeLoader"
    (tmp_path / "2" / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"(?s)chunk file\(s\) that do not exist.*is not a token shard"):
        discover_shards(tmp_path, DomainRegistry())


def test_empty_or_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"no shards under .* \(--data.data_path\)\. Expected numbered folders"):
        discover_shards(tmp_path, DomainRegistry())
    with pytest.raises(DataError, match=r"does not exist or is not a folder"):
        discover_shards(tmp_path / "nope", DomainRegistry())


def test_duplicate_shard_ids_are_reported(tmp_path):
    write_index_only(tmp_path / "1", [10])
    write_index_only(tmp_path / "01", [10])
    with pytest.raises(DataError, match="both name shard 'main/1'"):
        discover_shards(tmp_path, DomainRegistry())


def test_fingerprint_ignores_timestamps_but_not_contents(tmp_path):
    write_index_only(tmp_path / "1", [10, 20])
    first = discover_shards(tmp_path, DomainRegistry())[0].fingerprint
    index = json.loads((tmp_path / "1" / "index.json").read_text())
    index["updated_at"] = "123"
    (tmp_path / "1" / "index.json").write_text(json.dumps(index))
    assert discover_shards(tmp_path, DomainRegistry())[0].fingerprint == first
    write_index_only(tmp_path / "1", [10, 21])
    assert discover_shards(tmp_path, DomainRegistry())[0].fingerprint != first


def test_truncated_chunks_and_wrong_dims_are_found_at_discovery(tmp_path):
    write_index_only(tmp_path / "1", [10, 20])
    with open(tmp_path / "1" / "chunk-0-1.bin", "r+b") as handle:
        handle.truncate(50)
    with pytest.raises(DataError, match=r"chunk chunk-0-1.bin holds 50 bytes but index.json records 104 .*damaged"):
        discover_shards(tmp_path, DomainRegistry())
    write_index_only(tmp_path / "1", [10, 20])
    index = json.loads((tmp_path / "1" / "index.json").read_text())
    index["chunks"][1]["dim"] = 21
    (tmp_path / "1" / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"no whole number of tokens for the dim 21"):
        discover_shards(tmp_path, DomainRegistry())


def test_broken_and_looping_links_that_look_like_shards_are_reported(tmp_path):
    write_index_only(tmp_path / "1", [10])
    (tmp_path / "c1").symlink_to(tmp_path / "nowhere")
    (tmp_path / "m1").symlink_to(tmp_path / "m1")
    with pytest.raises(DataError) as info:
        discover_shards(tmp_path, DomainRegistry())
    assert "c1 looks like a shard but is a broken symbolic link" in str(info.value)
    assert "m1 looks like a shard but is a broken symbolic link (or a link loop)" in str(info.value)


def test_data_roots_follow_the_papers_layout(tmp_path):
    assert resolve_data_roots(tmp_path, tmp_path / "v") == (tmp_path, tmp_path / "v")
    assert resolve_data_roots(tmp_path, None) == (tmp_path, None)
    (tmp_path / "train").mkdir()
    assert resolve_data_roots(tmp_path, None) == (tmp_path / "train", None)
    (tmp_path / "val").mkdir()
    assert resolve_data_roots(tmp_path, None) == (tmp_path / "train", tmp_path / "val")


def test_sort_key_orders_numbers_numerically():
    assert sorted(["c10", "main/10", "c2", "main/9"], key=shard_sort_key) == ["main/9", "main/10", "c2", "c10"]


def test_broken_validation_shards_fail_when_the_mixture_is_resolved(tmp_path):
    from midtrain.data.mixture import MixtureArgs, resolve_mixture

    write_index_only(tmp_path / "train" / "1", [100])
    write_index_only(tmp_path / "val" / "1", [10])
    (tmp_path / "val" / "c1").mkdir()
    with pytest.raises(DataError, match=r"looks like shard 'c1' but has no index.json"):
        resolve_mixture(MixtureArgs(data_path=tmp_path))
    (tmp_path / "val" / "c1").rmdir()
    assert [s.id for s in resolve_mixture(MixtureArgs(data_path=tmp_path)).val_shards] == ["main/1"]
