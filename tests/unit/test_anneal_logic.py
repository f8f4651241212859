import pytest

from midtrain.anneal import anneal_mixture, candidate_weights, literal_text, pairs, run_name
from midtrain.errors import ConfigError

SHARDS = {"main/1": "main", "main/2": "main", "c1": "code", "c2": "code", "m1": "math"}


def by_domain(text: str) -> dict[str, float]:
    """A domain mixture split equally over each domain's shards (what the data module does with domain_split: equal)."""
    weights = {}
    for part in text.split(","):
        domain, _, value = part.partition(":")
        members = [s for s, d in SHARDS.items() if d == domain]
        if not members:
            raise ConfigError(f"no domain {domain}")
        for shard in members:
            weights[shard] = float(value) / len(members)
    total = sum(weights.values())
    return {s: w / total for s, w in weights.items()}


def test_a_candidate_is_a_domain_a_shard_or_a_mixture_string():
    assert candidate_weights("code", SHARDS, by_domain) == {"c1": 0.5, "c2": 0.5}
    assert candidate_weights("m1", SHARDS, by_domain) == {"m1": 1.0}
    assert candidate_weights("c1:1,m1:3", SHARDS, by_domain) == {"c1": 0.25, "m1": 0.75}
    assert candidate_weights("code:0.5,math:0.5", SHARDS, by_domain) == {"c1": 0.25, "c2": 0.25, "m1": 0.5}
    for bad, message in (("science", "'science' is neither a domain"), ("code:x", "'x' is not a number"),
                         ("science:1", "'science' is neither a domain")):
        with pytest.raises(ConfigError, match=message):
            candidate_weights(bad, SHARDS, by_domain)


def test_the_anneal_mixture_scales_the_parent_and_adds_the_candidate_at_its_share():
    parent = {"main/1": 0.4, "main/2": 0.4, "c1": 0.2}
    mixed = anneal_mixture(parent, {"c1": 0.5, "c2": 0.5}, 0.3)
    assert mixed == pytest.approx({"main/1": 0.28, "main/2": 0.28, "c1": 0.14 + 0.15, "c2": 0.15})
    assert sum(mixed.values()) == pytest.approx(1.0)
    text = literal_text(mixed)
    assert {k: float(v) for k, v in (p.split(":") for p in text.split(","))} == mixed  # exact round trip


def test_runs_are_named_by_candidate_and_seed_and_paired_by_record_not_name():
    assert run_name("code", 1) == "code-seed1" and run_name(None, 2) == "control-seed2" and run_name("c1", None) == "c1"
    mixture = run_name("code:0.5,math:0.5", 1)
    assert mixture.endswith("-seed1") and "/" not in mixture and ":" not in mixture
    records = [("a", {"group": "g", "seed": 1, "candidate": "code"}), ("b", {"group": "g", "seed": 2,
                                                                            "candidate": "code"}),
               ("z", {"group": "g", "seed": 1, "candidate": None}), ("y", {"group": "h", "seed": 2, "candidate": None})]
    matched, notes = pairs(records)
    assert matched == {"a": "z", "b": None} and notes == []
