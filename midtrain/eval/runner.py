"""Scoring every pending (checkpoint, set) pair into the results table, one checkpoint loaded at a time.

Nothing here parses arguments: ``midtrain.commands.eval`` resolves them into an ``EvalJob``.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from midtrain.data.domains import DomainRegistry
from midtrain.errors import DataError
from midtrain.eval.model_loading import load_model
from midtrain.eval.named_sets import NamedSet, sft_dataset, shard_blocks
from midtrain.eval.results import ResultsTable
from midtrain.eval.scoring import block_batches, loss_sums, sft_batches
from midtrain.eval.targets import EvalTarget
from midtrain.eval.tasks import TaskSettings, run_tasks
from midtrain.progress import bar_wanted


@dataclass
class EvalJob:
    targets: list[EvalTarget]
    heldout: dict
    """Domain -> fixed held-out blocks (``HeldOutBlocks``); empty to skip held-out loss."""
    seq_length: int
    tokens_per_domain: int
    micro_batch_size: int
    device: torch.device
    dtype: torch.dtype
    registry: DomainRegistry
    sets: list[NamedSet] = field(default_factory=list)
    tasks: TaskSettings | None = None
    task_manager: object = None
    tokenizer_dir: Path | None = None
    heldout_root: Path | None = None
    heldout_bytes: dict = field(default_factory=dict)
    """(domain, tokenizer) -> the UTF-8 bytes its scored held-out tokens decode to (bits per byte), computed once
    per job."""
    gold_sets: list = field(default_factory=list)
    """``GoldSet``s scored as training's ``eval.gold_sets`` scores them."""
    gold_prepared: dict = field(default_factory=dict)
    """(tokenizer, context length) -> the gold sets' tokenized items, prepared once per job."""

    @property
    def heldout_settings(self) -> str:
        return f"heldout:seq={self.seq_length}:tokens={self.tokens_per_domain}:{self.heldout_root}"

    def wanted(self) -> list[tuple[str, str, str]]:
        """(kind, name, settings) of everything each checkpoint is to be scored on (SFT files are hashed here, once)."""
        wanted = [("heldout", d, self.heldout_settings) for d in self.heldout]
        wanted += [("set", s.name, s.settings(self.seq_length, self.tokens_per_domain)) for s in self.sets]
        wanted += [("gold", g.name, g.settings()) for g in self.gold_sets]
        if self.tasks is not None:
            wanted += [("task", t, self.tasks.settings()) for t in self.tasks.tasks]
        return wanted


def base_row(target: EvalTarget) -> dict:
    finetune = target.finetune
    return {"run": target.run, "parent": target.lineage.parent_run, "branch_step": target.lineage.branch_step,
            "step": target.step, "tokens_seen": target.tokens_seen, "checkpoint": target.key,
            "base_run": finetune.get("base_run"), "base_step": finetune.get("base_step"),
            "sft_task": finetune.get("task"), "seed": finetune.get("seed")}


def loss_rows(total: float, count: int, what: str, text_bytes: int | None = None) -> list[dict]:
    """Loss and perplexity rows, and bits per byte where the bytes the scored tokens decode to are known."""
    if count == 0:
        raise DataError(f"{what}: no token is left to score (every target is masked or truncated). Use --sets "
                        "mask_prompt: false, shorter examples, or a model with a longer block size.")
    loss = total / count
    rows = [{"metric": "loss", "value": loss, "eval_tokens": count},
            {"metric": "ppl", "value": math.exp(min(loss, 700.0)), "eval_tokens": count}]
    if text_bytes:
        rows.append({"metric": "bpb", "value": total / math.log(2) / text_bytes, "eval_tokens": count})
    return rows


def heldout_bytes(job: EvalJob, domain: str, tokenizer) -> int | None:
    """The bytes a domain's scored held-out targets decode to (once per job); None without a tokenizer."""
    if tokenizer is None:
        return None
    from midtrain.tokenizer import decoded_bytes, tokenizer_identity

    key = (domain, tokenizer_identity(tokenizer))  # runs with other tokenizers in one table decode differently
    if key not in job.heldout_bytes:
        blocks = job.heldout[domain]
        job.heldout_bytes[key] = decoded_bytes(tokenizer, [blocks[i][1:] for i in range(len(blocks))])
    return job.heldout_bytes[key]


