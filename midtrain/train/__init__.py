"""Training: the loop, LR schedules, budgets, checkpoints (resume and branch), validation, metrics, preemption."""
