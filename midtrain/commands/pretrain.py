"""``midtrain pretrain``: litgpt's pretrain config schema plus trunk/branch runs, exact resume and preemption. The
command's keys are ``midtrain.train.settings.RunSettings``'s fields (declared there once) and ``dry_run``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from midtrain.train.preemption import EXIT_PREEMPTED
from midtrain.train.settings import command_args_section, command_signature, dump, settings_from

_DRY_RUN = ("Check everything a run needs at start-up (config, tokenizer, data plan, model on the meta device, the "
            "checkpoint to start from), print the plan, and exit without training.")


def pretrain(dry_run: bool = False, **arguments: Any) -> int:
    """Pretrain (trunk) or midtrain (branch) a litgpt model on a sharded data mixture.

    Same keys as ``litgpt pretrain`` plus midtrain's. Exit status: 0 when done (or stopped by
    ``train.max_additional_steps``/``train.max_iters``); 75 when stopped by SIGUSR1/SIGTERM or ``train.max_time``
    after saving a checkpoint (requeue and rerun with ``--resume auto`` to continue exactly); 3 when the loss or a
    gradient norm became non-finite (nothing saved after it; not to be requeued); 2 for bad input.
    """

    from midtrain.train.preemption import StopRequest

    # stop signals are watched from the start: one during start-up ends the run before its first step
    with StopRequest() as stop_request:
        from midtrain.commands.invocation import invoked_argv
        from midtrain.train.launch import launch_ranks, launched_here
        from midtrain.train.report import describe
        from midtrain.train.restore import StartKind
        from midtrain.train.run import execute
        from midtrain.train.startup import setup_run

        setup = setup_run(run_settings(**arguments))
        out_dir = setup.settings.out_dir
        if dry_run:
            print(describe(setup))
            print("\nDry run: configuration, data, model and checkpoint check out; nothing was trained.")
            return 0
        if setup.start.kind is StartKind.FINISHED:
            print(f"The run in {out_dir} is already finished ({setup.start.checkpoint.path}, step "
                  f"{setup.start.checkpoint.step:,}); nothing to do. To extend it, give a later absolute end"
                  + (" (--train.max_iters without --train.max_additional_steps: the paper's fork would have added "
                     "max_additional_steps again and replaced final/)." if setup.dialect == "fork" else
                     " (--train.max_steps or --train.max_tokens)."))
            return 0
        launching = launched_here(setup.devices.world_size)
        if stop_request.signal_name is not None and (setup.devices.world_size == 1 or launching):
            # alone (or before starting the ranks), stop here; ranks started together agree at the first step (one
            # stopping alone before they meet would leave the others waiting for it), and stop there before training
            print(f"Stopped by {stop_request.signal_name} during start-up, before any step; nothing was changed. "
                  f"Exiting with status {EXIT_PREEMPTED}: rerun to start.")
            return EXIT_PREEMPTED
        if launching:
            return launch_ranks(invoked_argv(), setup.devices.devices, setup.devices.num_nodes, stop_request)
        return execute(setup, stop_request)



def run_settings(**arguments: Any):
    """The run's settings from ``pretrain``'s arguments (also how ``midtrain mix`` reads a pretrain config)."""
    settings = settings_from({**arguments, "out_dir": Path(arguments.get("out_dir", "out/pretrain"))})
    settings.config_dump = dump(settings)
    return settings


# the command's keys and their --help: RunSettings's fields, then dry_run
pretrain.__signature__ = command_signature(
    [inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool)])
pretrain.__doc__ += "\n    " + command_args_section({"dry_run": _DRY_RUN}).replace("\n", "\n    ") + "\n"

__all__ = ["pretrain", "EXIT_PREEMPTED"]
