"""The house plan holds: every import in scanner/ runs downhill (ARCHITECTURE.md) and no packages import in a cycle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scanner"

#: A stage may import its own folder and any stage ranked below it, never one ranked above or beside it.
RANKS = {
    "core": 0,
    "sources": 1,
    "parse": 2,
    "enrich": 3,
    "detect": 4,
    "report": 5,
    "scale": 6,
    "testsites": 6,
    "pipeline": 7,
    "control": 8,
    "cli": 9,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every scanner module or package this file imports (lazy and TYPE_CHECKING imports too), absolute."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "scanner")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "scanner":
                continue
            out.add(target)
            # `from scanner.x import y` may name the module scanner.x.y
            out.update(f"{target}.{a.name}" for a in node.names if _exists(f"{target}.{a.name}"))
    return out


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_of(module: str) -> str:
    rel = Path(*module.split(".")[1:])
    if len(rel.parts) == 1 and stage_of(module) in RANKS:
        return module  # pipeline.py and cli.py are ranked stages of their own, not the package root's modules
    return module if (PACKAGE / rel / "__init__.py").is_file() else module.rpartition(".")[0]


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_every_module_of_the_package_sits_in_a_stage_folder():
    loose = [name for name in MODULES if name != "scanner" and stage_of(name) not in RANKS]
    assert not loose, f"modules outside the stage folders of ARCHITECTURE.md: {loose}"


def test_no_import_runs_uphill_or_across_to_a_sibling_stage():
    wrong = []
    for name, targets in GRAPH.items():
        mine = stage_of(name)
        for target in sorted(targets):
            theirs = stage_of(target)
            if not theirs or theirs == mine:  # the package root (its version) and the own folder
                continue
            if name == "scanner" or RANKS[theirs] >= RANKS[mine]:
                wrong.append(f"{MODULES[name].relative_to(PACKAGE.parent)} imports {target} "
                             f"({theirs} is not below {mine or 'the package root'})")
    assert not wrong, "imports against the house plan (ARCHITECTURE.md):\n" + "\n".join(wrong)


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles in the package graph: an edge p -> q when a module of package p imports one of package q."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, targets in graph.items():
        for target in targets:
            mine, theirs = package_of(name), package_of(target)
            if mine != theirs:
                edges[mine].add(theirs)
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_no_packages_import_each_other_in_a_cycle():
    cycles = package_cycles(GRAPH)
    assert not cycles, "package import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_folders_private_names():
    # Another folder's _name is its own business: a shared helper gets a public name (and a docstring).
    wrong = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("scanner."):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and package_of(node.module) != package_of(name):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}: {', '.join(private)} from {node.module}")
    assert not wrong, "private names imported across folders:\n" + "\n".join(wrong)


@pytest.mark.parametrize("graph, expected", [
    ({"scanner.enrich.a": {"scanner.detect.b"}, "scanner.detect.b": {"scanner.enrich.a"}}, 1),
    ({"scanner.enrich.a": {"scanner.core.b"}, "scanner.detect.b": {"scanner.enrich.a"}}, 0),
])
def test_the_cycle_check_itself_finds_a_cycle_and_only_a_cycle(graph, expected):
    assert len(package_cycles(graph)) == expected
