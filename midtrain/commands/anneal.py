"""``midtrain anneal``: the matched anneals that judge data sources — per data-order seed, one anneal per candidate
and one control, all from one checkpoint over one budget with one decay to LR 0 — as configs plus an sbatch array
(like ``midtrain sweep``), or run here one after another."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

from midtrain.errors import ConfigError

# keys of the base config's train group that would place another horizon or another schedule than the anneal's
_DROPPED_TRAIN_KEYS = ("max_tokens", "max_steps", "max_iters", "max_additional_steps", "steps_from_branch",
                       "stable_steps", "decay_fraction", "lr_warmup_iters", "lr_horizon_iters", "lr_iter_offset")
_MIXTURE_KEYS = ("mix_weights_str", "mix_weights", "literal_weights_str", "mix_config_path", "proportional_sampling",
                 "mix_schedule", "mix_controller")


def anneal(
    base_config: Path,
    from_checkpoint: Path,
    tokens: int,
    candidates: list[str],
    share: float = 0.3,
    seeds: list[int] | None = None,
    out_root: Path = Path("anneals"),
    decay_shape: Literal["linear", "sqrt", "cosine"] = "linear",
    run: Literal["slurm", "local"] = "slurm",
    validate: bool = True,
    submit: bool = False,
    sbatch_args: str = "",
) -> int:
    """Write (and run, or submit) the anneals that judge ``candidates`` against a control, from one checkpoint.

    For every seed: one run per candidate, reading the parent's mixture (the base config's, at the checkpoint's step)
    scaled by ``1 - share`` plus the candidate at ``share``, and one control reading the parent's mixture; all start
    from ``--from`` (weights, optimizer state, data cursors), read ``--tokens`` tokens from there
    (``train.tokens_from_branch``) and decay the LR from its value at the checkpoint to 0 (``lr_scheduler: decay``,
    ``min_lr: 0``) with ``--decay_shape``; the seed is the data-order seed (``data.order_seed``) of the pair. Each
    config records the run's place in the set (``anneal``: group, candidate, share, seed, tokens), kept in its
    ``run.json``; ``midtrain analyze`` pairs candidates with controls by it. Configs go to ``out_root/configs/``,
    runs to ``out_root/<candidate>-seed<N>/``. Every config is dry-run before anything runs or is submitted.

    Args:
        base_config: The base config (``--config`` works too), a ``midtrain pretrain`` YAML: model, batch,
            optimizer, data root and the parent's mixture (usually the trunk's config).
        from_checkpoint: The checkpoint every anneal starts from (``--from`` works too), e.g.
            ``runs/trunk/step-00030000``.
        tokens: The anneal's budget in tokens from the checkpoint (at least one optimizer step).
        candidates: What to judge: domains (``code``), shard ids (``c1``) or mixture strings (``code:0.5,math:0.5``).
        share: The candidate's share of the anneal's tokens, in (0, 1) (Llama 3: 0.3; OLMo 3: 0.5).
        seeds: Data-order seeds, one pair (candidates + control) per seed (default: one pair in the lineage's order).
        out_root: Where the configs and the runs go.
        decay_shape: The shape of the decay to 0 (``linear``; ``sqrt`` is 1-sqrt; ``cosine``).
        run: ``slurm``: print (or ``--submit``) the sbatch array of the configs; ``local``: run them here, one after
            another (a rerun continues where it stopped: finished runs are skipped, a stopped one resumes).
        validate: Dry-run every config first (nothing runs or is submitted if one fails).
        submit: With ``--run slurm``: call ``sbatch`` instead of printing the command.
        sbatch_args: Extra ``sbatch`` options, e.g. ``"--partition=gpu --gpus-per-node=8"``.
    """
    from midtrain.anneal import check_candidates, check_seeds, check_share

    share = check_share(share)
    candidates = check_candidates(candidates)
    seed_list: list[int | None] = [None] if seeds is None else check_seeds(seeds)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ConfigError(f"--tokens={tokens!r} must be a positive number of tokens (the anneal's budget from --from).")
    configs = anneal_configs(Path(base_config), Path(from_checkpoint), tokens, candidates, share, seed_list,
                             Path(out_root), decay_shape)
    from midtrain.commands.sweep import listed_configs, submit_array, validate_configs, write_configs

    listing = write_configs(configs, Path(out_root) / "configs", "--out_root")
    if validate:
        validate_configs(listing)
    if run == "slurm":
        return submit_array(listing, submit, sbatch_args)
    from midtrain.commands.dispatch import run_command

    for path in listed_configs(listing):
        print(f"\n=== {path.stem} ===", flush=True)
        status = run_command(["pretrain", "--config", str(path), "--resume", "auto"])
        if status != 0:
            print(f"{path.stem} ended with status {status}; the anneals after it did not run. Rerun this command to "
                  "continue (finished runs are skipped).")
            return status
    runs = ", ".join(str(Path(out_root) / name) for name, _, _ in configs)
    scores = Path(out_root) / "eval"
    print(f"\nAll {len(configs)} anneals are done in {out_root}. Score them with: midtrain eval --runs '[{runs}]' "
          f"--out_dir {scores}; then: midtrain analyze --tables {scores / 'eval.csv'}")
    return 0


def anneal_configs(base_path: Path, from_checkpoint: Path, tokens: int, candidates: list[str], share: float,
                   seeds: list[int | None], out_root: Path, shape: str) -> list[tuple[str, str, dict]]:
    """``(name, header, config)`` of every anneal, checked against the base config, the checkpoint and the shards
    before anything is written."""
    from midtrain.anneal import anneal_mixture, candidate_weights, group_id, literal_text, run_name
    from midtrain.commands.parsing import call_with_args
    from midtrain.commands.pretrain import pretrain, run_settings
    from midtrain.config_files import read_yaml_mapping
    from midtrain.data.mixture import resolve_mixture
    from midtrain.train import checkpoint_files as files
    from midtrain.train.model_rule import resolve_model_config

    checkpoint = files.checkpoint_folder(from_checkpoint, "--from")
    base = read_yaml_mapping(base_path, "--base_config")
    settings = run_settings(**call_with_args(pretrain, ["--config", str(base_path)], drop=("dry_run",),
                                             prog="midtrain anneal"))
    if settings.data is None:
        raise ConfigError(f"--base_config={str(base_path)!r} has no data section, so the parent's mixture and the "
                          "candidates' shards cannot be found. Give the trunk's config (or one with its data).")
    model_config, _ = resolve_model_config(settings.model_name, settings.model_config)
    seq_length = settings.train.max_seq_length or model_config.block_size
    tokens_per_step = settings.train.global_batch_size * seq_length
    if tokens < tokens_per_step:
        raise ConfigError(f"--tokens={tokens:,} is less than one optimizer step of the base config "
                          f"({tokens_per_step:,} tokens = global_batch_size {settings.train.global_batch_size} × "
                          f"{seq_length}). Raise it.")
    mixture = resolve_mixture(settings.data)
    if mixture.controller is not None:
        raise ConfigError(f"--base_config={str(base_path)!r} decides its mixture online (data.mix_controller), so the "
                          "parent's mixture at the checkpoint is not in the config. Give a base config with the "
                          "mixture to continue (e.g. 'midtrain mix --replay' of the parent run).")
    parent = dict(mixture.weights)
    if mixture.schedule is not None:
        from midtrain.data.mix_schedule import segment_index_at

        segments = mixture.schedule.segments()
        parent = dict(segments[segment_index_at(segments, checkpoint.step)].weights)
    shard_domains = {s.id: s.domain for s in mixture.shards}
    resolved = {c: candidate_weights(c, shard_domains, mixture.resolve_text) for c in candidates}
    group = group_id(str(checkpoint.path.resolve()), tokens, share, shape, base)
    print(f"Anneal set {group}: from {checkpoint.path} (step {checkpoint.step:,}), {tokens:,} tokens "
          f"(~{tokens // tokens_per_step:,} steps), {shape} decay to LR 0, candidates at {share:.0%}; parent mixture "
          + ", ".join(f"{d} {w:.1%}" for d, w in _by_domain(parent, shard_domains).items()))
    out = []
    for seed in seeds:
        for candidate in [None, *candidates]:
            weights = parent if candidate is None else anneal_mixture(parent, resolved[candidate], share)
            name = run_name(candidate, seed)
            config = _anneal_config(base, checkpoint.path, out_root / name, tokens, shape, literal_text(weights), seed,
                                    {"group": group, "candidate": candidate, "share": None if candidate is None
                                     else share, "seed": seed, "tokens": tokens,
                                     "from_checkpoint": str(checkpoint.path.resolve())})
            shares = ", ".join(f"{d} {w:.1%}" for d, w in _by_domain(weights, shard_domains).items())
            out.append((name, f"# Generated by `midtrain anneal` (set {group}): {shares}", config))
    return out


def _anneal_config(base: dict, checkpoint: Path, out_dir: Path, tokens: int, shape: str, weights: str,
                   seed: int | None, record: dict) -> dict:
    config = copy.deepcopy(base)
    for key in ("resume", "initial_checkpoint_dir"):
        config.pop(key, None)
    config["branch_from"] = str(checkpoint.resolve())
    config["out_dir"] = str(out_dir.resolve())
    train = {k: v for k, v in (config.get("train") or {}).items() if k not in _DROPPED_TRAIN_KEYS}
    config["train"] = {**train, "lr_scheduler": "decay", "min_lr": 0.0, "lr_decay_shape": shape,
                       "tokens_from_branch": tokens}
    data = config["data"]
    args = data["init_args"] if isinstance(data, dict) and isinstance(data.get("init_args"), dict) else data
    for key in _MIXTURE_KEYS:
        args.pop(key, None)
    args["literal_weights_str"] = weights
    if seed is None:
        args.pop("order_seed", None)
    else:
        args["order_seed"] = seed
    config["anneal"] = record
    return config


def _by_domain(weights: dict[str, float], shard_domains: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for shard, weight in weights.items():
        out[shard_domains[shard]] = out.get(shard_domains[shard], 0.0) + weight
    return out
