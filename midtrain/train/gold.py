"""Gold-answer sets: the items whose correct answer's probability is measured, given its prompt (the prompt itself
unscored). An SFT set in litgpt's JSON format gives one answer per prompt; an lm-evaluation-harness multiple-choice
task gives several continuations per context, one of them gold.

Items are tokenized once here (for one tokenizer and context length); ``midtrain.train.gold_scoring`` scores them,
in training (``eval.gold_sets``) and in ``midtrain eval --gold_sets`` alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from midtrain.errors import ConfigError, DataError, Problems

SFT, CHOICE = "sft", "choice"
DEFAULT_MAX_ITEMS = 100
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def go_offline() -> None:
    """Hugging Face libraries read these when first imported: set them before lm_eval/datasets load."""
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"


@dataclass
class GoldSet:
    """One gold-answer set. Give exactly one of ``json_path`` and ``task``."""

    name: str
    """The set's name in metrics (``gold/<name>/bpb``) and in the results table."""
    json_path: Path | None = None
    """SFT data, ``.json`` (a list) or ``.jsonl``, with ``instruction``, ``output`` (the gold answer) and optional
    ``input`` keys."""
    prompt_style: str = "alpaca"
    """litgpt prompt style the SFT prompts are formatted with, or ``default`` (the instruction as it is)."""
    task: str | None = None
    """An lm-evaluation-harness multiple-choice task, read offline (its data cached, or a local task YAML under
    ``task_paths``)."""
    task_paths: list[Path] = field(default_factory=list)
    """Folders of local task YAMLs for ``task``."""
    num_fewshot: int = 0
    """Few-shot examples in each context of ``task`` (drawn with the harness's seed 1234)."""
    max_items: int = DEFAULT_MAX_ITEMS
    """Score the first this many items (examples or questions) at each evaluation: the cost of an evaluation."""

    def settings(self) -> str:
        """What the set's numbers depend on, for the results table (a regenerated SFT file is scored again)."""
        if self.json_path is not None:
            digest = hashlib.sha1(Path(self.json_path).read_bytes()).hexdigest()[:12]
            return f"gold:sft:{self.prompt_style}:n={self.max_items}:{Path(self.json_path).resolve()}@{digest}"
        paths = ",".join(str(Path(p).resolve()) for p in self.task_paths)
        return f"gold:task:{self.task}:fewshot={self.num_fewshot}:n={self.max_items}:{paths}"


@dataclass(frozen=True)
class GoldItem:
    """One question: the (context tokens, continuation tokens) of each choice, which one is gold, and the UTF-8
    bytes of the gold continuation's text (the denominator of its bits per byte)."""

    choices: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    gold: int
    answer_bytes: int


@dataclass(frozen=True)
class PreparedGold:
    name: str
    kind: str
    """``sft`` (one answer per prompt) or ``choice`` (multiple choice: accuracy and the gold choice's probability
    too)."""
    items: tuple[GoldItem, ...]
    settings: str
    cut: int = 0
    """Items whose context was cut at its start to fit the model's context (as the harness cuts)."""

    def forward_tokens(self, context_tokens: int) -> int:
        """Tokens through the model per evaluation (each choice is one sequence)."""
        return sum(min(len(c) + len(a) - 1, context_tokens) for item in self.items for c, a in item.choices)

    def answer_tokens(self) -> int:
        return sum(len(item.choices[item.gold][1]) for item in self.items)


def check_gold_sets(sets: list[GoldSet], flag: str) -> None:
    """Shape checks that need no tokenizer, all reported at once."""
    problems = Problems()
    problems.check_names([s.name for s in sets], flag)
    for i, gold in enumerate(sets):
        key = f"{flag}[{i}]"
        if (gold.json_path is None) == (gold.task is None):
            problems.add(f"{key} ({gold.name}): give exactly one of json_path (SFT data with answers) and task (an "
                         "lm-eval multiple-choice task).")
        elif gold.json_path is not None and not Path(gold.json_path).is_file():
            problems.add(f"{key}.json_path={str(gold.json_path)!r} does not exist. Point it at a .json or .jsonl file.")
        if gold.json_path is not None and gold.prompt_style != "default":
            from litgpt.prompts import prompt_styles

            if gold.prompt_style not in prompt_styles:
                problems.add(f"{key}.prompt_style={gold.prompt_style!r} is not a litgpt prompt style. Known: default, "
                             f"{', '.join(sorted(prompt_styles))}.")
        if gold.task is None and (gold.task_paths or gold.num_fewshot):
            problems.add(f"{key}.task_paths and num_fewshot apply to task, which is not set. Remove them.")
        for path in gold.task_paths:
            if not Path(path).is_dir():
                problems.add(f"{key}.task_paths entry {str(path)!r} is not a folder. Point it at task YAMLs.")
        if gold.max_items < 1:
            problems.add(f"{key}.max_items={gold.max_items} must be at least 1.")
        if gold.num_fewshot < 0:
            problems.add(f"{key}.num_fewshot={gold.num_fewshot} must be 0 or more.")
    problems.raise_if_any(ConfigError)


