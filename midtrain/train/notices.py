"""What a run says at start-up about settings it reads in a way a user may not expect (printed in the WARNING block,
in ``--dry_run``, and recorded in ``run.json``), and the one-run-per-folder rule. Pure logic over the resolved
config, the budget, the data module and the starting checkpoint's record; nothing here touches an accelerator."""

from __future__ import annotations

from typing import Any

from midtrain.errors import ConfigError
from midtrain.train import run_dir
from midtrain.train.budget import Budget
from midtrain.train.continuity import mixture_changes


def clamps_and_gaps(train: Any, budget: Budget, mixture) -> list[str]:
    """Settings the run cannot honour as written, said instead of applied silently (``mixture``: the data module's
    resolved mixture)."""
    notes = []
    if isinstance(train.lr_warmup_steps, int) and train.lr_warmup_steps > budget.total_steps:
        notes.append(
            f"--train.lr_warmup_steps={train.lr_warmup_steps:,} is longer than the run ({budget.total_steps:,} "
            "steps): the warmup is cut to the run's length, so the LR never reaches its peak-then-decay shape."
        )
    if not mixture.val_shards:
        notes.append("no held-out shards (--data.val_data_path, or a 'val' folder beside 'train'): no validation loss "
                     "will be logged. Make them with 'midtrain prepare --val_fraction 0.01'.")
    if train.save_interval is None and budget.max_time_s is None:
        notes.append("--train.save_interval is unset: checkpoints are written only when the run stops.")
    phases = mixture.schedule.phases if mixture.schedule is not None else ()
    late = [(k, p) for k, p in enumerate(phases) if p.start_step >= budget.total_steps]
    if late:
        notes.append(f"--data.mix_schedule[{', '.join(str(k) for k, _ in late)}] start(s) at step "
                     f"{', '.join(f'{p.start_step:,}' for _, p in late)}, at or after the run's end (step "
                     f"{budget.total_steps:,}): never read.")
    beyond = sorted(s for s in train.keep_checkpoint_steps if s > budget.total_steps)
    if beyond:
        notes.append(f"--train.keep_checkpoint_steps {beyond} lie past the run's end (step {budget.total_steps:,}): no "
                     "checkpoint is written there.")
    return notes


def validation_gaps(eval_max_iters: int, data, val_sets: dict, default_max_iters: int = 100) -> list[str]:
    """Held-out data that exists but will not be validated on, said instead of dropped silently; and an
    ``eval.max_iters`` that ``data.val_samples_per_domain`` overrides."""
    domains = list(dict.fromkeys(s.domain for s in data.mixture.val_shards))
    if not domains:
        return []  # said by clamps_and_gaps
    notes = []
    if data.val_samples_per_domain is not None and eval_max_iters != default_max_iters:
        notes.append(f"--eval.max_iters={eval_max_iters} is unused: --data.val_samples_per_domain="
                     f"{data.val_samples_per_domain} sets each domain's validation set. Set one of them.")
    if data.val_samples_per_domain == 0 or (data.val_samples_per_domain is None and eval_max_iters == 0):
        key = "--data.val_samples_per_domain=0" if data.val_samples_per_domain == 0 else "--eval.max_iters=0"
        return notes + [f"{key} turns validation off: no val/<domain>/loss is logged, although {', '.join(domains)} "
                        "have held-out shards."]
    short = [d for d in domains if d not in val_sets]
    if not short:
        return notes
    return notes + [f"the held-out shards of {', '.join(short)} hold no whole sequence of {data.block_tokens:,} tokens "
            f"(--train.max_seq_length + 1): no val/<domain>/loss for {'it' if len(short) == 1 else 'them'}. Prepare "
            "more "
            "held-out data (midtrain prepare --val_fraction) or lower --train.max_seq_length."]


def continuation_notices(info: dict, budget: Budget, start_step: int, val_identities: dict[str, str]) -> list[str]:
    """What a resume or branch changes against its checkpoint (``info``: its ``checkpoint.json``) that the LR and
    data tables do not show."""
    notes = []
    old_batch = info.get("global_batch_size")
    if isinstance(old_batch, int) and old_batch != budget.global_batch_size:
        old_tokens = info.get("tokens_per_step", old_batch * budget.seq_length)
        notes.append(f"--train.global_batch_size={budget.global_batch_size:,} differs from the checkpoint's "
                     f"{old_batch:,}: each step now reads {budget.tokens_per_step:,} tokens (was {old_tokens:,}, "
                     f"{budget.tokens_per_step / old_tokens:.3g}×), so the LR schedule, counted in steps, passes over "
                     "another number of tokens from here on.")
    saved_sets = info.get("val_sets") or {}
    swapped = [d for d in val_identities if d in saved_sets and saved_sets[d] != val_identities[d]]
    if swapped:
        notes.append(f"the held-out set of {', '.join(swapped)} differs from the one the checkpoint's run validated on "
                     f"(other shards, contents or size): val/<domain>/loss before and after step {start_step:,} are "
                     "not comparable.")
    return notes


def previous_config(out_dir) -> dict | None:
    """The config of the last invocation recorded in a run folder (run.json, else its config.yaml)."""
    record = run_dir.load_run(out_dir) or {}
    if not record.get("invocations"):
        return None
    return next((i["config"] for i in reversed(record["invocations"]) if isinstance(i.get("config"), dict)),
                None) or run_dir.load_config(out_dir)


def check_one_run_per_folder(out_dir, config: dict) -> None:
    """A folder that already holds a run is resumed only by that run's config: another mixture there is another
    experiment (two configs that share an out_dir), which would continue, or find finished, the first one."""
    previous = previous_config(out_dir)
    if previous is None:
        return
    changed = mixture_changes(previous, config)
    if (previous.get("anneal") or None) != (config.get("anneal") or None):
        raise ConfigError(
            f"--out_dir={str(out_dir)!r} holds another run of an anneal set (run.json records anneal "
            f"{previous.get('anneal')!r}; this config gives {config.get('anneal')!r}): a run folder holds one run. "
            "Give this config an --out_dir of its own (midtrain anneal names one per candidate and seed).")
    if changed:
        raise ConfigError(
            f"--out_dir={str(out_dir)!r} holds a run with another mixture ({'; '.join(changed)}; run.json records it): "
            "a run folder holds one run, so this config would continue (or find finished) another experiment. Give "
            "this config an --out_dir of its own; to change a run's mixture, branch from its checkpoint into a new "
            "--out_dir (--branch_from) or plan the change with --data.mix_schedule.")


def edited_phases(out_dir, config: dict, start_step: int) -> list[str]:
    """``mix_schedule`` phases the run has already begun that this invocation's config writes differently."""
    old = (((previous_config(out_dir) or {}).get("data") or {}).get("init_args") or {}).get("mix_schedule")
    new = (((config.get("data") or {}).get("init_args")) or {}).get("mix_schedule")
    if not isinstance(old, list) or not isinstance(new, list):
        return []
    edited = [k for k, phase in enumerate(old) if isinstance(phase, dict) and phase.get("start_step", 0) < start_step
              and (k >= len(new) or new[k] != phase)]
    if not edited:
        return []
    return [
        f"--data.mix_schedule[{', '.join(map(str, edited))}] differ from what the run read (those phases began before "
        f"step {start_step:,}): the ledger and the loss curve record the phases as they were read, not as this "
        "config now writes them. Restore them to keep the config true to the run."
    ]
