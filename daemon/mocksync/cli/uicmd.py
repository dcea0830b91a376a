"""`mocksync open`: sign a browser in to the daemon's local web page (issue 19).

The daemon mints a one-time sign-in address and gives it only over its owner-only control
socket, so whoever may run the CLI for this home may open the page, and nobody else. The
address is printed (stdout: a script or another browser can use it) and opened in a browser
where one can be: `BROWSER` names it, or a graphical session is there; never on a headless
machine or with `--no-browser` (a terminal browser would take the terminal over).
"""

from __future__ import annotations

import os
import sys

import click

from .common import Ctx, emit_json, examples, main_group


def _can_open_browser() -> bool:
    """A browser can be shown: `BROWSER` says which, or there is a desktop session."""
    if os.environ.get("BROWSER"):
        return True
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@main_group.command("open", epilog=examples("mocksync open", "mocksync open --no-browser",
                                            "mocksync open --json | jq -r .url"))
@click.option("--no-browser", is_flag=True, help="Only print the address; open no browser.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def open_cmd(ctx: Ctx, no_browser: bool, as_json: bool) -> None:
    """Open the daemon's local web page: the team, environments and conflicts, live.

    Prints an address on 127.0.0.1 with a one-time sign-in token (valid for two minutes,
    for one browser) and opens it in your browser when there is one (the BROWSER variable
    names it). The page runs as long as the daemon does; `ui_port` in config.toml or
    `daemon --ui-port` sets its port, `daemon --no-ui` turns it off.
    """
    from .daemoncmds import _call

    res = _call(ctx, "ui_open")
    url = str(res["url"])
    opened = False
    if not no_browser and _can_open_browser():
        import webbrowser

        try:
            opened = webbrowser.open(url, new=2)
        except webbrowser.Error:
            opened = False
    if as_json:
        emit_json({"url": url, "base": res.get("base"), "expires_in_s": res.get("expires_in_s"),
                   "opened": opened})
        return
    click.echo(url)
    if opened:
        click.echo("opened in your browser (the link signs in once)", err=True)
    else:
        click.echo(f"open this address in a browser on this machine; it signs in once, within "
                   f"{int(res.get('expires_in_s') or 120)} s", err=True)
