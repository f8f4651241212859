"""The mixture spec: what the user asked for, in any of the supported forms, and its resolution to per-shard
weights against the shards found on disk.

Forms (exactly one of the first four, optionally with ``proportional_sampling``):
  ``mix_weights_str: "main:0.8,code:0.2"``            per domain, split across the domain's shards
  ``mix_weights: {main: 0.8, code: 0.2}``             the same as a YAML mapping
  ``literal_weights_str: "main/1:0.8,q1:0.1,q2:0.1"`` per shard id
  ``mix_config_path: mix.json``                       ``{"weights": {...}}`` (the paper's JSON format)
  ``proportional_sampling: true``                     by shard size; domain weights, if given, are multipliers
"""


import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from midtrain.data.discovery import Shard
from midtrain.data.domains import MAIN_DOMAIN, DomainRegistry
from midtrain.errors import ConfigError, Problems, did_you_mean

SpecKind = Literal["domains", "shards", "proportional"]
DomainSplit = Literal["equal", "size"]

FLAG_DOMAINS_STR = "--data.mix_weights_str"
FLAG_DOMAINS_MAP = "--data.mix_weights"
FLAG_SHARDS_STR = "--data.literal_weights_str"
FLAG_JSON = "--data.mix_config_path"
FLAG_PROPORTIONAL = "--data.proportional_sampling"
_JSON_KEYS = {"weights", "literal_weights", "proportional_sampling"}


@dataclass
class Mixture:
    """One mixture, in one of the forms (or none: all from ``main``). The data module's keys, a ``mix_schedule``
    phase's and a replayed phase's are these fields."""

    mix_weights_str: str | None = None
    """Per-domain weights, e.g. ``"main:0.8,code:0.2"``; a domain's weight is split across its shards."""
    mix_weights: dict[str, float] | None = None
    """Per-domain weights as a mapping, e.g. ``{main: 0.8, code: 0.2}``."""
    literal_weights_str: str | None = None
    """Per-shard weights, e.g. ``"main/1:0.8,q1:0.1,q2:0.1"``."""
    mix_config_path: Path | None = None
    """JSON file ``{"weights": {"main": 0.88, "math": 0.12}}`` (the paper's format)."""
    proportional_sampling: bool = False
    """Weight each shard by its size in tokens; per-domain weights, if given, multiply these."""
    domain_split: Literal["equal", "size"] = "equal"
    """How a domain's weight is split across its shards: equally, or by their sizes in tokens."""

    def given(self) -> bool:
        """Whether a mixture is given (``domain_split`` alone gives none)."""
        return any(getattr(self, k) not in (None, False) for k in MIXTURE_FORMS)

    def spec(self) -> "MixtureSpec":
        return build_spec(**{k: getattr(self, k) for k in MIXTURE_KEYS})


MIXTURE_KEYS = tuple(f.name for f in fields(Mixture))
"""The mixture's keys, wherever they are written (data args, a phase, a replay, a resume's comparison)."""
MIXTURE_FORMS = MIXTURE_KEYS[:5]


@dataclass(frozen=True)
class MixtureSpec:
    """A validated request. ``weights`` maps domains (kind ``domains``), shard ids (``shards``) or domain
    multipliers (``proportional``) to non-negative finite numbers; ``flag`` is where they came from."""

    kind: SpecKind
    weights: dict[str, float]
    flag: str
    domain_split: DomainSplit = "equal"

    def describe(self) -> str:
        body = ",".join(f"{k}:{v:g}" for k, v in self.weights.items())
        if self.kind == "proportional":
            return "proportional to size" + (f", multipliers {body}" if body else "")
        return f"{self.kind} {body}"


def check_weight(key: str, value: object, flag: str, problems: Problems) -> float | None:
    try:
        weight = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        problems.add(f"{flag} gives {key!r} the weight {value!r}, which is not a number. Use e.g. '{key}:0.2'.")
        return None
    if isinstance(value, bool) or math.isnan(weight) or math.isinf(weight):
        problems.add(f"{flag} gives {key!r} the weight {value!r}. Weights must be finite numbers, e.g. '{key}:0.2'.")
        return None
    if weight < 0:
        problems.add(f"{flag} gives {key!r} the negative weight {weight:g}. Use 0 to leave it out, or a positive "
                     "share.")
        return None
    return weight


