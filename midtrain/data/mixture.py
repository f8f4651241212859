"""The data module's arguments (free of torch, so that planning and validation start fast) and their resolution:
discovered shards, a normalised weight per shard, and the mixture over the run's steps (a ``MixTimeline``).

``midtrain.data.ShardedMixedDataset`` takes exactly these fields; ``midtrain mix`` takes them as ``--data.*``.
"""


from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from midtrain.data.discovery import Shard, discover_shards, held_out_shards, resolve_data_roots
from midtrain.data.domains import DomainRegistry
from midtrain.data.mix_controller import ControllerSettings, MixController, check_run, mixture_text, parse_settings
from midtrain.data.mix_schedule import ConstantMixture, MixSchedule, MixTimeline, Phase, parse_phases
from midtrain.data.plan import MixturePlan, make_plan
from midtrain.data.spec import MIXTURE_FORMS, Mixture, MixtureSpec, build_spec, resolve_weights
from midtrain.errors import ConfigError, Problems
from midtrain.field_docs import document_fields

SCHEDULE_FLAG, CONTROLLER_FLAG = "--data.mix_schedule", "--data.mix_controller"


@document_fields
@dataclass(kw_only=True)
class MixtureArgs(Mixture):
    """Where the shards are and how to mix them. Give the mixture in one of ``mix_weights_str``,
    ``mix_weights``, ``literal_weights_str`` or ``mix_config_path`` (optionally with ``proportional_sampling``),
    or as phases in ``mix_schedule``; with none of them, all training data comes from ``main``."""

    data_path: Path | None = None
    """Data root (required): numbered shard folders (1, 2, ...) are the main corpus, typed folders (c1, m1, ...) other
    domains. Without ``val_data_path``, ``data_path/train`` and ``data_path/val`` are used when ``train`` exists."""
    val_data_path: Path | None = None
    """Root of held-out shards in the same layout (one validation set per domain)."""
    mix_schedule: list[Phase] | None = None
    """Instead of one mixture: phases ``{start_step, <one mixture form>, ramp_steps}`` that change the mixture at
    optimizer steps inside the run, optionally ramping linearly from the mixture before. Needs ``midtrain pretrain``
    (plain litgpt does not tell the data the step)."""
    mix_controller: ControllerSettings | None = None
    """An online mixture: the mixture given above is its prior; its later phases are decided during the run from the
    model's per-domain losses (see its keys)."""
    domain_prefixes: dict[str, str] = field(default_factory=dict)
    """Extra folder prefixes, e.g. ``{s: science}`` so that ``s1``, ``s2`` are science shards."""
    max_passes: float | None = None
    """Most passes (epochs) the plan may make over any shard; default 4 (see ``midtrain.data.plan``)."""
    sampling: Literal["exact", "random"] = "exact"
    """``exact``: every prefix of the stream holds each shard's share to within one sample. ``random``: an
    independent weighted draw per sample, like litdata's CombinedStreamingDataset (for parity with the paper)."""
    seed: int = 42
    """Seed for the per-shard shuffles (and the draws of ``sampling: random``); a run's lineage keeps one."""
    order_seed: int | None = None
    """A data-order seed for this run (e.g. an anneal's): from where the run starts, the samples of each shard not
    read yet are read in another order, exactly (none read twice, none skipped; the shares unchanged). Unset: the
    order the lineage was reading. Recorded with each stretch; a resume keeps it."""
    num_workers: int = 4
    """DataLoader worker processes per rank; the sample sequence does not depend on it."""
    allow_tokenizer_mismatch: bool = False
    """Train on shards whose manifest names another tokenizer than ``tokenizer_dir`` (refused by default)."""
    val_samples_per_domain: int | None = None
    """Cap on validation samples per domain (the first ones on disk, so the set is fixed); default all."""
    allow_data_change: bool = False
    """Resume (or branch) although shards the checkpoint read changed since (re-prepared, rewritten, removed or, for a
    resume, added): refused by default, since the saved cursors would point at other samples. Recorded in run.json."""


@dataclass(frozen=True)
class ResolvedMixture:
    spec: MixtureSpec
    registry: DomainRegistry
    train_root: Path
    val_root: Path | None
    shards: tuple[Shard, ...]
    weights: dict[str, float]
    """The per-shard weights the run starts with (a schedule's first phase, a controller's prior)."""
    val_shards: tuple[Shard, ...]
    """Held-out shards (any domain found under the validation root), or none."""
    schedule: MixSchedule | None = None
    controller: ControllerSettings | None = None
    prior: dict[str, float] | None = None
    """With a controller: the prior's share per domain (normalised)."""

    @property
    def changes_key(self) -> str | None:
        """The key that changes the mixture at optimizer steps inside the run, if any (for messages)."""
        return SCHEDULE_FLAG if self.schedule is not None else CONTROLLER_FLAG if self.controller is not None else None

    def describe(self) -> str:
        if self.schedule is not None:
            return f"{len(self.schedule.phases)} phases ({SCHEDULE_FLAG})"
        return f"{self.spec.describe()} ({self.spec.flag})" + (f", moved by {CONTROLLER_FLAG}" if self.controller
                                                               else "")

    def resolve_text(self, text: str) -> dict[str, float]:
        """Per-shard weights of a ``mix_weights_str`` text split like the configured mixture (a controller's
        decisions and their replayed phases go through here alike)."""
        spec = build_spec(mix_weights_str=text, domain_split=self.spec.domain_split)
        return resolve_weights(spec, self.shards, self.registry)

    def timeline(self, start_step: int, resuming: bool, resolve: Callable[[str], dict[str, float]]) -> MixTimeline:
        """The mixture over the run's steps, from ``start_step`` (``resuming``: a resume of the same run, whose
        online mixture continues its saved decisions)."""
        if self.schedule is not None:
            return self.schedule
        if self.controller is not None:
            return MixController(self.controller, dict(self.prior), start_step, resolve, resuming=resuming)
        return ConstantMixture(self.weights)

    def check_run(self, eval_interval: int, validated: list[str], total_steps: int, start_step: int) -> list[str]:
        """Refusals and notices of this mixture in a run with these eval settings and held-out sets."""
        if self.controller is None:
            return []
        return check_run(self.controller, list(self.controller.domains or self.prior), eval_interval, validated,
                         total_steps, start_step)

    def used_shards(self) -> list[Shard]:
        used = self.schedule.used_shards() if self.schedule is not None else {
            i for i, w in self.weights.items() if w > 0}
        return [s for s in self.shards if s.id in used]

    def plan(self, seq_length: int, max_tokens: int | None, max_passes: float | None,
             start_samples: dict[str, int] | None = None) -> MixturePlan:
        return make_plan(self.shards, self.weights, seq_length, max_tokens, max_passes, start_samples)


