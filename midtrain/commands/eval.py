"""``midtrain eval``: score every checkpoint of one or many runs into one tidy table, with plots."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from midtrain.data.domains import DomainRegistry
from midtrain.errors import ConfigError
from midtrain.eval.inputs import first_run_config, heldout_sets, resolve_seq_length
from midtrain.eval.named_sets import NamedSet, check_sets
from midtrain.eval.targets import find_targets
from midtrain.train.gold import GoldSet, check_gold_sets


def evaluate(
    runs: str | list[str],
    out_dir: Path = Path("eval_out"),
    steps: list[int] | None = None,
    val_data_path: Path | None = None,
    heldout: bool = True,
    domains: list[str] | None = None,
    tokens_per_domain: int = 1_000_000,
    seq_length: int | None = None,
    micro_batch_size: int = 8,
    sets: list[NamedSet] | None = None,
    gold_sets: list[GoldSet] | None = None,
    tasks: str | list[str] | None = None,
    task_paths: Path | list[Path] | None = None,
    num_fewshot: int | None = None,
    limit: int | None = None,
    offline: bool = False,
    tokenizer_dir: Path | None = None,
    domain_prefixes: dict[str, str] | None = None,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
    precision: str | None = None,
    plot: bool = True,
) -> int:
    """Evaluate checkpoints: per-domain held-out loss, named validation sets and lm-evaluation-harness tasks.

    Every checkpoint (``step-*``, ``final``) of the runs matched by ``runs`` is scored on each domain's held-out
    shards (the first ``tokens_per_domain`` tokens, the same for every run), on each of ``sets`` and on ``tasks``.
    Rows (run, lineage, step, tokens seen, what, metric, value) are appended to ``out_dir/eval.csv`` and
    ``eval.json``; running again scores only what is missing. ``out_dir/plots/`` gets one loss plot per domain and
    set, runs overlaid from their branch points (a run's weight average, ``average/``, a star beside its line), and
    per run its mixture and LR over steps (``mixture_lr_<run>.png``).

    Args:
        runs: Run folders or checkpoint folders; shell globs (quoted) allowed, e.g. ``'demo_out/runs/*'``; one, or a
            list ``[a, b]``.
        out_dir: Where the table and plots go.
        steps: Only checkpoints at these steps (default all).
        val_data_path: Held-out shards (a folder of shards, or a data root with ``val/``); default the first run's
            ``--data.val_data_path`` (or ``<data.data_path>/val``) from its ``config.yaml``.
        heldout: Score the per-domain held-out loss.
        domains: Only these domains' held-out sets (default all found).
        tokens_per_domain: Tokens scored per domain (fewer if a domain's held-out data is smaller).
        seq_length: Tokens per scored sequence (default the first run's ``train.max_seq_length``, else the
            smallest block size among the checkpoints).
        micro_batch_size: Sequences per forward pass.
        sets: Named validation sets: SFT JSON (``{name, json_path, prompt_style, mask_prompt}``) or token shards
            (``{name, shards_path, domain}``).
        gold_sets: Gold-answer sets, as training's ``--eval.gold_sets`` scores them: SFT JSON (``{name, json_path,
            prompt_style}``) or offline lm-eval multiple-choice tasks (``{name, task, task_paths, num_fewshot}``),
            ``max_items`` (100) each; rows ``logprob``, ``bpb`` (and ``acc``, ``gold_prob`` for tasks).
        tasks: lm-evaluation-harness task names, a list or comma-separated (needs ``bash scripts/install.sh eval``).
        task_paths: Folders of local task YAMLs (e.g. ``dataset_path: json`` with local ``data_files``).
        num_fewshot: Few-shot examples for ``tasks`` (default each task's own).
        limit: At most this many examples per task.
        offline: Set ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` so the harness never touches the network.
        tokenizer_dir: Tokenizer for checkpoints that carry none (needed by ``sets`` with JSON and ``tasks``).
        domain_prefixes: Extra shard folder prefixes (as ``--data.domain_prefixes``); default the run's.
        accelerator: ``cpu``, ``cuda`` or ``auto``.
        precision: ``32-true``, ``bf16-true`` or ``16-true`` (default 32-true on CPU, bf16/16 on GPU).
        plot: Write the plots.
    """
    from midtrain.eval.model_loading import resolve_device, resolve_precision
    from midtrain.eval.results import ResultsTable
    from midtrain.eval.runner import EvalJob, run_eval
    from midtrain.eval.tasks import TaskSettings, task_manager
    from midtrain.train.gold import go_offline

    if offline:
        go_offline()
    runs = [runs] if isinstance(runs, str) else list(runs)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    task_paths = [task_paths] if isinstance(task_paths, (str, Path)) else task_paths
    sets, gold_sets = list(sets or []), list(gold_sets or [])
    check_sets(sets)
    check_gold_sets(gold_sets, "--gold_sets")
    if micro_batch_size < 1:
        raise ConfigError(f"--micro_batch_size={micro_batch_size} must be at least 1.")
    if tokens_per_domain < 1:
        raise ConfigError(f"--tokens_per_domain={tokens_per_domain} must be at least 1.")
    targets = find_targets(runs, steps)
    run_config = first_run_config(targets)
    data_args = (run_config.get("data") or {}).get("init_args") or {}
    registry = DomainRegistry.with_extra(
        domain_prefixes if domain_prefixes is not None else data_args.get("domain_prefixes")
    )
    seq_length = resolve_seq_length(seq_length, targets, run_config)
    heldout_root, domain_sets = heldout_sets(heldout, val_data_path, data_args, domains, registry, seq_length,
                                             tokens_per_domain, optional=bool(sets or tasks or gold_sets))
    task_settings, manager = None, None
    if tasks:
        task_settings = TaskSettings(list(tasks), list(task_paths or []), num_fewshot, limit, micro_batch_size)
        manager = task_manager(task_settings)
    elif task_paths or num_fewshot is not None or limit is not None:
        raise ConfigError("--task_paths, --num_fewshot and --limit apply to --tasks, which is not set. Name the tasks "
                          "with --tasks, or remove them.")
    device = resolve_device(accelerator)
    job = EvalJob(targets, domain_sets, seq_length, tokens_per_domain, micro_batch_size, device,
                  resolve_precision(precision, device), registry, sets, task_settings, manager, tokenizer_dir,
                  heldout_root, gold_sets=gold_sets)
    table = ResultsTable(out_dir)
    heldout_note = f" ({seq_length}-token sequences, up to {tokens_per_domain:,} tokens each)" if domain_sets else ""
    print(f"Evaluating {len(targets)} checkpoint(s) of {len({t.run for t in targets})} run(s): "
          f"{len(domain_sets)} held-out domain(s){heldout_note}, {len(sets)} named set(s), "
          f"{len(gold_sets)} gold set(s), {len(tasks or [])} task(s) -> {table.csv_path}", flush=True)
    counts = run_eval(job, table)
    if counts["skipped"]:
        print(f"{counts['skipped']} checkpoint(s) already scored with these settings: skipped.")
    print(f"Wrote {counts['rows']} row(s) for {counts['checkpoints']} checkpoint(s) to {table.csv_path} and "
          f"{table.json_path}")
    from midtrain.eval.report import latest_table

    print(latest_table(table.rows, {t.key for t in targets}))
    if plot:
        from midtrain.eval.plots import plot_mixture_and_lr, plot_results

        written = plot_results(table.rows, Path(out_dir) / "plots")
        written += plot_mixture_and_lr({t.run: t.run_dir for t in targets}, Path(out_dir) / "plots")
        print(f"Plots: {len(written)} in {Path(out_dir) / 'plots'}")
    return 0
