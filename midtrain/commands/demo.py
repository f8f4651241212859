"""``midtrain demo``: the whole idea on a laptop — corpus, tokenizer, shards, plan, trunk, three branches, report."""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def demo(out_dir: Path = Path("demo_out"), branch_step: int | None = None, size: Literal["full", "tiny"] = "full",
         num_workers: int = 2) -> int:
    """Run the demo: a trunk on prose, branches adding code or math (and a main-only control), per-domain losses.

    Builds four domains of text from this Python's standard library (nothing is downloaded), trains a byte-level BPE
    tokenizer, prepares train and held-out shards with ``midtrain prepare``, prints the ``midtrain mix`` plan, trains
    the trunk (``pretrain_configs/demo/trunk.yaml``) to the branch point, trains the branches
    (``midtrain_configs/demo/{code,math,control}.yaml``; both links to the package's ``midtrain/demo/configs/``, so
    an installed wheel runs the demo too) to the shared horizon, and writes ``summary.md`` and
    ``loss_by_domain.png`` into ``out_dir``; then scores every checkpoint with ``midtrain eval`` (``eval/``: the
    table and per-domain plots, plus two small SFT sets) and compares the domains and SFT sets with
    ``midtrain similarity`` (``similarity/``). Running it again reuses what is done (data, runs, scores).

    Args:
        out_dir: Where everything goes (raw text, tokenizer, shards, runs, report).
        branch_step: The trunk step the branches start from (default: the configs' own, step 240 of 480).
        size: ``full`` (a few minutes on 2 CPU cores) or ``tiny`` (seconds; a smoke test of every stage).
        num_workers: Processes for tokenization.
    """
    from midtrain.commands.dispatch import run_command
    from midtrain.demo.pipeline import run_demo

    return run_demo(Path(out_dir), branch_step, size, num_workers, run_command)
