"""``midtrain similarity``: how alike corpora are (token n-grams, and a model's hidden states), and bridge lengths."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from midtrain import reports
from midtrain.analysis.corpora import CorpusSpec, parse_corpora
from midtrain.analysis.measures import LABELS
from midtrain.data.domains import DomainRegistry
from midtrain.errors import ConfigError
from midtrain.publish import check_output_dir


def similarity(
    corpora: list[CorpusSpec | str],
    out_dir: Path = Path("similarity_out"),
    tokenizer_dir: Path | None = None,
    checkpoint: Path | None = None,
    sample_tokens: int = 200_000,
    seq_length: int = 256,
    ngram: int = 2,
    seed: int = 0,
    pretrain: str | None = None,
    mixes: list[str] | None = None,
    sft: list[str] | None = None,
    bridge_measure: Literal["token", "model"] = "token",
    eval_table: Path | None = None,
    control: str | None = None,
    mix_runs: dict[str, str] | None = None,
    sft_set_names: dict[str, str] | None = None,
    domain_prefixes: dict[str, str] | None = None,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
    micro_batch_size: int = 8,
) -> int:
    """Similarity between every pair of corpora, and the bridge length of midtraining mixes.

    Each corpus (token shards, or SFT/text ``.json``/``.jsonl`` tokenized with the shared tokenizer) is sampled to
    ``sample_tokens`` tokens with a fixed seed. Token measure: 1 - Jensen-Shannon divergence of ``ngram``-gram
    distributions. Model measure (with ``checkpoint``): cosine similarity of mean final hidden states. Writes the
    matrices (CSV, JSON) and heatmaps to ``out_dir``. With ``pretrain``, ``mixes`` and ``sft``: the bridge length
    (1 - sim(P, M)) + (1 - sim(M, S)) per mix and SFT set; with ``eval_table`` and ``control`` too, each mix's SFT
    gain over the control and the correlation of bridge length with gain.

    Args:
        corpora: ``name=path`` entries (or ``{name, path, domain}``), at least two.
        out_dir: Where the matrices, heatmaps and report go.
        tokenizer_dir: Tokenizer for text corpora (default the checkpoint's); shards must use the same one.
        checkpoint: A checkpoint folder for the model measure (omit for the token measure only).
        sample_tokens: Tokens sampled from each corpus.
        seq_length: Tokens per sampled sequence (at most the checkpoint's block size).
        ngram: n of the n-gram distributions.
        seed: Seed of the samples.
        pretrain: The pretraining corpus's name (P).
        mixes: Midtraining corpora's names (M).
        sft: SFT sets' names (S).
        bridge_measure: The similarity the bridge length uses.
        eval_table: A ``midtrain eval`` ``eval.csv`` with each SFT set scored (``--sets``) for the mixes' runs and the
            control (fine-tuned checkpoints if any, else the runs' own).
        control: The control run's name in the table.
        mix_runs: Run name of each mix in the table when it differs from the mix's corpus name.
        sft_set_names: Set name of each SFT corpus in the table when it differs from its corpus name.
        domain_prefixes: Extra shard folder prefixes (as ``--data.domain_prefixes``).
        accelerator: For the model measure.
        micro_batch_size: Sequences per forward pass (model measure).
    """
    from midtrain.analysis.bridge import bridge_report
    from midtrain.analysis.measures import check_sizes, measure
    from midtrain.commands.measure_inputs import load_for_measures

    specs = parse_corpora(list(corpora))
    names = [s.name for s in specs]
    _check_bridge_args(names, pretrain, mixes, sft, bridge_measure, checkpoint, eval_table, control)
    check_sizes(sample_tokens=sample_tokens, seq_length=seq_length, micro_batch_size=micro_batch_size)
    check_output_dir(Path(out_dir), "--out_dir")
    rows = None
    if eval_table is not None:
        from midtrain.eval.results import read_rows

        rows = read_rows(Path(eval_table), "--eval_table")
        _check_table_runs(rows, eval_table, control, [(mix_runs or {}).get(m, m) for m in mixes or []])
    loaded, tokenizer = load_for_measures(checkpoint, tokenizer_dir, accelerator, seq_length)
    measured = measure(specs, tokenizer, loaded, DomainRegistry.with_extra(domain_prefixes), sample_tokens,
                       seq_length, ngram, seed, micro_batch_size)
    matrices, common = measured.matrices, measured.sample_tokens
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "corpora": {s.name: str(s.path) for s in specs},
        "sample_tokens": common,
        "ngram": ngram,
        "seq_length": seq_length,
        "seed": seed,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "similarity": {k: m.round(6).tolist() for k, m in matrices.items()},
    }
    labels = {k: v.format(ngram=ngram) for k, v in LABELS.items()}
    for kind, matrix in matrices.items():
        reports.write_csv(out_dir / f"similarity_{kind}.csv", ["corpus", *names],
                          [[name, *(f"{v:.6f}" for v in row)] for name, row in zip(names, matrix, strict=True)])
        size = 1.2 + 0.9 * len(names)
        fig, axes = reports.figure(size=(size + 1.5, size))
        reports.heatmap(axes[0, 0], matrix, names, names, labels[kind], "viridis", min(0.0, float(matrix.min())),
                        1.0, light_when=lambda v: v < 0.6, rotation=45, ha="right")
        axes[0, 0].set_title(f"Similarity: {labels[kind]}")
        reports.save_figure(fig, out_dir / f"similarity_{kind}.png")
        print(f"\nSimilarity ({labels[kind]}):\n{_format_matrix(names, matrix)}")
    if pretrain is not None:
        report["bridge"] = bridge_report(
            matrices[bridge_measure], names, pretrain, list(mixes), list(sft), rows, control, mix_runs, sft_set_names
        )
        report["bridge"]["measure"] = bridge_measure
        print("\n" + _format_bridge(report["bridge"]))
    reports.write_json(out_dir / "similarity.json", report)
    print(f"\nWrote {out_dir / 'similarity.json'} and heatmaps in {out_dir}")
    return 0


def _check_bridge_args(names, pretrain, mixes, sft, measure, checkpoint, eval_table, control) -> None:
    given = [pretrain is not None, bool(mixes), bool(sft)]
    if any(given) and not all(given):
        raise ConfigError("the bridge length needs --pretrain, --mixes and --sft together (corpus names from "
                          "--corpora).")
    for flag, values in (
        ("--pretrain", [pretrain] if pretrain else []),
        ("--mixes", mixes or []),
        ("--sft", sft or []),
    ):
        unknown = [v for v in values if v not in names]
        if unknown:
            raise ConfigError(f"{flag} names {', '.join(map(repr, unknown))}, which is not in --corpora "
                              f"({', '.join(names)}).")
    if measure == "model" and checkpoint is None:
        raise ConfigError("--bridge_measure=model needs --checkpoint (the model whose hidden states are compared).")
    if (eval_table is None) != (control is None):
        raise ConfigError("--eval_table and --control go together: the gain of each mix is measured against the "
                          "control run.")
    if eval_table is not None and pretrain is None:
        raise ConfigError("--eval_table is used to correlate bridge lengths with gains; set --pretrain, --mixes and "
                          "--sft.")


def _check_table_runs(rows: list[dict], eval_table, control: str, mix_runs: list[str]) -> None:
    """The control and every mix's run must be in the table (named as it names them), or no gain can be measured."""
    present = sorted({r["run"] for r in rows if r.get("run")} | {r["base_run"] for r in rows if r.get("base_run")})
    if control not in present:
        raise ConfigError(f"--control={control!r} is not a run of --eval_table={str(eval_table)!r} (runs: "
                          f"{', '.join(present) or 'none'}). Name the control as the table names it.")
    absent = [run for run in mix_runs if run not in present]
    if absent:
        raise ConfigError(
            f"--mixes {', '.join(map(repr, absent))} have no run in --eval_table={str(eval_table)!r} (runs: "
            f"{', '.join(present)}). Map each mix to its run with --mix_runs '{{mix: run}}'."
        )


def _format_matrix(names: list[str], matrix) -> str:
    width = max(8, *(len(n) for n in names))
    lines = [" " * width + "".join(f"{n:>{width + 1}}" for n in names)]
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{width + 1}.3f}" for v in row))
    return "\n".join(lines)


def _format_bridge(bridge: dict) -> str:
    rows = [[p["mix"], p["sft"], f"{p['bridge_length']:.4f}",
             "-" if p.get("gain") is None else f"{p['gain']:+.4f} (step {p['step']})"] for p in bridge["pairs"]]
    lines = [f"Bridge length ({bridge['measure']} similarity), pretraining corpus {bridge['pretrain']}:",
             reports.markdown_table(["mix", "SFT set", "bridge length", "SFT gain over control"], rows,
                                    [False, False, True, True])]
    correlation = bridge.get("correlation")
    if correlation:
        def show(v):
            return "undefined" if v is None else f"{v:+.3f}"
        lines.append(f"Correlation of bridge length with gain over {correlation['pairs']} pairs: Pearson "
                     f"{show(correlation['pearson'])}, Spearman {show(correlation['spearman'])} (negative: shorter "
                     "bridges, larger gains).")
    return "\n".join(lines)
