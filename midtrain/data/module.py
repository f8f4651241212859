"""``ShardedMixedDataset``: the litgpt ``DataModule`` for sharded, mixed pretraining and midtraining data.

Use it in a litgpt-style config as ``data: {class_path: midtrain.data.ShardedMixedDataset, init_args: ...}``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader

from midtrain.data.content import compare, set_fingerprint
from midtrain.data.mix_controller import mixture_text
from midtrain.data.mixture import MixtureArgs, ResolvedMixture, resolve_mixture
from midtrain.data.plan import MixSchedulePlan, MixturePlan, make_mix_schedule_plan, make_plan
from midtrain.data.stream import MixedStreamLoader, build_train_loader
from midtrain.data.stream_io import Transition, decode_mixture, is_stream_state, stretches_of
from midtrain.data.stream_state import StreamTracker
from midtrain.data.validation import HeldOutBlocks, domain_sets
from midtrain.distributed import rank_and_world_size
from midtrain.errors import ConfigError, DataError, MidtrainError
from midtrain.field_docs import document_fields


@dataclass(frozen=True)
class DataStart:
    """The data module's answer to "where does this run's data start": see ``ShardedMixedDataset.continuation``."""

    plan: MixturePlan | MixSchedulePlan
    transitions: tuple[Transition, ...] = ()
    mixture_before: dict | None = None
    """The checkpoint's last mixture (shard id -> share), if any."""
    mixture_after: dict = field(default_factory=dict)
    restored: bool = True
    """False where the checkpoint's loader state is another data module's: every shard starts at 0."""
    notices: tuple[str, ...] = ()
    decisions: dict | None = None
    """An online mixture's state as the run starts (its decisions so far, a reset), if the run has one."""
    segments: tuple[tuple[int, int | None, dict[str, float]], ...] = ()
    """The mixture over the run's steps per domain: (first step, end step or None, domain -> share); an online
    mixture's current one to the end."""

    @property
    def mixture_changed(self) -> bool:
        return bool(self.transitions) and self.mixture_before != self.mixture_after

    def record(self) -> dict:
        """What ``run.json`` records of this start beyond the lineage: an online mixture's decisions so far and its
        resets."""
        if self.decisions is None:
            return {}
        return {"mix_controller": {"decisions_before": len(self.decisions["decisions"]),
                                   "resets": self.decisions["resets"]}}


