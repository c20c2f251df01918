"""Imports flow one way: core <- data <- techniques <- report / explorer / cli, with no cycle between areas.

Parsed from the source (ast), so the test sees every import, including the lazy ones inside functions;
imports under ``if TYPE_CHECKING:`` are type hints only and do not count.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "uncover"
FRONT = {"report", "explorer", "cli"}  # may import anything
SHARED = {"errors"}  # importable from everywhere


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> set[str]:
    """Every uncover module ``path`` imports (absolute or relative), outside TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "uncover")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "uncover":
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # `from uncover.x import module`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


PAGES = ("cli", "report", "dashboard")  # an area's command line and pages belong to the front layer


def _area(module: str) -> str:
    """The area of an uncover module: its first sub-package. ``uncover`` itself is core-level (it imports
    core and errors; techniques load lazily by name); an area's ``cli``, ``report`` and ``dashboard``
    modules are front layer."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    if parts[-1] in PAGES and len(parts) > 2:
        return "cli"
    return parts[1]


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
EDGES = {m: {i for i in _imports(p) if i in MODULES} for m, p in MODULES.items()}


def _offending(rule) -> list[str]:
    return sorted(f"{m} imports {i}" for m, imps in EDGES.items() for i in imps
                  if _area(i) != _area(m) and _area(i) not in SHARED and not rule(_area(m), _area(i)))


def test_the_parser_sees_lazy_relative_and_module_imports(tmp_path):
    pkg = tmp_path / "uncover" / "area"
    pkg.mkdir(parents=True)
    src = pkg / "mod.py"
    src.write_text("from typing import TYPE_CHECKING\nfrom . import sibling\nif TYPE_CHECKING:\n"
                   "    from uncover.report import html\ndef f():\n    import uncover.core.model\n"
                   "    from uncover.data import tasks\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "uncover"
    try:
        found = _imports(src)
    finally:
        PACKAGE = saved
    assert {"uncover.area.sibling", "uncover.core.model", "uncover.data.tasks"} <= found
    assert not any(i.startswith("uncover.report") for i in found)


def test_core_imports_no_other_area():
    assert _offending(lambda a, b: a != "core") == []


def test_data_imports_only_core():
    assert _offending(lambda a, b: a != "data" or b == "core") == []


def test_techniques_never_import_the_front_layer():
    assert _offending(lambda a, b: a in FRONT or b not in FRONT) == []


def test_no_cycle_between_areas():
    graph: dict[str, set[str]] = defaultdict(set)
    for m, imps in EDGES.items():
        for i in imps:
            a, b = _area(m), _area(i)
            if a != b and a not in FRONT and b not in SHARED | FRONT:
                graph[a].add(b)
    state: dict[str, int] = {}

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := cycle_from(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := cycle_from(start, [])):
            pytest.fail("import cycle between areas: " + " -> ".join(found))
