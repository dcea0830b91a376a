"""No single peer can stall a daemon (issue 12), and a big first sync never blocks its loop
(issue 15).

A malicious member, built from the library's own signing code, sends many and large change
sets: over a real relay (live push and catch-up), and through the LAN sync path's delivery
queue. Meanwhile the test asks the victim's control socket for `status` again and again and
measures every answer, and a ticker task on the victim's loop measures how late it wakes.

Network rule: the relay and every socket are on 127.0.0.1 or a Unix socket.

Figures measured while writing this, on the shared 2-core machine under a load average of
about 10 (six other engineers' test runs): see the report of issue 12; the asserted bounds
are deliberately loose (the targets are 100 ms for `status` and 50 ms of loop lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.agent import api
from mocksync.agent.client import ControlClient
from mocksync.agent.control import ControlServer
from mocksync.agent.daemon import Agent
from mocksync.agent.runner import tune_gc
from mocksync.agent.settings import Settings
from mocksync.agent.spacedir import SpaceDirectory
from mocksync.changes import ChangeSet
from mocksync.changes.hlc import Clock
from mocksync.devtools.envgen import generate_env
from mocksync.devtools.pairing import pair
from mocksync.model import parse_env, snapshot_ops, to_wire
from mocksync.net.relay_transport import RelayTransport
from mocksync.paths import Home
from mocksync.relay.server import RelayConfig, RelayServer
from mocksync.spaceio.actions import create_space, init_device
from mocksync.store import Store
from mocksync.sync import Deliver

from helpers.fakeagent import FakeAgent
from helpers.polling import wait_until
from helpers.relaylab import take

#: Bounds asserted: robust on the shared 2-core machine at a load average of ~10, where
#: the worst figures seen were 350 ms (status) and 275 ms (lag) for the 2 MB sync, against
#: 3.5 s with the ingest on the loop. The targets (quiet machine) are 100 ms and 50 ms.
STATUS_BOUND_MS = 500.0
LAG_BOUND_MS = 500.0
#: Environment size of the first-sync test (the `long` one uses Mockoon's 15 MB plan limit).
FIRST_SYNC_BYTES = 2_000_000
#: Flood: change sets sent by the malicious member, and the size of each one's value.
FLOOD_SETS = 150
FLOOD_VALUE_BYTES = 20_000
TICK_S = 0.005
#: How often the test asks `status` (a CLI polling, or a user running it in a loop).
PROBE_EVERY_S = 0.05
WAIT_S = 90.0


class LoopLag:
    """A ticker on the running loop: how much later than asked each wake-up comes."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.lags_ms.append((time.perf_counter() - t0 - TICK_S) * 1000)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return max(self.lags_ms, default=0.0)


class StatusProbe:
    """`status` over the control socket from another thread, as the CLI asks it."""

    def __init__(self, socket: Path) -> None:
        self.client = ControlClient(socket, timeout=30)
        self.ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                doc = self.client.call("status")
                assert doc["daemon"]["running"] is True
            except Exception as exc:  # recorded: the test fails on it
                self.errors.append(repr(exc))
            self.ms.append((time.perf_counter() - t0) * 1000)
            self._stop.wait(PROBE_EVERY_S)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


async def until(cond: Any, what: str, timeout: float = WAIT_S, why: Any = None) -> None:
    """`helpers.polling.wait_until` with this module's long default (floods are slow)."""
    await wait_until(cond, what, timeout, step=0.02, why=why)


def device(root: Path, name: str) -> tuple[Home, Any, Path]:
    home = Home(root / name)
    ident, _ = init_device(home, name=f"{name}-laptop", member_name=name)
    return home, ident, root / name / "envs"


def agent_of(home: Home, ident: Any, folder: Path, transport: Any = None) -> Agent:
    return Agent(home, Settings(folder=folder, blind_window_s=0.0, mdns=False), ident,
                 SpaceDirectory(home), transport=transport)


@contextlib.asynccontextmanager
async def controlled(agent: Agent) -> AsyncIterator[ControlServer]:
    server = ControlServer(agent.home.socket)
    api.register(server, agent)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def snapshot_changeset(key: Ed25519PrivateKey, space: str, device: str,
                       doc: dict[str, Any]) -> ChangeSet:
    """A member's first change set of an environment, made with the library's own code."""
    hlc = Clock().tick(int(time.time() * 1000))
    return ChangeSet(space=space, env=doc["uuid"], device=device, seq=1, hlc=hlc, deps={},
                     prev_hash=b"", ops=tuple(to_wire(op) for op in snapshot_ops(doc))).sign(key)


def env_file(folder: Path) -> Path | None:
    files = [p for p in folder.glob("*.json") if not p.name.startswith(".")]
    return files[0] if len(files) == 1 else None


# ------------------------------------------------------------------------------ first sync