def parse_weights_string(text: str, flag: str) -> dict[str, float]:
    """``"a:0.8,b:0.2"`` -> ``{"a": 0.8, "b": 0.2}``; every malformed entry is reported."""
    problems = Problems()
    weights: dict[str, float] = {}
    entries = [e.strip() for e in str(text).split(",")]
    if not any(entries):
        raise ConfigError(f"{flag} is empty. Give comma-separated name:weight pairs, e.g. 'main:0.8,code:0.2'.")
    for entry in entries:
        if not entry:
            problems.add(f"{flag}={text!r} has an empty entry (two commas or a trailing comma). Remove it.")
            continue
        if entry.count(":") != 1:
            problems.add(f"{flag}={text!r} has the entry {entry!r}, which is not name:weight. Write it like "
                         "'code:0.2'.")
            continue
        name, value = (part.strip() for part in entry.split(":"))
        if not name:
            problems.add(f"{flag}={text!r} has the entry {entry!r} without a name. Write it like 'code:0.2'.")
            continue
        if name in weights:
            problems.add(f"{flag}={text!r} names {name!r} twice. Give each name once.")
            continue
        weight = check_weight(name, value, flag, problems)
        if weight is not None:
            weights[name] = weight
    problems.raise_if_any(ConfigError)
    return weights


def check_weights_mapping(mapping: object, flag: str) -> dict[str, float]:
    if not isinstance(mapping, Mapping) or not mapping:
        raise ConfigError(f"{flag} must be a non-empty mapping of name to weight, e.g. {{main: 0.8, code: 0.2}}; got "
                          f"{mapping!r}.")
    problems = Problems()
    weights: dict[str, float] = {}
    for name, value in mapping.items():
        weight = check_weight(str(name), value, flag, problems)
        if weight is not None:
            weights[str(name)] = weight
    problems.raise_if_any(ConfigError)
    return weights