def run_eval(job: EvalJob, table: ResultsTable) -> dict[str, int]:
    """Score what the table lacks; returns counts of checkpoints scored and skipped and of rows written."""
    from tqdm.auto import tqdm

    wanted = job.wanted()
    work = [(target, [w for w in wanted if not table.done(target.key, *w)]) for target in job.targets]
    work = [(target, items) for target, items in work if items]
    counts = {"checkpoints": len(work), "skipped": len(job.targets) - len(work), "rows": 0}
    need_tokenizer = bool(job.tasks or job.gold_sets) or any(s.json_path is not None for s in job.sets)
    show_bar, scored, total = bar_wanted(sys.stderr, os.environ), 0, sum(len(items) for _, items in work)
    with tqdm(total=total, desc="midtrain eval", unit="set", dynamic_ncols=True, disable=not show_bar) as bar:
        for target, _ in work:
            items = table.pending(target.key, wanted)  # another evaluation of the same table may have done some
            if not items:
                counts["checkpoints"] -= 1
                counts["skipped"] += 1
                continue
            loaded = load_model(target.checkpoint, job.device, job.dtype, job.tokenizer_dir, need_tokenizer)
            rows = []
            task_items = [name for kind, name, _ in items if kind == "task"]
            gold_items = [name for kind, name, _ in items if kind == "gold"]
            for kind, name, settings in items:
                if kind in ("task", "gold"):
                    continue
                bar.set_postfix_str(f"{target.run} step {target.step}: {name}")
                text_bytes = None
                if kind == "heldout":
                    measured = loss_sums(
                        loaded.model, block_batches(job.heldout[name], job.micro_batch_size), job.device
                    )
                    text_bytes = heldout_bytes(job, name, loaded.tokenizer)
                else:
                    named = next(s for s in job.sets if s.name == name)
                    measured = _score_set(named, loaded, job)
                rows += [{**base_row(target), "kind": kind, "name": name, "settings": settings, **r}
                         for r in loss_rows(*measured, f"{target.checkpoint} on {name}", text_bytes)]
                bar.update()
            if gold_items:
                bar.set_postfix_str(f"{target.run} step {target.step}: gold {', '.join(gold_items)}")
                rows += [{**base_row(target), "kind": "gold", **r} for r in _gold_rows(job, loaded, gold_items)]
                bar.update(len(gold_items))
            if task_items:
                from midtrain.eval.lm_eval_adapter import LitGPTHarnessModel

                bar.set_postfix_str(f"{target.run} step {target.step}: lm-eval {', '.join(task_items)}")
                harness = LitGPTHarnessModel(loaded.model, loaded.tokenizer, job.device, loaded.block_size,
                                             batch_size=job.tasks.batch_size)
                rows += [{**base_row(target), "kind": "task", "settings": job.tasks.settings(), **r}
                         for r in run_tasks(harness, replace(job.tasks, tasks=task_items), job.task_manager)]
                bar.update(len(task_items))
            table.append(rows)
            counts["rows"] += len(rows)
            scored += len(items)
            if not show_bar:  # a log file gets one line per checkpoint instead of a bar's redraws
                print(f"  {target.run} step {target.step}: {len(items)} set(s) scored ({scored}/{total})", flush=True)
            del loaded
    return counts


def _score_set(named: NamedSet, loaded, job: EvalJob) -> tuple[float, int]:
    if named.json_path is not None:
        dataset = sft_dataset(named, loaded.tokenizer, loaded.block_size)
        return loss_sums(loaded.model, sft_batches(dataset, job.micro_batch_size), job.device)
    max_samples = max(1, job.tokens_per_domain // job.seq_length)
    blocks = shard_blocks(named, job.seq_length + 1, max_samples, job.registry)
    return loss_sums(loaded.model, block_batches(blocks, job.micro_batch_size), job.device)


def _gold_rows(job: EvalJob, loaded, names: list[str]) -> list[dict]:
    """The gold sets' rows (name, settings, metric, value, eval_tokens: gold answer tokens), scored by the code that
    scores training's ``eval.gold_sets``."""
    from midtrain.tokenizer import tokenizer_identity
    from midtrain.train.gold import prepare_gold_sets
    from midtrain.train.gold_scoring import answer_tokens, gold_metrics, gold_sums

    context = min(job.seq_length, loaded.block_size)  # training's context (train.max_seq_length), as it scores them
    key = (tokenizer_identity(loaded.tokenizer), context)
    if key not in job.gold_prepared:
        job.gold_prepared[key] = prepare_gold_sets(job.gold_sets, loaded.tokenizer, context, "--gold_sets")
    prepared = [p for p in job.gold_prepared[key] if p.name in names]
    sums = gold_sums(loaded.model, prepared, context, job.micro_batch_size, job.device)
    metrics = gold_metrics(prepared, sums)
    return [{"name": p.name, "settings": p.settings, "metric": metric, "value": value,
             "eval_tokens": answer_tokens(sums, s)}
            for s, p in enumerate(prepared) for metric, value in metrics[p.name].items()]
