"""No import cycle inside any package of the project (issue 19, item 3).

import-linter's contracts (pyproject.toml) keep the layers between packages; inside one package
modules may import each other, but never in a circle, at module level or inside a function (an
import inside a function only hides a cycle until the function runs). The graph is built with
:mod:`ast` from the source, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sharpen_core", "data", "eval", "sharpen_attention", "classify", "cues", "segment", "pipeline")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package: str, root: Path = ROOT) -> dict[str, Path]:
    """Every module of ``package`` (subpackages included) by dotted name."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load (the module and, for ``from X import y``, ``X.y``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target, *(f"{target}.{a.name}" for a in node.names)]


def import_graph(package: str, root: Path = ROOT) -> dict[str, dict[str, int]]:
    """``{module: {imported module of the same package: line}}`` over every import, at any depth."""
    modules = package_modules(package, root)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, name, path.name == "__init__.py"):
                if target in modules and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in graph:
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package):
    graph = import_graph(package)
    assert len(graph) > 1  # the package was found
    cycle = find_cycle(graph)
    where = cycle and ", ".join(f"{a} imports {b} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:]))
    assert cycle is None, f"import cycle in {package}: {where}"


def test_a_cycle_is_found_at_any_depth(tmp_path):
    """Known answer: a function-level import closing a circle is a cycle; a chain is not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n    return g\n")
    (pkg / "c.py").write_text("import os\n")
    graph = import_graph("pkg", tmp_path)
    assert graph == {"pkg": {}, "pkg.a": {"pkg.b": 1}, "pkg.b": {"pkg.c": 2}, "pkg.c": {}}
    assert find_cycle(graph) is None
    (pkg / "c.py").write_text("def g():\n    from . import a\n")
    assert find_cycle(import_graph("pkg", tmp_path)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
