"""The package's import structure is one-way: cli -> commands -> eval/analysis/demo -> train -> data -> base
modules, with no import cycle between modules (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "midtrain"
# highest first: a module may import its own package and any lower layer; the packages of one layer not each
# other, except the base modules at the bottom
LAYERS = [
    {"__main__"},
    {"cli"},
    {"commands"},
    {"eval", "analysis", "demo", "soup", "export"},
    {"train"},
    {"data"},
    {
        "errors",
        "distributed",
        "tokenizer",
        "folder_lock",
        "config_files",
        "sweeps",
        "progress",
        "field_docs",
        "reports",
        "publish",
        "anneal",
        "",
    },
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for target in (t for t in targets if t.startswith("midtrain")):
                # "from midtrain.train import checkpoint_files" imports a module of the package, not the package
                submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules] \
                    if isinstance(node, ast.ImportFrom) else []
                found.update(submodules or [target])
        graph[name] = found - {name}
    return graph


def layer(module: str) -> tuple[int, str]:
    part = module.split(".")[1] if "." in module else ""
    return next(i for i, members in enumerate(LAYERS) if part in members), part


def test_every_module_has_a_layer():
    for module in imports():
        layer(module)


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in imports().items():
        level, package = layer(module)
        for target in targets:
            target_level, target_package = layer(target)
            if target_package != package and (target_level < level or target_level == level < len(LAYERS) - 1):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_cycles():
    graph = imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
