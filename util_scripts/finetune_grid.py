"""The fine-tune-then-evaluate grid for ``training_scripts/finetune_eval.sbatch``.

    python util_scripts/finetune_grid.py grid 'out/pythia-70m/*/step-*' --tasks pycode gsm8k --seeds 1 2 3 -o grid.txt
        # one line per checkpoint x task x seed; prints the sbatch --array range
    python util_scripts/finetune_grid.py record OUT_DIR BASE_CHECKPOINT TASK SEED full
        # writes OUT_DIR/finetune.json, which 'midtrain eval' reads to file the scores under the base run and step
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from midtrain.eval.targets import FINETUNE_FILE, find_targets, is_checkpoint  # noqa: E402


def write_grid(patterns: list[str], tasks: list[str], seeds: list[int], out: Path) -> int:
    checkpoints = sorted(
        {Path(p).resolve() for pattern in patterns for p in glob.glob(pattern) if is_checkpoint(Path(p))}
    )
    if not checkpoints:
        raise SystemExit(f"no checkpoint folder (lit_model.pth + model_config.yaml) matches {patterns}")
    lines = [f"{checkpoint} {task} {seed}" for checkpoint in checkpoints for task in tasks for seed in seeds]
    out.write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} fine-tuning jobs ({len(checkpoints)} checkpoints x {len(tasks)} tasks x {len(seeds)} seeds) "
          f"in {out}")
    print(f"submit: GRID={out} sbatch --array=1-{len(lines)} training_scripts/finetune_eval.sbatch")
    return len(lines)


def write_record(out_dir: Path, base_checkpoint: Path, task: str, seed: int, method: str) -> dict:
    base = find_targets([str(base_checkpoint)], flag="base checkpoint")[0]
    record = {"base_checkpoint": str(base.checkpoint), "base_run": base.run_dir.name, "base_step": base.step,
              "base_tokens_seen": base.tokens_seen, "task": task, "seed": seed, "method": method}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FINETUNE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    grid = commands.add_parser("grid", help="write the checkpoint x task x seed lines")
    grid.add_argument("checkpoints", nargs="+", help="checkpoint folders or globs (quoted)")
    grid.add_argument("--tasks", nargs="+", required=True, help="SFT task names (folders under SFT_DATA_ROOT)")
    grid.add_argument("--seeds", nargs="+", type=int, default=[1])
    grid.add_argument("-o", "--out", type=Path, default=Path("finetune_grid.txt"))
    record = commands.add_parser("record", help="write finetune.json for a fine-tuned output folder")
    record.add_argument("out_dir", type=Path)
    record.add_argument("base_checkpoint", type=Path)
    record.add_argument("task")
    record.add_argument("seed", type=int)
    record.add_argument("method", choices=["full", "lora"])
    args = parser.parse_args()
    if args.command == "grid":
        write_grid(args.checkpoints, args.tasks, args.seeds, args.out)
    else:
        print(json.dumps(write_record(args.out_dir, args.base_checkpoint, args.task, args.seed, args.method)))


if __name__ == "__main__":
    main()
