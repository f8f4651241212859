"""Config groups for ``midtrain pretrain``: litgpt's ``train``/``eval`` keys plus ours (budgets, LR schedules,
checkpoint retention), with the spellings of the paper's fork accepted.

No ``from __future__ import annotations`` here: jsonargparse reads these annotations to build the CLI.
"""

from dataclasses import dataclass, field
from typing import Literal

from litgpt.args import EvalArgs as LitEvalArgs
from litgpt.args import LogArgs as LitLogArgs
from litgpt.args import TrainArgs as LitTrainArgs

from midtrain.field_docs import document_fields
from midtrain.train.gold import GoldSet

LRSchedulerName = Literal["cosine", "wsd", "linear", "constant", "decay"]
DecayShape = Literal["linear", "sqrt", "cosine"]



@document_fields
@dataclass
class AverageArgs:
    """Weight averaging in the run (``train.average``): the uniform average of the weights taken every
    ``every_steps`` steps over the run's last ``last_steps`` (OLMo-core's merge of the last N steps), or an
    exponential moving average from ``start_step``. One copy of the weights (float32) rides along, carried in every
    checkpoint, so a resumed run ends with the same average; it is written as a litgpt checkpoint in
    ``out_dir/average/`` at every save and at the end."""

    last_steps: int | None = None
    """Average over the run's last N optimizer steps (the uniform form)."""
    every_steps: int = 1
    """With ``last_steps``: take the weights every K steps (the steps that are multiples of K)."""
    ema_decay: float | None = None
    """The exponential form instead: ``avg = d × avg + (1 - d) × weights`` after every step, e.g. 0.999."""
    start_step: int | None = None
    """With ``ema_decay``: the step whose weights start the EMA (default the run's first step)."""


