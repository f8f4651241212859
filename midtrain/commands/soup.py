"""``midtrain soup``: average the parameters of several checkpoints of one model into a new run folder."""

from __future__ import annotations

from pathlib import Path


def soup(checkpoints: list[Path], out_dir: Path, weights: list[float] | None = None) -> int:
    """Average checkpoints of one model (uniform, or weighted) into ``out_dir/final/``, a litgpt checkpoint, with
    ``out_dir/run.json`` listing every ingredient's lineage, anneal record and ledger.

    The checkpoints are memory-mapped and averaged one tensor at a time, so the memory it allocates is about one
    model plus one tensor. Refused before anything is written: fewer than two checkpoints, a folder that is no
    checkpoint, ingredients of another model (``model_config.yaml``) or tokenizer, weights that are not positive,
    an ``out_dir`` that is not empty.

    Args:
        checkpoints: Checkpoint folders (``runs/a/final``, ``runs/b/step-00001000``), two or more.
        out_dir: A new folder for the soup: ``final/`` and ``run.json``; ``midtrain eval --runs out_dir`` scores it.
        weights: One positive weight per checkpoint, normalised to sum to 1 (default: uniform).
    """
    from midtrain.soup import check_soup_dir, read_ingredients, write_soup

    paths = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    out_dir = check_soup_dir(Path(out_dir))
    ingredients = read_ingredients(paths, weights)
    target = write_soup(ingredients, out_dir)
    for ingredient in ingredients:
        print(f"  {ingredient.weight:.4f} × {ingredient.checkpoint} (step {ingredient.step:,})")
    print(f"Wrote the soup of {len(ingredients)} checkpoints to {target} (run record: {out_dir / 'run.json'}).")
    return 0
