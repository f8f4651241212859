"""Online mixtures (``data.mix_controller``): a run whose later mixtures are decided during the run from the model's
own per-domain losses. Pure logic, no torch: the settings and their checks, the update rule, the decisions and the
state a checkpoint carries; the stream (``midtrain.data.stream_state``) reads each decision as a new stretch.

Every ``every_steps`` optimizer steps the controller takes a *decision* from each moved domain's signal (held-out
loss at that step, or mean training loss over the interval):

1. score: ``max(0, signal - reference)`` per domain, divided by the largest of them, so scores lie in [0, 1] and
   ``eta`` means the same whatever the losses' scale (all zero: the weights stay);
2. ``log w += eta * score``, normalised so the moved domains keep their share of the mixture;
3. smoothing towards the prior: ``w = (1 - s) w + s prior``;
4. clamped to ``[min_weight, max_weight]``, lowered further for a domain whose shards would pass ``max_passes`` by
   the run's horizon at that weight (the freed share goes to the others);
5. rounded to ``DECIMALS`` decimals, so a decision prints, and replays as a ``mix_schedule`` phase, exactly.

A decision's mixture is a ``mix_weights_str`` text; the stream reads every controlled segment from such a text
through the same resolution as a schedule's phase, which is what makes ``midtrain mix --replay`` exact.
"""


import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from midtrain.data.mix_schedule import MixTimeline, Segment
from midtrain.errors import ConfigError, Problems, did_you_mean
from midtrain.field_docs import document_fields

FLAG = "--data.mix_controller"
DECIMALS = 4
STATE_FORMAT = "midtrain.mix_controller/1"


@document_fields
@dataclass
class ControllerSettings:
    """An online mixture: the mixture the data module gives is the prior (the first phase); every ``every_steps``
    steps the controller moves the domains' shares by their losses and starts a new phase, exact, logged and
    resumable (docs/data.md). Needs ``midtrain pretrain``; not with ``mix_schedule``."""

    signal: Literal["val_loss", "train_loss"] = "val_loss"
    """``val_loss``: each domain's held-out loss at the decision step; ``train_loss``: its mean training loss over
    the interval (a domain that drew no sample has no signal and keeps its weight)."""
    every_steps: int = 1000
    """Optimizer steps between decisions, on the run's step grid (a branch from 20,000 deciding every 1,000 decides
    first at 21,000)."""
    eta: float = 0.5
    """Step size of the update ``log w += eta * score`` (scores lie in [0, 1])."""
    reference: Literal["none", "start"] | dict[str, float] = "none"
    """What a loss is scored against: ``none`` (the loss itself), ``start`` (this run's first evaluation) or a
    mapping domain -> loss."""
    smoothing: float = 0.0
    """Pull towards the prior after each update, between 0 and 1: ``w = (1 - s) w + s prior``."""
    min_weight: float = 0.01
    """Smallest share a moved domain keeps (above 0: a controlled domain is never dropped)."""
    max_weight: float = 0.95
    """Largest share a moved domain takes (lower where its shards would pass ``max_passes``)."""
    domains: list[str] | None = None
    """The domains it moves (default all of the prior's); the others keep their share."""
    reset: bool = False
    """On a resume whose controller settings changed: keep the decisions so far and start new controller state
    (recorded in run.json), instead of refusing the change."""

    def record(self) -> dict:
        """What a resume compares (everything but ``reset``)."""
        out = asdict(self)
        out.pop("reset")
        out["domains"] = None if self.domains is None else list(self.domains)
        return out


KEYS = tuple(f.name for f in fields(ControllerSettings))
SIGNALS = ("val_loss", "train_loss")


def _number(value, key: str, problems: Problems, low: float, high: float, hint: str, *, integer: bool = False,
            open_low: bool = False):
    try:  # YAML reads 1e-2 as a string, as in the paper's configs (jsonargparse converts it; a script may not)
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        number = value
    bad = isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number)
    bad = bad or (integer and not float(number).is_integer()) or number < low or number > high or (
        open_low and number == low)
    if bad:
        problems.add(f"{FLAG}.{key}={value!r} must be {hint}.")
        return getattr(ControllerSettings, key)
    return int(number) if integer else float(number)


