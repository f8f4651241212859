"""Four domains of real text built offline from the running Python's standard library (pure logic, no torch).

- ``main`` (prose): the docstrings of the standard library (one document each) and each module's comments.
- ``code``: the same modules' source with docstrings and comments removed, so code and prose do not overlap; one
  document per function, class, or run of module-level statements.
- ``math``: arithmetic and algebra problems with worked answers, generated from a seed.
- ``instruct``: question/answer pairs derived from the public functions' and classes' docstrings.

Nothing is downloaded and nothing is stored in the repository: the text comes from the interpreter that runs the
demo (CPython's library is under the PSF licence), so two Python versions give slightly different corpora.
"""

from __future__ import annotations

import ast
import io
import json
import random
import sysconfig
import tokenize
from collections.abc import Iterator
from pathlib import Path

DOMAINS = ("main", "code", "math", "instruct")
SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "lib2to3", "__pycache__", "turtledemo", "ensurepip"}


def stdlib_sources(limit_bytes: int | None = None) -> list[Path]:
    """The standard library's ``.py`` files (tests and vendored packages excluded), in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not SKIP_PARTS & set(p.relative_to(root).parts))
    if limit_bytes is None:
        return files
    chosen, total = [], 0
    for path in files:
        size = path.stat().st_size
        if total + size > limit_bytes:
            continue
        chosen.append(path)
        total += size
    return chosen


def split_prose_and_code(source: str) -> tuple[list[str], list[str]]:
    """(prose documents: each docstring and each module's comments; code documents: each top-level statement group
    (a function, a class, or the module-level code between them) without docstrings and comments).
    Raises SyntaxError/ValueError on source that does not parse."""
    tree = ast.parse(source)
    doc_lines: set[int] = set()
    prose: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                prose.append(ast.get_docstring(node, clean=True) or "")
                doc_lines.update(range(first.lineno, first.end_lineno + 1))
    comment_lines: set[int] = set()
    comments: list[str] = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comment_lines.add(token.start[0])
            text = token.string.lstrip("#").strip()
            if text and not text.startswith(("!", "-*-", "noqa", "type:", "pragma")):
                comments.append(text)
    prose.append(" ".join(comments))
    lines = source.splitlines()

    def code_of(first: int, last: int) -> str:
        kept = []
        for number in range(first, last + 1):
            if number in doc_lines:
                continue
            line = lines[number - 1]
            if number in comment_lines:
                line = "" if line.lstrip().startswith("#") else line.split("#", 1)[0].rstrip()
            if line.strip():
                kept.append(line)
        return "\n".join(kept)

    code, pending = [], None
    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if pending is not None:
                code.append(code_of(*pending))
                pending = None
            code.append(code_of(first, node.end_lineno))
        else:
            pending = (pending[0] if pending else first, node.end_lineno)
    if pending is not None:
        code.append(code_of(*pending))
    return [p for p in prose if len(p.split()) >= 4], [c for c in code if c.strip()]


def qa_pairs(source: str, module: str) -> Iterator[str]:
    """'Question/Answer' documents from the first paragraph of each public function's and class's docstring."""
    tree = ast.parse(source)
    for node in tree.body:
        members = [node] + ([n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                            if isinstance(node, ast.ClassDef) else [])
        for member in members:
            if not isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or member.name.startswith(
                "_"
            ):
                continue
            doc = ast.get_docstring(member)
            if not doc:
                continue
            answer = " ".join(doc.split("\n\n")[0].split())
            if len(answer.split()) < 5:
                continue
            qualified = f"{module}.{member.name}" if member is node else f"{module}.{node.name}.{member.name}"
            kind = "class" if isinstance(member, ast.ClassDef) else "function"
            yield f"Question: What does the {kind} `{qualified}` do?\nAnswer: {answer}"


def math_problems(count: int, seed: int) -> Iterator[str]:
    """Arithmetic, linear equations and word problems, each with its worked answer."""
    rng = random.Random(seed)
    for _ in range(count):
        kind = rng.randrange(4)
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 20)
        if kind == 0:
            yield (f"Problem: Compute {a} * {b} + {c}.\nSolution: {a} * {b} = {a * b}, and {a * b} + {c} = "
                   f"{a * b + c}.\nAnswer: {a * b + c}")
        elif kind == 1:
            x = rng.randint(-20, 20)
            yield (f"Problem: Solve for x: {c}x + {a} = {c * x + a}.\nSolution: Subtract {a} from both sides: {c}x = "
                   f"{c * x}. Divide by {c}: x = {x}.\nAnswer: x = {x}")
        elif kind == 2:
            yield (f"Problem: A box holds {a} pencils. How many pencils are in {c} boxes if {b} pencils are removed?\n"
                   f"Solution: {c} boxes hold {c} * {a} = {c * a} pencils. Removing {b} leaves {c * a} - {b} = "
                   f"{c * a - b}.\n"
                   f"Answer: {c * a - b}")
        else:
            total = a * c
            yield (
                f"Problem: What is the remainder when {total + b % c} is divided by {c}?\nSolution: {total + b % c} = "
                f"{c} * {a} + {b % c}.\nAnswer: {b % c}"
            )


def build_corpus(
    out_dir: Path, limit_bytes: int | None = None, math_count: int = 40_000, seed: int = 0
) -> dict[str, int]:
    """Write ``<domain>.jsonl`` (``{"text": ...}`` per line) for the four domains; returns documents per domain."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(DOMAINS, 0)
    files = {d: (out_dir / f"{d}.jsonl").open("w", encoding="utf-8") for d in DOMAINS}
    try:
        root = Path(sysconfig.get_paths()["stdlib"])
        for path in stdlib_sources(limit_bytes):
            try:
                source = path.read_text(encoding="utf-8")
                prose, code = split_prose_and_code(source)
                pairs = list(qa_pairs(source, ".".join(path.relative_to(root).with_suffix("").parts)))
            except (SyntaxError, ValueError, UnicodeDecodeError, tokenize.TokenError):
                continue  # a few files are deliberately invalid or not UTF-8; the rest is plenty
            for domain, texts in (("main", prose), ("code", code), ("instruct", pairs)):
                for text in texts:
                    if text.strip():
                        files[domain].write(json.dumps({"text": text}) + "\n")
                        counts[domain] += 1
        for problem in math_problems(math_count, seed):
            files["math"].write(json.dumps({"text": problem}) + "\n")
            counts["math"] += 1
    finally:
        for file in files.values():
            file.close()
    return counts
