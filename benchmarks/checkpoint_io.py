"""Saving and loading an FSDP-sharded run's checkpoint: one full state dict gathered to rank 0 (midtrain's format, a
``lit_model.pth`` that litgpt reads) against a distributed checkpoint (one file per rank, PyTorch DCP), side by side.

    .venv/bin/python benchmarks/checkpoint_io.py [--model pythia-410m] [--devices 2] [--rounds 2]

Builds the model on ``--devices`` CPU processes sharded as ``--strategy=fsdp`` shards it (midtrain's own
``shard_model``, per transformer block, gloo), takes one AdamW step so the optimizer holds its moments, then per
format and round: saves the model and optimizer, loads them back into the live run, and records wall time and the
peak resident memory above the process's level before the operation (sampled every 5 ms; per rank, rank 0 shown,
which holds the gathered full state). Prints the table and the sharded/full ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class PeakMemory:
    """Peak resident set size of this process while the block runs, above its size at entry (bytes)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss() - self.base)

    def __enter__(self) -> PeakMemory:
        self.base = self.rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss() - self.base)


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def worker(model_name: str, devices: int, fmt: str, rounds: int, folder: Path, result_file: Path) -> None:
    """One format on ``devices`` ranks (this script re-run by Fabric's launcher for each rank)."""
    import lightning as L
    import torch
    from lightning.fabric.strategies import ModelParallelStrategy
    from litgpt.config import Config
    from litgpt.model import GPT

    from midtrain.train.devices import shard_model

    torch.set_num_threads(1)
    strategy = ModelParallelStrategy(parallelize_fn=partial(shard_model, num_nodes=1), data_parallel_size=devices,
                                     tensor_parallel_size=1, save_distributed_checkpoint=fmt == "sharded",
                                     process_group_backend="gloo")
    fabric = L.Fabric(accelerator="cpu", devices=devices, strategy=strategy, precision="32-true")
    fabric.launch()
    config = Config.from_name(model_name)
    with fabric.init_module(empty_init=False):
        model = GPT(config)
    model.max_seq_length = 32
    model = fabric.setup(model)
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters(), lr=1e-4))
    tokens = torch.randint(0, config.vocab_size, (1, 32))
    fabric.backward(model(tokens).float().logsumexp(-1).mean())
    optimizer.step()
    rows = []
    for round_ in range(rounds):
        # a new path each round, as every checkpoint is: a full load maps its file, which a save over it would
        # truncate under the mapping
        path = folder / str(round_) / ("lit_model.pth" if fmt == "full" else "sharded")
        if fabric.global_rank == 0:
            path.parent.mkdir()
        fabric.barrier()
        start = time.perf_counter()
        with PeakMemory() as save_memory:
            fabric.save(path, {"model": model, "optimizer": optimizer})
            fabric.barrier()
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        with PeakMemory() as load_memory:
            fabric.load(path, {"model": model, "optimizer": optimizer})
            fabric.barrier()
        load_s = time.perf_counter() - start
        rows.append({"save_s": save_s, "load_s": load_s, "save_peak": save_memory.peak,
                     "load_peak": load_memory.peak})
    gathered = [None] * fabric.world_size
    torch.distributed.all_gather_object(gathered, [[r["save_peak"], r["load_peak"]] for r in rows])
    if fabric.global_rank == 0:
        result_file.write_text(json.dumps({"rows": rows, "bytes": size_of(path), "per_rank_peaks": gathered,
                                           "parameters": sum(p.numel() for p in GPT(config).parameters())}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pythia-410m")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", choices=("full", "sharded"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.model, args.devices, args.worker, args.rounds, args.folder, args.folder / "result.json")
        return 0
    results = {}
    for fmt in ("full", "sharded"):  # each in its own process group: memory levels do not carry between them
        folder = Path(tempfile.mkdtemp(prefix=f"ckpt_{fmt}_"))
        try:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            subprocess.run([sys.executable, __file__, "--worker", fmt, "--model", args.model, "--devices",
                            str(args.devices), "--rounds", str(args.rounds), "--folder", str(folder)],
                           check=True, env=env)
            results[fmt] = json.loads((folder / "result.json").read_text())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    gib = 2**30
    print(f"\n{args.model} ({results['full']['parameters'] / 1e6:.0f}M parameters) + AdamW state on {args.devices} "
          f"CPU processes (FSDP2, gloo); median of {args.rounds} round(s)")
    print(f"{'format':<8} {'on disk':>9} {'save s':>8} {'load s':>8} {'save peak, rank 0':>18} "
          f"{'load peak, rank 0':>18} {'save peak, other ranks':>23}")
    medians = {}
    for fmt, result in results.items():
        rows = result["rows"]

        def median(key, rows=rows):
            values = sorted(r[key] for r in rows)
            return values[len(values) // 2]

        medians[fmt] = {k: median(k) for k in ("save_s", "load_s", "save_peak", "load_peak")}
        others = max((peaks[0] for rank in result["per_rank_peaks"][1:] for peaks in rank), default=0)
        m = medians[fmt]
        print(f"{fmt:<8} {result['bytes'] / gib:>7.2f} G {m['save_s']:>8.2f} {m['load_s']:>8.2f} "
              f"{m['save_peak'] / gib:>16.2f} G {m['load_peak'] / gib:>16.2f} G {others / gib:>21.2f} G")
    full, sharded = medians["full"], medians["sharded"]
    print("sharded / full: " + ", ".join(f"{key} {sharded[key] / full[key]:.2f}" if full[key] else f"{key} -"
                                         for key in ("save_s", "load_s", "save_peak", "load_peak")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
