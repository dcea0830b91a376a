"""Control API methods: one thin handler per CLI command, each calling one Agent method.

The CLI and editor plugins call these over the Unix socket (control.py). Parameters are
checked here (types, required keys) so a bad request gets a clear error and changes nothing.
"""

from __future__ import annotations

from typing import Any

from ..errors import ValidationError
from .control import ControlServer
from .daemon import Agent


def _str(params: dict[str, Any], key: str, required: bool = True) -> str | None:
    v = params.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise ValidationError(f"parameter {key!r} must be a non-empty string")
    return v


def register(server: ControlServer, agent: Agent) -> None:
    @server.route("status")
    async def status(params: dict[str, Any]) -> dict[str, Any]:
        return agent.status()

    @server.route("list")
    async def list_(params: dict[str, Any]) -> dict[str, Any]:
        return {"environments": agent.all_envs()}

    @server.route("share")
    async def share(params: dict[str, Any]) -> dict[str, Any]:
        return agent.share(_str(params, "file"), _str(params, "space", False),
                           bool(params.get("copy", False)))

    @server.route("new")
    async def new(params: dict[str, Any]) -> dict[str, Any]:
        return agent.new(_str(params, "name"), _str(params, "space", False))

    @server.route("unshare")
    async def unshare(params: dict[str, Any]) -> dict[str, Any]:
        return agent.unshare(_str(params, "env"))

    @server.route("delete")
    async def delete(params: dict[str, Any]) -> dict[str, Any]:
        return agent.delete(_str(params, "env"))

    @server.route("restore")
    async def restore(params: dict[str, Any]) -> dict[str, Any]:
        return agent.restore(_str(params, "env"))

    @server.route("conflicts")
    async def conflicts(params: dict[str, Any]) -> dict[str, Any]:
        return {"conflicts": agent.conflicts(_str(params, "env", False))}

    @server.route("resolve")
    async def resolve(params: dict[str, Any]) -> dict[str, Any]:
        take = _str(params, "take")
        if take not in ("ours", "theirs"):
            raise ValidationError("take must be 'ours' or 'theirs'")
        return agent.resolve_conflict(_str(params, "id"), take)

    @server.route("log")
    async def log(params: dict[str, Any]) -> dict[str, Any]:
        return {"changesets": agent.change_log(_str(params, "env"))}

    @server.route("reconnect")
    async def reconnect(params: dict[str, Any]) -> dict[str, Any]:
        agent.scan()
        if agent.transport is not None and hasattr(agent.transport, "reconnect"):
            await agent.transport.reconnect()
        return {"ok": True}

    @server.route("peers")
    async def peers(params: dict[str, Any]) -> dict[str, Any]:
        st = agent.status()
        return {"peers": st["peers"]}