def resolve_mixture(args: MixtureArgs) -> ResolvedMixture:
    """Validate the mixture args, discover the training shards and resolve per-shard weights."""
    if args.data_path is None or str(args.data_path) == "":
        raise ConfigError("--data.data_path is not set. Point it at a folder of shards made with 'midtrain prepare'.")
    if not isinstance(args.seed, int) or args.seed < 0:
        raise ConfigError(f"--data.seed={args.seed!r} must be a non-negative integer.")
    if args.order_seed is not None and (isinstance(args.order_seed, bool) or not isinstance(args.order_seed, int)
                                        or args.order_seed < 0):
        raise ConfigError(f"--data.order_seed={args.order_seed!r} must be a non-negative integer (or unset).")
    if not isinstance(args.num_workers, int) or args.num_workers < 0:
        raise ConfigError(f"--data.num_workers={args.num_workers!r} must be 0 or more.")
    if args.sampling not in ("exact", "random"):
        raise ConfigError(f"--data.sampling={args.sampling!r} is not one of 'exact', 'random'. Use one of them.")
    registry = DomainRegistry.with_extra(args.domain_prefixes)
    phases = None
    if args.mix_schedule is not None:
        single = [f"--data.{key}" for key in MIXTURE_FORMS if getattr(args, key) not in (None, False)]
        if single:
            raise ConfigError(f"{SCHEDULE_FLAG} and {', '.join(single)} are both set: a schedule gives every phase's "
                              "mixture itself. Move the mixture into the phases, or drop mix_schedule.")
        if args.mix_controller is not None:
            raise ConfigError(f"{CONTROLLER_FLAG} and {SCHEDULE_FLAG} are both set: a controller decides the phases "
                              "during the run, a schedule fixes them in advance. Keep one of them (a controlled run's "
                              "decisions replay as a schedule: 'midtrain mix --replay').")
        phases = parse_phases(args.mix_schedule)
    spec = phases[0].spec() if phases else args.spec()
    train_root, val_root = resolve_data_roots(Path(args.data_path), args.val_data_path)
    if args.val_data_path is not None and not Path(args.val_data_path).is_dir():
        raise ConfigError(
            f"--data.val_data_path={str(args.val_data_path)!r} does not exist. Point it at a folder of held-out "
            "shards (made with 'midtrain prepare --val_fraction'), or leave it unset."
        )
    shards = tuple(discover_shards(train_root, registry))
    schedule, controller, prior = None, None, None
    if phases:  # every phase resolved now: a missing shard or domain in any phase fails before training
        problems, resolved = Problems(), []
        for index, phase in enumerate(phases):
            try:
                resolved.append(resolve_weights(phase.spec(), shards, registry))
            except ConfigError as exc:
                problems.add(str(exc).replace("--data.", f"{SCHEDULE_FLAG}[{index}]."))
        problems.raise_if_any(ConfigError)
        schedule = MixSchedule(phases, resolved)
        weights = resolved[0]
    elif args.mix_controller is not None:
        if spec.kind != "domains":
            raise ConfigError(f"{CONTROLLER_FLAG} moves domain shares, but the prior is given as {spec.flag} "
                              f"({spec.describe()}). Give the prior per domain, e.g. --data.mix_weights_str="
                              "'main:0.8,code:0.2'.")
        total = sum(spec.weights.values())
        prior = {d: w / total for d, w in spec.weights.items() if w > 0}
        controller = parse_settings(args.mix_controller, prior)
        # the prior read as a decision's text is, so a replay's first phase reads the same weights
        weights = resolve_weights(build_spec(mix_weights_str=mixture_text(prior), domain_split=spec.domain_split),
                                  shards, registry)
    else:
        weights = resolve_weights(spec, shards, registry)
    # held-out data is checked now too, so a broken validation shard fails before training, not at the first eval
    val_shards = () if val_root is None else tuple(held_out_shards(val_root, registry))
    return ResolvedMixture(spec, registry, train_root, val_root, shards, weights, val_shards, schedule, controller,
                           prior)
