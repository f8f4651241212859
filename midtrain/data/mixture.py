"""From the data module's args to a resolved mixture: discovered shards and a normalised weight per shard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from midtrain.data.args import MixtureArgs
from midtrain.data.discovery import Shard, discover_shards, held_out_shards, resolve_data_roots
from midtrain.data.domains import DomainRegistry
from midtrain.data.mix_controller import FLAG as CONTROLLER_FLAG
from midtrain.data.mix_controller import ControllerSettings, mixture_text, parse_settings
from midtrain.data.mix_schedule import MixSchedule, parse_phases
from midtrain.data.plan import MixturePlan, make_plan
from midtrain.data.spec import MixtureSpec, build_spec, resolve_weights
from midtrain.errors import ConfigError, Problems

SINGLE_MIXTURE_KEYS = (
    "mix_weights_str",
    "mix_weights",
    "literal_weights_str",
    "mix_config_path",
    "proportional_sampling",
)


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
    schedule: MixSchedule | None = None
    """``mix_schedule``'s phases with their resolved weights (``weights`` is then the first phase's)."""
    controller: ControllerSettings | None = None
    """``mix_controller``'s settings; ``weights`` is then the prior's, resolved from ``prior_text``."""
    prior: dict[str, float] | None = None
    """With a controller: the prior's share per domain (normalised)."""

    def resolve_text(self, text: str) -> dict[str, float]:
        """Per-shard weights of a ``mix_weights_str`` text split like the configured mixture (a controller's
        decisions and their replayed phases go through here alike)."""
        spec = build_spec(mix_weights_str=text, domain_split=self.spec.domain_split)
        return resolve_weights(spec, self.shards, self.registry)

    def used_shards(self) -> list[Shard]:
        if self.schedule is not None:
            used = self.schedule.used_shards()
            return [s for s in self.shards if s.id in used]
        return [s for s in self.shards if self.weights[s.id] > 0]

    def plan(
        self,
        seq_length: int,
        max_tokens: int | None,
        max_passes: float | None,
        start_samples: dict[str, int] | None = None,
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
    phases = None
    if args.mix_schedule is not None:
        single = [f"--data.{key}" for key in SINGLE_MIXTURE_KEYS if getattr(args, key) not in (None, False)]
        if single:
            raise ConfigError(f"--data.mix_schedule and {', '.join(single)} are both set: a schedule gives every "
                              "phase's mixture itself. Move the mixture into the phases, or drop mix_schedule.")
        phases = parse_phases(args.mix_schedule)
    spec = phases[0].spec if phases else build_spec(
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
    schedule = None
    if phases:  # every phase resolved now: a missing shard or domain in any phase fails before training
        problems, resolved = Problems(), []
        for phase in phases:
            try:
                resolved.append(resolve_weights(phase.spec, shards, registry))
            except ConfigError as exc:
                problems.add(str(exc).replace("--data.", f"--data.mix_schedule[{phase.index}]."))
        problems.raise_if_any(ConfigError)
        schedule = MixSchedule(tuple(phases), tuple(resolved))
        weights = resolved[0]
    elif args.mix_controller is None:  # a controller's prior is resolved from its own text below, once
        weights = resolve_weights(spec, shards, registry)
    controller, prior = None, None
    if args.mix_controller is not None:
        if args.mix_schedule is not None:
            raise ConfigError(f"{CONTROLLER_FLAG} and --data.mix_schedule are both set: a controller decides the "
                              "phases during the run, a schedule fixes them in advance. Keep one of them (a "
                              "controlled run's decisions replay as a schedule: 'midtrain mix --replay').")
        if spec.kind != "domains":
            raise ConfigError(f"{CONTROLLER_FLAG} moves domain shares, but the prior is given as {spec.flag} "
                              f"({spec.describe()}). Give the prior per domain, e.g. --data.mix_weights_str="
                              "'main:0.8,code:0.2'.")
        total = sum(spec.weights.values())
        prior = {d: w / total for d, w in spec.weights.items() if w > 0}
        controller = parse_settings(args.mix_controller, prior)
        weights = resolve_weights(build_spec(mix_weights_str=mixture_text(prior), domain_split=spec.domain_split),
                                  shards, registry)
    # held-out data is checked now too, so a broken validation shard fails before training, not at the first eval
    val_shards = () if val_root is None else tuple(held_out_shards(val_root, registry))
    return ResolvedMixture(spec, registry, train_root, val_root, shards, weights, val_shards, schedule, controller,
                           prior)
