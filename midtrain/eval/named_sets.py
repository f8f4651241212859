"""Named validation sets for ``midtrain eval --sets``: SFT data in litgpt's JSON format (scored as litgpt's
fine-tuning scores it: a prompt style, prompt masking on or off, padding excluded) or token shards (e.g. the
pretraining corpus's held-out data, to measure forgetting after fine-tuning)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from midtrain.data.discovery import shards_at
from midtrain.data.domains import DomainRegistry
from midtrain.data.validation import HeldOutBlocks
from midtrain.errors import ConfigError, DataError, Problems


@dataclass
class NamedSet:
    """One named validation set. Give exactly one of ``json_path`` and ``shards_path``."""

    name: str
    """The set's name in the results table (e.g. ``gsm8k``, ``c4``)."""
    json_path: Path | None = None
    """SFT data, ``.json`` (a list) or ``.jsonl``, with ``instruction``, ``output`` and optional ``input`` keys."""
    prompt_style: str = "alpaca"
    """litgpt prompt style the examples are formatted with (as in ``litgpt finetune --data.prompt_style``), or
    ``default``: the instruction as it is (litgpt's ``Default`` style, used for models without a template)."""
    mask_prompt: bool = False
    """Score only the response tokens (litgpt's ``--data.mask_prompt``); otherwise prompt and response."""
    shards_path: Path | None = None
    """A token shard folder (with ``index.json``) or a folder of shards (``1``, ``c1``, ...)."""
    domain: str | None = None
    """With ``shards_path`` a folder of shards: only this domain's shards (e.g. ``main``)."""
    max_samples: int | None = None
    """Score at most this many examples (SFT) or blocks (shards), the first ones; default all (SFT) or
    ``--tokens_per_domain`` tokens (shards)."""

    def settings(self, seq_length: int, tokens_per_domain: int) -> str:
        if self.json_path is not None:
            # the file's content, not only its path: a regenerated set is scored again
            digest = hashlib.sha1(Path(self.json_path).read_bytes()).hexdigest()[:12]
            where = Path(self.json_path).resolve()
            return f"sft:{self.prompt_style}:mask={self.mask_prompt}:n={self.max_samples}:{where}@{digest}"
        where = Path(self.shards_path).resolve()
        return f"shards:seq={seq_length}:tokens={tokens_per_domain}:n={self.max_samples}:{self.domain}:{where}"


def check_sets(sets: list[NamedSet]) -> None:
    problems = Problems()
    problems.check_names([s.name for s in sets], "--sets")
    for i, named in enumerate(sets):
        flag = f"--sets[{i}] ({named.name})"
        if (named.json_path is None) == (named.shards_path is None):
            problems.add(f"{flag}: give exactly one of json_path (SFT data) and shards_path (token shards).")
        elif named.json_path is not None and not Path(named.json_path).is_file():
            problems.add(f"{flag}: json_path {str(named.json_path)!r} does not exist. Point it at a .json or .jsonl "
                         "file.")
        elif named.shards_path is not None and not Path(named.shards_path).is_dir():
            problems.add(f"{flag}: shards_path {str(named.shards_path)!r} does not exist. Point it at a shard folder.")
        if named.json_path is not None:
            from litgpt.prompts import prompt_styles

            if named.prompt_style != "default" and named.prompt_style not in prompt_styles:
                problems.add(
                    f"{flag}: prompt_style {named.prompt_style!r} is not a litgpt prompt style. Known: default, "
                    f"{', '.join(sorted(prompt_styles))}."
                )
        if named.max_samples is not None and named.max_samples < 1:
            problems.add(f"{flag}: max_samples={named.max_samples} must be at least 1.")
    problems.raise_if_any(ConfigError)


def load_sft_examples(named: NamedSet) -> list[dict]:
    from litgpt.data.json_data import load_split

    path = Path(named.json_path)
    try:
        examples = load_split(path)
    except Exception as exc:  # unreadable JSON, a wrong suffix: say which file and why
        raise DataError(
            f"--sets ({named.name}): {path} cannot be read as SFT data ({type(exc).__name__}: {exc})."
        ) from None
    if not isinstance(examples, list) or not examples:
        raise DataError(f"--sets ({named.name}): {path} holds no examples (expected a list of objects).")
    bad = [i for i, e in enumerate(examples) if not isinstance(e, dict) or "instruction" not in e or "output" not in e]
    if bad:
        raise DataError(f"--sets ({named.name}): {path} example {bad[0]} (and {len(bad) - 1} more) lacks 'instruction' "
                        "or 'output'. litgpt's JSON format needs both ('input' is optional).")
    return examples[: named.max_samples] if named.max_samples else examples


def sft_dataset(named: NamedSet, tokenizer, max_seq_length: int):
    from litgpt.data.base import SFTDataset
    from litgpt.prompts import Default

    style = Default() if named.prompt_style == "default" else named.prompt_style
    return SFTDataset(load_sft_examples(named), tokenizer, style, max_seq_length=max_seq_length,
                      mask_prompt=named.mask_prompt)


def shard_blocks(named: NamedSet, block_tokens: int, max_samples: int, registry: DomainRegistry) -> HeldOutBlocks:
    flag = f"--sets ({named.name}) shards_path"
    blocks = HeldOutBlocks(shards_at(named.shards_path, registry, named.domain, flag), block_tokens,
                           named.max_samples or max_samples)
    if not len(blocks):
        raise DataError(f"{flag}: {named.shards_path} holds no sample of {block_tokens} tokens. Lower --seq_length.")
    return blocks
