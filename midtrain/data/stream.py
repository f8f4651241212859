"""The mixed training stream as a PyTorch DataLoader with ``state_dict``/``load_state_dict``.

Each rank's stream is the schedule of ``midtrain.data.sample_order`` over the shards with positive weight; DataLoader
worker w produces the batches b with ``b % num_workers == w`` (the order in which PyTorch collects them), so the
sequence does not depend on the number of workers. The loader's main process counts the batches it hands out
and so knows the exact state to save, whatever the workers have prefetched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from midtrain.data.content import identity_record, shard_identity
from midtrain.data.mix_schedule import MixTimeline
from midtrain.data.plan import DEFAULT_MAX_PASSES
from midtrain.data.shard_reader import ShardReader
from midtrain.data.stream_io import Transition
from midtrain.data.stream_state import StreamTracker
from midtrain.data.token_check import out_of_vocabulary


class MixedStream(IterableDataset):
    """Endless samples (integer tensors of ``block_tokens`` tokens, in the shard's own width) of one rank's
    stream, starting from ``start`` (a tracker snapshot)."""

    def __init__(self, tracker: StreamTracker, readers: Sequence[ShardReader], batch_size: int,
                 vocab_size: int | None = None) -> None:
        self.tracker = tracker
        self.readers = list(readers)
        self.batch_size = batch_size
        self.vocab_size = vocab_size
        """Token ids must lie below it (the model's padded vocabulary); checked per sample, a few µs each."""
        self.start: dict = tracker.snapshot()
        self.set_reorders()

    def set_reorders(self) -> None:
        """Each shard's reader reads in the order the tracker holds (after a loaded state, the reorders it carries)."""
        for reader, reorders in zip(self.readers, self.tracker.reorders, strict=True):
            reader.set_reorders(reorders)

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        tracker = self.tracker.at(self.start)  # this worker's own copy, run through every batch
        batch = 0
        while not tracker.clock.paused():  # a segment not known yet ends this iteration (the loop starts the next)
            mine = batch % workers == worker
            picks = tracker.advance(self.batch_size, positions=mine)
            if mine:
                for member, stream_pos in picks:
                    sample = self.readers[member].read(stream_pos)
                    if self.vocab_size is not None and sample.max() >= self.vocab_size:
                        raise out_of_vocabulary(
                            self.readers[member].shard, stream_pos, int(sample.max()), self.vocab_size
                        )
                    yield torch.from_numpy(sample)
            batch += 1


class MixedStreamLoader(DataLoader):
    """A DataLoader over a ``MixedStream`` whose state is exact at batch granularity. Its state also carries the
    identity of every shard read so far (``midtrain.data.content``), and ``data_check``, when set, is shown a saved
    state before it is loaded (it raises if the data changed; its notices are kept in ``data_notices``)."""

    def __init__(self, stream: MixedStream, num_workers: int, pin_memory: bool = False,
                 on_disk_ids: Sequence[str] = (), data_check: Callable[[dict], list[str]] | None = None,
                 max_passes: float | None = None) -> None:
        super().__init__(stream, batch_size=stream.batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=False)
        self.tracker = stream.tracker
        self.last_transitions: list[Transition] = []
        self.on_disk_ids = list(on_disk_ids) or list(self.tracker.ids)
        self.data_check = data_check
        self.data_notices: list[str] = []
        self.max_passes = DEFAULT_MAX_PASSES if max_passes is None else max_passes
        self._members = {shard.id: shard for shard in self.tracker.members}
        self._identities: dict[str, dict] = {}  # each shard's manifest is read once per process
        self._carried_identities: dict[str, dict] = {}
        self._last_members: list[int] = []

    # -- what training asks of the stream ---------------------------------------------------------------------
    @property
    def decisions(self) -> MixTimeline | None:
        """The timeline, when its next segments are decided during the run (an online mixture), else None."""
        source = self.tracker.clock.source
        return source if source.takes_decisions else None

    def batch_domains(self) -> list[str]:
        """The domain of each sample of the last batch handed out (recorded when the run decides its mixture)."""
        return [self.tracker.members[m].domain for m in self._last_members]

    def decide(self, step: int, signal: dict[str, float | None], remaining_samples: int):
        """Take the decision due at ``step`` (the stream paused there) from ``signal``, with each domain held
        within ``max_passes`` over the ``remaining_samples`` (all ranks) to the run's end; read on under it."""
        tracker, source = self.tracker, self.tracker.clock.source
        read = [(shard, tracker.consumed(i), tracker.samples_per_pass[i]) for i, shard in enumerate(tracker.members)]
        decision = source.decide(step, signal, source.capacity(read, remaining_samples, self.max_passes))
        tracker.extend()
        return decision

    def __iter__(self):
        """The batches up to the next segment not known yet (a decision not taken), else endless."""
        # workers start from the batches actually handed out, not from what earlier workers prefetched
        self.dataset.start = self.tracker.snapshot()
        record = self.decisions is not None
        for batch in super().__iter__():
            self._last_members = self.tracker.advance(self.batch_size, members=record)
            yield batch

    def __len__(self) -> int:
        """Batches per rank in one *epoch*, taken to be as many samples as the used shards hold once. The stream
        itself is endless; this serves litgpt's ``lr_warmup_fraction`` ("a fraction of an epoch")."""
        tracker = self.tracker
        return max(1, math.ceil(sum(tracker.samples_per_pass) / tracker.world_size / self.batch_size))

    def state_dict(self) -> dict:
        state = self.tracker.state_dict()
        read = dict(self._carried_identities)
        for shard_id, entry in state["shards"].items():
            if shard_id in self._members and entry["consumed"] > 0:
                if shard_id not in self._identities:
                    self._identities[shard_id] = shard_identity(self._members[shard_id])
                read[shard_id] = self._identities[shard_id]
        state["data_identity"] = identity_record(read, self.on_disk_ids)
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.data_check is not None:
            self.data_notices = self.data_check(state)
        saved = (state.get("data_identity") or {}).get("shards") or {} if isinstance(state, dict) else {}
        # shards read before but not read now keep their identity, so a later branch that reads them again is checked
        self._carried_identities = {i: r for i, r in saved.items() if i not in self._members}
        self.last_transitions = self.tracker.load_state_dict(state)
        self.dataset.set_reorders()

    def ledger(self) -> dict:
        return self.tracker.ledger()

    def domain_tokens(self) -> dict[str, int]:
        return self.tracker.domain_tokens()


def build_train_loader(
    tracker: StreamTracker,
    block_tokens: int,
    batch_size: int,
    seed: int,
    num_workers: int,
    vocab_size: int | None = None,
    on_disk_ids: Sequence[str] = (),
    data_check: Callable[[dict], list[str]] | None = None,
    pin_memory: bool = False,
    max_passes: float | None = None,
) -> MixedStreamLoader:
    readers = [ShardReader(shard, block_tokens, seed) for shard in tracker.members]
    return MixedStreamLoader(MixedStream(tracker, readers, batch_size, vocab_size), num_workers, pin_memory,
                             on_disk_ids=on_disk_ids, data_check=data_check, max_passes=max_passes)
