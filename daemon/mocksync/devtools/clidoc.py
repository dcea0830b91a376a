"""Generate docs/CLI-REFERENCE.md from the click commands, so the reference cannot drift.

`python -m mocksync.devtools.clidoc > docs/CLI-REFERENCE.md`; a test checks the file is current.
"""

from __future__ import annotations

import click

from ..cli import load_all, main


def _walk(cmd: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            out += _walk(cmd.commands[name], path + [name])
    return out


def render() -> str:
    load_all()  # commands are imported lazily by the CLI; the reference needs them all
    lines = ["# mocksync command reference", "",
             "Generated from the commands' own help (`python -m mocksync.devtools.clidoc`).", ""]
    for path, cmd in _walk(main, ["mocksync"]):
        # click caches a command's help option from the first context that asked for it; a
        # command invoked on its own (as some tests do) caches plain `--help`. Forget it, so
        # the reference is the same whatever ran before in this process.
        cmd._help_option = None
        ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100,
                            help_option_names=["-h", "--help"])
        lines += [f"## {' '.join(path)}", "", "```", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
