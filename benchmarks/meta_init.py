"""Each rank's peak host memory while building a model for FSDP: the whole model on every rank (then sharded) against
midtrain's meta-device build (each rank writes its own shards), on CPU processes, side by side.

    .venv/bin/python benchmarks/meta_init.py [--model pythia-410m] [--devices 2] [--check]

Each variant runs in fresh processes (a process's peak memory only grows): ``--devices`` gloo ranks under Fabric's
``ModelParallelStrategy`` with midtrain's ``shard_model``, building the model with ``midtrain.train.model_build``
(``on_meta`` true or false; float32). Each rank reports its peak resident memory after the build (``ru_maxrss``)
and the process's memory before the build (the interpreter, torch, litgpt), and its parameters' bytes. Prints per
variant the largest rank's build memory (peak less the baseline) in GB and in units of the full model, and the ratio
meta / full. ``--check`` also gathers both builds' weights on rank 0 and says whether they are bit-identical (the
test suite runs this on a tiny model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def rank_main(model_name: str, devices: int, on_meta: bool, out: str, model_config: str | None,
              tie_embeddings: bool, report_to: str) -> None:
    import resource
    from functools import partial

    import lightning as L
    import torch
    from lightning.fabric.strategies import ModelParallelStrategy
    from litgpt.config import Config

    from midtrain.train.devices import shard_model
    from midtrain.train.model_build import build_model

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    strategy = ModelParallelStrategy(parallelize_fn=partial(shard_model), data_parallel_size=devices,
                                     tensor_parallel_size=1, save_distributed_checkpoint=False,
                                     process_group_backend="gloo")
    fabric = L.Fabric(accelerator="cpu", devices=devices, strategy=strategy, precision="32-true")
    fabric.launch()
    config = Config(**json.loads(model_config)) if model_config else Config.from_name(model_name)
    before = peak()
    model = build_model(fabric, config, seed=7, seq_length=min(config.block_size, 128), tie_embeddings=tie_embeddings,
                        compile_model=False, on_meta=on_meta)
    after = peak()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    report = {"rank": fabric.global_rank, "before": before, "after": after, "full_bytes": full_bytes}
    if out:
        state = get_model_state_dict(model.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if fabric.global_rank == 0:
            torch.save({k: v.clone() for k, v in state.items()}, out)
    fabric.barrier()
    Path(f"{report_to}.rank{fabric.global_rank}.json").write_text(json.dumps(report))


def run_variant(model: str, devices: int, on_meta: bool, out: str, model_config: str | None,
                tie_embeddings: bool, report_to: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--rank_main", "--model", model, "--devices", str(devices), "--out", out,
               *(["--on_meta"] if on_meta else []), *(["--model_config", model_config] if model_config else []),
               *(["--tie_embeddings"] if tie_embeddings else []), "--report_to", report_to]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
    return [json.loads(Path(f"{report_to}.rank{r}.json").read_text()) for r in range(devices)]


def check_main(configs: list[dict], devices: int) -> None:
    """In one group of ranks, each config (with ``"tie"``) built both ways; rank 0 prints whether the gathered
    weights are bit-identical."""
    from functools import partial

    import lightning as L
    import torch
    from lightning.fabric.strategies import ModelParallelStrategy
    from litgpt.config import Config
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from midtrain.train.devices import shard_model
    from midtrain.train.model_build import build_model

    strategy = ModelParallelStrategy(parallelize_fn=partial(shard_model), data_parallel_size=devices,
                                     tensor_parallel_size=1, save_distributed_checkpoint=False,
                                     process_group_backend="gloo")
    fabric = L.Fabric(accelerator="cpu", devices=devices, strategy=strategy, precision="32-true")
    fabric.launch()
    for fields in configs:
        tie = bool(fields.pop("tie", False))
        built = []
        for on_meta in (False, True):
            model = build_model(fabric, Config(**fields), seed=7, seq_length=16, tie_embeddings=tie,
                                compile_model=False, on_meta=on_meta)
            built.append(get_model_state_dict(model.module, options=StateDictOptions(full_state_dict=True,
                                                                                      cpu_offload=True)))
        if fabric.global_rank == 0:
            same = built[0].keys() == built[1].keys() and all(torch.equal(built[0][k], built[1][k]) for k in built[0])
            print(f"{fields['name']}{' tied' if tie else ''}: weights bit-identical: {same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pythia-410m")
    parser.add_argument("--model_config", default=None, help="a litgpt Config as JSON (instead of --model)")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="also compare the two builds' weights")
    parser.add_argument("--tie_embeddings", action="store_true", help="train.tie_embeddings")
    parser.add_argument("--rank_main", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--check_configs", default=None,
                        help="a JSON list of litgpt configs (a 'tie' key each, optional): only check, in one group")
    parser.add_argument("--on_meta", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--report_to", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check_configs:
        check_main(json.loads(args.check_configs), args.devices)
        return
    if args.rank_main:
        rank_main(args.model, args.devices, args.on_meta, args.out, args.model_config, args.tie_embeddings,
                  args.report_to)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        outs = {v: str(Path(folder) / f"{v}.pt") if args.check else "" for v in ("full", "meta")}
        reports = {v: run_variant(args.model, args.devices, v == "meta", outs[v], args.model_config,
                                  args.tie_embeddings, str(Path(folder) / v)) for v in ("full", "meta")}
        model_bytes = None
        for variant, ranks in reports.items():
            worst = max(r["after"] - r["before"] for r in ranks)
            model_bytes = model_bytes or ranks[0]["full_bytes"]  # a DTensor counts its global size
            print(f"{variant:>4}: largest rank's build memory {worst / 1e9:.2f} GB = {worst / model_bytes:.2f} × the "
                  f"model ({model_bytes / 1e9:.2f} GB); per rank "
                  + ", ".join(f"{(r['after'] - r['before']) / 1e9:.2f}"
                              for r in sorted(ranks, key=lambda r: r["rank"])))
        full = max(r["after"] - r["before"] for r in reports["full"])
        meta = max(r["after"] - r["before"] for r in reports["meta"])
        print(f"meta / full: {meta / full:.3f} ({args.model if not args.model_config else 'given config'}, "
              f"{args.devices} processes)")
        if args.check:
            import torch

            a, b = (torch.load(outs[v], weights_only=True) for v in ("full", "meta"))
            same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
            print(f"weights bit-identical: {same}")
            if not same:
                raise SystemExit(1)


if __name__ == "__main__":
    main()
