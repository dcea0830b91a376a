"""The CLI imports only the module of the command being run (cli/common.py COMMAND_MODULES).

Why a test: a command added to a module but missing from the table would be invisible to
`mocksync NAME` until some other import loaded its module; and a heavy import creeping into
the path of `mocksync status` is a start-up cost every user pays on every command.
"""

from __future__ import annotations

import subprocess
import sys

from mocksync.cli import load_all, main
from mocksync.cli.common import COMMAND_MODULES


def test_the_table_names_every_command_and_its_module() -> None:
    load_all()
    found = {name: cmd.callback.__module__.rsplit(".", 1)[-1] for name, cmd in main.commands.items()
             if cmd.callback is not None}
    groups = {name for name, cmd in main.commands.items() if cmd.callback is None}
    assert set(main.commands) == set(COMMAND_MODULES), "table and registered commands differ"
    for name, module in found.items():
        assert COMMAND_MODULES[name] == module, f"{name} lives in {module}"
    assert groups <= set(COMMAND_MODULES)


def test_status_does_not_import_the_merge_engine_or_join_crypto() -> None:
    code = (
        "import sys\n"
        "from mocksync.cli import main\n"
        "try:\n"
        "    main(['status', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('mocksync.model.diff', 'mocksync.space.invite', 'mocksync.cli.offline',"
        " 'mocksync.cli.spaces') if m in sys.modules]\n"
        "print(','.join(heavy) or 'none')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "none"


def test_unknown_command_is_a_usage_error() -> None:
    out = subprocess.run([sys.executable, "-m", "mocksync", "nosuchcommand"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "No such command" in out.stderr
