"""The mixture over a run's steps, as the stream reads it: a *timeline* of segments, each with constant per-shard
weights over a step range. Pure logic, no torch, no I/O beyond a phase's ``mix_config_path``.

Three kinds implement ``MixTimeline``, and the stream reads any of them the same way: a constant mixture (one
segment), a schedule (``data.mix_schedule``: phases that start at given steps, each optionally ramped linearly
from the mixture before it) and an online mixture (its segments grow one decision at a time; the stream pauses at the
end of the last known segment until the next is decided).

A ramp of R steps is ``min(R, RAMP_SEGMENTS)`` segments of (nearly) equal length whose weights are the linear
ramp's value at each segment's midpoint, so the tokens read over the ramp match the continuous ramp's to within the
segments' rounding. Each segment is read exactly like a branch's mixture (every shard ``round(w n) +/- 1`` samples
after n samples of the segment), with every shard's cursor carried across.
"""


from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from midtrain.data.spec import MIXTURE_KEYS, Mixture
from midtrain.errors import ConfigError, Problems, did_you_mean
from midtrain.field_docs import document_fields

FLAG = "--data.mix_schedule"
RAMP_SEGMENTS = 10


@document_fields
@dataclass
class Phase(Mixture):
    """One phase of ``data.mix_schedule``: from ``start_step`` on, the mixture its keys give (one form, as the data
    module's), reached by a linear ramp over ``ramp_steps`` from the mixture before it."""

    start_step: int | None = None
    """The optimizer step the phase starts at (the first phase: 0, or the branch point)."""
    ramp_steps: int = 0
    """Steps over which the mixture ramps linearly from the one before (0: it changes at once)."""

    def describe(self) -> str:
        """The phase's mixture (and ramp), e.g. ``domains main:0.8,code:0.2, ramped over 2,000 steps``."""
        ramp = (f", ramped over {self.ramp_steps:,} steps from the mixture before (in "
                f"{min(self.ramp_steps, RAMP_SEGMENTS)} constant segments)" if self.ramp_steps else "")
        return f"{self.spec().describe()}{ramp}"

    def record(self) -> dict:
        """The phase as a config writes it: its start, its ramp if any, and the mixture keys it sets."""
        out = {"start_step": self.start_step, **({"ramp_steps": self.ramp_steps} if self.ramp_steps else {})}
        defaults = Mixture()
        return out | {k: getattr(self, k) for k in MIXTURE_KEYS if getattr(self, k) != getattr(defaults, k)}


PHASE_KEYS = tuple(f.name for f in fields(Phase))


@dataclass(frozen=True)
class Segment:
    """Steps ``[start_step, end_step)`` (``end_step`` None: to the run's end) read with ``weights`` (shard id ->
    share, positive shares only, summing to 1)."""

    start_step: int
    end_step: int | None
    weights: dict[str, float] = field(hash=False)
    phase: int
    ramp: tuple[int, int] | None = None
    """(k, n): the k-th of the n segments of the phase's ramp (1-based)."""
    name: str | None = None
    """The label of a segment that is no schedule's phase (``prior``, ``decision 3``; "" for a constant mixture,
    whose stretches carry no label)."""
    detail: dict | None = field(default=None, hash=False)
    """What the stretch record of this segment also says (a decision: signal, score, weights)."""

    def label(self) -> str:
        if self.name is not None:
            return self.name
        return f"phase {self.phase}" + (f" ramp {self.ramp[0]}/{self.ramp[1]}" if self.ramp else "")


def parse_phases(raw) -> list[Phase]:
    """The validated phases of ``data.mix_schedule`` (``Phase``s, or mappings as a script writes them); every problem
    reported at once, naming the phase."""
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)) or not raw:
        raise ConfigError(f"{FLAG} must be a non-empty list of phases, e.g. [{{start_step: 0, mix_weights_str: "
                          f"'main:1.0'}}, {{start_step: 4000, mix_weights_str: 'main:0.8,code:0.2'}}]; got {raw!r}.")
    problems = Problems()
    phases: list[Phase] = []
    for index, entry in enumerate(raw):
        where = f"{FLAG}[{index}]"
        if isinstance(entry, Mapping):
            unknown = [k for k in entry if k not in PHASE_KEYS]
            for key in unknown:
                problems.add(f"{where} has the unknown key {key!r}.{did_you_mean(key, PHASE_KEYS)} A phase takes "
                             f"{', '.join(PHASE_KEYS)}.")
            if unknown:
                continue
            entry = Phase(**entry)
        if not isinstance(entry, Phase):
            problems.add(f"{where} is {entry!r}, not a mapping with start_step and a mixture.")
            continue
        start, ramp = entry.start_step, entry.ramp_steps
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            problems.add(f"{where}.start_step={start!r} must be a step number (0 or more).")
            continue
        if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
            problems.add(f"{where}.ramp_steps={ramp!r} must be a number of steps (0 or more).")
            continue
        if not entry.given():
            problems.add(f"{where} gives no mixture: set one of mix_weights_str, mix_weights, literal_weights_str, "
                         "mix_config_path or proportional_sampling.")
            continue
        try:
            entry.spec()
        except ConfigError as exc:
            problems.add(str(exc).replace("--data.", f"{where}."))
            continue
        phases.append(entry)
    problems.raise_if_any(ConfigError)
    for index, (before, after) in enumerate(zip(phases, phases[1:], strict=False)):
        if after.start_step <= before.start_step:
            problems.add(f"{FLAG}[{index + 1}].start_step={after.start_step:,} is not after the phase before it "
                         f"(step {before.start_step:,}). Give the phases in increasing start_step.")
        elif before.start_step + before.ramp_steps > after.start_step:
            problems.add(f"{FLAG}[{index}] ramps until step {before.start_step + before.ramp_steps:,}, past the "
                         f"start of phase {index + 1} (step {after.start_step:,}). Shorten ramp_steps to at most "
                         f"{after.start_step - before.start_step:,}.")
    problems.raise_if_any(ConfigError)
    return phases