@document_fields
@dataclass
class TrainArgs(LitTrainArgs):
    """litgpt's training arguments plus midtrain's. A *step* is an optimizer step; an *iteration* is one
    forward/backward on one micro-batch (``global_batch_size / (micro_batch_size * ranks)`` iterations per step)."""

    log_interval: int = 1
    """Optimizer steps between log lines; ``train/loss`` is the mean over them (the same across a resume)."""
    max_tokens: int | None = None
    """The run's whole length in tokens (over its lineage: a branch keeps its trunk's), the LR schedule's horizon;
    alternative to ``max_steps``."""
    epochs: int | None = None
    """litgpt's; refused by midtrain pretrain (the length comes from the token budget)."""
    max_norm: float | None = None
    """Clip the gradients' total norm to this (unset: no clipping); a non-finite norm stops the run."""
    min_lr: float = 6e-5
    """The LR the schedule decays to (cosine, wsd, linear, decay)."""

    lr_warmup_steps: int | None = None
    """Optimizer steps of linear warmup. With neither this nor ``lr_warmup_fraction`` set, litgpt's 2000 (capped at
    the run's length)."""
    lr_warmup_fraction: float | None = None
    """Warmup as a fraction of the run's total steps (the horizon), instead of ``lr_warmup_steps``."""
    max_steps: int | None = None
    """Total optimizer steps of the run: the LR schedule's horizon (alternative to ``max_tokens``)."""
    max_additional_steps: int | None = None
    """Stop after this many optimizer steps in this invocation (saving a checkpoint); the horizon is unchanged."""
    max_iters: int | None = None
    """The paper fork's cap: total micro-batch iterations. Sets the horizon when neither ``max_tokens`` nor
    ``max_steps`` is given; otherwise the run also stops when it is reached."""
    max_time: float | None = None
    """Seconds of training in this invocation; then save and exit with the 'preempted' status, to be resumed."""
    lr_scheduler: LRSchedulerName = "cosine"
    """``cosine``; ``wsd`` (warmup, stable, decay); ``linear``; ``constant``; ``decay`` (from the LR in effect where
    this run starts, e.g. a branch point, down to ``min_lr`` at the horizon: an anneal)."""
    lr_decay_shape: DecayShape | None = None
    """The shape of the decay of ``wsd`` and ``decay``: ``linear`` (default), ``sqrt`` (1 - sqrt of the decay's
    progress, Hägele et al. 2024) or ``cosine`` (half a cosine)."""
    steps_from_branch: int | None = None
    """The run's length counted from its branch point (``--branch_from``'s step): it ends that many optimizer steps
    later, the LR schedule's horizon (an anneal's budget), instead of ``max_steps``/``max_tokens``."""
    tokens_from_branch: int | None = None
    """As ``steps_from_branch``, in tokens (whole steps of ``global_batch_size × max_seq_length``)."""
    stable_steps: int | None = None
    """``wsd``: steps at the peak after warmup; decay starts after them."""
    decay_fraction: float | None = None
    """``wsd``: fraction of the total steps spent decaying, at the end (instead of ``stable_steps``; default 0.1)."""
    max_lr: float | None = None
    """Peak LR. Default: the optimizer's ``lr``. Given, it replaces the optimizer's ``lr``."""
    lr_warmup_iters: int | None = None
    """Warmup in micro-iterations; with it (or ``lr_horizon_iters``) the LR is computed per micro-iteration, as
    litgpt's pretrain and the paper's fork do (``cosine`` and ``constant`` only). Written by ``midtrain port``."""
    lr_horizon_iters: int | None = None
    """The cosine's horizon in micro-iterations when it differs from the run's length (the paper's fork used
    976,560); ``min_lr`` past it. Default: the run's length."""
    lr_iter_offset: int | None = None
    """With the per-micro-iteration LR: micro-iterations added to ``step × micro-batches per step`` before the LR is
    computed. ``midtrain port`` writes it for a branch whose parent's iteration count is off this run's step grid
    (a parent trained with other batch settings), so the LR of every step is the fork's. Default 0."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass instead of keeping them (under one
    device, DDP and FSDP alike): less memory for longer sequences or larger micro-batches, at about one more forward
    pass of compute; the losses and gradients are the same."""
    rewarm_steps: int = 0
    """After a branch whose optimizer starts fresh (a Hugging Face ``branch_from``, or ``reset_optimizer``), the LR
    rises linearly from 0 to the schedule's over this many steps from the branch point, rebuilding Adam's moments
    before the schedule continues (what OLMoE's maintainers suggest for anneals from weights-only checkpoints)."""
    reset_optimizer: bool = False
    """Start with a fresh optimizer (no moments from the checkpoint) while weights, step, LR position and data
    cursors continue: needed to change the optimizer class at a branch."""
    keep_last_checkpoints: int | None = None
    """Keep only the newest N ``step-*`` checkpoints (plus ``keep_checkpoint_steps``); default keep all."""
    keep_checkpoint_steps: list[int] = field(default_factory=list)
    """Steps whose checkpoints are always kept (e.g. the branch points 20000, 30000, 40000, 50000)."""
    average: AverageArgs | None = None
    """Average the weights in the run (see its keys); written to ``out_dir/average/``."""

    # the paper fork's dialect and its keys, last: a native config needs none of them
    dialect: Literal["auto", "fork", "midtrain"] = "auto"
    """How the LR schedule and stop keys are read. ``fork``: as the paper's fork read them (see docs/fork.md; every
    reproduced quirk is printed at start-up); ``midtrain``: midtrain's own meaning; ``auto``: ``fork`` for a config
    naming ``litgpt.data.ShardedMixedDataset``, setting a fork-only key, or giving its length only as
    ``max_iters``/``max_additional_steps``."""
    init_lr: float | None = None
    """(fork dialect) The fork's key; the fork never used it. Ignored with a warning."""
    initial_sampling_rate: str | None = None
    """(fork dialect) The fork's adaptive-sampling key (unused by its pretraining); ignored with a warning."""
    episode_length: float | None = None
    """(fork dialect) The fork's adaptive-sampling key; ignored with a warning."""
    freeze_sampling_rate: bool | None = None
    """(fork dialect) The fork's adaptive-sampling key; ignored with a warning."""
    data_scheduler: str | None = None
    """(fork dialect) The fork's key for its unused data scheduler; ignored with a warning."""

    def __post_init__(self) -> None:
        # litgpt's checks raise plain ValueErrors during parsing; ours are collected in ``midtrain.train.budget``
        # and reported together with the key and the fix.
        pass


@document_fields
@dataclass
class EvalArgs(LitEvalArgs):
    """litgpt's evaluation arguments. ``max_iters`` × ``train.micro_batch_size`` held-out samples per domain (the
    first ones on disk, or ``data.val_samples_per_domain``) form each domain's fixed validation set, the same
    whatever the number of ranks."""

    interval: int = 1000
    """Optimizer steps between validations."""
    max_iters: int = 100
    """Batches of ``train.micro_batch_size`` held-out samples per domain: the size of each domain's fixed
    validation set (``data.val_samples_per_domain`` sets it in samples instead); 0 turns validation off (said)."""
    max_new_tokens: int | None = None
    """litgpt's, for fine-tuning; refused by midtrain pretrain (pretraining generates nothing)."""
    evaluate_example: str | int = "first"
    """litgpt's, for fine-tuning; refused by midtrain pretrain unless left at ``first``."""
    gold_sets: list[GoldSet] = field(default_factory=list)
    """Gold-answer sets scored at each evaluation: SFT JSON (``{name, json_path, prompt_style}``) or offline
    lm-eval multiple-choice tasks (``{name, task, task_paths, num_fewshot}``), the first ``max_items`` (100) items
    each; logged as ``gold/<name>/logprob``, ``bpb`` (and ``acc``, ``gold_prob`` for tasks), as ``midtrain eval
    --gold_sets`` scores them."""


@document_fields
@dataclass
class LogArgs(LitLogArgs):
    """The metric logger's settings: wandb's project, run and group (``logger_name: wandb`` only); litgpt's
    LitLogger keys are refused (midtrain logs to tensorboard, csv or wandb)."""
