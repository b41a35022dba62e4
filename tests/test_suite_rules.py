"""Rules of the test suite itself: a test imports its helpers from a helper module (tests/*.py not named
test_*: conftest.py, tiny_voc.py, runs.py, report_data.py, figure_checks.py, ...), never from a test file."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_test_modules(path: Path) -> list[str]:
    """Modules named ``test_*`` that ``path`` imports (``import test_x``, ``from test_x import``,
    ``from tests.test_x import``, ``from . import test_x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [module] if module not in ("", "tests") else [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        found += [n for n in names if n.rsplit(".", 1)[-1].startswith("test_")]
    return found


def test_no_test_file_imports_another():
    files = sorted(TESTS.glob("*.py"))
    assert len([p for p in files if p.name.startswith("test_")]) > 20
    offenders = {p.name: found for p in files if (found := _imported_test_modules(p))}
    assert not offenders, f"import these helpers from a helper module instead: {offenders}"


def test_the_rule_sees_each_form_of_import(tmp_path):
    forms = ["import test_a", "from test_b import x", "from tests.test_c import y", "from . import test_d",
             "from tests import test_e", "import runs, tiny_voc", "from report_data import row"]
    path = tmp_path / "m.py"
    path.write_text("\n".join(forms) + "\n")
    assert _imported_test_modules(path) == ["test_a", "test_b", "tests.test_c", ".test_d", "tests.test_e"]
