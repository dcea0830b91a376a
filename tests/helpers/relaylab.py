"""In-process agents syncing through a real relay on 127.0.0.1: the `lab` of the relay tests.

A `Lab` makes devices (helpers/devices.py, each with its own home and folder), starts one
`RelayServer` on an ephemeral loopback port, starts Agents with a `RelayTransport` (short
backoffs, no mDNS, no blind window) and stops everything at the end (the `lab` fixture in
tests/conftest.py). The small actions below (share a file, edit it n times, read the rendered
state) are what the relay, lifecycle, quota, offline-policy and attack tests have in common.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mocksync.agent.daemon import Agent
from mocksync.agent.settings import Settings
from mocksync.agent.spacedir import SpaceDirectory
from mocksync.devtools.pairing import pair
from mocksync.model import render
from mocksync.net.relay_client import RelayClient
from mocksync.net.relay_transport import RelayTransport
from mocksync.relay.server import RelayConfig, RelayServer
from mocksync.relay.storage import DB_NAME
from mocksync.spaceio.actions import create_space

from envfactory import small_env
from helpers.devices import Device, make_device
from helpers.polling import wait_until

#: Longest a relay test waits by default (seconds).
RELAY_WAIT_S = 10.0


async def until(cond: Callable[[], Any], timeout: float = RELAY_WAIT_S,
                what: str = "condition") -> None:
    """`polling.wait_until` in the argument order the relay tests use (timeout second)."""
    await wait_until(cond, what, timeout, step=0.02)


class Lab:
    """Devices, one relay, and the agents started in a test (all stopped at the end)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.relay: RelayServer | None = None
        self.port = 0
        self.agents: list[Agent] = []
        self.devices: dict[str, Device] = {}

    def device(self, name: str) -> Device:
        dev = make_device(self.tmp, name, device_name=f"{name}-laptop", member=name)
        self.devices[name] = dev
        return dev

    async def start_relay(self, storage: Any = None, **config: Any) -> RelayServer:
        cfg = RelayConfig(data_dir=self.tmp / "relay", port=self.port, **config)
        self.relay = RelayServer(cfg, storage=storage)
        await self.relay.start()
        self.port = self.relay.port or 0
        return self.relay

    async def stop_relay(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
            self.relay = None

    async def agent(self, dev: Device, policy: str = "merge",
                    **transport_kw: Any) -> tuple[Agent, RelayTransport]:
        assert self.relay is not None
        kw = {"backoff_min_s": 0.05, "backoff_max_s": 0.3, "refused_retry_s": 0.3,
              "log_check_s": 0.2, **transport_kw}
        t = RelayTransport(self.relay.url, **kw)
        a = Agent(dev.home, Settings(folder=dev.folder, blind_window_s=0.0, mdns=False,
                                     offline_policy=policy),
                  dev.identity, SpaceDirectory(dev.home), transport=t)
        await a.start()
        self.agents.append(a)
        return a, t

    async def stop_agent(self, a: Agent) -> None:
        if a in self.agents:
            self.agents.remove(a)
            await a.stop()

    async def close(self) -> None:
        for a in list(self.agents):
            await self.stop_agent(a)
        await self.stop_relay()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(str(self.tmp / "relay" / DB_NAME), isolation_level=None)


def team_of(lab: Lab) -> tuple[Device, Device, str]:
    a, b = lab.device("alice"), lab.device("bob")
    create_space(a.home, a.identity, "team")
    space = pair(a.home, b.home, "team")
    return a, b, space


def save(agent: Agent, doc: dict[str, Any], name: str = "env.json") -> Path:
    """What an editor does: write the file; the agent takes the edit in (directly: for
    set-up, while the agent's store worker is idle; else `take`, in a store turn)."""
    p = (agent.folder / name).resolve()
    p.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    agent.on_file(p)
    return p


async def take(agent: Agent, path: Path) -> None:
    """Take an editor's save in as the daemon's watcher does (`FolderEdits.watch_loop`): in
    a store turn, so never beside a store-worker job. A direct `on_file` on the loop can run
    while a job on the worker takes the same save in too (a write that met the save,
    `EnvWrites.write_env`): both diff against the same base and commit the same ops twice
    (the flaky `test_deep_value_in_a_local_file_is_invalid_not_sent`). Use this in tests
    whose agent is started (worker and watcher live) and may have store work queued."""
    async with agent.store_turn():
        agent.on_file(path)


def share(agent: Agent, doc: dict[str, Any], space: str, name: str = "env.json") -> Path:
    p = save(agent, doc, name)
    agent.share(str(p), space)
    return p


def rendered(agent: Agent, env: str) -> dict[str, Any]:
    """A copy the test may edit: `render` shares leaf objects with the state's render cache
    (model/render.py), so editing its result in place would edit the cache too."""
    return copy.deepcopy(render(agent.store.state(env)))


async def edits(agent: Agent, doc: dict[str, Any], n: int, name: str = "env.json",
                pause: float = 0.0) -> dict[str, Any]:
    for i in range(n):
        doc["routes"][0]["responses"][0]["label"] = f"edit {i}"
        p = (agent.folder / name).resolve()
        p.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        await take(agent, p)
        if pause:
            await asyncio.sleep(pause)
    return doc


@asynccontextmanager
async def detached_trio(lab: Lab) -> AsyncIterator[dict[str, Any]]:
    """alice, bob and carol in space `team`, agents with no transport, alice's environment
    (`small_env`) shared and handed to the others through `receive`, the entry point of LAN
    and relay alike: what the attack tests build before bob misbehaves. The dict holds
    `lab, space, env, doc, agents` (by name) and the devices `alice, bob, carol`."""
    alice, bob, space = team_of(lab)
    carol = lab.device("carol")
    pair(alice.home, carol.home, "team")
    agents = {}
    for d in (alice, bob, carol):
        agents[d.name] = Agent(d.home, Settings(folder=d.folder, blind_window_s=0.0, mdns=False),
                               d.identity, SpaceDirectory(d.home))
        await agents[d.name].start()
    doc = small_env()
    share(agents["alice"], doc, space)
    env = doc["uuid"]
    for cs, _r in agents["alice"].store.log(env):
        for name in ("bob", "carol"):
            agents[name].receive(space, cs.encode())
    try:
        yield {"lab": lab, "space": space, "env": env, "doc": doc, "agents": agents,
               "alice": alice, "bob": bob, "carol": carol}
    finally:
        for a in agents.values():
            await a.stop()


# ------------------------------------------------------------------------------ raw clients


async def raw_client(lab: Lab, identity: Any, logs: dict[str, list[bytes]], **kw: Any
                     ) -> RelayClient:
    assert lab.relay is not None
    kw = {"backoff_min_s": 0.05, "backoff_max_s": 0.3, "refused_retry_s": 30.0, **kw}
    c = RelayClient(lab.relay.url, identity, lambda: logs, **kw)
    await c.start()
    return c


async def settle(c: RelayClient, timeout: float = RELAY_WAIT_S) -> str:
    await until(lambda: c.state in ("connected", "refused") or
                (c.state == "offline" and c.reason not in (None, "not started")),
                timeout, "the client to settle")
    return c.state


# ------------------------------------------------------------------------------ offline


def on_disk(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write(path: Path, doc: dict[str, Any]) -> bytes:
    """An editor's save while the daemon is not running."""
    data = json.dumps(doc, indent=2).encode("utf-8")
    path.write_bytes(data)
    return data


@dataclass
class Team:
    alice: Device
    bob: Device
    space: str
    env: str
    apath: Path
    bpath: Path
    doc: dict[str, Any]  # the version both devices hold before going offline
    vv: dict[str, int]  # and the change sets


async def synced_team(lab: Lab, policy: str) -> Team:
    """Alice shares an env, Bob edits it once online (so his cut is not 0); both stop."""
    alice, bob = lab.device("alice"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    space = pair(alice.home, bob.home, "team")
    await lab.start_relay()
    a, _ta = await lab.agent(alice, policy)
    b, _tb = await lab.agent(bob, policy)
    doc = small_env()
    env = doc["uuid"]
    apath = (a.folder / "env.json").resolve()
    write(apath, doc)
    await take(a, apath)
    a.share(str(apath), space)
    await until(lambda: b.envs.get(env) is not None and b.envs[env].path.exists(),
                what="bob's copy of the env")
    bpath = b.envs[env].path
    await until(lambda: on_disk(bpath) == rendered(a, env), what="bob's file written")
    bdoc = on_disk(bpath)
    bdoc["latency"] = 100  # an online edit: relay and alice get it
    write(bpath, bdoc)
    await take(b, bpath)
    await until(lambda: rendered(a, env).get("latency") == 100, what="bob's online edit at alice")
    await until(lambda: on_disk(apath).get("latency") == 100, what="alice's file written")
    vv = b.store.version_vector(env)
    assert a.store.version_vector(env) == vv
    held = copy.deepcopy(rendered(b, env))
    await lab.stop_agent(a)
    await lab.stop_agent(b)
    return Team(alice, bob, space, env, apath, bpath, held, vv)
