"""The README's "What works" table names journeys that exist (so the table cannot drift).

Each row's journey cell names `file.py` or `file.py::test_name`; the file must exist in
tests/journeys/ and the named test must be defined in it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOURNEYS = ROOT / "tests" / "journeys"


def _rows() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## What works", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("feature", "---"):
            continue
        rows.append((cells[0], re.findall(r"`([^`]+)`", cells[1])))
    return rows


def test_every_row_names_journeys_that_exist() -> None:
    rows = _rows()
    assert len(rows) >= 25, "the What works table lost its rows"
    for feature, refs in rows:
        assert refs, f"row {feature!r} names no journey"
        for ref in refs:
            file, _, name = ref.partition("::")
            path = JOURNEYS / file
            assert path.is_file(), f"{feature}: {file} is not in tests/journeys/"
            if name:
                assert re.search(rf"^(async )?def {re.escape(name)}\(", path.read_text(),
                                 re.M), f"{feature}: {file} has no test {name}"
