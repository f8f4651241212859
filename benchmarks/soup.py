"""``midtrain soup`` against plainly loading its ingredients: time and memory, side by side.

    .venv/bin/python benchmarks/soup.py [--model pythia-410m] [--ingredients 3] [--rounds 2]

Writes ``--ingredients`` litgpt checkpoints of one model (random weights, float32, ``{"model": state}`` as midtrain
and litgpt save them) into a temporary folder, then, in interleaved rounds, each in a fresh process:
  load       ``torch.load(weights_only=True)`` of every ingredient, one after another (what any averaging reads);
  load+save  the same, and ``torch.save`` of one model, synced to disk (the reading and writing any soup does);
  soup       ``midtrain soup`` of all of them (memory-mapped reads, a weighted sum tensor by tensor, the write of
             the result, synced, and its records).
Prints the median seconds of each, soup/load (goal <= 1.2) and soup/(load+save), and each process's peak memory: its
peak resident set (``ru_maxrss``, which counts pages of memory-mapped files read) and its peak anonymous memory
(``RssAnon`` sampled every 2 ms: what the process allocated itself, the part that cannot be paged back to the
files), against one model's size (goal: the soup's anonymous peak near one model plus one tensor).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# run in a child: the peak anonymous memory sampled by a thread, the peak RSS from getrusage
_CHILD = r"""
import json, resource, sys, threading, time
peak = [0]
done = threading.Event()
def sample():
    while not done.is_set():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
import torch
mode, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
start = time.perf_counter()
if mode in ("load", "load+save"):
    for k, path in enumerate(paths):
        state = torch.load(path + "/lit_model.pth", weights_only=True, map_location="cpu")
        if mode == "load+save" and k == 0:
            import os, pathlib
            pathlib.Path(out).mkdir(parents=True)
            torch.save(state, out + "/lit_model.pth")
            with open(out + "/lit_model.pth", "rb") as handle:
                os.fsync(handle.fileno())
        del state
else:
    from midtrain.cli import main
    assert main(["soup", "--checkpoints", json.dumps(paths), "--out_dir", out]) == 0
seconds = time.perf_counter() - start
done.set()
print(json.dumps({"seconds": seconds, "peak_anon": peak[0],
                  "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def make_ingredients(model_name: str, count: int, folder: Path) -> tuple[list[Path], int, int]:
    """(checkpoint folders, bytes of one model, bytes of its largest tensor)."""
    import torch
    import yaml
    from litgpt.config import Config
    from litgpt.model import GPT

    config = Config.from_name(model_name)
    paths = []
    for k in range(count):
        torch.manual_seed(k)
        with torch.device("cpu"):
            state = GPT(config).state_dict()
        path = folder / f"ingredient{k}" / "final"
        path.mkdir(parents=True)
        torch.save({"model": state}, path / "lit_model.pth")
        (path / "model_config.yaml").write_text(yaml.safe_dump(config.__dict__))
        (path / "checkpoint.json").write_text(json.dumps({"step": 100}))
        size = sum(t.numel() * t.element_size() for t in state.values())
        largest = max(t.numel() * t.element_size() for t in state.values())
        del state
        paths.append(path)
    return paths, size, largest


def child(mode: str, out: Path, paths: list[Path]) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD, mode, str(out), *map(str, paths)], capture_output=True,
                            text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pythia-410m")
    parser.add_argument("--ingredients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths, size, largest = make_ingredients(args.model, args.ingredients, folder)
        results: dict[str, list[dict]] = {"load": [], "load+save": [], "soup": []}
        for k in range(args.rounds):
            for mode in results:
                out = folder / f"{mode}{k}"
                results[mode].append(child(mode, out, paths))
                shutil.rmtree(out, ignore_errors=True)  # the page cache and the disk as the next one finds them
        seconds = {m: statistics.median(r["seconds"] for r in rs) for m, rs in results.items()}
        ratios = [s["seconds"] / m["seconds"] for s, m in zip(results["soup"], results["load"], strict=True)]
        io_ratios = [s["seconds"] / m["seconds"] for s, m in zip(results["soup"], results["load+save"], strict=True)]
        gib = 2**30
        print(f"{args.model}: {size / gib:.2f} GiB a model (float32), largest tensor {largest / 2**20:.0f} MiB, "
              f"{args.ingredients} ingredients, {args.rounds} interleaved rounds\n")
        print("| | seconds (median) | peak anonymous GiB | in models | peak RSS GiB | in models |")
        print("|---|---:|---:|---:|---:|---:|")
        for mode, rs in results.items():
            anon = max(r["peak_anon"] for r in rs)
            rss = max(r["max_rss"] for r in rs)
            print(f"| {mode} | {seconds[mode]:.2f} | {anon / gib:.2f} | {anon / size:.2f} | {rss / gib:.2f} | "
                  f"{rss / size:.2f} |")
        print(f"\nsoup/load: {statistics.median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)}; goal "
              f"<= 1.2); soup/(load+save): {statistics.median(io_ratios):.2f} (rounds: "
              f"{', '.join(f'{r:.2f}' for r in io_ratios)}); one model + its largest tensor = "
              f"{(size + largest) / size:.2f} models")


if __name__ == "__main__":
    main()