def prepare_gold_sets(sets: list[GoldSet], tokenizer, context_tokens: int, flag: str) -> tuple[PreparedGold, ...]:
    """Every set's items tokenized for ``context_tokens``-token contexts; refuses what cannot be scored, naming the
    key."""
    check_gold_sets(sets, flag)
    prepared = []
    for i, gold in enumerate(sets):
        key = f"{flag}[{i}]"
        if gold.json_path is not None:
            items = _sft_items(gold, tokenizer, key)
            kind = SFT
        else:
            items = _task_items(gold, tokenizer, key)
            kind = CHOICE
        prepared.append(_fitted(gold, kind, items, context_tokens, key))
    return tuple(prepared)


def _fitted(gold: GoldSet, kind: str, items: list[GoldItem], context_tokens: int, key: str) -> PreparedGold:
    """Items checked against the context: a sequence longer than it keeps its last ``context_tokens + 1`` tokens (as
    the harness's models do); a prompt or an answer that does not fit is refused."""
    cut = 0
    fix = ("Remove the item, lower max_items to before it, or score at a longer context (--train.max_seq_length, up "
           "to the model's block_size).")
    for n, item in enumerate(items):
        longest_context = max(len(c) for c, _ in item.choices)
        if longest_context >= context_tokens:
            raise DataError(f"{key} ({gold.name}): item {n}'s prompt is {longest_context:,} tokens, as long as the "
                            f"context ({context_tokens:,}) or longer: no answer token can be scored with its "
                            f"prompt. {fix}")
        longest_answer = max(len(a) for _, a in item.choices)
        if longest_answer > context_tokens:
            raise DataError(f"{key} ({gold.name}): item {n}'s answer is {longest_answer:,} tokens, longer than the "
                            f"context ({context_tokens:,}). " + fix)
        if any(not a for _, a in item.choices):
            raise DataError(f"{key} ({gold.name}): item {n} has an empty answer (nothing to score). Give every item an "
                            "answer.")
        cut += any(len(c) + len(a) > context_tokens + 1 for c, a in item.choices)
    return PreparedGold(gold.name, kind, tuple(items), gold.settings(), cut)


def _sft_items(gold: GoldSet, tokenizer, key: str) -> list[GoldItem]:
    """litgpt's SFT encoding (``SFTDataset``): the formatted prompt with BOS where the tokenizer adds one, then the
    answer with EOS; the answer's tokens are the ones scored."""
    from litgpt.data.json_data import load_split
    from litgpt.prompts import Default, PromptStyle

    path = Path(gold.json_path)
    try:
        examples = load_split(path)
    except Exception as exc:  # unreadable JSON, a wrong suffix: say which file and why
        raise DataError(f"{key}.json_path={str(path)!r} cannot be read as SFT data ({type(exc).__name__}: {exc}). "
                        "Give a .json list or .jsonl of objects.") from None
    if not isinstance(examples, list) or not examples:
        raise DataError(f"{key}.json_path={str(path)!r} holds no examples (expected a list of objects).")
    examples = examples[: gold.max_items]
    for n, example in enumerate(examples):
        if not isinstance(example, dict) or "instruction" not in example:
            raise DataError(f"{key}.json_path={str(path)!r}: example {n} has no 'instruction' (the prompt). Use "
                            "litgpt's JSON format: instruction, optional input, output.")
        if not isinstance(example.get("output"), str) or not example["output"].strip():
            raise DataError(f"{key}.json_path={str(path)!r}: example {n} has no answer ('output' missing or empty), "
                            "so there is no gold answer to score. Give every example its output, or name another "
                            "file.")
    style = Default() if gold.prompt_style == "default" else PromptStyle.from_name(gold.prompt_style)
    items = []
    for example in examples:
        prompt = tokenizer.encode(style.apply(prompt=example["instruction"], **example)).tolist()
        answer = tokenizer.encode(example["output"], bos=False, eos=True).tolist()
        items.append(GoldItem(((tuple(prompt), tuple(answer)),), 0, len(example["output"].encode("utf-8"))))
    return items


