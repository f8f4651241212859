"""``midtrain mix --replay RUN/step-XXXXXXXX``: the mixture decisions a ``data.mix_controller`` run took up to a
checkpoint, written as a ``data.mix_schedule`` block; a run with that schedule and no controller reads the identical
stream (the same samples in every batch, the same ledger, the same losses)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from midtrain.data.mix_controller import MixController
from midtrain.data.mix_schedule import Phase
from midtrain.data.spec import MIXTURE_KEYS
from midtrain.errors import ConfigError
from midtrain.publish import check_output_file, write_text_atomic

FLAG = "--replay"


def mix_replay(replay: Path, out: Path | None = None) -> dict:
    """Print the ``mix_schedule`` block that replays a controlled run's decisions up to ``replay``.

    Args:
        replay: A checkpoint folder of a run with ``data.mix_controller`` (``RUN/step-XXXXXXXX`` or ``RUN/final``).
        out: Also write the run's whole config with the block in place of its mixture and controller (and
            ``out_dir`` set to the run's plus ``-replay-step<N>``, N the step replayed to), ready for ``midtrain
            pretrain --config``. A new file: an existing one is refused.
    """
    from midtrain.train import checkpoint_files as files
    from midtrain.train.restore import load_checkpoint_payload

    if out is not None:
        out = check_output_file(Path(out), "--out")
    checkpoint = files.checkpoint_folder(replay, FLAG)
    state = load_checkpoint_payload(checkpoint.model_file, FLAG).get("train_dataloader")
    saved = state.get("controller") if isinstance(state, dict) else None
    if saved is None:
        raise ConfigError(f"{FLAG}={str(replay)!r}: its run has no --data.mix_controller (its mixture is in its "
                          "config already), so there are no decisions to replay. Name a checkpoint of a controlled "
                          "run.")
    config = _run_config(checkpoint.path)
    init_args = dict(((config.get("data") or {}).get("init_args")) or {})
    split = init_args.get("domain_split", "equal")
    schedule = [Phase(start_step=step, mix_weights_str=text, domain_split=split).record()
                for step, text in MixController.replay_phases(saved)]
    block = yaml.safe_dump({"mix_schedule": schedule}, sort_keys=False)
    print(f"# {len(schedule) - 1} decision(s) of the run in {checkpoint.path.parent}, up to step {checkpoint.step:,}, "
          "as --data.mix_schedule:\n# put it in data.init_args in place of mix_controller and the prior's mixture key; "
          "a run with it and no controller reads the identical stream.")
    print(block, end="")
    if out is not None:
        replayed = copy.deepcopy(config)
        for key in (*MIXTURE_KEYS, "mix_controller"):  # the schedule replaces the prior's mixture and its controller
            init_args.pop(key, None)
        replayed["data"]["init_args"] = {**init_args, "mix_schedule": schedule}
        if replayed.get("out_dir"):
            # named after the step replayed to: replays to two steps are two runs, never one folder's
            replayed["out_dir"] = f"{str(replayed['out_dir']).rstrip('/')}-replay-step{checkpoint.step}"
        write_text_atomic(Path(out), yaml.safe_dump(replayed, sort_keys=False))
        print(f"# the run's config with this schedule: {out}")
    return {"mix_schedule": schedule}


def _run_config(folder: Path) -> dict:
    path = folder / "hyperparameters.yaml"
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{FLAG}={str(folder)!r}: its config ({path}) cannot be read ({exc}).") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{FLAG}={str(folder)!r}: {path} holds no config mapping.")
    return config
