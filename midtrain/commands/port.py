"""``midtrain port``: write a native midtrain config from a config of the paper's fork, with the same schedule."""

from __future__ import annotations

from pathlib import Path

import yaml

from midtrain.config_files import read_yaml_mapping
from midtrain.errors import ConfigError
from midtrain.train.checkpoint_files import step_of
from midtrain.train.fork_dialect import ForkStart, dialect_of, resolve_fork_schedule
from midtrain.train.fork_port import native_config, start_iteration
from midtrain.train.optimizer import configured_lr as optimizer_configured_lr


def port(
    fork_config: Path,
    output: Path,
    devices: int | None = None,
    num_nodes: int = 1,
    branch_from: str | None = None,
    start_step: int | None = None,
    overwrite: bool = False,
) -> int:
    """Write a native midtrain config from a paper-fork config, printing what changed and why.

    The native config pins what the fork left implicit: the peak LR (``train.max_lr`` and the optimizer's ``lr``),
    the schedule in micro-iterations (``lr_warmup_iters``, ``lr_horizon_iters``, as the fork computed them), the
    absolute end (``max_steps``), ``branch_from`` instead of a checkpoint copied into ``out_dir`` with
    ``resume: true``, the device count, and midtrain's class path. Its LR equals the fork dialect's at every step.

    Args:
        fork_config: The fork's YAML config.
        output: Where to write the native config.
        devices: GPUs per node the run uses (the fork's schedule is counted in micro-iterations, which depend on it).
            Default: the config's ``devices`` if it is a number.
        num_nodes: Nodes the run uses.
        branch_from: For a config with ``resume: true`` (the paper's branches): the trunk checkpoint it continues,
            ``<trunk out_dir>/step-XXXXXXXX``. Its step is read from the folder name.
        start_step: The step the run starts at, when ``branch_from`` is not a ``step-XXXXXXXX`` folder.
        overwrite: Replace an existing ``output``.
    """
    from midtrain.commands.parsing import call_with_args
    from midtrain.commands.pretrain import pretrain

    source = read_yaml_mapping(fork_config, "--fork_config")
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConfigError(f"--output={str(output)!r} exists. Choose another path or set --overwrite=true.")
    world_size = _world_size(source, devices, num_nodes)
    train_dict = dict(source.get("train") or {})
    # read as 'midtrain pretrain' reads it (one reader, one typing: the paper's `min_lr: 1e-6` is a YAML string)
    train = call_with_args(pretrain, ["--config", str(fork_config)])["train"]
    dialect, why = dialect_of(train)
    if dialect != "fork":
        raise ConfigError(f"--fork_config={str(fork_config)!r} is not in the paper fork's dialect ({why}): it already "
                          f"runs with midtrain's meaning, so there is nothing to port. Run it as it is: 'midtrain "
                          f"pretrain --config {fork_config}'.")
    if train.lr_scheduler == "decay":
        raise ConfigError(
            f"--fork_config={str(fork_config)!r} uses the fork's lr_scheduler decay (exponential from the restored "
            "optimizer's "
            "LR), which has no native form. Run it as it is: 'midtrain pretrain' reads it in the fork's dialect.")
    per_step = train.micro_batch_size * world_size
    if train.global_batch_size % per_step:
        raise ConfigError(
            f"--devices: global_batch_size {train.global_batch_size} is not a multiple of micro_batch_size "
            f"{train.micro_batch_size} × {world_size} rank(s). Give the device count the run uses."
        )
    accumulation = train.global_batch_size // per_step
    step0 = _start_step(source, branch_from, start_step)
    budget_steps = None
    if train.max_steps is not None:
        budget_steps = train.max_steps
    elif train.max_tokens is not None:
        seq_length = seq_length_of(source, f"--fork_config={fork_config}") or 2048
        budget_steps = train.max_tokens // (train.global_batch_size * seq_length)
    configured_lr = optimizer_configured_lr(source.get("optimizer") or "AdamW")
    it0, it0_note = start_iteration(branch_from, step0, accumulation)
    resolved = resolve_fork_schedule(train, accumulation, ForkStart(step0, it0, configured_lr or 1e-3, None,
                                                                   configured_lr), budget_steps)

    native, changes = native_config(source, train_dict, train.lr_scheduler, resolved, accumulation, world_size,
                                    num_nodes, step0, it0, it0_note, branch_from)

    header = "".join(f"#   - {line}\n" for line in changes)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(f"# Ported from {fork_config} by 'midtrain port': the same schedule, in midtrain's own keys.\n"
                      f"{header}" + yaml.safe_dump(native, sort_keys=False))
    print(f"Wrote {output}. Changes:")
    print("\n".join(f"  - {line}" for line in changes))
    return 0


def _world_size(source: dict, devices: int | None, num_nodes: int) -> int:
    if devices is None:
        devices = source.get("devices")
        if not isinstance(devices, int) or isinstance(devices, bool):
            raise ConfigError("--devices is needed: the config does not pin a device count, and the fork's schedule is "
                              "counted in micro-iterations, which depend on it (the paper used 8 GPUs on one node).")
    if not isinstance(devices, int) or devices < 1 or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ConfigError(f"--devices={devices!r} and --num_nodes={num_nodes!r} must be positive integers.")
    return devices * num_nodes


def _start_step(source: dict, branch_from: str | None, start_step: int | None) -> int:
    if start_step is not None:
        if start_step < 0:
            raise ConfigError(f"--start_step={start_step!r} must be 0 or more.")
        return start_step
    if branch_from:
        path = Path(branch_from)
        step = step_of(path.parent.name if path.suffix == ".pth" else path.name)
        if step is None:
            raise ConfigError(f"--branch_from={branch_from!r} is not a step-XXXXXXXX folder; give --start_step too.")
        return step
    if source.get("resume") is True:
        raise ConfigError(
            "the config continues a checkpoint (resume: true), as the paper's branches did. Give the trunk "
            "checkpoint it continues: --branch_from <trunk out_dir>/step-XXXXXXXX (or --start_step N)."
        )
    return 0


def seq_length_of(config: dict, where: str) -> int | None:
    """The context length a pretrain config trains with: train.max_seq_length, else the model's block_size (the
    model as ``midtrain.train.model_rule`` resolves it for every command)."""
    train = config.get("train") or {}
    if train.get("max_seq_length"):
        return int(train["max_seq_length"])
    if config.get("model_name") or config.get("model_config"):
        from midtrain.train.model_rule import resolve_model_config

        model, note = resolve_model_config(config.get("model_name"), config.get("model_config"))
        if note:
            print(f"Note: {note}")
        return model.block_size
    return None
