"""The data module's init args, free of torch so that planning and validation start fast.

``midtrain.data.ShardedMixedDataset`` takes exactly these fields; ``midtrain mix`` takes them as ``--data.*``.
"""


from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from midtrain.field_docs import document_fields


@document_fields
@dataclass
class MixtureArgs:
    """Where the shards are and how to mix them. Give the mixture in one of ``mix_weights_str``,
    ``mix_weights``, ``literal_weights_str`` or ``mix_config_path`` (optionally with ``proportional_sampling``),
    or as phases in ``mix_schedule``; with none of them, all training data comes from ``main``."""

    data_path: Path
    """Data root: numbered shard folders (1, 2, ...) are the main corpus, typed folders (c1, m1, ...) other
    domains. Without ``val_data_path``, ``data_path/train`` and ``data_path/val`` are used when ``train`` exists."""
    val_data_path: Path | None = None
    """Root of held-out shards in the same layout (one validation set per domain)."""
    mix_weights_str: str | None = None
    """Per-domain weights, e.g. ``"main:0.8,code:0.2"``; a domain's weight is split across its shards."""
    mix_weights: dict[str, float] | None = None
    """Per-domain weights as a mapping, e.g. ``{main: 0.8, code: 0.2}``."""
    literal_weights_str: str | None = None
    """Per-shard weights, e.g. ``"main/1:0.8,q1:0.1,q2:0.1"``."""
    mix_config_path: Path | None = None
    """JSON file ``{"weights": {"main": 0.88, "math": 0.12}}`` (the paper's format)."""
    proportional_sampling: bool = False
    """Weight each shard by its size in tokens; per-domain weights, if given, multiply these."""
    mix_schedule: list[dict] | None = None
    """Instead of one mixture: phases ``{start_step, <one mixture form>, ramp_steps}`` that change the mixture at
    optimizer steps inside the run, optionally ramping linearly from the mixture before (see
    ``midtrain.data.mix_schedule``). Needs ``midtrain pretrain`` (plain litgpt does not tell the data the step)."""
    mix_controller: dict | None = None
    """An online mixture: the mixture given above is the prior (the first phase); every ``every_steps`` steps the
    controller moves the domains' shares by their losses and starts a new phase, exact, logged and resumable (keys
    signal, every_steps, eta, reference, smoothing, min_weight, max_weight, domains, reset; see docs/data.md).
    Needs ``midtrain pretrain``; not with ``mix_schedule``."""
    domain_split: Literal["equal", "size"] = "equal"
    """How a domain's weight is split across its shards: equally, or by their sizes in tokens."""
    domain_prefixes: dict[str, str] = field(default_factory=dict)
    """Extra folder prefixes, e.g. ``{s: science}`` so that ``s1``, ``s2`` are science shards."""
    max_passes: float | None = None
    """Most passes (epochs) the plan may make over any shard; default 4 (see ``midtrain.data.plan``)."""
    sampling: Literal["exact", "random"] = "exact"
    """``exact``: every prefix of the stream holds each shard's share to within one sample. ``random``: an
    independent weighted draw per sample, like litdata's CombinedStreamingDataset (for parity with the paper)."""
    seed: int = 42
    """Seed for the per-shard shuffles (and the draws of ``sampling: random``)."""
    num_workers: int = 4
    """DataLoader worker processes per rank; the sample sequence does not depend on it."""
    allow_tokenizer_mismatch: bool = False
    """Train on shards whose manifest names another tokenizer than ``tokenizer_dir`` (refused by default)."""
    allow_data_change: bool = False
    """Resume (or branch) although shards the checkpoint read changed since (re-prepared, rewritten, removed or, for a
    resume, added): refused by default, since the saved cursors would point at other samples. Recorded in run.json."""