async def _first_sync(tmp_path: Path, size: int) -> tuple[float, float, int]:
    """Bob, a fresh device, receives a teammate's `size`-byte environment: the worst loop lag
    and `status` answer time while it is ingested, rendered and written, and the count of
    answers. The collector is tuned as the daemon tunes it (`runner.tune_gc`)."""
    thresholds = gc.get_threshold()
    tune_gc()
    try:
        return await _first_sync_tuned(tmp_path, size)
    finally:
        gc.set_threshold(*thresholds)


async def _first_sync_tuned(tmp_path: Path, size: int) -> tuple[float, float, int]:
    alice_home, alice, _ = device(tmp_path, "alice")
    bob_home, bob, bob_folder = device(tmp_path, "bob")
    create_space(alice_home, alice, "team")
    space = pair(alice_home, bob_home, "team")
    doc = generate_env(size, seed=5, name="Big catalog")
    cs = snapshot_changeset(alice.signing_key, space, alice.device_id, doc)
    agent = agent_of(bob_home, bob, bob_folder)
    written: list[dict[str, Any]] = []
    agent.listeners.append(lambda ev: ev.get("event") == "written" and written.append(ev))
    await agent.start()
    try:
        async with controlled(agent):
            probe = StatusProbe(bob_home.socket)
            lag = LoopLag()
            lag.start()
            probe.start()
            await asyncio.sleep(0.05)  # both run before the sync starts
            try:
                # What the relay transport hands over once its worker thread opened the
                # envelope (the LAN path hands over wire bytes the same way).
                res, refused = await agent.receive_batch_async(space, [cs])
                assert not refused and [c.seq for c in res.applied] == [1]
                await until(lambda: env_file(bob_folder) is not None, "bob's file")
                path = env_file(bob_folder)
                assert path is not None
                await until(lambda: bool(written), "the write to finish")
            finally:
                worst_lag = await lag.stop()
                await asyncio.to_thread(probe.stop)  # (its last call needs the loop)
        assert not probe.errors, probe.errors
        assert parse_env(path.read_bytes()).doc == doc  # the whole environment, exactly
        worst_status = max(probe.ms)
        return worst_lag, worst_status, len(probe.ms)
    finally:
        await agent.stop()


async def test_first_sync_of_a_big_environment_never_blocks_the_loop(tmp_path: Path) -> None:
    worst_lag, worst_status, answers = await _first_sync(tmp_path, FIRST_SYNC_BYTES)
    print(f"first sync {FIRST_SYNC_BYTES / 1e6:.0f} MB: max loop lag {worst_lag:.1f} ms, "
          f"max status {worst_status:.1f} ms over {answers} answers")
    assert answers >= 3, "status was asked during the sync"
    assert worst_lag < LAG_BOUND_MS
    assert worst_status < STATUS_BOUND_MS


@pytest.mark.long
async def test_first_sync_of_15_mb_never_blocks_the_loop(tmp_path: Path) -> None:
    worst_lag, worst_status, answers = await _first_sync(tmp_path, 15_000_000)
    print(f"first sync 15 MB: max loop lag {worst_lag:.1f} ms, max status "
          f"{worst_status:.1f} ms over {answers} answers")
    assert worst_lag < LAG_BOUND_MS
    assert worst_status < STATUS_BOUND_MS


# ------------------------------------------------------------------------------ relay flood


def _flood_log(home: Home, key: Ed25519PrivateKey, space: str, device: str) -> tuple[str, str]:
    """The malicious member's chain: an environment, then FLOOD_SETS big edits of it, made
    in her own log with the library's signing code (her daemon uploads them at start)."""
    doc = generate_env(30_000, seed=9, name="Mallory flood")
    store = Store(home.log_db)
    try:
        now = int(time.time() * 1000)
        store.commit_local(key, space=space, env=doc["uuid"], device=device,
                           ops=snapshot_ops(doc), now_ms=now)
        target = doc["routes"][0]["responses"][0]["uuid"]
        last = ""
        for i in range(FLOOD_SETS):
            last = f"{i:06d}" + "x" * FLOOD_VALUE_BYTES
            store.commit_local(key, space=space, env=doc["uuid"], device=device,
                               ops=[("s", target, ("v", "body"), last)], now_ms=now + i + 1)
    finally:
        store.close()
    return doc["uuid"], last


