"""Shared CLI plumbing: the root group, `--home`, JSON output, exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from .. import __version__
from ..errors import MocksyncError
from ..paths import Home

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3


class Ctx:
    def __init__(self, home: Home) -> None:
        self.home = home


#: Which module of this package defines each top-level command. The CLI imports only the
#: module of the command being run, so `mocksync status` does not pay for the merge engine or
#: the crypto of `join` (start-up time is what a user feels on every command, and what the
#: journey tests pay hundreds of times). tests/test_cli_lazy.py checks the table is complete.
COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(
        ["adopt", "conflicts", "daemon", "delete", "list", "log", "new", "peers", "reconnect",
         "resolve", "restore", "share", "status", "unshare", "who"], "daemoncmds"),
    **dict.fromkeys(["diff", "merge", "validate"], "offline"),
    **dict.fromkeys(["init", "invite", "join", "members", "remove", "space"], "spaces"),
    "relay": "relaycmd",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (see COMMAND_MODULES)."""

    def _load(self, module: str) -> None:
        import importlib

        importlib.import_module(f"{__package__}.{module}")

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in sorted(set(COMMAND_MODULES.values())):
            self._load(module)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            self._load(COMMAND_MODULES[cmd_name])
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Examples:\n\n\b\n  mocksync validate env.json\n  mocksync diff old.json new.json --json\n  mocksync init --name laptop && mocksync daemon --folder ~/mockoon",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="MOCKSYNC_HOME",
    help="Directory holding this device's keys, state and logs (env MOCKSYNC_HOME).",
)
@click.version_option(__version__, prog_name="mocksync")
@click.pass_context
def main_group(ctx: click.Context, home: str | None) -> None:
    """Sync Mockoon environments between devices and teammates, merged property by property."""
    ctx.obj = Ctx(Home.resolve(home))


def emit_json(doc: Any) -> None:
    """Print exactly one JSON document on stdout (CLI.md: every read command's --json)."""
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False))


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """One-line reason on stderr, then exit with `code`."""
    click.echo(f"mocksync: {message}", err=True)
    sys.exit(code)


def run_guarded(fn, *args: Any, **kwargs: Any) -> Any:
    """Call `fn`, turning the project's own errors into a one-line message and exit 1."""
    try:
        return fn(*args, **kwargs)
    except MocksyncError as exc:
        fail(str(exc))
