"""Which process this is in a distributed run, without importing torch, and a rank-zero filter for logging.

Sources, in order: an initialised ``torch.distributed`` process group (if torch is already loaded), else the
launcher's environment (torchrun sets ``RANK``, Lightning ``GLOBAL_RANK``, both with ``WORLD_SIZE``). litdata
ignores ``RANK``; we do not.
"""

from __future__ import annotations

import logging
import os
import sys


def rank_and_world_size() -> tuple[int, int]:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", os.environ.get("GLOBAL_RANK", "0")))
    return (rank, world) if world > 1 else (0, 1)


class RankZeroFilter(logging.Filter):
    """Lets library messages through on global rank 0 only, so N ranks do not print N copies."""

    def filter(self, record: logging.LogRecord) -> bool:
        return rank_and_world_size()[0] == 0


def get_logger(name: str) -> logging.Logger:
    """A library logger that speaks on global rank 0 only (logger filters do not propagate, so each module's
    logger carries the filter itself)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RankZeroFilter) for f in logger.filters):
        logger.addFilter(RankZeroFilter())
    return logger