def parse_settings(raw: ControllerSettings | Mapping, prior: Mapping[str, float]) -> ControllerSettings:
    """``data.mix_controller`` checked against the prior's domain shares (its types are jsonargparse's; a mapping,
    as a script writes it, is read the same way); every problem at once."""
    problems = Problems()
    if isinstance(raw, Mapping):
        for key in raw:
            if key not in KEYS:
                problems.add(f"{FLAG} has the unknown key {key!r}.{did_you_mean(str(key), KEYS)} It takes "
                             f"{', '.join(KEYS)}.")
        problems.raise_if_any(ConfigError)
        raw = ControllerSettings(**raw)
    if not isinstance(raw, ControllerSettings):
        raise ConfigError(f"{FLAG} must be a mapping, e.g. {{signal: val_loss, every_steps: 1000, eta: 0.5}}; got "
                          f"{raw!r}.")
    if raw.signal not in SIGNALS:
        problems.add(f"{FLAG}.signal={raw.signal!r} is not one of {', '.join(SIGNALS)}: val_loss (per-domain held-out "
                     "loss at the decision step) or train_loss (per-domain training loss over the interval).")
    every = _number(raw.every_steps, "every_steps", problems, 1, math.inf,
                    "a positive number of optimizer steps between decisions", integer=True)
    eta = _number(raw.eta, "eta", problems, 0, math.inf, "a positive step size (e.g. 0.5)", open_low=True)
    smoothing = _number(raw.smoothing, "smoothing", problems, 0, 1, "between 0 and 1 (the pull towards the prior)")
    low = _number(raw.min_weight, "min_weight", problems, 0, 1,
                  "a share above 0 and at most 1 (a controlled domain is never dropped: log w stays finite)",
                  open_low=True)
    high = _number(raw.max_weight, "max_weight", problems, 0, 1, "a share above 0 and at most 1", open_low=True)
    if not isinstance(raw.reset, bool):
        problems.add(f"{FLAG}.reset={raw.reset!r} must be true or false.")
    in_prior = [d for d, w in prior.items() if w > 0]
    domains = raw.domains
    if isinstance(domains, str):
        domains = [d.strip() for d in domains.split(",") if d.strip()]
    if domains is not None and (not isinstance(domains, Sequence) or not domains):
        problems.add(f"{FLAG}.domains={raw.domains!r} must be a list of domains of the prior, e.g. "
                     f"[{', '.join(in_prior[:2])}], or left unset (all of them).")
        domains = None
    for d in domains or ():
        if d not in in_prior:
            problems.add(f"{FLAG}.domains names {d!r}, which has no weight in the prior mixture "
                         f"({', '.join(in_prior)}).{did_you_mean(str(d), in_prior)} The controller moves domains the "
                         "prior reads; give it a weight there first.")
    moved = [str(d) for d in domains] if domains is not None else in_prior
    if len(moved) < 2:
        problems.add(f"{FLAG} would move {len(moved)} domain(s) ({', '.join(moved) or 'none'}); it moves shares "
                     "between domains, so it needs at least two: give the prior more domains or list them in "
                     f"{FLAG}.domains.")
    reference = raw.reference
    if isinstance(reference, Mapping):
        reference = dict(reference)
        for d in moved:
            value = reference.get(d)
            if d not in reference:
                problems.add(f"{FLAG}.reference gives no loss for {d!r}; a mapping needs every moved domain "
                             f"({', '.join(moved)}).")
            elif isinstance(value, bool) or not _finite_text(value):
                problems.add(f"{FLAG}.reference.{d}={value!r} must be a finite loss.")
            else:
                reference[d] = float(value)
        for d in reference:
            if d not in moved:
                problems.add(f"{FLAG}.reference names {d!r}, which the controller does not move ({', '.join(moved)}).")
    elif reference not in ("none", "start"):
        problems.add(f"{FLAG}.reference={reference!r} must be none, start (this run's first evaluation) or a mapping "
                     "domain -> loss.")
    elif reference == "start" and raw.signal == "train_loss":
        problems.add(f"{FLAG}.reference=start scores held-out losses against this run's first evaluation, but "
                     f"{FLAG}.signal=train_loss scores training losses. Use signal: val_loss, or reference: none or a "
                     "mapping domain -> loss.")
    problems.raise_if_any(ConfigError)
    mass = sum(prior[d] for d in moved)
    if low * len(moved) > mass + 1e-12 or high * len(moved) < mass - 1e-12 or low > high:
        raise ConfigError(f"{FLAG}.min_weight={low:g} and max_weight={high:g} cannot hold: the {len(moved)} moved "
                          f"domains share {mass:.4g} of the mixture, so they need min_weight <= "
                          f"{mass / len(moved):.4g} <= max_weight.")
    return ControllerSettings(raw.signal, every, eta, reference, smoothing, low, high,
                              None if domains is None else moved, raw.reset)


