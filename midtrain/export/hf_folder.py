"""A checkpoint as a folder ``transformers``' ``from_pretrained`` loads with no other argument: ``config.json``,
safetensors weights (sharded with an index above a size), the tokenizer files, ``generation_config.json`` and a
model card; a run as one such folder per checkpoint. Everything is written under a hidden name and published by
one rename, so no half-written folder is ever found under the name asked for."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from midtrain.errors import ConfigError
from midtrain.train import checkpoint_files as files

MIDTRAIN_RECORD = "midtrain.json"
"""The checkpoint's own record (``checkpoint.json``) and the ledger, beside the model card, for tools."""


@dataclass(frozen=True)
class ExportSource:
    """One checkpoint to export and the folder name it gets (``step-00001000``, ``final``, ``average``)."""

    checkpoint: Path
    name: str


def tokenizer_source(checkpoint: Path, tokenizer_dir: Path | None, flag: str) -> Path:
    """Where the tokenizer files come from: the checkpoint's own, else ``--tokenizer_dir``."""
    for folder in (checkpoint, tokenizer_dir):
        if folder is not None and (Path(folder) / "tokenizer_config.json").is_file() and any(
                (Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
            return Path(folder)
    raise ConfigError(f"{flag}: {checkpoint} holds no tokenizer (tokenizer.json or tokenizer.model with "
                      "tokenizer_config.json), which AutoTokenizer needs. Give --tokenizer_dir (the run's "
                      "tokenizer folder).")


def check_checkpoint(checkpoint: Path, flag: str) -> None:
    if not (checkpoint / files.MODEL_FILE).is_file():
        raise ConfigError(f"{flag}={str(checkpoint)!r} holds no {files.MODEL_FILE}. Name a checkpoint folder "
                          "(a run's step-*/, final/ or average/), or a run folder with --all_steps.")
    if not (checkpoint / "model_config.yaml").is_file():
        raise ConfigError(f"{flag}={str(checkpoint)!r} holds no model_config.yaml, so its architecture is unknown. "
                          "Export a checkpoint midtrain or litgpt wrote (they carry it).")


def run_sources(run_dir: Path, flag: str) -> list[ExportSource]:
    """Every checkpoint of a run folder: each ``step-*``, ``final`` and ``average``, in step order."""
    found = [ExportSource(info.path, info.path.name) for info in files.list_checkpoints(run_dir)]
    for extra in (files.FINAL, files.AVERAGE):
        if (run_dir / extra / files.MODEL_FILE).is_file() and all(s.name != extra for s in found):
            found.append(ExportSource(run_dir / extra, extra))
    if not found:
        raise ConfigError(f"{flag}={str(run_dir)!r} holds no checkpoint (step-*/, final/ or average/). Name a run "
                          "folder with --all_steps, or a checkpoint folder without it.")
    return found


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_model_folder(source: ExportSource, target: Path, tokenizer_dir: Path | None, rows: list[dict],
                       max_shard_bytes: int, flag: str) -> list[str]:
    """Write one model folder at ``target`` (which must not exist yet; the caller publishes it); returns what it
    wrote, by file name."""
    from litgpt.config import Config

    from midtrain.export.card import model_card
    from midtrain.tokenizer import CHECKPOINT_TOKENIZER_FILES, load_tokenizer
    from midtrain.train.hf_config import hf_config
    from midtrain.train.hf_weights import to_hf_state, write_safetensors
    from midtrain.train.safe_load import load_checkpoint_file

    checkpoint = source.checkpoint
    check_checkpoint(checkpoint, flag)
    config = Config.from_file(checkpoint / "model_config.yaml")
    tokenizer_folder = tokenizer_source(checkpoint, tokenizer_dir, flag)
    tokenizer = load_tokenizer(tokenizer_folder)
    hf = hf_config(config, tokenizer.bos_id, tokenizer.eos_id)
    payload = load_checkpoint_file(checkpoint / files.MODEL_FILE, flag)
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{flag}: {checkpoint / files.MODEL_FILE} holds no state dict.")
    hf_state = to_hf_state(config, state)
    hf["torch_dtype"] = str(next(iter(hf_state.values())).dtype).removeprefix("torch.")
    target.mkdir(parents=True)
    written = [p.name for p in write_safetensors(hf_state, target, max_shard_bytes)]
    (target / "config.json").write_text(json.dumps(hf, indent=2))
    generation = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "do_sample": False}
    (target / "generation_config.json").write_text(json.dumps(generation, indent=2))
    for name in CHECKPOINT_TOKENIZER_FILES:
        if name != "generation_config.json" and (tokenizer_folder / name).is_file():
            shutil.copy2(tokenizer_folder / name, target / name)
            written.append(name)
    info = _read_json(checkpoint / files.INFO_FILE) or {}
    run = _read_json(checkpoint.parent / "run.json")
    ledger = _read_json(checkpoint / "ledger.json")
    (target / "README.md").write_text(model_card(source.name, info, run, ledger, hf, rows, str(checkpoint)))
    (target / MIDTRAIN_RECORD).write_text(json.dumps({"checkpoint": str(checkpoint.resolve()), "info": info,
                                                      "ledger": ledger}, indent=2))
    return [*written, "config.json", "generation_config.json", "README.md", MIDTRAIN_RECORD]


def rows_for(table: list[dict], checkpoint: Path) -> list[dict]:
    """The results table's rows of one checkpoint (its own, not fine-tuned ones); for ``final/``, also the rows of
    the step folder of its step (the same weights, which ``midtrain eval`` scores once)."""
    key = checkpoint.resolve()
    step = (_read_json(checkpoint / files.INFO_FILE) or {}).get("step") if checkpoint.name == files.FINAL else None
    same = {key} | ({key.parent / files.step_dir_name(int(step))} if step is not None else set())
    return [r for r in table if r.get("checkpoint") and Path(r["checkpoint"]) in same and not r.get("base_run")]


def push(folders: list[Path], repo: str) -> list[str]:
    """Upload each folder as a branch named after it (``final`` also to ``main``) with ``huggingface_hub``; the token
    is the one ``huggingface_hub`` finds itself (``HF_TOKEN`` or its login), never read or written here."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    pushed = []
    for folder in folders:
        branches = [folder.name] + (["main"] if folder.name == files.FINAL else [])
        for branch in branches:
            if branch != "main":
                api.create_branch(repo, branch=branch, exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=str(folder), revision=branch,
                              commit_message=f"midtrain export: {folder.name}")
            pushed.append(branch)
    return pushed
