"""Two small SFT sets for the demo, in litgpt's JSON format (``instruction``/``input``/``output``), built offline:

- ``code_sft``: "write this function" from a public standard-library function's docstring, answered with its code
  (docstring removed).
- ``math_sft``: word and equation problems from a different seed than the math pretraining domain, answered with
  the worked solution.

They play the post-training data in the demo's bridge analysis (``midtrain similarity``) and are scored as named
validation sets by ``midtrain eval``.
"""

from __future__ import annotations

import ast
import json
import random
import sysconfig
from pathlib import Path

from midtrain.demo.corpus import math_problems, stdlib_sources

SFT_SETS = ("code_sft", "math_sft")
VAL_EXAMPLES = 500


def code_examples(limit_bytes: int | None, count: int) -> list[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    examples = []
    for path in stdlib_sources(limit_bytes):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node)
            if not doc or len(node.body) < 2:
                continue
            node.body = node.body[1:]  # the docstring becomes the instruction; the answer is the code alone
            examples.append({"instruction": f"Write the function `{node.name}` of the `{module}` module: "
                                            f"{' '.join(doc.split(chr(10) * 2)[0].split())}",
                             "input": "", "output": ast.unparse(node)})
    random.Random(0).shuffle(examples)
    return examples[:count]


def math_examples(count: int) -> list[dict]:
    examples = []
    for text in math_problems(count, seed=1):
        problem, _, answer = text.partition("\n")
        examples.append({"instruction": problem.removeprefix("Problem: "), "input": "", "output": answer})
    return examples


def build_sft_sets(out_dir: Path, limit_bytes: int | None, count: int = 2000) -> dict[str, Path]:
    """``<out_dir>/<set>/train.json`` and ``val.json`` (the last ``VAL_EXAMPLES`` examples) for each set."""
    paths = {}
    for name, examples in (("code_sft", code_examples(limit_bytes, count)), ("math_sft", math_examples(count))):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        held = min(VAL_EXAMPLES, len(examples) // 5)
        (folder / "train.json").write_text(json.dumps(examples[:-held], indent=0))
        (folder / "val.json").write_text(json.dumps(examples[-held:], indent=0))
        paths[name] = folder
    return paths