def _finite_text(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def next_decision_step(last_step: int, every_steps: int) -> int:
    """The first multiple of ``every_steps`` after ``last_step``: decisions fall on the step grid of the whole run,
    so a branch from step 20,000 deciding every 1,000 steps decides first at 21,000."""
    return (last_step // every_steps + 1) * every_steps


def moved_domains(settings: ControllerSettings, prior: Mapping[str, float]) -> list[str]:
    """The domains the controller moves: ``domains``, else every domain of the prior."""
    return list(settings.domains or [d for d in prior if prior[d] > 0])


def mixture_text(weights: Mapping[str, float]) -> str:
    """A mixture as ``mix_weights_str`` writes it, exactly (``repr`` of each float reads back the same float)."""
    return ",".join(f"{d}:{w!r}" for d, w in weights.items())


@dataclass(frozen=True)
class Decision:
    """One decision: taken after optimizer step ``step``, read from step ``step`` on."""

    index: int
    step: int
    signal: dict[str, float | None]
    """Per moved domain; None: no signal (``train_loss``: no sample of it in the interval), its weight kept."""
    reference: dict[str, float]
    score: dict[str, float | None]
    before: dict[str, float]
    after: dict[str, float]
    capped: tuple[str, ...] = ()
    """Domains held below their share because their shards would pass ``max_passes`` by the horizon."""
    clamped: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out = asdict(self)
        out["capped"], out["clamped"] = list(self.capped), list(self.clamped)
        return out

    @classmethod
    def from_json(cls, record: Mapping) -> "Decision":
        return cls(**{**record, "capped": tuple(record.get("capped", ())),
                      "clamped": tuple(record.get("clamped", ()))})


def update(settings: ControllerSettings, prior: Mapping[str, float], current: Mapping[str, float],
           signal: Mapping[str, float | None], reference: Mapping[str, float] | None,
           capacity: Mapping[str, float] | None = None) -> tuple[dict, dict, tuple, tuple]:
    """(new weights over every prior domain, score per moved domain, capped, clamped): the update rule of the
    module docstring. ``capacity``: per moved domain the largest share ``max_passes`` allows from now.

    A domain whose signal is None (``train_loss``: it drew no sample in the interval) has no evidence either way: it
    keeps its weight (lowered only if ``max_passes`` requires), its score is None, and the others share the rest."""
    moved = moved_domains(settings, prior)
    silent = [d for d in moved if signal.get(d) is None]
    active = [d for d in moved if d not in silent] if len(silent) < len(moved) else moved
    high = {d: settings.max_weight for d in moved}
    for d in moved:
        if capacity is not None and capacity.get(d) is not None and capacity[d] < high[d]:
            high[d] = max(0.0, capacity[d])
    kept = {d: min(current[d], high[d]) for d in moved if d not in active}
    mass = sum(current[d] for d in moved) - sum(kept.values())
    raw = {d: max(0.0, (signal.get(d) or 0.0) - (reference or {}).get(d, 0.0)) for d in active}
    top = max(raw.values())
    score: dict[str, float | None] = {d: (raw[d] / top if top > 0 else 0.0) for d in active}
    logits = {d: math.log(current[d]) + settings.eta * score[d] for d in active}
    peak = max(logits.values())
    exp = {d: math.exp(v - peak) for d, v in logits.items()}
    total = sum(exp.values())
    w = {d: mass * exp[d] / total for d in active}
    prior_mass = sum(prior[d] for d in active)
    s = settings.smoothing
    w = {d: (1 - s) * w[d] + s * prior[d] * mass / prior_mass for d in active}
    low = {d: min(settings.min_weight, high[d]) for d in active}
    w, bound = _clamp(w, low, {d: high[d] for d in active}, mass)
    capped = tuple(d for d in moved if (d in bound and high[d] < settings.max_weight and w[d] >= high[d] - 1e-12)
                   or (d in kept and kept[d] < current[d]))
    clamped = tuple(d for d in active if d in bound and d not in capped)
    w = _round(w, mass, bound, {d for d in capped if d in w})
    score.update({d: None for d in kept} if len(silent) < len(moved) else {d: None for d in moved})
    after = {d: (w[d] if d in w else kept.get(d, current[d])) for d in current}
    return after, {d: score[d] for d in moved}, capped, clamped


def _clamp(w: dict[str, float], low: dict[str, float], high: dict[str, float], mass: float):
    """Water-filling: fix every share outside its bounds at the bound, rescale the free ones to the rest, repeat."""
    fixed: dict[str, float] = {}
    while True:
        free = [d for d in w if d not in fixed]
        rest = mass - sum(fixed.values())
        total = sum(w[d] for d in free)
        scaled = {d: (w[d] * rest / total if total > 0 else rest / max(len(free), 1)) for d in free}
        over = [d for d in free if scaled[d] > high[d] + 1e-15]
        under = [d for d in free if scaled[d] < low[d] - 1e-15]
        if not free or not (over or under):
            return {**scaled, **fixed}, set(fixed)
        for d in over or under:  # the larger violation first settles the others' scale
            fixed[d] = high[d] if d in over else low[d]
        if len(fixed) == len(w):  # every domain at a bound: the caps leave share over (the others take it)
            return dict(fixed), set(fixed)


def _round(w: dict[str, float], mass: float, bound: set[str], capped: set[str]) -> dict[str, float]:
    """Shares to ``DECIMALS`` decimals (a capped one rounded down, so the cap holds), the rounding's residual given
    to the largest free share, so the moved domains keep their mass to the last decimal."""
    unit = 10**DECIMALS
    ticks = {d: math.floor(v * unit) if d in capped else round(v * unit) for d, v in w.items()}
    free = [d for d in w if d not in bound] or list(w)
    if len(bound) < len(w):
        largest = max(free, key=lambda d: (ticks[d], d))
        ticks[largest] += round(mass * unit) - sum(ticks.values())
    return {d: t / unit for d, t in ticks.items()}


def passes_capacity(shard_splits: Mapping[str, Sequence[tuple[float, int, int]]], remaining_samples: int,
                    max_passes: float) -> dict[str, float]:
    """Per domain, the largest share of the rest of the run that keeps each of its shards within ``max_passes``:
    ``shard_splits`` gives per domain each shard's (share of the domain's weight, samples read, samples per pass).
    One sample is held back: a stretch reads each shard's share to within one sample."""
    out = {}
    for domain, shards in shard_splits.items():
        limits = [(max_passes * per_pass - read - 1) / (split * remaining_samples)
                  for split, read, per_pass in shards if split > 0 and remaining_samples > 0]
        out[domain] = min(limits) if limits else math.inf
    return out


@dataclass
class MixController(MixTimeline):
    """The controller's state over a run, and its timeline: one segment per decision, the last ending where the next
    is due. ``start_step``: where this controller's segments begin (the run's start, or the step of a ``reset``);
    ``resolve``: a ``mix_weights_str`` text -> per-shard weights (the data module's)."""

    takes_decisions = True

    settings: ControllerSettings
    prior: dict[str, float]
    start_step: int
    resolve: Callable[[str], dict[str, float]] = field(repr=False, compare=False)
    origin_step: int | None = None
    """Where control first began in this run (its first segment reads the prior from there)."""
    start_weights: dict[str, float] | None = None
    """The mixture at ``start_step`` (the prior, or the last decision's before a reset)."""
    reference: dict[str, float] | None = None
    decisions: list[Decision] = field(default_factory=list)
    resets: list[dict] = field(default_factory=list)
    signal_window: dict | None = None
    """``train_loss``: the interval's per-domain sums and counts so far (all ranks), as the last save found them."""
    resuming: bool = False
    """This controller continues a saved one (a resume of the same run); else it starts afresh (a new run, a
    branch, whose parent's controller, if any, is history in the parent's ledger)."""

    def __post_init__(self) -> None:
        if self.origin_step is None:
            self.origin_step = self.start_step
        if self.start_weights is None:
            self.start_weights = dict(self.prior)
        if self.reference is None and isinstance(self.settings.reference, dict):
            self.reference = dict(self.settings.reference)

    @property
    def moved(self) -> list[str]:
        return moved_domains(self.settings, self.prior)

    def capacity(self, read: Sequence[tuple], remaining_samples: int, max_passes: float) -> dict[str, float]:
        """Per moved domain, the largest share ``max_passes`` allows for the rest of the run; ``read``: each shard of
        the stream with its samples read and samples per pass. A domain's share splits over its shards as the
        prior's does, whatever the share."""
        prior = self.resolve(mixture_text(self.prior))
        totals: dict[str, float] = {}
        for shard, _, _ in read:
            totals[shard.domain] = totals.get(shard.domain, 0.0) + prior.get(shard.id, 0.0)
        splits: dict[str, list] = {d: [] for d in self.moved}
        for shard, consumed, per_pass in read:
            if shard.domain in splits and totals[shard.domain] > 0:
                splits[shard.domain].append((prior.get(shard.id, 0.0) / totals[shard.domain], consumed, per_pass))
        return passes_capacity(splits, remaining_samples, max_passes)

    @property
    def weights(self) -> dict[str, float]:
        later = [d for d in self.decisions if d.step > self.start_step]
        return dict(later[-1].after) if later else dict(self.start_weights)

    def needs_reference(self) -> bool:
        return self.settings.reference == "start" and self.reference is None

    def next_due(self) -> int:
        """The step of the next decision: the first multiple of ``every_steps`` after the last decision (or start)."""
        return next_decision_step(max([self.start_step, *(d.step for d in self.decisions)]),
                                  self.settings.every_steps)

    def decide(self, step: int, signal: Mapping[str, float], capacity: Mapping[str, float] | None = None) -> Decision:
        if step != self.next_due():
            raise RuntimeError(f"a mixture decision at step {step}, but the next is due at step {self.next_due()}")
        before = self.weights
        after, score, capped, clamped = update(self.settings, self.prior, before, signal, self.reference, capacity)
        moved = self.moved
        decision = Decision(len(self.decisions) + 1, step,
                            {d: None if signal.get(d) is None else float(signal[d]) for d in moved},
                            {d: (self.reference or {}).get(d, 0.0) for d in moved}, score, before, after, capped,
                            clamped)
        self.decisions.append(decision)
        self.signal_window = None
        return decision

    def segments(self) -> list[Segment]:
        """The stream's timeline from ``start_step``: one segment per decision, the last ending where the next
        decision is due (not taken yet: the stream pauses there)."""
        later = [d for d in self.decisions if d.step > self.start_step]
        starts = [self.start_step, *(d.step for d in later)]
        mixtures = [self.start_weights, *(d.after for d in later)]
        first = "prior" if self.start_step == self.origin_step else f"controller reset at step {self.start_step:,}"
        labels = [first, *(f"decision {d.index}" for d in later)]
        ends = [*starts[1:], self.next_due()]
        details = [None, *({"decision": d.index, "step": d.step, "signal": d.signal, "score": d.score,
                            "before": d.before, "after": d.after, "capped": list(d.capped)} for d in later)]
        return [Segment(start, end, self.resolve(mixture_text(mix)), k, None, label, detail)
                for k, (start, end, mix, label, detail)
                in enumerate(zip(starts, ends, mixtures, labels, details, strict=True))]

    # -- checkpoints ----------------------------------------------------------------------------------------
    def restore(self, stretches: Sequence[Mapping], saved: Mapping, step: int) -> None:
        """A resume continues the saved controller's decisions; a branch starts a fresh one (its parent's, if any,
        is history in the parent's ledger)."""
        if self.resuming:
            self.continue_from(saved.get("controller"), step)

    def state(self) -> dict:
        return {"controller": self.state_dict()}

    def state_dict(self) -> dict:
        return {"format": STATE_FORMAT, "settings": self.settings.record(), "prior": dict(self.prior),
                "origin_step": self.origin_step, "start_step": self.start_step,
                "start_weights": dict(self.start_weights), "reference": self.reference,
                "decisions": [d.to_json() for d in self.decisions], "resets": list(self.resets),
                "signal_window": self.signal_window,
                # derived, for whoever reads a checkpoint: the mixture now, and the step whose decision is due next
                "weights": self.weights, "next_due": self.next_due()}

    def continue_from(self, saved: Mapping | None, step: int, where: str = "the checkpoint") -> None:
        """Continue a resumed run's controller from its saved state (taken at ``step``): refused, naming the key,
        if the config's controller differs, unless ``reset`` (the decisions so far are kept, new state starts)."""
        if saved is None:
            if not self.settings.reset:
                raise ConfigError(
                    f"{FLAG} is set, but the run in --out_dir read its mixture without a controller up to {where}. "
                    f"A resume continues the same run: remove {FLAG}, or set {FLAG}.reset=true to start a controller "
                    f"from step {step:,} (recorded in run.json), or branch (--branch_from) into a new --out_dir.")
            self._restart(step, [k for k in KEYS if k != "reset"], carried=None)
            return
        changed = [k for k, v in self.settings.record().items() if saved["settings"].get(k) != v]
        if dict(saved["prior"]) != self.prior:
            changed.append("prior")
        if changed and not self.settings.reset:
            lines = "; ".join(f"{FLAG}.{k}={self.settings.record()[k]!r} (the run's: {saved['settings'][k]!r})"
                              if k != "prior" else f"the prior {mixture_text(self.prior)} (the run's: "
                              f"{mixture_text(saved['prior'])})" for k in changed)
            raise ConfigError(
                f"the mixture controller differs from the one that took the run's decisions up to {where}: {lines}. "
                f"A resume takes the same decisions as an uninterrupted run: set it back, or set {FLAG}.reset=true to "
                "keep the decisions so far and start new controller state from here (recorded in run.json).")
        self.origin_step = saved["origin_step"]
        self.decisions = [Decision.from_json(d) for d in saved["decisions"]]
        self.resets = list(saved.get("resets", []))
        if changed:  # and reset: a later resume with the same config finds nothing changed and continues
            last = [d for d in self.decisions if d.step <= step]
            self.start_weights = dict(last[-1].after) if last else dict(saved["start_weights"])
            self._restart(step, changed, carried=self.start_weights)
            return
        self.start_step, self.start_weights = saved["start_step"], dict(saved["start_weights"])
        self.reference = None if saved["reference"] is None else dict(saved["reference"])
        self.signal_window = saved.get("signal_window")

    def _restart(self, step: int, changed: list[str], carried: dict | None) -> None:
        self.resets.append({"step": step, "changed": changed})
        self.start_step = step
        self.start_weights = dict(carried) if carried is not None else dict(self.prior)
        self.reference = dict(self.settings.reference) if isinstance(self.settings.reference, dict) else None
        self.signal_window = None
        self.decisions = [d for d in self.decisions if d.step <= step]

    @classmethod
    def replay_phases(cls, saved: Mapping) -> list[tuple[int, str]]:
        """(start step, mixture text) of every mixture a saved controller read, first the prior's."""
        out = [(saved["origin_step"], mixture_text(saved["prior"]))]
        return out + [(d["step"], mixture_text(d["after"])) for d in saved["decisions"]]


def check_run(settings: ControllerSettings, moved: Sequence[str], eval_interval: int,
              validated_domains: Sequence[str], total_steps: int, start_step: int) -> list[str]:
    """Refusals (``ConfigError``) and notices of a controller in a run with these eval settings and held-out sets."""
    problems = Problems()
    needs_val = settings.signal == "val_loss" or settings.reference == "start"
    nearest = max(1, round(settings.every_steps / eval_interval)) * eval_interval
    if settings.signal == "val_loss" and settings.every_steps % eval_interval:
        problems.add(f"{FLAG}.every_steps={settings.every_steps:,} is not a multiple of --eval.interval="
                     f"{eval_interval:,}: a val_loss decision reads the held-out losses of its step. Make every_steps "
                     f"a multiple of {eval_interval:,} (e.g. {nearest:,}), or use signal: train_loss.")
    missing = [d for d in moved if d not in validated_domains]
    if needs_val and missing:
        why = "signal: val_loss" if settings.signal == "val_loss" else "reference: start"
        problems.add(f"{FLAG} ({why}) reads held-out losses of {', '.join(moved)}, but {', '.join(missing)} "
                     "lack a validation set (held-out shards under --data.val_data_path with at least one whole "
                     f"sequence, and validation on). Prepare held-out shards for {', '.join(missing)}, leave them out "
                     f"of {FLAG}.domains, or use signal: train_loss with reference: none.")
    problems.raise_if_any(ConfigError)
    first = next_decision_step(start_step, settings.every_steps)
    if first >= total_steps:
        return [f"{FLAG}.every_steps={settings.every_steps:,}: the first decision would be at step {first:,}, at or "
                f"after the run's end (step {total_steps:,}): the controller never moves the mixture."]
    return []
