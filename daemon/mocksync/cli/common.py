"""Shared CLI plumbing: the root group, `--home`, JSON output, exit codes, help layout.

Two promises every command keeps, enforced here once rather than in each command:
- with `--json`, stdout carries exactly one JSON document on every path, errors included
  (`fail` and usage errors print `{"error": {"code", "message"}, "exit_code"}`), so a script
  can always parse what it gets; the sentence still goes to stderr for a person;
- help pages read the same everywhere: description, then (for commands taking ENV) what ENV
  may be, then the options, then the examples (`examples()` builds the epilog).
"""

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

#: The `error.code` of a JSON error document when the caller names none, by exit code.
DEFAULT_ERROR_CODES = {EXIT_FAILED: "failed", EXIT_USAGE: "usage", EXIT_NO_DAEMON: "daemon_not_running"}
#: The sentence each command taking ENV puts right after its description.
ENV_HELP = "ENV is a uuid, a name or a file path."
#: Where the raw arguments are kept in the click context (to see `--json` on a usage error).
_ARGV_KEY = "mocksync.argv"


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
    **dict.fromkeys(["init", "invite", "join", "leave", "members", "remove", "space"], "spaces"),
    "open": "uicmd",
    "relay": "relaycmd",
    "service": "servicecmd",
}


#: Names people try for a command, and the command they mean: `mocksync ui` answers with the
#: command to run instead of a bare "No such command" (click only suggests names spelled alike).
GUESSED_NAMES: dict[str, str] = {"ui": "open", "web": "open", "page": "open", "ls": "list",
                                 "sync": "status", "info": "status", "env": "list",
                                 "envs": "list", "spaces": "space list"}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (see COMMAND_MODULES)."""

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name in GUESSED_NAMES and name not in COMMAND_MODULES and name not in self.commands:
            ctx.fail(f"No such command '{name}'; did you mean `mocksync {GUESSED_NAMES[name]}`?")
        return super().resolve_command(ctx, args)

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

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV_KEY] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        """A usage error of a command run with `--json` still prints one JSON document."""
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            argv = ctx.meta.get(_ARGV_KEY) or []
            if "--json" in argv[: argv.index("--") if "--" in argv else len(argv)]:
                emit_json(error_doc(exc.format_message(), EXIT_USAGE))
            raise


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="\b\nExamples:\n  mocksync validate env.json\n  mocksync diff old.json new.json --json\n  mocksync init --name laptop && mocksync daemon --folder ~/mockoon",
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
    """Print exactly one JSON document on stdout (docs/design/cli.md "Output and exit codes": every read command's --json)."""
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False))


def wants_json() -> bool:
    """Was the running command given `--json`? (Read from the click context, so `fail` needs
    no flag passed through every helper.)"""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.params.get("as_json"):
            return True
        ctx = ctx.parent
    return False


def error_doc(message: str, code: int, error: str | None = None, **extra: Any) -> dict[str, Any]:
    """The one JSON document of a failed `--json` command: what went wrong and the exit code."""
    return {"error": {"code": error or DEFAULT_ERROR_CODES.get(code, "failed"), "message": message},
            "exit_code": code, **extra}


def fail(message: str, code: int = EXIT_FAILED, *, error: str | None = None,
         **extra: Any) -> NoReturn:
    """One-line reason on stderr, then exit with `code`. Under `--json`, stdout also gets the
    error as one JSON document (`error_doc`; `error` names its code, `extra` adds fields)."""
    if wants_json():
        emit_json(error_doc(message, code, error, **extra))
    click.echo(f"mocksync: {message}", err=True)
    sys.exit(code)


def examples(*lines: str) -> str:
    """The epilog of a command: its examples, after the options on every help page."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def run_guarded(fn, *args: Any, **kwargs: Any) -> Any:
    """Call `fn`, turning the project's own errors into a one-line message and exit 1."""
    try:
        return fn(*args, **kwargs)
    except MocksyncError as exc:
        fail(str(exc))
