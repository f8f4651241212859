"""Sweep specs: a base config plus axes, expanded into one config per grid point (pure logic, no torch).

A spec (YAML)::

    base: ../pythia-70m/code-20pct-step40k.yaml   # relative to the spec file
    out_root: ${MIDTRAIN_RUNS}/pythia-70m/timing  # each point's out_dir is out_root/<name>
    trunk: ${MIDTRAIN_RUNS}/pythia-70m/trunk      # for the branch_step axis: branch_from = trunk/step-XXXXXXXX
    specialised_domain: code                      # for the share axis: main:1-s,<domain>:s
    axes:
      branch_step: [20000, 30000, 40000, 50000]
      share: [0.2]
      seed: [1, 2]                                # any dotted key: train.max_lr, model_name, data.seed, ...

Placeholders (``${VAR}``) are kept in the generated configs, so they stay free of personal paths.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.config_files import read_yaml_mapping
from midtrain.errors import ConfigError, Problems

SPEC_KEYS = {"base", "out_root", "trunk", "specialised_domain", "axes", "name_prefix"}
MIX_FORMS = ("mix_weights_str", "mix_weights", "literal_weights_str", "mix_config_path", "proportional_sampling")


@dataclass(frozen=True)
class SweepPoint:
    name: str
    values: dict[str, Any]
    config: dict


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


MAX_NAME_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def point_name(prefix: str, values: dict[str, Any]) -> str:
    """A short, file-system-safe name: the axes' values as written where they fit (``branch_step20000_share0.2``);
    otherwise a readable prefix and a hash of the values (a newline, a slash or a 39-shard weight string would
    otherwise break the array's list file or the file system's name limit)."""
    parts = [f"{key.split('.')[-1]}{_format(value)}" for key, value in values.items()]
    raw = "_".join(([prefix] if prefix else []) + parts)
    safe = _UNSAFE.sub("-", raw).strip("-.")
    if safe == raw and len(safe) <= MAX_NAME_CHARS:
        return safe
    digest = hashlib.sha1(json.dumps([prefix, values], sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{safe[: MAX_NAME_CHARS - 9].rstrip('-._')}-{digest}"


def set_dotted(config: dict, key: str, value: Any) -> None:
    """Set ``a.b.c``; ``data.x`` means ``data.init_args.x`` for a ``{class_path, init_args}`` data section."""
    parts = key.split(".")
    if parts[0] == "data" and len(parts) > 1 and parts[1] not in ("class_path", "init_args") and \
            isinstance(config.get("data"), dict) and "init_args" in config["data"]:
        parts = ["data", "init_args", *parts[1:]]
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"sweep axis {key!r}: {part!r} is not a mapping in the base config.")
    node[parts[-1]] = value


def load_spec(path: Path) -> dict:
    return read_yaml_mapping(path, "--spec")


def expand(spec: dict, spec_dir: Path) -> list[SweepPoint]:
    """Every grid point of the spec's axes (in the order written), with its config."""
    problems = Problems()
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        problems.add(f"unknown sweep spec keys {unknown}; known: {sorted(SPEC_KEYS)}.")
    if "base" not in spec:
        problems.add("the sweep spec has no 'base' (the config every point starts from).")
    axes = spec.get("axes")
    if not isinstance(axes, dict) or not axes or not all(isinstance(v, list) and v for v in axes.values()):
        problems.add("'axes' must map each key to a non-empty list of values, e.g. axes: {branch_step: [20000, "
                     "40000]}.")
    else:
        if not spec.get("out_root") and "out_dir" not in axes:
            problems.add("the sweep spec has no 'out_root', so every point would train in the base config's out_dir "
                         "(the first would train, every other would find it finished). Set out_root: each point's "
                         "out_dir is out_root/<point name>.")
        if spec.get("out_root") and "out_dir" in axes:
            problems.add("the sweep spec sets both 'out_root' and an 'out_dir' axis; each point's out_dir would be "
                         "out_root/<name>, overriding the axis. Keep one of them.")
        if "branch_step" in axes and not spec.get("trunk"):
            problems.add("the branch_step axis needs 'trunk': the trunk run folder whose step-XXXXXXXX checkpoints to "
                         "branch from.")
        if "share" in axes:
            if not spec.get("specialised_domain"):
                problems.add("the share axis needs 'specialised_domain' (e.g. code): each point mixes "
                             "main:1-s,<domain>:s.")
            bad = [s for s in axes["share"] if not isinstance(s, (int, float)) or not 0 <= s <= 1]
            if bad:
                problems.add(f"share values must be between 0 and 1; got {bad}.")
    problems.raise_if_any(ConfigError)
    base_path = Path(spec["base"]) if Path(spec["base"]).is_absolute() else spec_dir / spec["base"]
    try:
        base = read_yaml_mapping(base_path, "the sweep's base config")
    except ConfigError as exc:
        raise ConfigError(f"{exc} (the spec's 'base', relative to the spec file)") from None
    keys = list(axes)
    points = []
    for combination in itertools.product(*(axes[k] for k in keys)):
        values = dict(zip(keys, combination, strict=True))
        config = copy.deepcopy(base)
        for key, value in values.items():
            if key == "branch_step":
                config["branch_from"] = f"{spec['trunk'].rstrip('/')}/step-{int(value):08d}"
            elif key == "share":
                for form in MIX_FORMS:
                    config["data"]["init_args"].pop(form, None)
                domain = spec["specialised_domain"]
                set_dotted(
                    config, "data.mix_weights_str", f"main:{_format(round(1 - value, 6))},{domain}:{_format(value)}"
                )
            else:
                set_dotted(config, key, value)
        name = point_name(spec.get("name_prefix", ""), values)
        if spec.get("out_root"):
            config["out_dir"] = f"{str(spec['out_root']).rstrip('/')}/{name}"
        points.append(SweepPoint(name, values, config))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep points share names {sorted({n for n in names if names.count(n) > 1})}; make axis "
                          "values distinct.")
    out_dirs = [os.path.normpath(str(p.config.get("out_dir"))) for p in points]
    shared = sorted({d for d in out_dirs if out_dirs.count(d) > 1})
    if shared:
        raise ConfigError(f"sweep points share the out_dir {shared[0]!r}: a run folder holds one run. Give each point "
                          "its own (out_root, or distinct out_dir values).")
    return points
