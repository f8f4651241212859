"""``midtrain decon``: evaluation and SFT items found inside training shards, each hit attributed, a report, and
optionally clean copies of the shards with their provenance."""

from __future__ import annotations

import os
import re
from pathlib import Path

OUTPUTS = ("decon.json", "report.md")


def decon(
    shards: list[Path],
    against: list[str],
    out_dir: Path = Path("decon_out"),
    write_clean: Path | None = None,
    tokenizer_dir: Path | None = None,
    task_paths: list[Path] | None = None,
    cache_dir: Path | None = None,
    examples: int = 5,
) -> int:
    """Find the items of evaluation and SFT sources inside shards' documents.

    Documents are the shards' documents as ``prepare`` wrote them, decoded with their tokenizer; matching is on
    normalised words (``midtrain.data.decon``: 13-grams, half of an item's 13-grams in one document; items of 5-12
    words whole; shorter ones reported, not matched). Writes ``out_dir/decon.json`` (per source: its items and where
    each found item is; per shard: documents, contaminated documents, tokens) and ``out_dir/report.md`` (counts and
    examples side by side). The index of the sources is built once per set of sources and kept in ``cache_dir``
    under its content hash. Nothing is written before every shard and source has been checked.

    Args:
        shards: Shard folders (``DATA/train/q1``) written by ``midtrain prepare``; give the flag several times, or a
            list.
        against: Sources, ``NAME=SOURCE``: an SFT ``.json``/``.jsonl`` (instruction, input, output), JSON/JSONL of
            ``{"text": ...}``, a text file (one item per line), or ``task:NAME`` (an lm-evaluation-harness task,
            offline); give the flag several times, or a list.
        out_dir: Where decon.json and report.md go.
        write_clean: A new data root for the shards without their contaminated documents (same layout, each
            manifest recording the decontamination); all shards are published at once, or none.
        tokenizer_dir: The tokenizer to decode the shards with (default: the one each shard's manifest names).
        task_paths: Folders of local lm-evaluation-harness task YAMLs, for ``task:NAME`` sources.
        cache_dir: Where evaluation indexes are kept (default ``$XDG_CACHE_HOME/midtrain/decon``, else
            ``~/.cache/midtrain/decon``).
        examples: Contaminated documents shown per shard in report.md.
    """
    from midtrain.data.decon import cached_index, policy_record, sources_digest
    from midtrain.data.decon_shards import check_clean_root, clean_path, open_shard, publish_clean, scan
    from midtrain.data.decon_shards import write_clean as write_clean_shard
    from midtrain.errors import ConfigError
    from midtrain.eval.decon_sources import parse_against, read_source
    from midtrain.publish import check_output_dir

    paths = [shards] if isinstance(shards, (str, Path)) else list(shards or [])
    if not paths:
        raise ConfigError("--shards names no shard. Give shard folders, e.g. --shards DATA/train/q1 (several: repeat "
                          "the flag).")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise ConfigError(f"--examples={examples!r} must be 0 or more.")
    wanted = parse_against(against)
    out_dir = check_output_dir(Path(out_dir), "--out_dir", OUTPUTS)
    opened = [open_shard(Path(p), "--shards") for p in paths]
    if len({s.path.resolve() for s, _ in opened}) != len(opened):
        raise ConfigError("--shards names one shard twice. Give each once.")
    if write_clean is not None:
        check_clean_root(Path(write_clean), paths)
    tokenizers = _tokenizers(opened, tokenizer_dir)
    sources = [read_source(name, location, task_paths) for name, location in wanted]
    items = [item for source in sources for item in source.items]
    digest = sources_digest([(s.name, s.digest) for s in sources])
    index, cached, _ = cached_index(items, digest, cache_dir)
    results = []
    for shard, manifest in opened:
        result = scan(shard, tokenizers[str(shard.path)], index, examples)
        results.append((result, manifest))
        print(f"  {shard.path}: {len(result.found):,} of {result.documents:,} documents contaminated")
    record = policy_record(digest, [(s.name, s.location, s.digest, len(s.items)) for s in sources])
    report = _report(record, sources, items, index, results, cached)
    from midtrain import reports

    if write_clean is not None:
        clean_root = Path(write_clean)
        staging = clean_root.parent / f".{clean_root.name}.partial-{os.getpid()}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            for result, manifest in results:
                target = clean_path(result.shard.path, staging)
                write_clean_shard(result, manifest, target, record)
                report["shards"][str(result.shard.path)]["clean_copy"] = str(clean_path(result.shard.path,
                                                                                       clean_root))
        except BaseException:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            raise
        publish_clean(staging, clean_root)
    reports.write_json(out_dir / "decon.json", report)
    from midtrain.publish import write_text_atomic

    write_text_atomic(out_dir / "report.md", render_report(report, results, items))
    found = sum(len(s["found"]) for s in report["sources"].values())
    total = sum(s["items"] for s in report["sources"].values())
    documents = sum(len(r.found) for r, _ in results)
    print(f"decon: {found:,} of {total:,} items found in {documents:,} of {sum(r.documents for r, _ in results):,} "
          f"documents of {len(results)} shard(s)"
          + (f"; clean shards in {write_clean}" if write_clean is not None else "")
          + f". Report: {out_dir / 'report.md'}")
    return 0


