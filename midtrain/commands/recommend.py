"""``midtrain recommend``: rank candidate midtraining corpora for each target post-training set, before any
training, by their bridge length between the pretraining data and the target; and suggest a mixture."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from midtrain import reports
from midtrain.analysis.corpora import CorpusSpec, parse_corpora
from midtrain.data.domains import DomainRegistry
from midtrain.errors import ConfigError
from midtrain.publish import check_output_dir

OUTPUTS = ("recommend.json", "recommend.csv", "recommend.png")


def recommend(
    pretrain: str,
    target: list[str],
    candidates: list[str],
    out_dir: Path = Path("recommend_out"),
    checkpoint: Path | None = None,
    tokenizer_dir: Path | None = None,
    bridge_measure: Literal["auto", "token", "model"] = "auto",
    sample_tokens: int = 200_000,
    seq_length: int = 256,
    ngram: int = 2,
    seed: int = 0,
    domain_prefixes: dict[str, str] | None = None,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
    micro_batch_size: int = 8,
    decon: list[Path] | None = None,
) -> int:
    """Rank candidate midtraining corpora for each target by bridge length, and suggest a mixture.

    Every corpus is sampled as ``midtrain similarity`` samples it (the same code), to as many tokens as the smallest
    sample holds. Writes ``out_dir/recommend.json`` (``targets`` -> name -> the candidates in rank order),
    ``recommend.csv`` and ``recommend.png`` (candidates on the two similarity axes, each target's nearest marked).

    Args:
        pretrain: The pretraining corpus, ``name=path`` (shards or a .json/.jsonl file).
        target: The target post-training set(s), ``name=path``; give the flag several times, or a list.
        candidates: The candidate midtraining corpora, ``name=path`` entries (or ``{name, path, domain}``), at least
            two. A candidate's kind (its domain in a mixture) is its shards' domain, else its name.
        out_dir: Where recommend.json, recommend.csv and recommend.png go.
        checkpoint: A checkpoint folder for the model measure (cosine of mean hidden states); without it, the token
            measure only.
        tokenizer_dir: Tokenizer for text corpora (default the checkpoint's).
        bridge_measure: The similarity the ranking uses: ``model`` with a checkpoint, else ``token`` (``auto``).
        sample_tokens: Tokens sampled from each corpus.
        seq_length: Tokens per sampled sequence (at most the checkpoint's block size).
        ngram: n of the token measure's n-gram distributions.
        seed: Seed of the samples.
        domain_prefixes: Extra shard folder prefixes (as ``--data.domain_prefixes``).
        accelerator: For the model measure.
        micro_batch_size: Sequences per forward pass (model measure).
        decon: ``midtrain decon`` reports (decon.json): each candidate is checked against each target by name
            (items found in its shards: "leaked"; its shards decontaminated against the target: "clean"; else
            "unchecked"), beside its rank. Without reports, the shards' manifests alone decide clean or unchecked.
    """
    from midtrain.analysis.measures import LABELS, check_sizes, measure
    from midtrain.analysis.recommend import rank_candidates, suggest_mixture
    from midtrain.commands.measure_inputs import load_for_measures

    targets = [target] if isinstance(target, str) else list(target)
    if not targets:
        raise ConfigError("--target names no post-training set. Give it as name=path (several: repeat the flag).")
    if len(candidates) < 2:
        raise ConfigError(f"--candidates names {len(candidates)} corpus; a ranking needs at least two. Give them as "
                          "a list, e.g. '[code=/data/code/val, math=/data/math/val]'.")
    specs = parse_corpora([("--pretrain", pretrain), *(("--target", t) for t in targets),
                           *(("--candidates", c) for c in candidates)], flag=None)
    names = [s.name for s in specs]
    pretrain_name, target_names, candidate_names = names[0], names[1:1 + len(targets)], names[1 + len(targets):]
    if bridge_measure == "model" and checkpoint is None:
        raise ConfigError("--bridge_measure=model needs --checkpoint (the model whose hidden states are compared).")
    measure_name = bridge_measure if bridge_measure != "auto" else ("model" if checkpoint is not None else "token")
    check_sizes(sample_tokens=sample_tokens, seq_length=seq_length, micro_batch_size=micro_batch_size, ngram=ngram)
    out_dir = check_output_dir(Path(out_dir), "--out_dir", OUTPUTS)  # before minutes of measuring
    registry = DomainRegistry.with_extra(domain_prefixes)
    kinds = {s.name: _kind(s, registry) for s in specs[1 + len(targets):]}
    from midtrain.analysis.leaks import read_reports

    decon_reports = read_reports([decon] if isinstance(decon, (str, Path)) else decon)
    candidate_shards = {s.name: _shard_records(s, registry) for s in specs[1 + len(targets):]}
    loaded, tokenizer = load_for_measures(checkpoint, tokenizer_dir, accelerator, seq_length)
    measured = measure(specs, tokenizer, loaded, registry, sample_tokens, seq_length, ngram, seed, micro_batch_size)
    rankings = {t: rank_candidates(measured.matrices, names, pretrain_name, candidate_names, t, measure_name)
                for t in target_names}
    from midtrain.analysis.leaks import leak_check

    for target_name, ranking in rankings.items():
        for entry in ranking:
            entry["kind"] = kinds[entry["candidate"]]
            entry["leak"] = leak_check(target_name, candidate_shards[entry["candidate"]], decon_reports)
    report = {
        "pretrain": pretrain_name,
        "corpora": {s.name: str(s.path) for s in specs},
        "measure": measure_name,
        "measures": {k: LABELS[k].format(ngram=ngram) for k in measured.matrices},
        "sample_tokens": measured.sample_tokens,
        "sampled_tokens": measured.sampled,
        "ngram": ngram, "seq_length": seq_length, "seed": seed,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "targets": rankings,
        "suggested": {t: suggest_mixture(r[0]["candidate"], r[0]["kind"]) for t, r in rankings.items()},
    }
    reports.write_json(out_dir / "recommend.json", report)
    measures = list(measured.matrices)
    reports.write_csv(out_dir / "recommend.csv",
                      ["target", "rank", "candidate", "kind", "bridge_length",
                       *(f"{m}_to_{side}" for m in measures for side in ("pretrain", "target")), "suggested_mixture",
                       "leak_check"],
                      [[target, e["rank"], e["candidate"], e["kind"], f"{e['bridge_length']:.6f}",
                        *(f"{e[m][side]:.6f}" for m in measures for side in ("to_pretrain", "to_target")),
                        report["suggested"][target]["mix_weights_str"] if e["rank"] == 1 else "", e["leak"]["note"]]
                       for target, ranking in rankings.items() for e in ranking])
    _figure(rankings, measure_name, report["measures"][measure_name], out_dir / "recommend.png")
    print(_table(report))
    print(f"\nWrote {out_dir / 'recommend.json'}, recommend.csv and recommend.png in {out_dir}")
    return 0


def _shard_records(spec: CorpusSpec, registry: DomainRegistry) -> dict[str, dict | None]:
    """A candidate's shards (resolved paths) with the decontamination their manifests record; none for text."""
    if spec.is_text:
        return {}
    from midtrain.data.decon_shards import decontamination_record
    from midtrain.data.discovery import shards_at

    shards = shards_at(Path(spec.path), registry, spec.domain, f"--candidates {spec.name}")
    records = decontamination_record(shards)
    return {str(s.path.resolve()): records[s.id] for s in shards}


def _kind(spec: CorpusSpec, registry: DomainRegistry) -> str:
    """A candidate's domain: given, or its shards' (when they are all one domain), else its name."""
    if spec.domain:
        return spec.domain
    if not spec.is_text:
        from midtrain.data.discovery import INDEX_FILE, classify_folder, shards_at

        classified = classify_folder(Path(spec.path).name, registry)  # one shard folder: c1 is code
        if isinstance(classified, tuple) and (Path(spec.path) / INDEX_FILE).is_file():
            return classified[1]
        domains = {s.domain for s in shards_at(Path(spec.path), registry, None, f"--candidates {spec.name}")}
        if len(domains) == 1:
            return domains.pop()
    return spec.name


def _table(report: dict) -> str:
    measures = list(report["measures"])
    lines = [f"Candidates by bridge length ({report['measure']} similarity) between {report['pretrain']} and each "
             f"target; every measure saw {report['sample_tokens']:,} tokens of each corpus."]
    for target, ranking in report["targets"].items():
        headers = ["rank", "candidate", "kind", "bridge length",
                   *(f"{m}: to {side}" for m in measures for side in (report["pretrain"], target)), "leak check"]
        rows = [[e["rank"], e["candidate"], e["kind"], f"{e['bridge_length']:.4f}",
                 *(f"{e[m][side]:.4f}" for m in measures for side in ("to_pretrain", "to_target")),
                 e["leak"]["note"]] for e in ranking]
        s = report["suggested"][target]
        lines += ["", f"Target {target}:", reports.markdown_table(headers, rows, [True, False, False] + [True] * (
            1 + 2 * len(measures)) + [False]),
                  f"Suggested: mix_weights_str: \"{s['mix_weights_str']}\" ({s['candidate']} at {s['share']:.0%}, "
                  f"{s['rule']})"]
    return "\n".join(lines)


def _figure(rankings: dict, measure: str, label: str, path: Path) -> None:
    fig, axes = reports.figure(1, len(rankings), (4.6 * len(rankings), 4.2))
    for ax, (target, ranking) in zip(axes[0], rankings.items(), strict=True):
        for e in ranking:
            x, y = e[measure]["to_pretrain"], e[measure]["to_target"]
            top = e["rank"] == 1
            ax.scatter([x], [y], s=90 if top else 40, marker="*" if top else "o",
                       color="tab:red" if top else "tab:blue", zorder=3)
            ax.annotate(f"{e['candidate']} ({e['rank']})", (x, y), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
        ax.set_xlabel("similarity to the pretraining data")
        ax.set_ylabel(f"similarity to {target}")
        ax.set_title(f"{target}: nearest bridge marked")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Candidates ({label})", fontsize=10)
    reports.save_figure(fig, path)
