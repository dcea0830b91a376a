"""Several transports at once (LAN peers and the relay): one Transport to the Agent.

Each transport gets every broadcast and reports its own part of `status`; the agent's store
makes duplicate deliveries (the same change set by LAN and by relay) harmless no-ops.
"""

from __future__ import annotations

from typing import Any

from ..ports import AgentPort, LogPusher, PresenceCarrier, Reconnecting, Transport


class MultiTransport:
    def __init__(self, *transports: Transport | None) -> None:
        self.transports = [t for t in transports if t is not None]

    async def start(self, agent: AgentPort) -> None:
        for t in self.transports:
            await t.start(agent)

    async def stop(self) -> None:
        for t in reversed(self.transports):
            await t.stop()

    async def reconnect(self) -> None:
        for t in self.transports:
            if isinstance(t, Reconnecting):
                await t.reconnect()

    async def push_logs(self) -> None:
        """Upload new membership entries now (a removal made with the CLI) where a transport
        can (the relay), instead of at its next periodic check."""
        for t in self.transports:
            if isinstance(t, LogPusher):
                await t.push_logs()

    def broadcast(self, space: str, env: str, wire: bytes) -> None:
        for t in self.transports:
            t.broadcast(space, env, wire)

    def set_presence(self, *, space: str | None = None, env: str | None = None,
                     entity: str | None = None, editor: str | None = None) -> None:
        for t in self.transports:
            if isinstance(t, PresenceCarrier):
                t.set_presence(space=space, env=env, entity=entity, editor=editor)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peers": []}
        for t in self.transports:
            st = t.status()
            if "relay" in st:
                out["relay"] = st["relay"]
            out["peers"] += st.get("peers", [])
            for k, v in st.items():
                if k not in ("relay", "peers"):
                    out[k] = v
        return out
