"""In-process agents on a LAN bound to 127.0.0.1 (real mDNS, signaling and WebRTC), shared by
the LAN test modules (tests/test_lan_*.py): a test module never imports another."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mocksync.agent.daemon import Agent
from mocksync.agent.settings import Settings
from mocksync.agent.spacedir import SpaceDirectory
from mocksync.net.lan_transport import LanTransport
from netns import Device

LOOP = ("127.0.0.1",)
WAIT = 20.0


def lan_agent(dev: Device, **kw: Any) -> Agent:
    settings = Settings(folder=dev.folder, blind_window_s=0.2, watch_step_ms=5,
                        watch_debounce_ms=30, mdns=True, bind=LOOP).check()
    return Agent(dev.home, settings, dev.identity, SpaceDirectory(dev.home),
                 transport=LanTransport(bind=LOOP, **kw))


@contextlib.asynccontextmanager
async def running(*agents: Agent) -> AsyncIterator[None]:
    started: list[Agent] = []
    try:
        for a in agents:
            await a.start()
            started.append(a)
        yield
    finally:
        for a in reversed(started):
            with contextlib.suppress(Exception):
                await a.stop()


def peer_of(agent: Agent, device: str) -> dict[str, Any] | None:
    for p in agent.status()["peers"]:
        if p["device"] == device:
            return p
    return None


def connected(agent: Agent, device: str) -> bool:
    p = peer_of(agent, device)
    return p is not None and p["state"] == "connected"
