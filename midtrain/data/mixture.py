"""From the data module's args to a resolved mixture: discovered shards and a normalised weight per shard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from midtrain.data.args import MixtureArgs
from midtrain.data.discovery import Shard, discover_shards, held_out_shards, resolve_data_roots
from midtrain.data.domains import DomainRegistry
from midtrain.data.plan import MixturePlan, make_plan
from midtrain.data.spec import MixtureSpec, build_spec, resolve_weights
from midtrain.errors import ConfigError


@dataclass(frozen=True)
class ResolvedMixture:
    spec: MixtureSpec
    registry: DomainRegistry
    train_root: Path
    val_root: Path | None
    shards: tuple[Shard, ...]
    weights: dict[str, float]
    val_shards: tuple[Shard, ...]
    """Held-out shards (any domain found under the validation root), or none."""

    def used_shards(self) -> list[Shard]:
        return [s for s in self.shards if self.weights[s.id] > 0]

    def plan(
        self, seq_length: int, max_tokens: int | None, max_passes: float | None, start_samples: dict[str, int] | None = None
    ) -> MixturePlan:
        return make_plan(self.shards, self.weights, seq_length, max_tokens, max_passes, start_samples)


def resolve_mixture(args: MixtureArgs) -> ResolvedMixture:
    """Validate the mixture args, discover the training shards and resolve per-shard weights."""
    if args.data_path is None or str(args.data_path) == "":
        raise ConfigError("--data.data_path is not set. Point it at a folder of shards made with 'midtrain prepare'.")
    if not isinstance(args.seed, int) or args.seed < 0:
        raise ConfigError(f"--data.seed={args.seed!r} must be a non-negative integer.")
    if not isinstance(args.num_workers, int) or args.num_workers < 0:
        raise ConfigError(f"--data.num_workers={args.num_workers!r} must be 0 or more.")
    if args.sampling not in ("exact", "random"):
        raise ConfigError(f"--data.sampling={args.sampling!r} is not one of 'exact', 'random'. Use one of them.")
    registry = DomainRegistry.with_extra(args.domain_prefixes)
    spec = build_spec(
        mix_weights_str=args.mix_weights_str,
        mix_weights=args.mix_weights,
        literal_weights_str=args.literal_weights_str,
        mix_config_path=args.mix_config_path,
        proportional_sampling=args.proportional_sampling,
        domain_split=args.domain_split,
    )
    train_root, val_root = resolve_data_roots(Path(args.data_path), args.val_data_path)
    if args.val_data_path is not None and not Path(args.val_data_path).is_dir():
        raise ConfigError(
            f"--data.val_data_path={str(args.val_data_path)!r} does not exist. Point it at a folder of held-out "
            "shards (made with 'midtrain prepare --val_fraction'), or leave it unset."
        )
    shards = tuple(discover_shards(train_root, registry))
    weights = resolve_weights(spec, shards, registry)
    # held-out data is checked now too, so a broken validation shard fails before training, not at the first eval
    val_shards = () if val_root is None else tuple(held_out_shards(val_root, registry))
    return ResolvedMixture(spec, registry, train_root, val_root, shards, weights, val_shards)
