"""The model card (``README.md``) of an exported checkpoint: what it is, where it branched, what data it read per
stretch and domain, its LR schedule, the data's identity and decontamination, and its evaluation rows (pure
logic, no torch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from midtrain import reports


def _share_text(shares) -> str:
    """A stretch's shares ``[[share, [shard, ...]], ...]`` as 'main/1 80 %, c1 20 %'."""
    parts = []
    for share, shards in shares or []:
        parts.append(f"{', '.join(shards)} {100 * float(share):.1f} %")
    return "; ".join(parts) or "-"


def model_card(name: str, info: Mapping, run: Mapping | None, ledger: Mapping | None, hf: Mapping,
               rows: Sequence[Mapping] = (), source: str = "") -> str:
    """Markdown for ``README.md``, with YAML front matter the Hub reads (library, tags)."""
    step, tokens = info.get("step"), info.get("tokens")
    lines = ["---", "library_name: transformers", "tags: [midtrain, litgpt]", "---", "",
             f"# {name}", "",
             f"A {hf['architectures'][0]} checkpoint written by midtrain from `{source}`"
             + (f", step {int(step):,}" if step is not None else "")
             + (f", {int(tokens):,} tokens seen" if tokens is not None else "") + ".", "",
             "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             "model = AutoModelForCausalLM.from_pretrained(PATH)  # PATH: this folder or repo (with revision=...)",
             "tokenizer = AutoTokenizer.from_pretrained(PATH)", "```", ""]
    lineage = list(info.get("lineage") or (run or {}).get("lineage") or [])
    lines += ["## Lineage", ""]
    if lineage:
        lines.append(reports.markdown_table(
            ["branched from", "at step", "mixture before", "mixture after"],
            [[e.get("parent_out_dir") or e.get("checkpoint") or e.get("source") or "-", f"{int(e['step']):,}",
              ", ".join(f"{k} {v:.0%}" for k, v in (e.get("mixture_before") or {}).items()) or "-",
              ", ".join(f"{k} {v:.0%}" for k, v in (e.get("mixture_after") or {}).items()) or "-"]
             for e in lineage]))
    else:
        lines.append("A trunk: trained from scratch.")
    lines.append("")
    if ledger:
        domains = ledger.get("domains") or {}
        total = sum(d.get("tokens", 0) for d in domains.values()) or 1
        weighted = sum(d.get("lr_weighted_tokens", 0) for d in domains.values())
        lines += ["## Data read (the per-domain token ledger)", "",
                  reports.markdown_table(
                      ["domain", "tokens", "share", *(["LR-weighted tokens", "share"] if weighted else [])],
                      [[d, f"{v.get('tokens', 0):,}", f"{v.get('tokens', 0) / total:.1%}",
                        *([f"{v.get('lr_weighted_tokens', 0):.4g}", f"{v.get('lr_weighted_tokens', 0) / weighted:.1%}"]
                          if weighted else [])] for d, v in sorted(domains.items())]), "",
                  "Per stretch (a stretch is a span of steps read with one mixture):", "",
                  reports.markdown_table(["stretch", "from step", "mixture", "tokens"],
                                         [[str(s.get("index", i)), f"{int(s.get('start_step', 0)):,}",
                                           _share_text(s.get("shares")), f"{sum((s.get('tokens') or {}).values()):,}"]
                                          for i, s in enumerate(ledger.get("stretches") or [])]), ""]
    schedule = info.get("lr_schedule") or {}
    if schedule:
        lines += ["## Learning rate", "",
                  ", ".join(f"{k} {v}" for k, v in schedule.items() if v is not None) + ".", ""]
    identity = {k: info[k] for k in ("val_sets",) if info.get(k)}
    decon = (run or {}).get("decontamination") or {}
    if identity or decon:
        lines += ["## Data identity and decontamination", ""]
        if identity.get("val_sets"):
            lines.append("Held-out sets: " + ", ".join(f"{d} `{v}`" for d, v in identity["val_sets"].items()) + ".")
        if decon:
            lines += ["", reports.markdown_table(
                ["shard", "decontaminated against", "documents removed"],
                [[shard, ", ".join(str(src.get("name")) for src in (record or {}).get("sources") or []) or "never",
                  "-" if record is None else str(record.get("documents_removed"))]
                 for shard, record in sorted(decon.items())])]
        lines.append("")
    if rows:
        lines += ["## Evaluation", "",
                  reports.markdown_table(["what", "name", "metric", "value"],
                                         [[r["kind"], r["name"], r["metric"], f"{float(r['value']):.4f}"]
                                          for r in rows], [False, False, False, True]), ""]
    return "\n".join(lines)
