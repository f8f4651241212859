"""What a run prints of itself: the start-up summary (also ``--dry_run``'s and ``midtrain mix --config``'s), the LR
schedule line, and the line a diverged run ends with. Pure formatting of a ``RunSetup``; nothing is computed here."""

from __future__ import annotations

from midtrain.data.mix_controller import mixture_text, moved_domains
from midtrain.data.plan import lr_weighted_plan, render_plan
from midtrain.data.stream_io import render_transitions
from midtrain.reports import format_table
from midtrain.train import checkpoint_files as files
from midtrain.train.continuity import render_optimizer_changes
from midtrain.train.devices import describe_strategy
from midtrain.train.lr_schedule import SHAPED_SCHEDULERS, IterationLRSchedule, LRSchedule
from midtrain.train.preemption import EXIT_DIVERGED
from midtrain.train.restore import StartKind


def describe(setup) -> str:
    """The start-up summary printed before training (and by ``--dry_run``); ``setup``: a ``RunSetup``."""
    b, start, devices = setup.budget, setup.start, setup.devices
    first_step = b.micro_batches(setup.start_iter)
    micro = (f"{b.accumulation_iters} micro-batch(es) of {b.micro_batch_size} per rank per step"
             + (f" (the first: {first_step})" if first_step != b.accumulation_iters else ""))
    lines = [
        f"Run folder: {setup.settings.out_dir.resolve()}",
        f"Model {setup.model_config.name}: {setup.parameters:,} parameters, context {b.seq_length:,} tokens",
        f"Devices: {devices.world_size} × {devices.accelerator} ({devices.devices} per node × {devices.num_nodes} "
        f"node(s)), strategy {describe_strategy(devices)}, precision {devices.precision}, "
        f"compile {'on' if devices.compile else 'off'}"
        + (", activation checkpointing per block" if setup.settings.train.activation_checkpointing else ""),
        f"Budget: {b.total_steps:,} steps × {b.global_batch_size:,} sequences × {b.seq_length:,} tokens = "
        f"{b.total_steps * b.tokens_per_step:,} tokens; {micro}"
        + (f"; the end is the branch point + {b.steps_from_branch:,} steps (--train.steps_from_branch/"
           "tokens_from_branch)" if b.steps_from_branch is not None else ""),
        f"This invocation: steps {setup.start_step:,} → {b.stop_step(setup.start_step):,}"
        + (f", at most {b.max_time_s:g} s" if b.max_time_s else ""),
        describe_schedule(setup.schedule, setup.start_step, b.stop_step(setup.start_step)),
    ]
    if setup.average is not None:
        lines.append(setup.average.describe())
    if setup.data.order_seed is not None:  # the order the samples come in, also when restored by a resume
        lines.append(f"Data order (--data.order_seed={setup.data.order_seed}): each shard's samples not yet read are "
                     "read in this seed's order (the same shares, none read twice or skipped)")
    lines += describe_gold_sets(setup)
    if setup.dialect == "fork":
        lines.insert(0, f"Dialect: the paper fork's. Why: {setup.dialect_reason}. Set --train.dialect=midtrain for "
                        "midtrain's meaning, or convert the config with 'midtrain port'.")
    if setup.lr_jump is not None and setup.lr_jump.intentional:
        lines.append(setup.lr_jump.describe())
    if setup.optimizer.changes:
        lines += ["Optimizer: the config's settings replace the checkpoint's (checkpoint -> config):",
                  render_optimizer_changes(setup.optimizer.changes)]
    if setup.notices:
        lines += ["", f"WARNING: {len(setup.notices)} setting(s) read in a way you may not expect:"]
        lines += [f"  - {notice}" for notice in setup.notices]
        lines.append("")
    if start.kind is StartKind.FRESH:
        auto = " (--resume=auto found no checkpoint in the run folder)" if setup.settings.resume == "auto" else ""
        lines.append(
            "Start: from scratch" + (f", weights from {start.initial_weights}" if start.initial_weights else "") + auto
        )
    else:
        lines.append(f"Start: {start.kind.value} from {start.checkpoint.path} (step {start.checkpoint.step:,})")
    if setup.data_start.mixture_changed:
        lines += ["Data mixture changed; shard cursors carried over by id:",
                  render_transitions(setup.data_start.transitions)]
    lines += ["", render_plan(setup.data_start.plan), *describe_lr_weighted(setup), *describe_controller(setup)]
    return "\n".join(lines)


