"""Reading a checkpoint file without running code: every ``lit_model.pth`` (ours, litgpt's, the paper fork's, one
downloaded from a stranger) is read with ``torch.load(weights_only=True)``, which builds tensors and plain values
(dicts, lists, numbers, strings, bytes) and refuses any other Python object instead of calling it. Everything the
three writers put in a checkpoint is of those kinds (weights, optimizer state, litdata's and midtrain's loader
state, counters), so no type needs allowing; a file that needs one is refused in one line naming the file and the
type."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from midtrain.errors import ConfigError

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class UnsafeCheckpoint(ConfigError):
    """A checkpoint file that would run code (or build arbitrary Python objects) to be loaded."""


def load_checkpoint_file(path: Path, flag: str) -> Any:
    """What ``path`` holds, memory-mapped, read without unpickling any code; ``ConfigError`` naming ``flag`` for a
    file that cannot be read, ``UnsafeCheckpoint`` for one that needs a type outside tensors and plain values."""
    import torch

    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found is None and "weights_only" not in str(exc).lower():
            raise ConfigError(f"{flag}: {path} cannot be read as a checkpoint (UnpicklingError: "
                              f"{str(exc).splitlines()[0]}).") from None
        what = found.group(1) if found else "a Python object"
        raise UnsafeCheckpoint(
            f"{flag}: {path} needs {what} to be loaded, which is not a tensor or a plain value: loading it could run "
            "code, so midtrain refuses it (checkpoints are read with weights_only=True). Use a checkpoint that holds "
            "only tensors and plain values, or re-save this one's state dict from a session you trust.") from None
    except Exception as exc:  # a truncated or foreign file: say which and why
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"{flag}: {path} cannot be read as a checkpoint ({type(exc).__name__}: {first_line}).") \
            from None
