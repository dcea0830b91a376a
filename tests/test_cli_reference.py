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


def test_reference_is_the_same_after_a_command_ran_on_its_own():
    """click caches a command's help option from the first context that asks; a command
    invoked on its own caches plain `--help`. The reference must not depend on that."""
    from click.testing import CliRunner

    from mocksync.cli import daemoncmds, load_all

    load_all()
    CliRunner().invoke(daemoncmds.reconnect_cmd, ["--help"])
    assert DOC.read_text() == render()
