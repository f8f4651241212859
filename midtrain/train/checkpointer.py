"""Writing checkpoints in litgpt's layout, atomically, on any number of ranks.

``<out_dir>/step-XXXXXXXX/`` (or ``final/``) holds ``lit_model.pth`` (model, optimizer, ``train_dataloader``
cursors, ``iter_num``, ``step_count``, as litgpt's pretrain saves it), ``model_config.yaml``,
``hyperparameters.yaml``, the tokenizer files, ``ledger.json`` and ``checkpoint.json``. litgpt's own tools
(``convert_pretrained_checkpoint``, ``generate``, ``finetune``) read it as one of theirs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from litgpt.config import Config
from litgpt.utils import save_config

from midtrain.distributed import get_logger
from midtrain.tokenizer import CHECKPOINT_TOKENIZER_FILES
from midtrain.train import checkpoint_files as files
from midtrain.train.run_dir import write_json_atomic

log = get_logger(__name__)


class Checkpointer:
    def __init__(
        self,
        fabric,
        out_dir: Path,
        model_config: Config,
        tokenizer_files: dict[str, bytes],
        hyperparameters: dict,
        keep_last: int | None,
        keep_steps: set[int],
    ) -> None:
        self.fabric, self.out_dir, self.model_config = fabric, out_dir, model_config
        self.tokenizer_files, self.hyperparameters = tokenizer_files, hyperparameters
        self.keep_last, self.keep_steps = keep_last, keep_steps
        self._published: tuple[int, Path] | None = None  # the step folder this process published last

    def save(self, state: dict, step: int, final: bool, info: dict, ledger: dict) -> Path:
        fabric = self.fabric
        name = files.FINAL if final else files.step_dir_name(step)
        staging, target = files.partial_dir(self.out_dir, name), self.out_dir / name
        error: OSError | None = None
        if fabric.global_rank == 0:
            try:  # no inodes or no permission fail here, like a full disk a moment later: the same exit, requeued
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
            except OSError as exc:
                error = exc
        same_state = final and self._published is not None and self._published[0] == step
        if fabric.strategy.reduce_boolean_decision(error is None, all=True):
            try:
                if not same_state:
                    fabric.save(staging / files.MODEL_FILE, state)
                elif fabric.global_rank == 0:  # final/ of the step just published: its files linked, not written again
                    files.link_files(self._published[1], staging)
            except OSError as exc:  # a full disk, a quota, a lost mount
                error = exc
            fabric.barrier()
            if fabric.global_rank == 0 and error is None:
                try:
                    self._write_records(staging, step, final, info, ledger)
                    if final:
                        files.keep_finished(self.out_dir)
                    files.publish(staging, target)
                except OSError as exc:
                    error = exc
        # every rank learns whether the save worked, so none waits for the others in a collective that never comes
        if not fabric.strategy.reduce_boolean_decision(error is None, all=True):
            if fabric.global_rank == 0:
                shutil.rmtree(staging, ignore_errors=True)
            raise CheckpointWriteError(
                f"saving {target.name} failed ({error if error is not None else 'on another rank'}). The earlier "
                "checkpoints are intact: free space (or fix the file system) and rerun with --resume=auto.")
        fabric.print(f"Saved checkpoint {target}")
        self._published = None if final else (step, target)
        if fabric.global_rank == 0:
            self._prune()
        return target

    def _prune(self) -> None:
        """Retention after a published save: a folder that cannot be removed is said, and the save still counts."""
        try:
            removed = files.prune(self.out_dir, self.keep_last, self.keep_steps)
        except OSError as exc:
            log.warning("Could not remove an old checkpoint (--train.keep_last_checkpoints): %s. The new checkpoint is "
                        "published; remove the old one by hand.", exc)
            return
        for path in removed:
            log.info("Removed old checkpoint %s (--train.keep_last_checkpoints=%s)", path, self.keep_last)

    def _write_records(self, staging: Path, step: int, final: bool, info: dict, ledger: dict) -> None:
        save_config(self.model_config, staging)
        (staging / "hyperparameters.yaml").write_text(yaml.safe_dump(self.hyperparameters, sort_keys=False))
        for file_name, content in self.tokenizer_files.items():
            (staging / file_name).write_bytes(content)
        write_json_atomic(staging / "ledger.json", ledger)
        write_json_atomic(staging / files.INFO_FILE, {**info, "step": step, "final": final})


def tokenizer_files(tokenizer_dir: Path | None, start_checkpoint: Path | None) -> tuple[dict[str, bytes], str | None]:
    """The tokenizer files every checkpoint gets, read once (a starting checkpoint may be pruned later): from
    ``tokenizer_dir``, else from the checkpoint the run starts from; and what to say about it, if anything."""
    folder, note = tokenizer_dir, None
    if folder is None and start_checkpoint is not None:
        if any((start_checkpoint / name).is_file() for name in CHECKPOINT_TOKENIZER_FILES):
            folder = start_checkpoint
            note = (
                f"no --tokenizer_dir: the checkpoints get the tokenizer files of {start_checkpoint}, where this run "
                "starts."
            )
        else:
            note = (f"no --tokenizer_dir, and {start_checkpoint} holds no tokenizer files: the checkpoints will carry "
                    "none (litgpt's generate and finetune look for them there). Set --tokenizer_dir.")
    if folder is None:
        return {}, note
    return {
        name: (folder / name).read_bytes() for name in CHECKPOINT_TOKENIZER_FILES if (folder / name).is_file()
    }, note


class CheckpointWriteError(Exception):
    """A checkpoint could not be written; the run stops to be resumed from the last one that was."""