def describe_lr_weighted(setup) -> list[str]:
    """The planned LR-weighted tokens per domain (each step's LR × its tokens) beside the planned tokens: where data
    arrives on the schedule, not only how much of it."""
    b = setup.budget
    if not setup.lr_weighted or b.total_steps <= setup.start_step or not setup.data_start.segments:
        return []
    weighted = lr_weighted_plan(setup.data_start.segments, setup.start_step, b.total_steps, b.tokens_per_step,
                                setup.schedule.lr_at)
    tokens = lr_weighted_plan(setup.data_start.segments, setup.start_step, b.total_steps, b.tokens_per_step,
                              lambda step: 1.0)
    total_weighted, total_tokens = sum(weighted.values()) or 1.0, sum(tokens.values()) or 1.0
    rows = [[d, f"{tokens[d]:,.0f}", f"{100 * tokens[d] / total_tokens:.1f} %", f"{weighted[d]:.4g}",
             f"{100 * weighted[d] / total_weighted:.1f} %"] for d in weighted]
    later = " (the online mixture's current shares to the end)" if setup.data_start.decisions is not None else ""
    return ["", f"Planned LR-weighted tokens (Σ over steps of the step's LR × its tokens, steps {setup.start_step:,} → "
                f"{b.total_steps:,}){later}; the ledger records what is read:",
            format_table(["domain", "tokens", "share", "LR-weighted tokens", "share"], rows,
                         [False, True, True, True, True])]


def describe_gold_sets(setup) -> list[str]:
    """What each evaluation's gold-answer sets cost, beside the held-out validation's forward tokens."""
    if not setup.gold_sets:
        return []
    block = setup.budget.seq_length
    heldout = setup.val_forward_tokens
    total = sum(g.forward_tokens(block) for g in setup.gold_sets)
    lines = [f"Gold sets (--eval.gold_sets), scored at each evaluation (every {setup.settings.eval.interval:,} steps): "
             f"{total:,} forward tokens" + (f", {total / heldout:.2f}× the held-out validation's {heldout:,}"
                                            if heldout else "")]
    for g in setup.gold_sets:
        kind = "multiple choice" if g.kind == "choice" else "SFT answers"
        cut = f"; {g.cut} item(s) cut at the start to fit the context" if g.cut else ""
        lines.append(f"  {g.name}: {len(g.items)} item(s), {kind}, {g.answer_tokens():,} gold answer tokens{cut}")
    return lines


def plan_header(setup) -> list[str]:
    """What ``midtrain mix --config run.yaml`` prints above the plan: the run's steps, its LR, what it may not
    expect, the cursors carried over and an online mixture's description."""
    b, start = setup.budget, setup.start
    end = b.stop_step(setup.start_step)
    started = "from scratch" if start.checkpoint is None else f"{start.kind.value} from {start.checkpoint.path}"
    lines = [f"The run in {setup.settings.out_dir}: steps {setup.start_step:,} → {end:,} of {b.total_steps:,} "
             f"({b.tokens_per_step:,} tokens per step), {started}", describe_schedule(setup.schedule, setup.start_step,
                                                                                       end)]
    lines += [f"WARNING: {notice}" for notice in setup.notices]
    if setup.data_start.mixture_changed:
        lines += ["Data mixture changed; shard cursors carried over by id:",
                  render_transitions(setup.data_start.transitions)]
    return lines + describe_controller(setup)


