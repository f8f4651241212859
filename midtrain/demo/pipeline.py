"""The demo's stages: corpus, tokenizer, shards, trunk, plan, branches, report, evaluation, similarity. Each stage
that is a midtrain command runs through ``run_command`` (``midtrain.commands.dispatch.run_command``, handed in by
the ``demo`` command), exactly as typed on the command line."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import yaml

from midtrain.errors import ConfigError, MidtrainError

CONFIGS = resources.files("midtrain.demo") / "configs"  # package data: an installed wheel runs the demo too
TRUNK_CONFIG = Path(str(CONFIGS / "trunk.yaml"))
BRANCHES = ("code", "code_ramp", "math", "control")
RAMPED = "code_ramp"  # its ramp starts at the branch point and takes half of what remains to the horizon
SHARD_DIRS = {"main": "1", "code": "c1", "math": "m1", "instruct": "i1"}
DOMAIN_ORDER = ["main", "code", "math", "instruct"]
MIDTRAINING_DOMAINS = ("code", "math")  # the demo's branches' data, and recommend's candidates

# The full demo (the numbers in docs/demo.md) and a reduced one (seconds, for CI):
# corpus size, tokenizer, and config overrides.
SIZES = {
    "full": {"corpus_bytes": None, "math_count": 40_000, "vocab_size": 4096, "overrides": [],
             "eval_tokens": 50_000, "sft_prompt": {"prompt_style": "alpaca", "mask_prompt": True}},
    "tiny": {
        "corpus_bytes": 400_000, "math_count": 1_500, "vocab_size": 512,
        "overrides": ["--model_config.n_layer=2", "--model_config.n_head=2", "--model_config.n_embd=32",
                      "--model_config.block_size=32", "--train.max_seq_length=32", "--train.max_steps=12",
                      "--train.global_batch_size=8", "--train.micro_batch_size=4", "--train.save_interval=3",
                      "--train.log_interval=3", "--eval.interval=3",
                      "--data.val_samples_per_domain=4"],
        "branch_step": 6,
        "eval_tokens": 2_000,
        # the tiny model's 32-token context holds no alpaca template: score plain text, prompt included
        "sft_prompt": {"prompt_style": "default", "mask_prompt": False},
    },
}


def run_demo(out_dir: Path, branch_step: int | None, size: str, num_workers: int,
             run_command: Callable[[list[str]], int]) -> int:
    """The whole demo (see ``midtrain.commands.demo.demo``)."""

    def _cli(argv: list[str]) -> None:
        status = run_command(argv)
        if status != 0:
            raise MidtrainError(f"the demo stage 'midtrain {argv[0]}' failed with status {status} (see above).")

    preset = SIZES[size]
    branch_step = branch_step or preset.get("branch_step") or _config_branch_step()
    out_dir = Path(out_dir)
    stages = Stages(12)

    with stages("Building the corpus from the standard library"):
        counts = _corpus(out_dir / "raw", preset)
        print("  documents: " + ", ".join(f"{d} {n:,}" for d, n in counts.items()))
        sft_dirs = _sft_sets(out_dir / "sft", preset)
    with stages("Training a byte-level BPE tokenizer"):
        tokenizer_dir = _tokenizer(out_dir, preset["vocab_size"])
    with stages("Preparing train and held-out shards (midtrain prepare)"):
        data_root = _shards(out_dir, tokenizer_dir, num_workers, _cli)
    common = [f"--data.data_path={data_root}", f"--tokenizer_dir={tokenizer_dir}", *preset["overrides"]]
    configs = {name: branch_config(name) for name in BRANCHES}
    train = _train_settings(preset["overrides"])
    runs = out_dir / "runs"
    with stages(f"Trunk: main data only, to step {branch_step} (midtrain pretrain)"):
        accumulation = train["global_batch_size"] // train["micro_batch_size"]
        _cli(["pretrain", "--config", str(TRUNK_CONFIG), *common, f"--out_dir={runs / 'trunk'}",
              f"--train.max_iters={branch_step * accumulation}"])
    branch_point = runs / "trunk" / f"step-{branch_step:08d}"
    with stages("The mixture plan of the code branch, from the branch point to the end (midtrain mix)"):
        _cli(["mix", "--config", str(configs["code"]), *common, f"--out_dir={runs / 'code'}",
              f"--branch_from={branch_point}"])
    with stages("Branches: code, code ramped in, math and the control, from the same trunk checkpoint"):
        for name in BRANCHES:
            print(f"  -- branch {name} --", flush=True)
            _cli(["pretrain", "--config", str(configs[name]), *common, f"--out_dir={runs / name}",
                  f"--branch_from={branch_point}", *(ramp_override(branch_step, train) if name == RAMPED else [])])
    with stages("Per-domain validation loss: table and plot"):
        from midtrain.demo.report import plot_curves, read_val_curves, summary_table

        trunk = read_val_curves(runs / "trunk")
        branches = {name: read_val_curves(runs / name) for name in BRANCHES}
        domains = [d for d in DOMAIN_ORDER if d in trunk]
        table, final = summary_table(branches, domains)
        (out_dir / "summary.md").write_text(table + "\n")
        (out_dir / "summary.json").write_text(json.dumps({"branch_step": branch_step, "final": final}, indent=2))
        plot = plot_curves(trunk, branches, branch_step, domains, out_dir / "loss_by_domain.png")
    eval_dir = out_dir / "eval"
    with stages("Every checkpoint on every domain and SFT set (midtrain eval)"):
        sets = [
            {"name": name, "json_path": str(folder / "val.json"), **preset["sft_prompt"]}
            for name, folder in sft_dirs.items()
        ]
        _cli(["eval", f"--runs={runs / '*'}", f"--out_dir={eval_dir}", f"--sets={json.dumps(sets)}",
              f"--tokens_per_domain={preset['eval_tokens']}", "--accelerator=cpu"])
    with stages("Similarity of the domains and SFT sets, and bridge lengths (midtrain similarity)"):
        val = data_root / "val"
        corpora = [f"{domain}={val / folder}" for domain, folder in SHARD_DIRS.items()]
        corpora += [f"{name}={folder / 'val.json'}" for name, folder in sft_dirs.items()]
        _cli(["similarity", f"--corpora={json.dumps(corpora)}", f"--out_dir={out_dir / 'similarity'}",
              f"--checkpoint={branch_point}", f"--seq_length={train['max_seq_length']}",
              f"--sample_tokens={preset['eval_tokens']}", "--pretrain=main", '--mixes=["code", "math"]',
              f"--sft={json.dumps(list(sft_dirs))}", f"--eval_table={eval_dir / 'eval.csv'}", "--control=control",
              "--accelerator=cpu"])
    with stages("Which midtraining data each SFT set calls for, ranked by bridge length (midtrain recommend)"):
        _cli(["recommend", f"--pretrain=main={val / SHARD_DIRS['main']}",
              *(f"--target={name}={folder / 'val.json'}" for name, folder in sft_dirs.items()),
              f"--candidates={json.dumps([f'{d}={val / SHARD_DIRS[d]}' for d in MIDTRAINING_DOMAINS])}",
              f"--checkpoint={branch_point}", f"--seq_length={train['max_seq_length']}",
              f"--sample_tokens={preset['eval_tokens']}", f"--out_dir={out_dir / 'recommend'}", "--accelerator=cpu"])
    with stages("The branches against the control: effects, fit and bridge length against gain (midtrain analyze)"):
        _cli(["analyze", f"--tables={eval_dir / 'eval.csv'}", f"--out_dir={out_dir / 'analysis'}",
              f"--similarity={out_dir / 'recommend' / 'recommend.json'}",
              f"--sft_for={json.dumps({d: [f'{d}_sft'] for d in MIDTRAINING_DOMAINS if f'{d}_sft' in sft_dirs})}"])
    with stages("Done"):
        print(table)
        print(f"\nTable: {out_dir / 'summary.md'}\nPlot:  {plot}\nEvaluation: {eval_dir}\n"
              f"Similarity: {out_dir / 'similarity'}\nRecommendation: {out_dir / 'recommend'}\n"
              f"Analysis: {out_dir / 'analysis' / 'report.md'}")
    return 0




class Stages:
    """A live line per stage: its number, name and time."""

    def __init__(self, total: int) -> None:
        self.total, self.index = total, 0

    def __call__(self, name: str):
        self.index += 1
        return _Stage(f"[{self.index}/{self.total}] {name}")


class _Stage:
    def __init__(self, title: str) -> None:
        self.title = title

    def __enter__(self) -> None:
        self.started = time.perf_counter()
        print(f"\n== {self.title} ==", flush=True)

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            print(f"   ({time.perf_counter() - self.started:.1f} s)", flush=True)


def branch_config(name: str) -> Path:
    return Path(str(CONFIGS / f"{name}.yaml"))


def ramp_override(branch_step: int, train: dict) -> list[str]:
    """The ramped branch's schedule for this branch point and length (the config's is for step 240 of 480)."""
    phase = {"start_step": branch_step, "mix_weights_str": "main:0.8,code:0.2",
             "ramp_steps": max(1, (train["max_steps"] - branch_step) // 2)}
    return [f"--data.mix_schedule={json.dumps([phase])}"]


def _config_branch_step() -> int:
    config = yaml.safe_load(branch_config("code").read_text())
    return int(Path(config["branch_from"]).name.split("-")[1])


def _train_settings(overrides: list[str]) -> dict:
    """The trunk config's ``train`` section with the size preset's overrides applied."""
    train = yaml.safe_load(TRUNK_CONFIG.read_text())["train"]
    for item in overrides:
        key, _, value = item.partition("=")
        if key.startswith("--train."):
            train[key.split(".", 1)[1]] = int(value)
    return train


def _corpus(raw: Path, preset: dict) -> dict[str, int]:
    from midtrain.demo.corpus import build_corpus

    settings = {
        "python": sys.version.split()[0],
        "corpus_bytes": preset["corpus_bytes"],
        "math_count": preset["math_count"],
    }
    marker = raw / "corpus.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("settings") == settings:
            print("  reusing the corpus built before")
            return saved["documents"]
    counts = build_corpus(raw, limit_bytes=preset["corpus_bytes"], math_count=preset["math_count"])
    marker.write_text(json.dumps({"settings": settings, "documents": counts}, indent=2))
    return counts


def _sft_sets(out_dir: Path, preset: dict) -> dict[str, Path]:
    from midtrain.demo.sft import SFT_SETS, build_sft_sets

    marker = out_dir / "sets.json"
    settings = {"python": sys.version.split()[0], "corpus_bytes": preset["corpus_bytes"]}
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return {name: out_dir / name for name in SFT_SETS}
    folders = build_sft_sets(out_dir, preset["corpus_bytes"])
    marker.write_text(json.dumps(settings))
    return folders


def _tokenizer(out_dir: Path, vocab_size: int) -> Path:
    from midtrain.tokenizer import train_bpe_tokenizer

    tokenizer_dir = out_dir / "tokenizer"
    if (tokenizer_dir / "tokenizer.json").is_file():
        print("  reusing the tokenizer trained before")
        return tokenizer_dir

    def texts():
        for domain in DOMAIN_ORDER:
            with (out_dir / "raw" / f"{domain}.jsonl").open(encoding="utf-8") as file:
                budget = 2_000_000  # characters per domain: enough for a few thousand merges, in seconds
                for line in file:
                    text = json.loads(line)["text"]
                    yield text
                    budget -= len(text)
                    if budget <= 0:
                        break

    return train_bpe_tokenizer(texts(), tokenizer_dir, vocab_size=vocab_size)


def _shards(out_dir: Path, tokenizer_dir: Path, num_workers: int, cli: Callable[[list[str]], None]) -> Path:
    data_root = out_dir / "data"
    for domain, folder in SHARD_DIRS.items():
        target = data_root / "train" / folder
        if (target / "midtrain_manifest.json").is_file():
            print(f"  {domain}: reusing {target}")
            continue
        if num_workers < 1:
            raise ConfigError(f"--num_workers={num_workers} must be at least 1.")
        cli(["prepare", f"--output_dir={target}", f"--tokenizer_dir={tokenizer_dir}",
             f"--inputs={out_dir / 'raw' / f'{domain}.jsonl'}", "--val_fraction=0.05",
             f"--val_output_dir={data_root / 'val' / folder}", f"--num_workers={num_workers}", "--overwrite=true"])
        print(f"  {domain}: {target}")
    return data_root
