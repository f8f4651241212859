"""The chunk-file map cache: the process's open-file limit is raised when the first chunk is mapped, never as a side
effect of an import (a tool that imports midtrain keeps the limits it set)."""

from __future__ import annotations

import resource
import subprocess
import sys

from tests.integration.train_helpers import REPO

PROBE = """
import resource, sys, tempfile
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
low = min(256, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
from midtrain.data import shard_reader
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] == low, shard_reader._OPEN_FILES.capacity)
with tempfile.NamedTemporaryFile() as file:
    file.write(b"x" * 64)
    file.flush()
    shard_reader._OPEN_FILES.get(file.name)
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard, shard_reader._OPEN_FILES.capacity)
"""


def test_the_open_file_limit_is_raised_at_first_use_not_at_import():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, check=True)
    at_import, after_use = result.stdout.splitlines()
    assert at_import == "True None"
    soft, hard, capacity = (int(v) for v in after_use.split())
    assert soft == (hard if hard != resource.RLIM_INFINITY else 65536)  # raised to the hard limit, as torch advises
    assert capacity == max(64, min(16384, soft // 2))
