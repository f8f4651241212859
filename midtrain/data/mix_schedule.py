"""Mixture schedules inside one run (``data.mix_schedule``): phases that start at given optimizer steps, each with
its own mixture, optionally ramped linearly from the mixture before it. Pure logic, no torch, no I/O beyond a
phase's ``mix_config_path``.

A schedule becomes a *timeline*: segments of constant per-shard weights over step ranges. A phase without a ramp
is one segment; a ramp of R steps is ``min(R, RAMP_SEGMENTS)`` segments of (nearly) equal length whose weights are
the linear ramp's value at each segment's midpoint, so the tokens read over the ramp match the continuous ramp's
to within the segments' rounding. Each segment is read exactly like a branch's mixture (every shard
``round(w n) +/- 1`` samples after n samples of the segment), with every shard's cursor carried across.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from midtrain.data.domains import did_you_mean
from midtrain.data.spec import MixtureSpec, build_spec
from midtrain.errors import ConfigError, Problems

FLAG = "--data.mix_schedule"
RAMP_SEGMENTS = 10
MIXTURE_KEYS = ("mix_weights_str", "mix_weights", "literal_weights_str", "mix_config_path", "proportional_sampling",
                "domain_split")
PHASE_KEYS = ("start_step", "ramp_steps", *MIXTURE_KEYS)


@dataclass(frozen=True)
class Phase:
    index: int
    start_step: int
    ramp_steps: int
    spec: MixtureSpec

    def describe(self) -> str:
        """The phase's mixture (and ramp), e.g. ``domains main:0.8,code:0.2, ramped over 2,000 steps``."""
        ramp = (f", ramped over {self.ramp_steps:,} steps from the mixture before (in "
                f"{min(self.ramp_steps, RAMP_SEGMENTS)} constant segments)" if self.ramp_steps else "")
        return f"{self.spec.describe()}{ramp}"


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
    """The label of a segment that is no schedule's phase (a mixture controller's: ``prior``, ``decision 3``)."""
    detail: dict | None = field(default=None, hash=False)
    """What the stretch record of this segment also says (a controller's decision: signal, score, weights)."""

    def label(self) -> str:
        if self.name is not None:
            return self.name
        return f"phase {self.phase}" + (f" ramp {self.ramp[0]}/{self.ramp[1]}" if self.ramp else "")


def parse_phases(raw: Any) -> list[Phase]:
    """The validated phases of ``data.mix_schedule`` (a list of mappings); every problem reported at once."""
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)) or not raw:
        raise ConfigError(f"{FLAG} must be a non-empty list of phases, e.g. [{{start_step: 0, mix_weights_str: "
                          f"'main:1.0'}}, {{start_step: 4000, mix_weights_str: 'main:0.8,code:0.2'}}]; got {raw!r}.")
    problems = Problems()
    phases: list[Phase] = []
    for index, entry in enumerate(raw):
        where = f"{FLAG}[{index}]"
        if not isinstance(entry, Mapping):
            problems.add(f"{where} is {entry!r}, not a mapping with start_step and a mixture.")
            continue
        unknown = [k for k in entry if k not in PHASE_KEYS]
        for key in unknown:
            problems.add(f"{where} has the unknown key {key!r}.{did_you_mean(key, PHASE_KEYS)} A phase takes "
                         f"{', '.join(PHASE_KEYS)}.")
        start, ramp = entry.get("start_step"), entry.get("ramp_steps", 0)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            problems.add(f"{where}.start_step={start!r} must be a step number (0 or more).")
            continue
        if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
            problems.add(f"{where}.ramp_steps={ramp!r} must be a number of steps (0 or more).")
            continue
        if not any(entry.get(k) not in (None, False) for k in MIXTURE_KEYS[:5]):
            problems.add(f"{where} gives no mixture: set one of mix_weights_str, mix_weights, literal_weights_str, "
                         "mix_config_path or proportional_sampling.")
            continue
        if unknown:
            continue
        try:
            spec = build_spec(**{k: entry[k] for k in MIXTURE_KEYS if k in entry})
        except ConfigError as exc:
            problems.add(str(exc).replace("--data.", f"{where}."))
            continue
        phases.append(Phase(index, start, ramp, spec))
    problems.raise_if_any(ConfigError)
    for before, after in zip(phases, phases[1:], strict=False):
        if after.start_step <= before.start_step:
            problems.add(f"{FLAG}[{after.index}].start_step={after.start_step:,} is not after the phase before it "
                         f"(step {before.start_step:,}). Give the phases in increasing start_step.")
        elif before.start_step + before.ramp_steps > after.start_step:
            problems.add(f"{FLAG}[{before.index}] ramps until step {before.start_step + before.ramp_steps:,}, past the "
                         f"start of phase {after.index} (step {after.start_step:,}). Shorten ramp_steps to at most "
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
                    f"{FLAG}[{phase.index}].ramp_steps={phase.ramp_steps:,}, but nothing comes before this phase to "
                    "ramp from: the run starts here from scratch. Remove ramp_steps from the first phase, or branch "
                    "from a checkpoint (--branch_from), whose mixture the ramp then starts from.")
            count = min(phase.ramp_steps, RAMP_SEGMENTS)
            bounds = [phase.start_step + phase.ramp_steps * j // count for j in range(count + 1)]
            for j in range(count):
                t = (j + 0.5) / count  # the ramp's value at the middle of the segment
                mixed = {i: (1 - t) * previous.get(i, 0.0) + t * target.get(i, 0.0) for i in {*previous, *target}}
                total = sum(mixed.values())
                segments.append(Segment(bounds[j], bounds[j + 1], {i: w / total for i, w in sorted(mixed.items())
                                                                   if w > 0}, phase.index, (j + 1, count)))
            if end is None or bounds[-1] < end:
                segments.append(Segment(bounds[-1], end, target, phase.index))
        else:
            segments.append(Segment(phase.start_step, end, target, phase.index))
        previous = target
    return segments


@dataclass(frozen=True)
class MixSchedule:
    """A parsed schedule with each phase's resolved weights: what a stream needs to build its timeline once it
    knows the mixture before the first phase."""

    phases: tuple[Phase, ...]
    phase_weights: tuple[dict[str, float], ...]

    def timeline(self, origin: Mapping[str, float] | None) -> list[Segment]:
        return build_timeline(self.phases, self.phase_weights, origin)

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


def mixture_before(phases: Sequence[Mapping], step: int) -> dict[str, float] | None:
    """The mixture a saved stream state was reading just before ``step``: the last of its recorded phases that
    started before it (a phase record without ``start_step`` predates schedules and counts as earlier)."""
    earlier = [p for p in phases if p.get("start_step") is None or p["start_step"] < step]
    return dict(earlier[-1]["mixture"]) if earlier else None
