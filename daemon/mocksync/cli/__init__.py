"""The `mocksync` command (click). Thin: each command parses, calls the library, prints.

Subcommands live in modules of this package grouped by what they need: `offline` (no daemon:
diff, merge, validate), `spaces` (identity, spaces, invites, members), `daemoncmds` (commands
that talk to a running daemon). Exit codes follow docs/design/cli.md "Output and exit codes": 0 done, 1 failed or conflicts,
2 usage, 3 daemon not running.
"""

from __future__ import annotations

import click

from .. import __version__
from .common import main_group

main = main_group


def load_all() -> None:
    """Import every command module (for tools that walk the whole tree, e.g. clidoc): each
    module the lazy table names, so a module added there is never left out here."""
    import importlib

    from .common import COMMAND_MODULES

    for module in sorted(set(COMMAND_MODULES.values())):
        importlib.import_module(f"{__name__}.{module}")


__all__ = ["main", "click", "__version__", "load_all"]
