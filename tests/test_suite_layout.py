"""The test suite's own house rules (issue 14): no test module imports another one, and the
shared helpers are where tests/helpers/__init__.py says.

Why: a helper kept in a test module is collected as part of it, and every module importing it
breaks when that test file changes; shared pieces belong in tests/helpers/ or conftest.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_no_test_module_imports_another() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for mod in _imported_modules(path):
            if mod.rsplit(".", 1)[-1].startswith("test_"):
                offenders.append(f"{path.relative_to(TESTS)} imports {mod}")
    assert offenders == [], offenders


def test_the_check_sees_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "test_x.py"
    bad.write_text("from test_relay_sync import Lab\nimport journeys.test_edits\n")
    assert _imported_modules(bad) == {"test_relay_sync", "journeys.test_edits"}