def _tokenizers(opened, tokenizer_dir: Path | None) -> dict:
    """Each shard's tokenizer (``--tokenizer_dir``, else its manifest's), each folder loaded once."""
    from midtrain.errors import ConfigError
    from midtrain.tokenizer import load_tokenizer

    loaded, out = {}, {}
    for shard, manifest in opened:
        folder = tokenizer_dir or manifest.get("tokenizer_dir")
        if folder is None or not Path(folder).is_dir():
            raise ConfigError(f"--tokenizer_dir: {shard.path} was tokenized with {folder!r} (its manifest), which is "
                              "not here. Give --tokenizer_dir, the same tokenizer.")
        key = str(Path(folder).resolve())
        if key not in loaded:
            loaded[key] = load_tokenizer(Path(folder))
        out[str(shard.path)] = loaded[key]
    return out


def _report(record, sources, items, index, results, cached: bool) -> dict:
    by_item: dict[int, list[dict]] = {}
    for result, _ in results:
        for document, found in sorted(result.found.items()):
            for item_id, overlap in found.items():
                by_item.setdefault(item_id, []).append({"shard": str(result.shard.path), "document": document,
                                                        "overlap": round(overlap, 4)})
    first = 0
    out_sources = {}
    too_short = set(index.too_short)
    for source in sources:
        ids = range(first, first + len(source.items))
        out_sources[source.name] = {
            "location": source.location, "sha256": source.digest, "items": len(source.items),
            "too_short": [i - first for i in ids if i in too_short],
            "found": {str(i - first): by_item[i] for i in ids if i in by_item}}
        first += len(source.items)
    shards = {str(r.shard.path): {"documents": r.documents, "tokens": r.tokens, "contaminated": len(r.found),
                                  "tokens_removed": r.removed_tokens,
                                  "by_source": _by_source(r, items)} for r, _ in results}
    return {**record, "index_from_cache": cached, "sources": out_sources, "shards": shards}


def _by_source(result, items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for found in result.found.values():
        for name in {items[i].source for i in found}:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _excerpt(text: str, item_text: str, width: int = 240) -> str:
    """The part of a document around the first words of an item (or its start), on one line."""
    from midtrain.data.decon import words

    head = words(item_text)[:5]
    at = 0
    if head:
        match = re.search(r"\W+".join(map(re.escape, head)), text, flags=re.IGNORECASE)
        at = max(0, match.start() - 40) if match else 0
    return " ".join(text[at:at + width].split())


def render_report(report: dict, results, items) -> str:
    from midtrain import reports

    lines = ["# Decontamination", "",
             f"Rule ({report['policy']}): {report['rule']}. Index {report['index']}"
             f"{' (from the cache)' if report.get('index_from_cache') else ''}.", "", "## Sources", "",
             reports.markdown_table(["source", "items", "found", "too short to match", "location"],
                                    [[name, f"{s['items']:,}", f"{len(s['found']):,}", f"{len(s['too_short']):,}",
                                      s["location"]] for name, s in report["sources"].items()],
                                    [False, True, True, True, False]),
             "", "## Shards", "",
             reports.markdown_table(["shard", "documents", "contaminated", "tokens removed", "by source"],
                                    [[path, f"{s['documents']:,}", f"{s['contaminated']:,}",
                                      f"{'-' if s['tokens_removed'] is None else format(s['tokens_removed'], ',')}"
                                      f" of {s['tokens']:,}",
                                      ", ".join(f"{k} {v:,}" for k, v in sorted(s["by_source"].items())) or "-"]
                                     for path, s in report["shards"].items()],
                                    [False, True, True, True, False]), ""]
    shown = [(r, e) for r, _ in results for e in r.examples]
    if shown:
        lines += ["## Examples", ""]
        for result, (document, item_id, text) in shown:
            item = items[item_id]
            lines += [f"**{result.shard.path.name} document {document}** holds **{item.source} item {item.index}**:",
                      "", f"- item: {' '.join(item.text.split())[:240]}",
                      f"- document: {_excerpt(text, item.text)}", ""]
    return "\n".join(lines)
