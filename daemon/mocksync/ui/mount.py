"""How the daemon gets its local web page: `mount_ui`, handed to `agent.runner.run_daemon` by
the CLI.

Why injected rather than imported by the runner: the page sits on top of the agent (it calls
the control API), so the agent may not import it (the layer contract, issue 14). The command
that starts the daemon knows both and passes this function in; the runner only starts and
stops what it returns.
"""

from __future__ import annotations

from ..agent.control import ControlServer
from ..agent.daemon import Agent
from ..agent.runner import Mounted
from ..agent.settings import Settings
from .openroute import register_open


def mount_ui(agent: Agent, control: ControlServer, settings: Settings) -> Mounted | None:
    """Register `ui_open` (answered even with the page off) and, when `settings.ui` is on,
    the page's server (not started yet). Jinja2 is loaded only when the page is on."""
    ui = None
    if settings.ui:  # the local web page (issue 19)
        from .app import UiServer

        ui = UiServer(agent, control, port=settings.ui_port)
    register_open(control, ui)
    return ui


__all__ = ["mount_ui"]
