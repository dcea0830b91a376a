"""docs/CLI-REFERENCE.md is generated from the commands; it must match them."""

from pathlib import Path

from mocksync.devtools.clidoc import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "CLI-REFERENCE.md"


def test_cli_reference_is_current():
    assert DOC.read_text() == render(), (
        "docs/CLI-REFERENCE.md is stale: run `.venv/bin/python -m mocksync.devtools.clidoc "
        "> docs/CLI-REFERENCE.md`")


def test_every_command_has_examples_in_its_help():
    text = render()
    sections = text.split("\n## ")[1:]
    missing = [s.splitlines()[0] for s in sections
               if "Example" not in s and not s.startswith("mocksync space\n")]
    assert missing == [], f"commands without examples in --help: {missing}"
