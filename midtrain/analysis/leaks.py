"""Whether a gain on a target set may have leaked (pure logic): the shards a branch or a candidate reads, checked
against the target by name, from ``midtrain decon`` reports (items found in those shards) and from the
decontamination the shards' manifests record (cleaned against the target). ``recommend`` and ``analyze`` put the
verdict beside each row: ``leaked`` (N of M items found), ``clean`` (every shard decontaminated against it, none
found), or ``unchecked``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from midtrain.errors import ConfigError


def read_reports(paths: Sequence[Path] | None, flag: str = "--decon") -> list[dict]:
    out = []
    for path in paths or []:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            raise ConfigError(f"{flag}={str(path)!r} cannot be read as JSON. Point it at a 'midtrain decon' "
                              "decon.json.") from None
        if not isinstance(report, dict) or "sources" not in report or "shards" not in report:
            raise ConfigError(f"{flag}={str(path)!r} is not a 'midtrain decon' report (no sources and shards).")
        out.append(report)
    return out


def leak_check(target: str, shards: Mapping[str, dict | None], reports: Sequence[dict]) -> dict:
    """The verdict for ``target`` on ``shards`` (resolved shard path -> its manifest's decontamination record, or
    None): items of a source named ``target`` that a report found in those shards; else whether every shard was
    decontaminated against a source of that name."""
    paths = {str(Path(p).resolve()) for p in shards}
    found: set[str] = set()
    items, where = None, set()
    for report in reports:
        source = report["sources"].get(target)
        if source is None:
            continue
        items = source["items"]
        for item, places in source["found"].items():
            hits = {p["shard"] for p in places if str(Path(p["shard"]).resolve()) in paths}
            if hits:
                found.add(item)
                where |= {Path(h).name for h in hits}
    if found:
        return {"status": "leaked", "found": len(found), "items": items, "shards": sorted(where),
                "note": f"gain may include leaked items: {len(found):,} of {items:,} {target} items found in "
                        f"{', '.join(sorted(where))}"}
    cleaned = [p for p, record in shards.items()
               if record and any(s.get("name") == target for s in record.get("sources", []))]
    if shards and len(cleaned) == len(shards):
        return {"status": "clean", "found": 0, "items": items, "shards": [],
                "note": f"decontaminated against {target}"}
    checked = items is not None and bool(shards) and all(any(str(Path(p).resolve()) == str(Path(s).resolve())
                                            for r in reports for s in r["shards"]) for p in shards)
    if checked:
        return {"status": "clean", "found": 0, "items": items, "shards": [],
                "note": f"no {target} item found (decon report)"}
    return {"status": "unchecked", "found": None, "items": items, "shards": [],
            "note": f"not checked against {target}"}
