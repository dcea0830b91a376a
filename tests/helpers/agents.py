"""Agents in the test's own process: on a `LocalBus`, on the LAN bound to 127.0.0.1, and the
waits and views the in-process tests share.

Why in-process: tests that run two devices side by side, reach into state and control timing
to the millisecond need the `Agent` object itself, with a small blind window. The relay
variant (agents with a `RelayTransport` and a real relay server in this process) is
helpers/relaylab.py; the same devices as real daemon subprocesses are helpers/daemons.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mocksync.agent.bus import LocalBus
from mocksync.agent.daemon import Agent
from mocksync.agent.settings import Settings
from mocksync.agent.spacedir import SpaceDirectory
from mocksync.model import render
from mocksync.net.lan_transport import LanTransport

from helpers.devices import Device, make_device, team_space
from helpers.files import copy_example, read_doc
from helpers.polling import WAIT_S, wait_until

#: Blind window the in-process agents use (Mockoon's is 3 s, the daemon's default hold 3.5 s).
TEST_BLIND_S = 0.3
#: Blind window of the LAN agents (their tests wait on real mDNS and WebRTC, not on it).
LAN_BLIND_S = 0.2
#: The only address LAN agents bind (docs/design/testing.md "The network rule").
LOOP = ("127.0.0.1",)
#: Longest a LAN test waits for discovery and a WebRTC session (seconds).
LAN_WAIT_S = 20.0


def agent_settings(folder: Path, blind_s: float = TEST_BLIND_S, **kw: Any) -> Settings:
    return Settings(folder=folder, blind_window_s=blind_s, watch_step_ms=5,
                    watch_debounce_ms=50, mdns=False, **kw).check()


def make_agent(dev: Device, bus: LocalBus | None = None, blind_s: float = TEST_BLIND_S,
               **kw: Any) -> Agent:
    """An agent for `dev` on `bus` (a fresh one when None): not started."""
    bus = bus if bus is not None else LocalBus()
    return Agent(dev.home, agent_settings(dev.folder, blind_s, **kw), dev.identity,
                 SpaceDirectory(dev.home), transport=bus.port())


def lan_agent(dev: Device, **kw: Any) -> Agent:
    """An agent for `dev` with the LAN transport (real mDNS, signaling, WebRTC) bound to
    127.0.0.1 only: not started."""
    settings = Settings(folder=dev.folder, blind_window_s=LAN_BLIND_S, watch_step_ms=5,
                        watch_debounce_ms=30, mdns=True, bind=LOOP).check()
    return Agent(dev.home, settings, dev.identity, SpaceDirectory(dev.home),
                 transport=LanTransport(bind=LOOP, **kw))


@contextlib.asynccontextmanager
async def running(*agents: Agent) -> AsyncIterator[tuple[Agent, ...]]:
    """Start agents in order; stop them all (in reverse) whatever happens."""
    started: list[Agent] = []
    try:
        for a in agents:
            await a.start()
            started.append(a)
        yield tuple(agents)
    finally:
        for a in reversed(started):
            with contextlib.suppress(Exception):
                await a.stop()


@dataclass
class Two:
    """Two devices of one team space on one `LocalBus`, an example shared by `a` and
    adopted by `b` (its file written and equal)."""

    a: Agent
    b: Agent
    dev_a: Device
    dev_b: Device
    env: str
    file_a: Path
    file_b: Path


@contextlib.asynccontextmanager
async def two_devices(root: Path, example: str = "petstore.json", settled: bool = False,
                      **agent_kw: Any) -> AsyncIterator[Two]:
    """`Two` under `root`, both agents stopped on exit; with `settled`, nothing is pending
    or happening on either when it is handed over (see `settle`)."""
    dev_a, dev_b = make_device(root, "a"), make_device(root, "b")
    team_space(dev_a, dev_b)
    bus = LocalBus()
    src = copy_example(example, dev_a.folder)
    async with running(make_agent(dev_a, bus, **agent_kw),
                       make_agent(dev_b, bus, **agent_kw)) as (a, b):
        env = a.share(str(src), space="team")["uuid"]
        await wait_until(lambda: env in b.envs and b.envs[env].path.exists(), "B to adopt")
        file_b = b.envs[env].path
        await wait_until(lambda: read_doc(file_b) == read_doc(src), "B's file to match")
        if settled:
            await settle(a, b)
        yield Two(a, b, dev_a, dev_b, env, src, file_b)


class EventLog:
    """Collect an agent's published events (the same dicts the control stream sends)."""

    def __init__(self, agent: Agent) -> None:
        self.events: list[dict[str, Any]] = []
        agent.listeners.append(self.events.append)

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind
                and all(e.get(k) == v for k, v in match.items())]


def env_status(agent: Agent, uuid_or_file: str | Path) -> dict[str, Any] | None:
    """This environment's row of `status` (what `status --json` prints), by uuid or file."""
    key = str(uuid_or_file)
    for e in agent.status()["environments"]:
        if e["uuid"] == key or e["file"] == key:
            return e
    return None


def state_doc(agent: Agent, env: str) -> dict[str, Any]:
    return render(agent.store.state(env))


def peer_of(agent: Agent, device: str) -> dict[str, Any] | None:
    """`device`'s row of the agent's `status()["peers"]`."""
    for p in agent.status()["peers"]:
        if p["device"] == device:
            return p
    return None


def connected(agent: Agent, device: str) -> bool:
    p = peer_of(agent, device)
    return p is not None and p["state"] == "connected"


async def settle(*agents: Agent, quiet_s: float = 0.15, timeout: float = WAIT_S) -> None:
    """Wait until no agent has a held write pending or a store-worker job (an ingest, a
    write) queued or running, and nothing happened for `quiet_s`."""
    logs = [EventLog(a) for a in agents]
    deadline = time.monotonic() + timeout
    last_count = -1
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        count = sum(len(lg.events) for lg in logs)
        pending = any(rt.write_handle is not None for a in agents for rt in a.envs.values()) \
            or any(a.worker is not None and (a.worker.pending or a.worker.busy) for a in agents)
        if count != last_count or pending:
            last_count = count
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            for a, lg in zip(agents, logs, strict=True):
                a.listeners.remove(lg.events.append)
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"agents did not settle within {timeout} s")
