"""The `ui_open` control method (`mocksync open`), registered whether the page is on or off.

Why apart from `app`: with the page off (`--no-ui`) the daemon must still answer `mocksync
open` with the reason, without loading the web stack (Jinja2) it does not serve.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..agent.control import ControlServer
from .errors import UiOff


class Opener(Protocol):
    def open_url(self) -> dict[str, Any]: ...


#: What `mocksync open` says when the daemon was told not to serve the page.
OFF_BY_SETTING = ("the web page is off on this daemon (started with --no-ui, or `ui = false` "
                  "in config.toml); start the daemon without it to use `mocksync open`")


def register_open(control: ControlServer, ui: Opener | None,
                  off_reason: str = OFF_BY_SETTING) -> None:
    """Expose `ui_open`: a one-time sign-in address from `ui`, or `off_reason` refused."""

    @control.route("ui_open")
    async def ui_open(params: dict[str, Any]) -> dict[str, Any]:
        if ui is None:
            raise UiOff(off_reason)
        return ui.open_url()


__all__ = ["OFF_BY_SETTING", "UiOff", "register_open"]