async def test_flood_over_the_relay_status_answers_nothing_lost(tmp_path: Path) -> None:
    alice_home, alice, alice_folder = device(tmp_path, "alice")
    bob_home, bob, bob_folder = device(tmp_path, "bob")
    eve_home, eve, eve_folder = device(tmp_path, "mallory")
    create_space(alice_home, alice, "team")
    space = pair(alice_home, bob_home, "team")
    pair(alice_home, eve_home, "team")
    flood_env, last_value = _flood_log(eve_home, eve.signing_key, space, eve.device_id)

    relay = RelayServer(RelayConfig(data_dir=tmp_path / "relay", port=0))
    await relay.start()
    kw = {"backoff_min_s": 0.05, "backoff_max_s": 0.3, "log_check_s": 0.2}
    agents: list[Agent] = []
    try:
        a = agent_of(alice_home, alice, alice_folder, RelayTransport(relay.url, **kw))
        b = agent_of(bob_home, bob, bob_folder, RelayTransport(relay.url, **kw))
        # Both at once: their first uploads of the space's log race on the relay's auth path
        # (the relay merges them one at a time: tests/test_relay_log_race.py).
        agents += [a, b]  # stopped at the end even if a start fails
        await asyncio.gather(a.start(), b.start())
        for ag in (a, b):
            assert await ag.transport.wait_synced(1, timeout=WAIT_S)  # type: ignore[union-attr]
        honest = generate_env(20_000, seed=3, name="Orders API")
        alice_folder.mkdir(parents=True, exist_ok=True)
        path = alice_folder / "orders.json"
        path.write_text(json.dumps(honest, indent=2), encoding="utf-8")
        a.on_file(path.resolve())
        a.share(str(path), space)
        await until(lambda: b.envs.get(honest["uuid"]) is not None, "bob to get alice's env")

        async with controlled(b):
            probe = StatusProbe(bob_home.socket)
            probe.start()
            try:
                m = agent_of(eve_home, eve, eve_folder, RelayTransport(relay.url, **kw))
                await m.start()  # uploads her whole flood; the relay pushes it to bob
                agents.append(m)
                for i in range(5):  # honest edits while the flood goes on
                    honest["routes"][0]["responses"][0]["label"] = f"honest {i}"
                    path.write_text(json.dumps(honest, indent=2), encoding="utf-8")
                    await take(a, path.resolve())  # (as the watcher: in a store turn)
                    await asyncio.sleep(0.1)
                want = {eve.device_id: FLOOD_SETS + 1}
                await until(lambda: b.store.version_vector(flood_env) == want,
                            "bob to hold the whole flood", why=lambda: (
                                f"bob holds {b.store.version_vector(flood_env)}; bob's relay "
                                f"{b.transport.status() if b.transport else None}; mallory's "
                                f"{m.transport.status() if m.transport else None}"))
                await until(lambda: b.store.version_vector(honest["uuid"])
                            == a.store.version_vector(honest["uuid"]), "alice's edits on bob")
            finally:
                await asyncio.to_thread(probe.stop)  # (its last call needs the loop)
        assert not probe.errors, probe.errors
        print(f"relay flood of {FLOOD_SETS} x {FLOOD_VALUE_BYTES // 1000} KB: status max "
              f"{max(probe.ms):.1f} ms, median {sorted(probe.ms)[len(probe.ms) // 2]:.1f} ms "
              f"over {len(probe.ms)} answers")
        assert len(probe.ms) >= 3
        assert max(probe.ms) < STATUS_BOUND_MS
        # Nothing lost, order kept: the chain is whole and the last edit is the one shown.
        from mocksync.model import render

        flood_doc = render(b.store.state(flood_env))
        assert flood_doc["routes"][0]["responses"][0]["body"] == last_value
        bob_path = b.envs[honest["uuid"]].path
        await until(lambda: json.loads(bob_path.read_text())["routes"][0]["responses"][0]
                    ["label"] == "honest 4", "alice's last edit in bob's file")
    finally:
        for ag in reversed(agents):
            with contextlib.suppress(Exception):
                await ag.stop()
        await relay.stop()


# ------------------------------------------------------------------------------ LAN path


class _RecordingAgent(FakeAgent):
    """The agent side of the LAN delivery queue: applies slowly, on a thread, recording."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[int] = []

    async def receive_async(self, space: str, wire: bytes) -> None:
        def work() -> None:
            time.sleep(0.01)  # a change set that takes a while to apply
            self.applied.append(int(wire.decode()))
            if wire == b"3":
                from mocksync.errors import ChangeSetError

                raise ChangeSetError("refused for the test")

        await asyncio.to_thread(work)


class _RecordingHub:
    def __init__(self) -> None:
        self.acks: list[tuple[int, str | None]] = []
        self.sessions: dict[Any, Any] = {}  # no open sessions: deliveries only

    def delivered(self, ev: Deliver, now_ms: int, *, refused: str | None = None) -> list[Any]:
        self.acks.append((ev.seq, refused))
        return []


async def test_lan_deliveries_apply_off_the_loop_in_arrival_order() -> None:
    from mocksync.net.lan_transport import LanTransport

    t = LanTransport(bind=("127.0.0.1",), mdns=False)
    t.agent = _RecordingAgent()
    hub = t.hub = _RecordingHub()  # type: ignore[assignment]
    lag = LoopLag()
    lag.start()
    link = SimpleNamespace(device="dev")  # the peer's link, as the transport knows it
    for seq in range(1, 21):
        t._deliver(Deliver(link, "s" * 32, "e", "dev", seq, str(seq).encode()))
    assert hub.acks == []  # nothing applied on the loop, in the call
    await until(lambda: len(hub.acks) == 20, "all deliveries acknowledged", timeout=20)
    worst = await lag.stop()
    assert t.agent.applied == list(range(1, 21))
    assert [s for s, _r in hub.acks] == list(range(1, 21))
    assert [s for s, r in hub.acks if r is not None] == [3]
    assert worst < LAG_BOUND_MS
