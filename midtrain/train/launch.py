"""Starting the processes of a run on one machine, and deciding the run's exit status from theirs.

A run of several processes that no scheduler started (``--devices 8`` on a workstation or a cloud machine, no
``srun``, no ``torchrun``) is launched here rather than by Fabric: one process per device, each the same command
with ``LOCAL_RANK`` set (Fabric then takes them as started from outside), supervised by this one. Fabric's own
launcher makes rank 0 the parent of the others and kills it with SIGKILL as soon as any other rank ends with a
non-zero status, so a run whose ranks all stopped for a requeue (75) could end 137 by a race, and a rank lost to
``kill -9`` or the OOM killer ended the run with 137 or gloo's traceback. Here the ranks' statuses are combined:

- all 0: 0; any 3 (diverged): 3; any 2 (bad input): 2; a Ctrl-C: 130;
- a rank that died of a signal: the others are given ``LOST_RANK_GRACE_S`` to stop on their own (each says it lost
  a peer and exits 75), then killed; the run exits 75 with one line naming the rank, and is requeued (the last
  checkpoint is intact and the resume exact);
- any 75 (stopped to be requeued) and the rest 0 or 75: 75;
- anything else (a crash, already reported by the rank): that status.

SIGUSR1 and SIGTERM sent to this process are passed on to every rank (Ctrl-C reaches them all from the terminal).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from midtrain.train.preemption import EXIT_DIVERGED, EXIT_PREEMPTED, StopRequest

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
LOST_RANK_GRACE_S = 30.0
"""How long the other ranks get to notice a lost peer and stop by themselves before they are killed."""
_POLL_S = 0.1
_CLUSTER_VARIABLES = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def launched_here(world_size: int, environ=None) -> bool:
    """Whether this run's processes are to be started by ``launch_ranks``: several processes, and nothing (a
    scheduler, torchrun, MPI, or this launcher itself) has started them."""
    environ = os.environ if environ is None else environ
    if world_size <= 1 or any(v in environ for v in _CLUSTER_VARIABLES):
        return False
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return not SLURMEnvironment.detect()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_ranks(argv: Sequence[str], devices: int, num_nodes: int, stop_request: StopRequest) -> int:
    """Run ``midtrain <argv>`` once per local device, supervise the processes, return the run's status."""
    node_rank = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")))
    common = {"MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
              "MASTER_PORT": os.environ.get("MASTER_PORT", str(_free_port())),
              "NODE_RANK": str(node_rank), "WORLD_SIZE": str(devices * num_nodes)}
    command = [sys.executable, "-m", "midtrain", *argv]
    ranks = [subprocess.Popen(command, env={**os.environ, **common, "LOCAL_RANK": str(k)}) for k in range(devices)]
    forwarded: str | None = None
    first_loss: tuple[int, int] | None = None  # (local rank, signal) of the first rank that died of a signal
    lost_at = None
    try:
        while any(p.poll() is None for p in ranks):
            if stop_request.signal_name is not None and stop_request.signal_name != forwarded:
                forwarded = stop_request.signal_name
                if forwarded in ("SIGUSR1", "SIGTERM"):
                    for p in ranks:
                        if p.poll() is None:
                            p.send_signal(signal.Signals[forwarded])
            if first_loss is None:
                dead = next(((k, -p.returncode) for k, p in enumerate(ranks)
                             if p.returncode is not None and p.returncode < 0), None)
                if dead is not None:
                    first_loss, lost_at = dead, time.monotonic()
            if lost_at is not None and time.monotonic() - lost_at > LOST_RANK_GRACE_S:
                for p in ranks:
                    if p.poll() is None:
                        p.kill()
            time.sleep(_POLL_S)
    except BaseException:
        for p in ranks:
            if p.poll() is None:
                p.kill()
        for p in ranks:
            p.wait()
        raise
    return combined_status([p.returncode for p in ranks], first_loss, node_rank * devices)


def combined_status(statuses: Sequence[int], first_loss: tuple[int, int] | None = None, first_rank: int = 0) -> int:
    """The run's exit status from its ranks' (``subprocess`` return codes: negative for a signal); see the module
    docstring. Prints the line that names a lost rank."""
    if all(s == 0 for s in statuses):
        return 0
    for status in (EXIT_DIVERGED, EXIT_BAD_INPUT):
        if status in statuses:
            return status
    if first_loss is None:
        first_loss = next(((k, -s) for k, s in enumerate(statuses) if s < 0), None)
    if first_loss is not None:
        local, signum = first_loss
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else f"signal {signum}"
        if signum == signal.SIGINT:
            return EXIT_INTERRUPTED
        print(f"Stopped: rank {first_rank + local} was ended by {name} (kill -9, or the out-of-memory killer) and the "
              "others stopped with it. The checkpoints published before are intact: rerun with --resume=auto "
              f"(a requeue does) to continue exactly. Exiting with status {EXIT_PREEMPTED}.", file=sys.stderr,
              flush=True)
        return EXIT_PREEMPTED
    if EXIT_INTERRUPTED in statuses:
        return EXIT_INTERRUPTED
    if all(s in (0, EXIT_PREEMPTED) for s in statuses):
        return EXIT_PREEMPTED
    return next(s for s in statuses if s not in (0, EXIT_PREEMPTED))
