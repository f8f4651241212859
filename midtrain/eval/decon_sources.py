"""What decontamination matches against: the items of evaluation and SFT sources, read once (``NAME=SOURCE``).

A source is an SFT set as the fine-tuning hand-off reads it (``.json`` list or ``.jsonl`` of ``instruction``,
optional ``input``, ``output``: one item is all three), JSONL or JSON of ``{"text": ...}`` records, plain text (one
item per non-empty line), or ``task:NAME``, an lm-evaluation-harness task available offline (its evaluation
documents as the harness formats them: the prompt and the gold answer), with ``--task_paths`` for local task YAMLs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from midtrain.data.decon import Item
from midtrain.errors import ConfigError

FLAG = "--against"
TASK_PREFIX = "task:"


@dataclass(frozen=True)
class Source:
    name: str
    location: str
    digest: str
    """sha256 of the file (or of the task's formatted items): what a clean shard records it was checked against."""
    items: tuple[Item, ...]


def parse_against(values, flag: str = FLAG) -> list[tuple[str, str]]:
    entries = [values] if isinstance(values, str) else list(values or [])
    if not entries:
        raise ConfigError(f"{flag} names no source. Give NAME=SOURCE, e.g. {flag} code_sft=data/code_sft.json "
                          f"(several: repeat the flag).")
    out, seen = [], set()
    for entry in entries:
        name, equals, location = str(entry).partition("=")
        if not equals or not name.strip() or not location.strip():
            raise ConfigError(f"{flag}={entry!r} is not NAME=SOURCE. Give e.g. {flag} gsm8k=task:gsm8k or "
                              f"{flag} code_sft=data/code_sft.json.")
        if name in seen:
            raise ConfigError(f"{flag} names the source {name!r} twice. Give each source one name.")
        seen.add(name)
        out.append((name.strip(), location.strip()))
    return out


def _item_text(record, where: str) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        if "instruction" in record and "output" in record:
            return "\n".join(str(record[k]) for k in ("instruction", "input", "output") if record.get(k))
        if isinstance(record.get("text"), str):
            return record["text"]
    raise ConfigError(f"{FLAG}: {where} is neither an SFT example (instruction, output) nor a {{\"text\": ...}} "
                      "record. Give one of those forms.")


def read_source(name: str, location: str, task_paths: list[Path] | None = None) -> Source:
    if location.startswith(TASK_PREFIX):
        return _task_source(name, location[len(TASK_PREFIX):], task_paths or [])
    path = Path(location).expanduser()
    if not path.is_file():
        raise ConfigError(f"{FLAG} {name}={location!r}: no such file. Point it at an SFT .json/.jsonl, a text file, "
                          f"or task:NAME for an lm-evaluation-harness task.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{FLAG} {name}={location!r} is not UTF-8 text ({exc.reason} at byte {exc.start}). "
                          "Convert it to UTF-8.") from None
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{FLAG} {name}={location!r} cannot be read as JSON ({exc}).") from None
        if not isinstance(records, list):
            raise ConfigError(f"{FLAG} {name}={location!r} holds no list of records. An SFT set is a JSON list.")
        texts = [_item_text(r, f"{location} record {i}") for i, r in enumerate(records)]
    elif path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    texts.append(_item_text(json.loads(line), f"{location} line {number}"))
                except ValueError as exc:
                    raise ConfigError(f"{FLAG} {name}={location!r} line {number} is not JSON ({exc}).") from None
    else:
        texts = [line for line in text.splitlines() if line.strip()]
    if not any(t.strip() for t in texts):
        raise ConfigError(f"{FLAG} {name}={location!r} holds no items. Check the file (an empty source would "
                          "make every shard look clean).")
    items = tuple(Item(name, i, t) for i, t in enumerate(texts))
    return Source(name, str(path.resolve()), hashlib.sha256(raw).hexdigest(), items)


def _task_source(name: str, task: str, task_paths: list[Path]) -> Source:
    """The evaluation documents of an lm-evaluation-harness task, offline: prompt and gold answer per document."""
    from midtrain.eval.tasks import TaskSettings, task_manager
    from midtrain.train.gold import go_offline

    go_offline()
    manager = task_manager(TaskSettings(tasks=[task], task_paths=list(task_paths)))
    from lm_eval.tasks import get_task_dict

    try:
        loaded = get_task_dict([task], manager)[task]
    except Exception as exc:  # the harness raises many types for a dataset it cannot load offline
        raise ConfigError(f"{FLAG} {name}=task:{task}: lm-evaluation-harness cannot load it offline "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Download its "
                          "dataset first, or give the task's documents as a file.") from None
    docs = list(loaded.eval_docs)
    texts = []
    for doc in docs:
        prompt = loaded.doc_to_text(doc)
        target = loaded.doc_to_target(doc)
        if loaded.OUTPUT_TYPE == "multiple_choice" and isinstance(target, int):
            target = loaded.doc_to_choice(doc)[target]
        texts.append(f"{prompt} {target}")
    if not texts:
        raise ConfigError(f"{FLAG} {name}=task:{task} has no evaluation documents.")
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    return Source(name, f"task:{task}", digest, tuple(Item(name, i, t) for i, t in enumerate(texts)))
