"""The arguments of ``midtrain pretrain`` as one record, handed from the command to the planning."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litgpt.config import Config


@dataclass
class RunSettings:
    """The command's arguments (litgpt's pretrain keys plus ours), as parsed."""

    model_name: str | None
    model_config: Config | None
    out_dir: Path
    precision: str | None
    initial_checkpoint_dir: Path | None
    resume: bool | str | Path
    data: Any
    train: Any
    eval: Any
    log: Any
    optimizer: str | dict
    devices: int | str
    num_nodes: int
    tokenizer_dir: Path | None
    logger_name: str
    seed: int
    branch_from: Path | None = None
    accelerator: str = "auto"
    compile: bool | None = None
    config_dump: dict = field(default_factory=dict)