@document_fields
@dataclass
class ShardedMixedDataset(MixtureArgs, DataModule):
    """Shards under ``data_path`` mixed exactly by the given weights, resumable across mixture changes.

    ``connect`` sets the batch size and the context length (samples are ``max_seq_length + 1`` tokens);
    ``train_dataloader()`` returns an endless loader with ``state_dict``/``load_state_dict`` and a ``ledger()``;
    ``val_dataloader()`` covers all held-out data and ``val_dataloaders()`` gives one loader per domain.
    """

    tokenizer: Tokenizer | None = field(default=None, init=False, repr=False)
    batch_size: int = field(default=1, init=False, repr=False)
    seq_length: int = field(default=2048, init=False, repr=False)

    def __post_init__(self) -> None:
        DataModule.__init__(self)  # the dataclass __init__ set the fields; this sets up LightningDataModule
        self._mixture: ResolvedMixture | None = None
        self._resuming = False  # set by ``continuation``: a resume continues the saved decisions
        self._resolved_texts: dict[str, dict[str, float]] = {}

    def _resolve_text(self, text: str) -> dict[str, float]:
        """A decided mixture's text -> per-shard weights, resolved once per text."""
        if text not in self._resolved_texts:
            self._resolved_texts[text] = {i: w for i, w in self.mixture.resolve_text(text).items() if w > 0}
        return self._resolved_texts[text]

    def connect(
        self, tokenizer: Tokenizer | None = None, batch_size: int = 1, max_seq_length: int | None = None, **_
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"--train.micro_batch_size={batch_size!r} must be a positive integer.")
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if max_seq_length is not None:
            if max_seq_length < 1:
                raise ConfigError(f"--train.max_seq_length={max_seq_length!r} must be a positive integer.")
            self.seq_length = max_seq_length

    @property
    def block_tokens(self) -> int:
        return self.seq_length + 1

    @property
    def mixture(self) -> ResolvedMixture:
        """The mixture resolved against the shards on disk (discovered once, on first use)."""
        if self._mixture is None:
            self._mixture = resolve_mixture(self)
        return self._mixture

    def setup(self, stage: str = "") -> None:
        _ = self.mixture  # discover and validate early, before any loader or model exists

    def plan(self, max_tokens: int | None, start_samples: dict[str, int] | None = None) -> MixturePlan:
        """The plan for ``max_tokens`` more tokens, with ``start_samples`` per shard id already read."""
        return self.mixture.plan(self.seq_length, max_tokens, self.max_passes, start_samples)

    def train_dataloader(self, rank: int | None = None, world_size: int | None = None,
                         vocab_size: int | None = None, start_step: int = 0,
                         samples_per_step: int | None = None, num_workers: int | None = None,
                         pin_memory: bool = False, checked: bool = False,
                         lr_at: Callable[[int], float] | None = None) -> MixedStreamLoader:
        """Rank and world size default to the running process group's (or the launcher's environment); with
        ``vocab_size``, a token id at or above it stops the stream with an error naming the shard. ``start_step``
        and ``samples_per_step`` (this rank's samples per optimizer step) give the stream its clock: the steps of
        ``mix_schedule`` (required for it) and the start step recorded with each phase. ``num_workers`` overrides
        ``self.num_workers`` (a loader built only to be planned with starts none). ``checked``: the caller has
        compared the data with the checkpoint and shown the transitions already (``continuation``). ``lr_at``: the LR of
        each optimizer step, for the LR-weighted ledger (``midtrain.data.ledger``)."""
        mixture = self.mixture
        tracker = self._tracker(rank, world_size, start_step, samples_per_step)
        tracker.announce_transitions = not checked
        tracker.lr_at = lr_at
        return build_train_loader(
            tracker,
            block_tokens=self.block_tokens,
            batch_size=self.batch_size,
            seed=self.seed,
            num_workers=self.num_workers if num_workers is None else num_workers,
            vocab_size=vocab_size,
            on_disk_ids=[s.id for s in mixture.shards],
            data_check=None if checked else lambda state: self.check_data_changes(state, same_run=True),
            pin_memory=pin_memory,
            max_passes=self.max_passes,
        )

    def _tracker(self, rank: int | None, world_size: int | None, start_step: int,
                 samples_per_step: int | None) -> StreamTracker:
        """The stream's position over the shards this mixture (or any phase of its timeline) may read."""
        mixture = self.mixture
        self.plan(None)  # every used shard holds at least one sample of this length
        timeline = mixture.timeline(start_step, self._resuming, self._resolve_text)
        if timeline.counts_steps and samples_per_step is None:
            raise ConfigError(
                f"{mixture.changes_key} counts in optimizer steps, which only 'midtrain pretrain' tells the data "
                "module (plain 'litgpt pretrain' does not). Run the config with midtrain pretrain, or give one mixture "
                "instead.")
        if mixture.schedule is None:
            members = mixture.used_shards()
        else:
            # every shard that holds a sample: a phase (or the checkpoint's mixture a ramp starts from) may read it
            members = [s for s in mixture.shards if s.samples(self.block_tokens) > 0]
        if rank is None or world_size is None:
            rank, world_size = rank_and_world_size()
        tracker = StreamTracker(members, [mixture.weights.get(s.id, 0.0) for s in members], self.block_tokens,
                                self.seed, self.sampling, rank, world_size, timeline, start_step, samples_per_step,
                                self.order_seed)
        tracker.allow_data_change = self.allow_data_change
        return tracker

    def continuation(self, saved_state: dict | None, *, start_step: int, total_steps: int, global_batch_size: int,
                     world_size: int, same_run: bool, where: str = "") -> DataStart:
        """What a run starting at ``start_step`` (from ``saved_state``, a checkpoint's loader state, or None) reads
        until ``total_steps``: the plan, the transition of every shard's cursor, the mixtures before and after, and
        what a user may not expect (data that changed, a foreign loader state). Raises where the data cannot
        continue the checkpoint (``same_run``: a resume of the same run, which may not add or remove shards)."""
        self._resuming = same_run
        tracker = self._tracker(0, world_size, start_step, global_batch_size // world_size)
        tracker.announce_transitions = False  # the caller prints the table
        notices: list[str] = []
        transitions: list[Transition] = []
        before, start_samples, restored = None, None, True
        if saved_state is not None and not is_stream_state(saved_state) and not same_run:
            restored = False  # the paper fork's (or litgpt's) checkpoint: litdata's state names no shard cursor
            notices.append(
                "the checkpoint holds another data loader's state (litdata's, as the paper's fork and litgpt "
                "save it), which names no position per shard: every shard starts at its first sample; the "
                "weights, the optimizer and the step and iteration counters continue (the fork itself "
                "restored no loader state either)."
            )
        elif saved_state is not None:
            try:  # what cannot continue is said with the checkpoint it came from (``where``)
                notices += self.check_data_changes(saved_state, same_run)
                if same_run and "controller" in saved_state and tracker.clock.source.state() is None:
                    raise ConfigError(
                        "the run's mixture was decided during the run (data.mix_controller), which this config no "
                        "longer sets. A resume continues the same run: set it back, or replay its decisions in a new "
                        "run ('midtrain mix --replay' writes them as --data.mix_schedule), or branch into a new "
                        "--out_dir.")
                transitions = tracker.load_state_dict(copy.deepcopy(saved_state))
            except MidtrainError as exc:
                raise type(exc)(f"{where}: {exc}" if where else str(exc)) from None
            before = decode_mixture(stretches_of(saved_state)[-1])
            start_samples = {i: v["consumed"] for i, v in saved_state["shards"].items()}
        tracker.require_timeline()  # a schedule whose first phase ramps needs a checkpoint to ramp from
        decided = tracker.clock.source if tracker.clock.source.takes_decisions else None
        saved_resets = len(((saved_state or {}).get("controller") or {}).get("resets", []))
        if decided is not None and len(decided.resets) > saved_resets and same_run:
            reset = decided.resets[-1]
            notices.append(f"--data.mix_controller.reset=true: new controller state from step {reset['step']:,} "
                           f"(changed: {', '.join(reset['changed'])}); the {len(decided.decisions)} decision(s) so "
                           "far are kept, the reference and the signal window start again (recorded in run.json).")
        remaining = max(0, total_steps - start_step) * global_batch_size * self.seq_length
        if self.mixture.schedule is not None:
            plan = self.mix_schedule_plan(tracker.timeline, start_step, total_steps, global_batch_size, start_samples)
        elif decided is not None:  # the mixture in effect now; later ones are decided during the run
            plan = make_plan(self.mixture.shards, self._resolve_text(mixture_text(decided.weights)),
                             self.seq_length, remaining or None, self.max_passes, start_samples)
        else:
            plan = self.plan(remaining or None, start_samples)
        return DataStart(plan, tuple(transitions), before, tracker.mixture(), restored, tuple(notices),
                         None if decided is None else decided.state_dict(), self._domain_segments(tracker))

    def _domain_segments(self, tracker: StreamTracker) -> tuple:
        domain_of = {s.id: s.domain for s in self.mixture.shards}
        segments = []
        for segment in tracker.timeline:
            shares: dict[str, float] = {}
            for shard_id, weight in segment.weights.items():
                shares[domain_of[shard_id]] = shares.get(domain_of[shard_id], 0.0) + weight
            segments.append((segment.start_step, segment.end_step, shares))
        if tracker.clock.source.takes_decisions:  # what is decided later is not known: the current mixture on
            segments[-1] = (*segments[-1][:1], None, segments[-1][2])
        return tuple(segments)

    def val_identities(self, val_sets: dict[str, HeldOutBlocks]) -> dict[str, str]:
        """Per domain: the identity of its held-out shards and the number of samples validated on (recorded in
        every checkpoint, so a set swapped before a resume is said)."""
        return {domain: f"{set_fingerprint([s for s in self.mixture.val_shards if s.domain == domain])}:{len(blocks)}"
                for domain, blocks in val_sets.items()}

    def check_data_changes(self, saved_state: dict, same_run: bool) -> list[str]:
        """Compare the shards a saved loader state read with the data root now (``midtrain.data.content``). Any
        shard read before that changed is refused, and for a resume of the same run (``same_run``) shards removed or
        added too, unless ``allow_data_change``; returns notices (what was allowed, what could not be checked)."""
        mixture = self.mixture
        saved_order = saved_state.get("order_seed") if isinstance(saved_state, dict) else None
        if same_run and is_stream_state(saved_state) and self.order_seed != saved_order:
            raise ConfigError(
                f"--data.order_seed={self.order_seed!r} differs from the run's ({saved_order!r}): a resume reads the "
                f"rest of the run in the same order. Set --data.order_seed={saved_order!r}, or branch into a new "
                "--out_dir for another order.")
        changes = compare(saved_state, mixture.shards, [s.id for s in mixture.used_shards()])
        if changes.unchecked:
            return ["the checkpoint records no identity of the shards it read (saved by an earlier midtrain, or by "
                    "another data module): their contents were not compared with the data root's."]
        refused = changes.lines() if same_run else [f"changed: {c}" for c in changes.changed]
        if not refused:
            return []
        listed = "\n".join(f"  - {line}" for line in refused)
        if not self.allow_data_change:
            raise DataError(
                f"the data under --data.data_path={str(mixture.train_root)!r} is not what the checkpoint read, so its "
                f"cursors would point at other samples:\n{listed}\nRestore the data as it was, give changed data a new "
                "shard id (a new folder number), or set --data.allow_data_change=true to continue anyway (recorded in "
                "run.json).")
        return [f"--data.allow_data_change=true: continuing although the data changed since the checkpoint "
                f"({'; '.join(refused)}); the saved cursors now point at other samples of those shards."]

    def mix_schedule_plan(self, timeline: list, start_step: int, total_steps: int,
                      samples_per_step: int, start_samples: dict[str, int] | None = None) -> MixSchedulePlan:
        """The plan of a ``mix_schedule`` run from ``start_step`` to ``total_steps`` (``samples_per_step`` over all
        ranks), per phase and in total."""
        descriptions = {index: phase.describe() for index, phase in enumerate(self.mixture.schedule.phases)}
        return make_mix_schedule_plan(self.mixture.shards, timeline, descriptions, self.seq_length, start_step,
                                  total_steps, samples_per_step, self.max_passes, start_samples)

    def val_datasets(self, default_samples: int | None = None) -> dict[str, HeldOutBlocks]:
        """Each domain's fixed held-out set: its first ``val_samples_per_domain`` samples (else
        ``default_samples``, else all), for domains with at least one sample, in domain order."""
        cap = self.val_samples_per_domain if self.val_samples_per_domain is not None else default_samples
        return domain_sets(self.mixture.val_shards, self.block_tokens, cap)

    def val_dataloaders(self) -> dict[str, DataLoader]:
        """One loader per domain that has held-out shards, in domain order."""
        return {
            domain: DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0)
            for domain, dataset in self.val_datasets().items()
        }

    def val_dataloader(self) -> DataLoader:
        """All held-out data (each domain's fixed set, concatenated) for litgpt's single validation loss."""
        from torch.utils.data import ConcatDataset

        datasets = list(self.val_datasets().values())
        if not datasets:
            # litgpt's pretrain loop validates unconditionally and cannot take None; say what is missing instead
            raise DataError(
                f"no held-out shards for validation under {self.mixture.val_root or 'the data root'} "
                "(--data.val_data_path). litgpt pretrain needs validation data: make it with 'midtrain prepare "
                "--val_fraction 0.01' (or point --data.val_data_path at held-out shards)."
            )
        return DataLoader(ConcatDataset(datasets), batch_size=self.batch_size, shuffle=False, num_workers=0)