def load_mix_json(path: Path) -> dict:
    """Read a mix JSON file (``{"weights": {...}}``, optionally ``literal_weights``/``proportional_sampling``)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{FLAG_JSON}={str(path)!r} is a folder. Point it at the mixture's JSON file inside it, like "
                          '{"weights": {"main": 0.88, "math": 0.12}}.')
    if not path.is_file():
        raise ConfigError(
            f"{FLAG_JSON}={str(path)!r} does not exist. Point it at a JSON file like "
            '{"weights": {"main": 0.88, "math": 0.12}}, or use --data.mix_weights_str instead.'
        )
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{FLAG_JSON}={str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). "
            'Fix the file; the expected form is {"weights": {"main": 0.88, "math": 0.12}}.'
        ) from None
    if not isinstance(content, dict) or not (content.keys() & {"weights", "literal_weights"}):
        raise ConfigError(
            f"{FLAG_JSON}={str(path)!r} has no 'weights' or 'literal_weights' mapping. "
            'Use the form {"weights": {"main": 0.88, "math": 0.12}}.'
        )
    unknown = sorted(set(content) - _JSON_KEYS)
    if unknown:
        raise ConfigError(
            f"{FLAG_JSON}={str(path)!r} has unknown key(s) {unknown}; allowed: {sorted(_JSON_KEYS)}. "
            "Remove them or fix their spelling."
        )
    return content


def build_spec(
    mix_weights_str: str | None = None,
    mix_weights: Mapping[str, float] | None = None,
    literal_weights_str: str | None = None,
    mix_config_path: Path | str | None = None,
    proportional_sampling: bool = False,
    domain_split: DomainSplit = "equal",
) -> MixtureSpec:
    """Validate the mixture arguments of the data module into one MixtureSpec."""
    if domain_split not in ("equal", "size"):
        raise ConfigError(f"--data.domain_split={domain_split!r} is not one of 'equal', 'size'. Use one of them.")
    given = [
        flag
        for flag, value in (
            (FLAG_DOMAINS_STR, mix_weights_str),
            (FLAG_DOMAINS_MAP, mix_weights),
            (FLAG_SHARDS_STR, literal_weights_str),
            (FLAG_JSON, mix_config_path),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigError(
            f"{' and '.join(given)} are both set, but they are alternative ways to give one mixture. Keep only one."
        )
    kind: SpecKind = "domains"
    flag = given[0] if given else FLAG_DOMAINS_STR
    weights: dict[str, float]
    if mix_weights_str is not None:
        weights = parse_weights_string(mix_weights_str, FLAG_DOMAINS_STR)
    elif mix_weights is not None:
        weights = check_weights_mapping(mix_weights, FLAG_DOMAINS_MAP)
    elif literal_weights_str is not None:
        weights, kind = parse_weights_string(literal_weights_str, FLAG_SHARDS_STR), "shards"
    elif mix_config_path is not None:
        content = load_mix_json(Path(mix_config_path))
        where = f"{FLAG_JSON} ({mix_config_path})"
        if content.get("literal_weights") and content.get("weights"):
            raise ConfigError(f"{where} has both 'weights' and 'literal_weights'. Keep only one of them.")
        if content.get("literal_weights"):
            weights, kind = check_weights_mapping(content["literal_weights"], where), "shards"
        else:
            weights = check_weights_mapping(content["weights"], where)
        proportional_sampling = proportional_sampling or bool(content.get("proportional_sampling", False))
        flag = where
    else:
        weights = {} if proportional_sampling else {MAIN_DOMAIN: 1.0}
    if proportional_sampling:
        if kind == "shards":
            raise ConfigError(
                f"{FLAG_PROPORTIONAL}=true cannot be combined with per-shard weights ({flag}): they already fix "
                "every shard's share. Drop one of them."
            )
        return MixtureSpec("proportional", weights, flag if given else FLAG_PROPORTIONAL, domain_split)
    if not any(w > 0 for w in weights.values()):
        raise ConfigError(f"{flag} gives every entry weight 0, so nothing would be trained on. Give at least one "
                          "positive weight.")
    return MixtureSpec(kind, weights, flag, domain_split)


def resolve_weights(spec: MixtureSpec, shards: Sequence[Shard], registry: DomainRegistry) -> dict[str, float]:
    """Normalised weight per shard id (every discovered shard, 0 for unused ones), in discovery order."""
    problems = Problems()
    by_domain: dict[str, list[Shard]] = {}
    for shard in shards:
        by_domain.setdefault(shard.domain, []).append(shard)
    raw = {shard.id: 0.0 for shard in shards}
    found = ", ".join(f"{d} ({len(s)})" for d, s in by_domain.items())
    # divided by the largest weight, so huge weights (1e308) cannot overflow the sum; the shares are the same
    scale = max(spec.weights.values(), default=1.0) if spec.kind != "proportional" else 1.0

    if spec.kind == "shards":
        domains = set(registry.prefixes.values()) | {MAIN_DOMAIN}
        missing = [shard_id for shard_id in spec.weights if shard_id not in raw]
        named_domains = bool(missing) and all(shard_id in domains for shard_id in spec.weights)
        if named_domains:
            problems.add(f"{spec.flag} names domains ({', '.join(spec.weights)}), not shards: it weighs shards by id "
                         f"(main/1, c1, …). For domain weights use --data.mix_weights_str="
                         f"{','.join(f'{d}:{w:g}' for d, w in spec.weights.items())!r}.")
        for shard_id, weight in spec.weights.items():
            if shard_id not in raw and not named_domains:
                problems.add(
                    f"{spec.flag} names shard {shard_id!r}, which is not in the data root (found: "
                    f"{', '.join(raw)}).{did_you_mean(shard_id, raw)} Main shards are named 'main/<n>', typed ones "
                    "'<prefix><n>'."
                )
            elif shard_id in raw:
                raw[shard_id] = weight / scale
    else:
        for domain, weight in spec.weights.items():
            message = registry.check_domain(domain, spec.flag)
            if message:
                problems.add(message)
            elif weight > 0 and domain not in by_domain:
                problems.add(
                    f"{spec.flag} gives domain {domain!r} weight {weight:g}, but the data root has no {domain} shards "
                    f"(found: {found}). Add its shards (folders named '{_folder_hint(domain, registry)}') or set its "
                    "weight to 0."
                )
        problems.raise_if_any(ConfigError)
        for domain, members in by_domain.items():
            if spec.kind == "proportional":
                multiplier = spec.weights.get(domain, 1.0)
                for shard in members:
                    raw[shard.id] = shard.tokens * multiplier
                continue
            weight = spec.weights.get(domain, 0.0) / scale
            total_tokens = sum(s.tokens for s in members)
            for shard in members:
                share = shard.tokens / total_tokens if spec.domain_split == "size" else 1 / len(members)
                raw[shard.id] = weight * share
    problems.raise_if_any(ConfigError)
    total = sum(raw.values())
    if not math.isfinite(total):
        raise ConfigError(
            f"{spec.flag}: the weights ({spec.describe()}) times the shard sizes overflow. Only their ratios "
            "matter: use smaller numbers, e.g. 2 instead of 1e308."
        )
    if total <= 0:
        raise ConfigError(
            f"{spec.flag} leaves every shard with weight 0 ({spec.describe()}). Give a positive weight to a domain "
            f"that has shards (found: {found})."
        )
    return {shard_id: weight / total for shard_id, weight in raw.items()}


def _folder_hint(domain: str, registry: DomainRegistry) -> str:
    if domain == MAIN_DOMAIN:
        return "1, 2, ..."
    prefix = next(p for p, d in registry.prefixes.items() if d == domain)
    return f"{prefix}1, {prefix}2, ..."
