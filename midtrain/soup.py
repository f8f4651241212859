"""Model soups: the weighted average of the parameters of several checkpoints of one model (OLMo 2 souped anneals
with different data orders, OLMo 3 its midtraining runs), written as a litgpt checkpoint.

The ingredients are memory-mapped and averaged one tensor at a time (in float32, then cast to the ingredients'
dtype), so the memory the soup allocates is the output model plus one float32 tensor, whatever the number of
ingredients. A soup folder is a run folder: ``final/`` (the checkpoint) and ``run.json``, whose ``soup`` entry lists
every ingredient with its weight, lineage, anneal record and ledger, so ``midtrain eval`` scores it as a run and
``midtrain analyze`` compares it with its ingredients.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from midtrain.errors import ConfigError
from midtrain.publish import publish
from midtrain.tokenizer import CHECKPOINT_TOKENIZER_FILES
from midtrain.train import checkpoint_files as files
from midtrain.train import run_dir

FLAG = "--checkpoints"
SOUP = "soup"
COPIED = ("model_config.yaml", "config.json", *CHECKPOINT_TOKENIZER_FILES)


@dataclass(frozen=True)
class Ingredient:
    checkpoint: Path
    weight: float
    step: int | None
    run: dict
    """The ingredient's run's ``run.json`` (empty for a checkpoint no midtrain run wrote)."""
    info: dict

    def record(self) -> dict:
        ledger = _read_json(self.checkpoint / "ledger.json")
        return {"checkpoint": str(self.checkpoint.resolve()), "weight": self.weight, "step": self.step,
                "run_id": self.run.get("run_id"), "out_dir": self.run.get("out_dir", str(self.checkpoint.parent)),
                "lineage": self.info.get("lineage") or self.run.get("lineage") or [],
                "anneal": self.run.get("anneal"), "ledger": ledger}


def normalised_weights(weights: list[float] | None, count: int) -> list[float]:
    """Uniform without ``weights``; else each weight over their sum (positive and finite, one per checkpoint)."""
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ConfigError(f"--weights gives {len(weights)} weight(s) for {count} checkpoint(s). Give one per "
                          "checkpoint, in the same order, or leave --weights out for a uniform soup.")
    bad = [w for w in weights if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)
           or w <= 0]
    if bad:
        raise ConfigError(f"--weights={weights!r}: {bad[0]!r} is not a positive number. Every weight must be > 0 "
                          "(they are normalised to sum to 1).")
    total = float(sum(weights))
    return [w / total for w in weights]


def read_ingredients(checkpoints: list[Path], weights: list[float] | None) -> list[Ingredient]:
    """The ingredients, checked before anything is read in full: each a checkpoint folder, all of one model
    (``model_config.yaml``, field by field) and one tokenizer (file by file)."""
    if len(checkpoints) < 2:
        raise ConfigError(f"{FLAG} names {len(checkpoints)} checkpoint(s); a soup averages two or more. Name the "
                          "checkpoint folders, e.g. --checkpoints '[runs/a/final, runs/b/final]'.")
    shares = normalised_weights(weights, len(checkpoints))
    seen: dict[Path, str] = {}
    out = []
    for value, share in zip(checkpoints, shares, strict=True):
        checkpoint = files.checkpoint_folder(value, FLAG)
        if not (checkpoint.path / "model_config.yaml").is_file():
            raise ConfigError(f"{FLAG}: {checkpoint.path} holds no model_config.yaml, so it cannot be told to be the "
                              "same model as the others. Name litgpt checkpoints.")
        real = checkpoint.path.resolve()
        if real in seen:
            raise ConfigError(f"{FLAG} names {real} twice ({seen[real]} and {value}): to weigh it more, give it a "
                              "larger --weights entry.")
        seen[real] = str(value)
        run = _read_json(checkpoint.path.parent / run_dir.RUN_FILE) or {}
        out.append(Ingredient(checkpoint.path, share, checkpoint.step, run, checkpoint.info))
    first = out[0]
    config = yaml.safe_load((first.checkpoint / "model_config.yaml").read_text()) or {}
    for other in out[1:]:
        theirs = yaml.safe_load((other.checkpoint / "model_config.yaml").read_text()) or {}
        differing = sorted(k for k in set(config) | set(theirs) if config.get(k) != theirs.get(k))
        if differing:
            key = differing[0]
            raise ConfigError(f"{FLAG}: {other.checkpoint} is another model than {first.checkpoint} (model_config "
                              f"{key}: {theirs.get(key)!r} against {config.get(key)!r}"
                              f"{f', and {len(differing) - 1} more field(s)' if len(differing) > 1 else ''}); only "
                              "checkpoints of one model can be averaged. Soup checkpoints of one trunk's branches.")
        for name in CHECKPOINT_TOKENIZER_FILES:
            mine, yours = first.checkpoint / name, other.checkpoint / name
            if mine.is_file() != yours.is_file() or (mine.is_file() and mine.read_bytes() != yours.read_bytes()):
                raise ConfigError(f"{FLAG}: {other.checkpoint} has another tokenizer than {first.checkpoint} ({name} "
                                  f"{'differs' if mine.is_file() and yours.is_file() else 'is in only one'}): "
                                  "averaged weights would read the tokens of neither. Soup checkpoints trained with "
                                  "one tokenizer.")
    return out


def check_soup_dir(out_dir: Path) -> Path:
    """A new folder (or an empty one): a soup overwrites nothing."""
    from midtrain.publish import check_output_dir

    out_dir = check_output_dir(Path(out_dir), "--out_dir")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"--out_dir={str(out_dir)!r} is not empty; a soup is written into a new folder and "
                          "overwrites nothing. Name a new folder.")
    return out_dir


def _model_state(payload, path: Path) -> dict:
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not state:
        raise ConfigError(f"{FLAG}: {path} holds no model state dict.")
    return state


def average_states(ingredients: list[Ingredient]) -> dict:
    """The weighted average of the ingredients' model state dicts, tensor by tensor from memory-mapped files; an
    integer tensor (a buffer) is taken from the first ingredient when all hold the same, else refused."""
    import torch

    from midtrain.train.safe_load import load_checkpoint_file

    states = [_model_state(load_checkpoint_file(i.checkpoint / files.MODEL_FILE, FLAG), i.checkpoint)
              for i in ingredients]
    keys = list(states[0])
    for ingredient, state in zip(ingredients[1:], states[1:], strict=True):
        if set(state) != set(keys):
            missing = sorted(set(keys) ^ set(state))
            raise ConfigError(f"{FLAG}: {ingredient.checkpoint} holds other tensors than {ingredients[0].checkpoint} "
                              f"({missing[0]} is in only one): not one model. Soup checkpoints of one model.")
    out = {}
    with torch.no_grad():
        for key in keys:
            tensors = [s[key] for s in states]
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) > 1:
                raise ConfigError(f"{FLAG}: tensor {key} has shapes {sorted(shapes)} across the checkpoints: not one "
                                  "model. Soup checkpoints of one model.")
            if not tensors[0].is_floating_point():
                if any(not torch.equal(tensors[0], t) for t in tensors[1:]):
                    raise ConfigError(f"{FLAG}: the integer tensor {key} differs across the checkpoints and cannot "
                                      "be averaged.")
                out[key] = tensors[0].clone()
                continue
            total = torch.zeros(tensors[0].shape, dtype=torch.float32)
            for ingredient, tensor in zip(ingredients, tensors, strict=True):
                total.add_(tensor, alpha=ingredient.weight)
            out[key] = total.to(tensors[0].dtype)
            del total
    return out


def write_soup(ingredients: list[Ingredient], out_dir: Path) -> Path:
    """Average the ingredients into ``out_dir/final/`` and write ``out_dir/run.json``; published atomically (a
    killed soup leaves no folder). Returns the checkpoint folder."""
    import torch

    staging = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / files.FINAL).mkdir(parents=True)
    try:
        state = average_states(ingredients)
        torch.save({"model": state}, staging / files.FINAL / files.MODEL_FILE)
        del state
        for name in COPIED:
            if (ingredients[0].checkpoint / name).is_file():
                shutil.copy2(ingredients[0].checkpoint / name, staging / files.FINAL / name)
        steps = {i.step for i in ingredients}
        step = steps.pop() if len(steps) == 1 else max(s for s in steps if s is not None)
        record = {"ingredients": [i.record() for i in ingredients], "weights": [i.weight for i in ingredients]}
        tokens = {i.info.get("tokens") for i in ingredients}
        info = {"step": step, **({"tokens": tokens.pop()} if len(tokens) == 1 and None not in tokens else {}),
                SOUP: {"checkpoints": [str(i.checkpoint.resolve()) for i in ingredients],
                                     "weights": record["weights"], "steps": [i.step for i in ingredients]}}
        run_dir.write_json_atomic(staging / files.FINAL / files.INFO_FILE, info)
        run = run_dir.new_run(out_dir)
        run[SOUP] = record
        run["invocations"].append(run_dir.invocation_record(step, 1, None))
        run_dir.write_json_atomic(staging / run_dir.RUN_FILE, run)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked before), replaced by the complete soup
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / files.FINAL


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