def _task_items(gold: GoldSet, tokenizer, key: str) -> list[GoldItem]:
    """The harness's own requests for the task's first ``max_items`` documents (its prompt, choices and target
    rendering, few-shot contexts), tokenized as the harness tokenizes for a causal model."""
    go_offline()  # a task is read from what is on disk: training never waits on (or fails by) the network
    try:
        from lm_eval.tasks import TaskManager, get_task_dict
    except ImportError:
        raise ConfigError(f"{key}.task={gold.task!r} needs lm-evaluation-harness, which is not installed. Install it "
                          "with 'bash scripts/install.sh eval', or give json_path instead.") from None
    manager = TaskManager(include_path=[str(p) for p in gold.task_paths] or None)
    if gold.task not in manager.all_tasks:
        from midtrain.errors import did_you_mean

        raise ConfigError(f"{key}.task={gold.task!r} is not a task lm-evaluation-harness knows (with task_paths="
                          f"{[str(p) for p in gold.task_paths]}).{did_you_mean(gold.task, manager.all_tasks)} List "
                          "them with 'lm-eval ls tasks', or add a folder of task YAMLs to task_paths.")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the harness prints each task it loads: not the run's output
            task = get_task_dict([gold.task], manager)[gold.task]
    except Exception as exc:  # offline: a dataset that is not on disk fails in the datasets library
        raise ConfigError(f"{key}.task={gold.task!r} cannot be loaded offline ({type(exc).__name__}: "
                          f"{str(exc)[:200]}). Its data must be on disk: download it once with network access "
                          "(datasets' cache), or write a local task YAML with dataset_path: json under task_paths."
                          ) from None
    if not hasattr(task, "build_all_requests"):
        raise ConfigError(f"{key}.task={gold.task!r} is a group of tasks. Name one multiple-choice task per gold set.")
    if task.OUTPUT_TYPE != "multiple_choice" or task.multiple_input:
        raise ConfigError(f"{key}.task={gold.task!r} is a {task.OUTPUT_TYPE} task; gold-answer metrics need a "
                          "multiple-choice task (one context, several continuations, one gold). Score it with "
                          "'midtrain eval --tasks' instead.")
    task.set_config(key="num_fewshot", value=gold.num_fewshot)
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(limit=gold.max_items, rank=0, world_size=1)
    by_doc: dict[int, list] = {}
    for instance in task.instances:
        by_doc.setdefault(instance.doc_id, []).append(instance)
    items = []
    for doc_id in sorted(by_doc):
        requests = sorted(by_doc[doc_id], key=lambda r: r.idx)
        doc = requests[0].doc
        choices = task.doc_to_choice(doc)
        target = task.doc_to_target(doc)
        index = choices.index(target) if isinstance(target, str) and target in choices else target
        if not isinstance(index, int) or not 0 <= index < len(choices):
            raise DataError(f"{key}.task={gold.task!r}: document {doc_id} has no gold choice (its target is "
                            f"{target!r} among {len(choices)} choices). Fix the task's doc_to_target.")
        # the harness's unconditional extras (acc_mutual_info) come after the choices' requests
        encoded = [encode_request(tokenizer, *r.args) for r in requests[: len(choices)]]
        items.append(GoldItem(tuple((tuple(c), tuple(a)) for c, a, _ in encoded), index,
                              len(encoded[index][2].encode("utf-8"))))
    if not items:
        raise DataError(f"{key}.task={gold.task!r} has no documents to score. Check its test split.")
    return items


def encode_request(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int], str]:
    """(context tokens, continuation tokens, the continuation's text) of a log-likelihood request, split as the
    harness splits it for a causal model (``midtrain eval --tasks`` scores the same split): an empty context is the
    EOS token; otherwise the context's trailing spaces move to the continuation, the whole text is encoded, and the
    continuation is what follows the context's own encoding."""
    eos = tokenizer.eos_id if tokenizer.eos_id is not None else 0
    if context == "":
        tokens = tokenizer.encode(continuation, bos=False, eos=False).tolist()
        if tokens and tokens[0] == eos:
            return tokens[:1], tokens[1:], continuation
        return [eos], tokens, continuation
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, bos=False, eos=False).tolist()
    context_ids = tokenizer.encode(context, bos=False, eos=False).tolist()
    return context_ids, whole[len(context_ids):], continuation
