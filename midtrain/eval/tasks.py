"""lm-evaluation-harness tasks (registered ones, or local YAML definitions under ``--task_paths``) on a model
already in memory, flattened into results-table rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from midtrain.errors import ConfigError


@dataclass
class TaskSettings:
    tasks: list[str] = field(default_factory=list)
    task_paths: list[Path] = field(default_factory=list)
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 8
    seed: int = 1234

    def settings(self) -> str:
        return f"lm_eval:fewshot={self.num_fewshot}:limit={self.limit}:seed={self.seed}"


def task_manager(settings: TaskSettings):
    """The harness's task index (its own tasks plus ``--task_paths``), checked against ``--tasks``."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError("--tasks needs lm-evaluation-harness, which is not installed. Install it with "
                          "'bash scripts/install.sh eval' (or pip install 'midtrain[eval]').") from None
    for path in settings.task_paths:
        if not Path(path).is_dir():
            raise ConfigError(f"--task_paths entry {str(path)!r} is not a folder. Point it at a folder of task YAML "
                              "files.")
    manager = TaskManager(include_path=[str(p) for p in settings.task_paths] or None)
    unknown = [t for t in settings.tasks if t not in manager.all_tasks]
    if unknown:
        from midtrain.errors import did_you_mean

        hints = "".join(did_you_mean(t, manager.all_tasks) for t in unknown[:1])
        raise ConfigError(f"--tasks names {', '.join(map(repr, unknown))}, which lm-evaluation-harness does not know "
                          f"(with --task_paths={[str(p) for p in settings.task_paths]}).{hints} List them with "
                          "'lm-eval ls tasks', or add a folder of task YAMLs to --task_paths.")
    if settings.num_fewshot is not None and settings.num_fewshot < 0:
        raise ConfigError(f"--num_fewshot={settings.num_fewshot} must be 0 or more.")
    if settings.limit is not None and settings.limit < 1:
        raise ConfigError(f"--limit={settings.limit} must be at least 1 (examples per task).")
    return manager


def run_tasks(harness_model, settings: TaskSettings, manager) -> list[dict]:
    """Rows of (name=task, metric, value, eval_tokens=None, samples) for every task and subtask the harness reports."""
    from lm_eval import simple_evaluate

    output = simple_evaluate(model=harness_model, tasks=list(settings.tasks), num_fewshot=settings.num_fewshot,
                             limit=settings.limit, task_manager=manager, log_samples=False, bootstrap_iters=1000,
                             random_seed=settings.seed, numpy_random_seed=settings.seed,
                             torch_random_seed=settings.seed, fewshot_random_seed=settings.seed)
    rows = []
    for task, metrics in output["results"].items():
        for key, value in metrics.items():
            if "," not in key or not isinstance(value, (int, float)):
                continue  # 'alias', 'N/A' stderr of unbootstrapped metrics
            metric, _, filter_name = key.partition(",")
            name = metric if filter_name == "none" else f"{metric}[{filter_name}]"
            rows.append({"name": task, "metric": name, "value": float(value)})
    return rows