def build_timeline(phases: Sequence[Phase], phase_weights: Sequence[Mapping[str, float]],
                   origin: Mapping[str, float] | None) -> list[Segment]:
    """The segments of the whole schedule. ``phase_weights`` are the phases' mixtures resolved against the shards
    on disk; ``origin`` is the mixture in effect before the first phase (a branch's checkpoint), which its ramp
    starts from."""
    segments: list[Segment] = []
    previous = dict(origin) if origin else None
    for k, phase in enumerate(phases):
        target = {i: w for i, w in phase_weights[k].items() if w > 0}
        end = phases[k + 1].start_step if k + 1 < len(phases) else None
        if phase.ramp_steps:
            if previous is None:
                raise ConfigError(
                    f"{FLAG}[{k}].ramp_steps={phase.ramp_steps:,}, but nothing comes before this phase to ramp from: "
                    "the run starts here from scratch. Remove ramp_steps from the first phase, or branch from a "
                    "checkpoint (--branch_from), whose mixture the ramp then starts from.")
            count = min(phase.ramp_steps, RAMP_SEGMENTS)
            bounds = [phase.start_step + phase.ramp_steps * j // count for j in range(count + 1)]
            for j in range(count):
                t = (j + 0.5) / count  # the ramp's value at the middle of the segment
                mixed = {i: (1 - t) * previous.get(i, 0.0) + t * target.get(i, 0.0) for i in {*previous, *target}}
                total = sum(mixed.values())
                segments.append(Segment(bounds[j], bounds[j + 1], {i: w / total for i, w in sorted(mixed.items())
                                                                   if w > 0}, k, (j + 1, count)))
            if end is None or bounds[-1] < end:
                segments.append(Segment(bounds[-1], end, target, k))
        else:
            segments.append(Segment(phase.start_step, end, target, k))
        previous = target
    return segments


class MixTimeline:
    """The mixture over the run's steps. ``segments()`` are what the stream reads (the last ending where the next
    is not known yet, for a timeline that grows); ``restore`` is given the stretches of a saved stream state before
    its segments are read; ``state()`` is what a checkpoint carries of it beyond the stretches."""

    counts_steps = True
    """Its segments change at optimizer steps, which only ``midtrain pretrain`` tells the stream."""
    takes_decisions = False
    """Its next segment is decided during the run (``decide``), where the stream pauses."""

    def segments(self) -> list[Segment]:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether ``segments()`` can be read before any saved state is loaded."""
        return True

    def restore(self, stretches: Sequence[Mapping], saved: Mapping, step: int) -> None:
        """A saved stream state (its stretches decoded: ``start_step``, ``mixture``) continues at ``step``."""

    def state(self) -> dict | None:
        return None

    def used_shards(self) -> set[str]:
        return {i for s in self.segments() for i in s.weights}


class ConstantMixture(MixTimeline):
    """One mixture for the whole run: one segment, whose stretches carry no label (as before timelines)."""

    counts_steps = False

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.weights = {i: w for i, w in weights.items() if w > 0}

    def segments(self) -> list[Segment]:
        return [Segment(0, None, self.weights, 0, name="")]


class MixSchedule(MixTimeline):
    """``data.mix_schedule``'s phases with each one's resolved weights; a ramp into the first phase starts from the
    mixture a loaded state was reading before it."""

    def __init__(self, phases: Sequence[Phase], phase_weights: Sequence[Mapping[str, float]]) -> None:
        self.phases, self.phase_weights = tuple(phases), tuple(dict(w) for w in phase_weights)
        self.origin: dict[str, float] | None = None

    def ready(self) -> bool:
        return not self.phases[0].ramp_steps or self.origin is not None

    def segments(self) -> list[Segment]:
        return build_timeline(self.phases, self.phase_weights, self.origin)

    def restore(self, stretches: Sequence[Mapping], saved: Mapping, step: int) -> None:
        self.origin = mixture_before(stretches, self.phases[0].start_step)

    def used_shards(self) -> set[str]:
        return {i for weights in self.phase_weights for i, w in weights.items() if w > 0}


def segment_index_at(timeline: Sequence[Segment], step: int) -> int:
    """The index of the segment that holds ``step``; a ``ConfigError`` if the schedule starts after it."""
    if step < timeline[0].start_step:
        raise ConfigError(
            f"the run is at step {step:,}, but the first phase of {FLAG} starts at step {timeline[0].start_step:,}, so "
            "nothing says which mixture to read before it. Start the first phase at step 0 (or at the branch point)."
        )
    return max(i for i, s in enumerate(timeline) if s.start_step <= step)


def mixture_before(stretches: Sequence[Mapping], step: int) -> dict[str, float] | None:
    """The mixture a saved stream state was reading just before ``step``: the last of its stretches that started
    before it (a record without ``start_step`` predates schedules and counts as earlier)."""
    earlier = [p for p in stretches if p.get("start_step") is None or p["start_step"] < step]
    return dict(earlier[-1]["mixture"]) if earlier else None
