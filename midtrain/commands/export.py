"""``midtrain export``: a checkpoint (or every checkpoint of a run) as Hugging Face model folders."""

from __future__ import annotations

from pathlib import Path


def export(source: Path, out_dir: Path, all_steps: bool = False, results: Path | None = None,
           tokenizer_dir: Path | None = None, max_shard_gb: float = 5.0, push_to_hub: str | None = None) -> int:
    """Write a folder that ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load with no
    other argument: ``config.json`` (GPT-NeoX for Pythia, or Llama), ``model.safetensors`` (sharded with an index
    above ``--max_shard_gb``), the tokenizer files, ``generation_config.json`` and a ``README.md`` model card with the
    checkpoint's lineage, its per-domain token ledger per stretch, its LR schedule, the data's identity and
    decontamination, and its rows of ``--results``.

    Everything is written under a hidden name and published by one rename; an existing ``--out_dir`` is refused.

    Args:
        source: A checkpoint folder (``runs/code/final``), or with ``--all_steps`` a run folder; also the first
            word after ``export``.
        out_dir: The new folder: the model (one checkpoint), or one model folder per checkpoint (``--all_steps``).
        all_steps: Export every checkpoint of the run: ``step-*``, ``final`` and ``average``, each its own folder.
        results: A ``midtrain eval`` table (``eval.csv``): each checkpoint's rows go into its model card.
        tokenizer_dir: The tokenizer, for checkpoints that carry none.
        max_shard_gb: Weights above this many GB are written in several files with an index.
        push_to_hub: After writing, upload each folder to this Hugging Face repo as a branch named after it
            (``final`` also to ``main``), with the token ``huggingface_hub`` finds (``HF_TOKEN`` or a login).
    """
    import shutil

    from midtrain.errors import ConfigError
    from midtrain.export.hf_folder import ExportSource, push, rows_for, run_sources, write_model_folder
    from midtrain.publish import check_output_dir, publish, sync_tree

    source, out_dir = Path(source), Path(out_dir)
    if out_dir.exists() or out_dir.is_symlink():
        raise ConfigError(f"--out_dir={str(out_dir)!r} exists; export writes a new folder and overwrites nothing. Name "
                          "a new folder, or remove it.")
    check_output_dir(out_dir, "--out_dir")
    if max_shard_gb <= 0:
        raise ConfigError(f"--max_shard_gb={max_shard_gb} must be positive.")
    if not source.is_dir():
        raise ConfigError(f"--source={str(source)!r} is not a folder. Name a checkpoint folder, or a run folder with "
                          "--all_steps.")
    table = []
    if results is not None:
        from midtrain.eval.results import read_rows

        table = read_rows(Path(results), "--results")
    sources = run_sources(source, "--source") if all_steps else [ExportSource(source, out_dir.name)]
    staging = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # a previous export killed midway
    try:
        for item in sources:
            target = staging / item.name if all_steps else staging
            written = write_model_folder(item, target, tokenizer_dir, rows_for(table, item.checkpoint),
                                         int(max_shard_gb * 1024**3), "--source")
            print(f"  {item.checkpoint} -> {out_dir / item.name if all_steps else out_dir}: {', '.join(written)}")
        for item in sources if all_steps else []:
            sync_tree(staging / item.name)  # publish syncs the top folder's files; these are one level down
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    folders = [out_dir / item.name for item in sources] if all_steps else [out_dir]
    print(f"Exported {len(folders)} checkpoint(s) to {out_dir}: load with AutoModelForCausalLM.from_pretrained"
          f"({str(folders[-1])!r}).")
    if push_to_hub:
        branches = push(folders, push_to_hub)
        print(f"Pushed to {push_to_hub}: branches {', '.join(branches)}.")
    return 0