def describe_controller(setup) -> list[str]:
    """What a ``mix_controller`` run says of its mixture: the plan shown is the mixture from now on; later phases
    are decided during the run; the worst case of ``max_passes`` (a domain at ``max_weight`` to the end)."""
    mixture, state = setup.data.mixture, setup.data_start.decisions
    if mixture.controller is None or state is None:
        return []
    c = mixture.controller
    moved = moved_domains(c, mixture.prior)
    every = c.every_steps
    first = state["next_due"]
    reference = c.reference if isinstance(c.reference, str) else "the given losses"
    lines = ["", f"Mixture controller (--data.mix_controller): the plan reads the mixture in effect at step "
             f"{setup.start_step:,}; the later phases are decided during the run, every {every:,} steps from step "
             f"{first:,}, from {c.signal} (eta {c.eta:g}, reference {reference}, smoothing {c.smoothing:g}), moving "
             f"{', '.join(moved)} within [{c.min_weight:g}, {c.max_weight:g}] each."]
    if state["decisions"]:
        lines.append(f"  {len(state['decisions'])} decision(s) taken so far, the last at step "
                     f"{state['decisions'][-1]['step']:,}: {mixture_text(state['decisions'][-1]['after'])}.")
    plan = setup.data_start.plan
    if plan.total_samples:
        domain_weight: dict[str, float] = {}
        for row in plan.shards:
            domain_weight[row.domain] = domain_weight.get(row.domain, 0.0) + row.weight
        for d in moved:
            worst = max((row.start_samples + c.max_weight * row.weight / domain_weight[d] * plan.total_samples)
                        / row.samples for row in plan.shards if row.domain == d and row.weight > 0 and row.samples)
            verdict = (f"more than --data.max_passes={plan.max_passes:g}: the controller caps its share when a "
                       "decision would pass it (said in the decision's table)" if worst > plan.max_passes
                       else "within --data.max_passes")
            lines.append(f"  Worst case: {d} at max_weight {c.max_weight:g} from here to the end reads its fullest "
                         f"shard {worst:.2f} times, {verdict}.")
    return lines


def describe_schedule(s: LRSchedule | IterationLRSchedule, first_step: int, end_step: int) -> str:
    """The schedule's shape, and the LR at this invocation's first and last step with its share of the peak."""
    if isinstance(s, IterationLRSchedule):
        a = s.accumulation_iters
        text = (f"LR (per micro-iteration, {a} per step): {s.name}, peak {s.peak_lr:g}, min {s.min_lr:g}, warmup "
                f"{s.warmup_iters:,} micro-iterations ({s.warmup_steps:,.1f} steps), "
                + ("decays to a tenth at" if s.name == "exp_decay" else
                   "stable until" if s.name == "warmup_stable" else "horizon")
                + f" {s.horizon_iters:,} micro-iterations ({s.horizon_steps:,.1f} steps)")
    else:
        text = (f"LR: {s.name}, peak {s.peak_lr:g}, min {s.min_lr:g}, warmup {s.warmup_steps:,} steps, horizon "
                f"{s.total_steps:,} steps"
                + (f", decay from step {s.decay_start_step:,}" if s.decay_start_step is not None else "")
                + (f", {s.decay_shape} decay" if s.name in SHAPED_SCHEDULERS else "")
                + (f" from the LR {s.anchor_lr:.4g} of step {s.anchor_step:,}" if s.name == "decay"
                   and s.anchor_step else "")
                + (f"; rewarmed from 0 over {s.rewarm_steps:,} steps from step {s.rewarm_start:,} "
                   "(--train.rewarm_steps)" if s.rewarm_steps else ""))
    if end_step > first_step:
        def at(step: int) -> str:
            lr = s.lr_at(step)
            return f"step {step + 1:,}: {lr:.4g} ({100 * lr / s.peak_lr:.1f} % of peak)"

        text += f"\n    this invocation's first {at(first_step)}; last {at(end_step - 1)}"
    return text


def diverged_message(exc, out_dir) -> str:
    """The one line a run that diverged ends with: the first non-finite value, the last good checkpoint, what to do."""
    good = files.latest_checkpoint(out_dir)
    if good is not None:
        then = (f"the last good checkpoint is {good.path} (step {good.step:,}). Continue from it with a lower LR "
                "(--train.max_lr or --optimizer.init_args.lr) or gradient clipping (--train.max_norm)")
    else:
        then = ("the run has no checkpoint yet. Start it again with a lower LR (--train.max_lr or "
                "--optimizer.init_args.lr) or gradient clipping (--train.max_norm)")
    return (f"Diverged: {exc} (the first non-finite value); nothing from that step on was saved, and {then}; see "
            f"docs/training.md. Exiting with status {EXIT_DIVERGED} (not requeued: a rerun would diverge again).")
