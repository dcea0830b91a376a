"""An in-process transport: agents in one process exchange change sets directly.

For tests and the single-machine demo of the daemon's behaviour before a network is involved.
It keeps the same contract as the real transports: a change set goes only to devices that
belong to its space, each receiver verifies it (signature, membership, chain) in its store,
and a device joining late catches up by version vector.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import MocksyncError
from ..ports import AgentPort

log = logging.getLogger("mocksync.bus")


class LocalBus:
    """The agents of one process that exchange change sets (each through its `BusPort`)."""

    def __init__(self) -> None:
        self.agents: list[AgentPort] = []
        self.delivered = 0
        self.refused: list[str] = []

    def port(self) -> BusPort:
        return BusPort(self)

    def _members(self, space: str, sender: AgentPort) -> list[AgentPort]:
        return [a for a in self.agents if a is not sender and a.spaces.get(space) is not None]

    def _deliver(self, agent: AgentPort, space: str, wire: bytes) -> None:
        if agent not in self.agents:
            return
        try:
            agent.receive(space, wire)
            self.delivered += 1
        except MocksyncError as exc:
            self.refused.append(str(exc))
            log.info("bus: %s refused a change set: %s", agent.device, exc)

    def catch_up(self, agent: AgentPort) -> None:
        """Send `agent` what each connected peer has and it lacks, and the reverse."""
        for peer in self.agents:
            if peer is agent:
                continue
            for src, dst in ((peer, agent), (agent, peer)):
                for env in src.store.envs():
                    space = src.store.head_space(env)
                    if space is None or dst.spaces.get(space) is None:
                        continue
                    for wire in src.store.wires_missing(env, dst.store.version_vector(env)):
                        self._deliver(dst, space, wire)


class BusPort:
    """One agent's connection to a LocalBus (the Transport the agent holds)."""

    def __init__(self, bus: LocalBus) -> None:
        self.bus = bus
        self.agent: AgentPort | None = None
        self.online = False

    async def start(self, agent: AgentPort) -> None:
        self.agent = agent
        self.online = True
        self.bus.agents.append(agent)
        self.bus.catch_up(agent)

    async def stop(self) -> None:
        self.online = False
        if self.agent in self.bus.agents:
            self.bus.agents.remove(self.agent)

    async def reconnect(self) -> None:
        if self.agent is not None:
            self.bus.catch_up(self.agent)

    def broadcast(self, space: str, env: str, wire: bytes) -> None:
        if not self.online or self.agent is None:
            return
        loop = asyncio.get_running_loop()
        for peer in self.bus._members(space, self.agent):
            loop.call_soon(self.bus._deliver, peer, space, wire)

    def status(self) -> dict[str, Any]:
        return {"peers": [{"device": a.device, "member": None, "via": "local", "state": "connected",
                           "rtt_ms": 0.0} for a in self.bus.agents if a is not self.agent]}
