"""Resolving ``midtrain eval``'s inputs before any model is loaded: the runs' own settings (sequence length, data
root, domain prefixes from ``config.yaml``) and the fixed held-out sets per domain (pure file logic, no torch)."""

from __future__ import annotations

from pathlib import Path

from midtrain.config_files import read_text, yaml_mapping
from midtrain.data.discovery import held_out_shards, resolve_data_roots
from midtrain.data.domains import DomainRegistry
from midtrain.data.validation import domain_sets
from midtrain.errors import ConfigError, DataError
from midtrain.eval.targets import EvalTarget


def _run_yaml(path: Path) -> dict:
    """A YAML file of a run (its config, a checkpoint's model config); a damaged one is named with what to do."""
    try:
        return yaml_mapping(read_text(path, "--runs"), f"--runs: {path}")
    except ConfigError as exc:
        raise ConfigError(f"{exc} It belongs to a run being evaluated: repair it or restore it from a copy.") from None


def first_run_config(targets: list[EvalTarget]) -> dict:
    for target in targets:
        path = target.run_dir / "config.yaml"
        if path.is_file():
            return _run_yaml(path)
    return {}


def resolve_seq_length(seq_length: int | None, targets: list[EvalTarget], run_config: dict) -> int:
    block_sizes = {}
    for target in targets:
        config = _run_yaml(target.checkpoint / "model_config.yaml")
        block_sizes[target.checkpoint] = int(config.get("block_size", 0))
    smallest = min(block_sizes.values())
    if seq_length is None:
        seq_length = ((run_config.get("train") or {}).get("max_seq_length")) or smallest
    if seq_length < 1:
        raise ConfigError(f"--seq_length={seq_length} must be at least 1.")
    if seq_length > smallest:
        too_small = next(c for c, b in block_sizes.items() if b == smallest)
        raise ConfigError(
            f"--seq_length={seq_length} exceeds the block size {smallest} of {too_small}. Set --seq_length "
            f"to at most {smallest} (one length for every run keeps the losses comparable)."
        )
    return int(seq_length)


def heldout_sets(
    heldout: bool,
    val_data_path: Path | None,
    data_args: dict,
    domains: list[str] | None,
    registry: DomainRegistry,
    seq_length: int,
    tokens_per_domain: int,
    optional: bool,
) -> tuple[Path | None, dict]:
    """(the held-out root, domain -> its fixed blocks)."""
    if not heldout:
        if domains:
            raise ConfigError("--domains selects held-out domains, but --heldout=false. Remove one of them.")
        return None, {}
    flag = "--val_data_path"
    if val_data_path is not None:
        root = Path(val_data_path)
        if not root.is_dir():
            raise ConfigError(f"--val_data_path={str(val_data_path)!r} does not exist. Point it at held-out shards "
                              "(e.g. <data_path>/val).")
        root = root / "val" if (root / "val").is_dir() and (root / "train").is_dir() else root
    elif data_args.get("data_path"):
        _, root = resolve_data_roots(Path(data_args["data_path"]), data_args.get("val_data_path"))
        flag = "--data.val_data_path (from the run's config.yaml)"
    else:
        root = None
    if root is None or not Path(root).is_dir():
        if optional and not domains:
            print("No held-out shards found for the runs (set --val_data_path to score them); scoring the named sets "
                  "and tasks only.")
            return None, {}
        named = (f"the runs' config.yaml points at {data_args['data_path']}, which holds no held-out shards"
                 if data_args.get("data_path") else "the runs' config.yaml names none")
        raise ConfigError(f"no held-out shards to score: {named}. Set --val_data_path to a folder of held-out shards, "
                          "or --heldout=false with --sets or --tasks.")
    shards = held_out_shards(Path(root), registry, flag=flag)
    found = list(dict.fromkeys(s.domain for s in shards))
    if domains:
        unknown = [d for d in domains if d not in found]
        if unknown:
            raise ConfigError(f"--domains names {', '.join(map(repr, unknown))}, which has no held-out shards under "
                              f"{root} (found: {', '.join(found)}).")
        shards = [s for s in shards if s.domain in domains]
    result = domain_sets(shards, seq_length + 1, max(1, tokens_per_domain // seq_length))
    if not result:
        raise DataError(f"the held-out shards under {root} hold no sequence of {seq_length + 1} tokens. Lower "
                        "--seq_length.")
    return Path(root).resolve(), result
