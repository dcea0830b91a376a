"""The relay scaled out (issue 17): PostgreSQL, several instances on one database, failover.

Pure parts first (no database): the client's failover choice, the presence book merging
instances, migration planning and URL checks. Then against the private PostgreSQL server of
tests/pgserver.py (skipped with the reason when PostgreSQL is not installed): two relay
instances on one database with Alice on one and Bob on the other, live edits and catch-up
across them, presence, a quota the two instances cannot exceed together, and a kill -9 of the
instance Alice is on while she keeps editing (she fails over; Bob has every edit, once).
The storage behaviour both engines share is checked on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mocksync.net.relay_client import failover, relay_urls
from mocksync.relay.engine import OnLoop, PresenceBook
from mocksync.relay.envelope import Envelope
from mocksync.relay.pgstorage import (
    SCHEMA_VERSION,
    PgStorage,
    check_url,
    plan_migrations,
    redact,
)
from mocksync.relay.policy import Refusal
from mocksync.relay.server import RelayConfig, RelayServer
from mocksync.relay.storage import SQLiteStorage, StorageError
from mocksync.space.quotas import get_plan
from pgserver import pg_server, pg_url  # noqa: F401  (fixtures)
from test_relay_sync import Lab, edits, rendered, share, team_of, until

from envfactory import small_env

# ------------------------------------------------------------------------------ pure


def test_failover_tries_the_next_relay_at_once_and_waits_after_a_full_round() -> None:
    assert failover(1, 0, 0) == (0, True)  # one relay: as before, back off
    assert failover(2, 0, 0) == (1, False)  # a session ended: the other instance, now
    assert failover(2, 1, 1) == (0, False)
    assert failover(2, 0, 2) == (1, True)  # both failed in a row: wait the backoff
    assert failover(3, 2, 1) == (0, False)
    assert failover(3, 1, 1, persistent=True) == (1, True)  # revoked etc: the cluster's word


def test_relay_urls_dedupes_and_refuses_empty() -> None:
    assert relay_urls("http://a:1") == ("http://a:1",)
    assert relay_urls(["http://a:1", "http://b:2", "http://a:1"]) == ("http://a:1", "http://b:2")
    with pytest.raises(Exception, match="no relay address"):
        relay_urls([])


def test_presence_book_keeps_a_device_online_while_any_instance_holds_it() -> None:
    book = PresenceBook()
    assert book.apply("i1", "sp", "dev", (None, None)) == (True, (None, None))
    assert book.apply("i2", "sp", "dev", ("t", "e")) == (False, (None, None))  # i1 answers
    assert book.apply("i1", "sp", "dev", None) == (True, ("t", "e"))  # moved: still online
    assert book.online("sp") == {"dev": ("t", "e")}
    assert book.drop_instance("i2") == [("sp", "dev", None)]
    assert book.remote("sp", "dev") is None and book.online("sp") == {}


def test_migrations_plan_and_newer_schema_refused() -> None:
    assert [v for v, _ in plan_migrations(0)] == list(range(1, SCHEMA_VERSION + 1))
    assert plan_migrations(SCHEMA_VERSION) == []
    with pytest.raises(StorageError, match="newer mocksync relay"):
        plan_migrations(SCHEMA_VERSION + 1)


def test_database_url_checked_and_password_never_shown() -> None:
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u@h:5432/db"
    with pytest.raises(StorageError, match="postgresql://USER@HOST:PORT/DB") as e:
        check_url("mysql://u:secret@h/db")
    assert "secret" not in str(e.value)


# ------------------------------------------------------------------------------ both engines


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        e: Any = OnLoop(SQLiteStorage(tmp_path))
    else:
        e = PgStorage(request.getfixturevalue("pg_url"))

    async def ignore(_ev: Any) -> None:
        return None

    await e.open(ignore)
    try:
        yield e
    finally:
        await e.close()


async def test_engines_store_index_fetch_and_check_quota_alike(engine: Any) -> None:
    def ok(_usage: Any, _count: int) -> Refusal | None:
        return None

    es = [Envelope("d1", s, 1, bytes([s]) * 10) for s in (1, 2, 4)]
    stored = await engine.put("sp", "t", es, declared_bytes=50, uploader="d1", now_ms=1, check=ok)
    assert stored == es
    again = await engine.put("sp", "t", es[:1], declared_bytes=50, uploader="d1", now_ms=2,
                             check=ok)
    assert again == []  # an occupied slot keeps its first envelope
    assert await engine.index("sp") == {"t": {"d1": 2}}  # contiguous prefix: seq 3 missing
    items, more = await engine.fetch("sp", "t", {"d1": 1}, max_items=1, max_bytes=10**6)
    assert [e.seq for e in items] == [2] and more
    seen: list[tuple[Any, int]] = []

    def refuse(usage: Any, count: int) -> Refusal | None:
        seen.append((usage.stored_bytes, count))
        return Refusal("quota_envs", "full")

    got = await engine.put("sp", "t", [Envelope("d1", 3, 1, b"x")], declared_bytes=50,
                           uploader="d1", now_ms=3, check=refuse)
    assert isinstance(got, Refusal) and seen == [(30, 1)]
    assert await engine.index("sp") == {"t": {"d1": 2}}  # the refusal changed nothing
    assert await engine.purge_after("sp", "d1", {"t": 1}) == 2
    assert await engine.index("sp") == {"t": {"d1": 1}}


# ------------------------------------------------------------------------------ two instances


class Cluster(Lab):
    """A Lab whose relay is two instances on one PostgreSQL database."""

    def __init__(self, tmp: Path, url: str) -> None:
        super().__init__(tmp)
        self.url = url
        self.instances: list[RelayServer] = []

    async def start_instances(self, n: int = 2, **config: Any) -> list[RelayServer]:
        for i in range(n):
            cfg = RelayConfig(data_dir=self.tmp / f"relay{i}", port=0, db_url=self.url, **config)
            r = RelayServer(cfg)
            await r.start()
            self.instances.append(r)
        self.relay = self.instances[0]
        return self.instances

    async def on(self, dev: Any, *urls: str) -> Any:
        from mocksync.agent.daemon import Agent
        from mocksync.agent.settings import Settings
        from mocksync.agent.spacedir import SpaceDirectory
        from mocksync.net.relay_transport import RelayTransport

        t = RelayTransport(list(urls), backoff_min_s=0.05, backoff_max_s=0.3,
                           refused_retry_s=0.3, log_check_s=0.2)
        a = Agent(dev.home, Settings(folder=dev.folder, blind_window_s=0.0, mdns=False),
                  dev.identity, SpaceDirectory(dev.home), transport=t)
        await a.start()
        self.agents.append(a)
        return a, t

    async def close(self) -> None:
        for a in list(self.agents):
            await self.stop_agent(a)
        for r in self.instances:
            await r.stop()
        self.relay = None


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str) -> AsyncIterator[Cluster]:  # noqa: F811
    c = Cluster(tmp_path, pg_url)
    try:
        yield c
    finally:
        await c.close()


async def test_two_instances_share_key_edits_presence_and_catch_up(cluster: Cluster) -> None:
    alice, bob, space = team_of(cluster)
    r1, r2 = await cluster.start_instances(2)
    assert r1.public_key == r2.public_key  # one cluster, one key devices pin
    a, ta = await cluster.on(alice, r1.url)
    b, tb = await cluster.on(bob, r2.url)
    assert await ta.wait_synced(1), ta.status()
    assert await tb.wait_synced(1), tb.status()
    bid = bob.identity.device_id
    await until(lambda: bid in ta.client.presence.get(space, {}), what="bob seen from r1",
                timeout=10)
    doc = small_env()
    share(a, doc, space)
    env = doc["uuid"]
    await edits(a, doc, 3)
    await until(lambda: env in b.envs and b.store.version_vector(env)
                == a.store.version_vector(env), what="bob has alice's live edits", timeout=10)
    assert rendered(b, env) == rendered(a, env)
    # Alice offline; Bob edits on r2; Alice comes back on r1 and catches up from the database.
    await cluster.stop_agent(a)
    await until(lambda: alice.identity.device_id not in tb.client.presence.get(space, {}),
                what="alice offline for bob", timeout=10)
    doc2 = rendered(b, env)
    doc2["name"] = "Bob's while Alice was away"
    path = next(p for p in b.folder.iterdir() if p.suffix == ".json")
    path.write_text(json.dumps(doc2), encoding="utf-8")
    b.on_file(path)
    want = b.store.version_vector(env)
    await until(lambda: want.get(bid, 0) > 0 and r1.db is not None, what="bob's edit")
    a2, ta2 = await cluster.on(alice, r1.url)
    assert await ta2.wait_synced(1)
    await until(lambda: a2.store.version_vector(env) == b.store.version_vector(env),
                what="alice caught up", timeout=10)
    assert rendered(a2, env)["name"] == "Bob's while Alice was away"


async def test_quota_holds_across_instances(cluster: Cluster) -> None:
    alice, bob, space = team_of(cluster)
    plan = get_plan("team", max_envs=1)
    r1, r2 = await cluster.start_instances(2, plan=plan)
    a, ta = await cluster.on(alice, r1.url)
    b, tb = await cluster.on(bob, r2.url)
    assert await ta.wait_synced(1) and await tb.wait_synced(1)
    da, db = small_env(), small_env()
    share(a, da, space, "a.json")
    share(b, db, space, "b.json")  # at the same time, at the other instance

    async def env_count() -> int:
        return await r1.db.env_count(space)  # type: ignore[attr-defined]

    await asyncio.sleep(2.0)  # both uploads went (or were refused) meanwhile
    assert await env_count() == 1  # one environment slot, cluster-wide
    held = {t for t, vv in (await r2.db.index(space)).items() if vv}
    assert len(held) == 1  # and the refused upload stored nothing


# ------------------------------------------------------------------------------ kill -9


def _relay_proc(home: Path, url: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mocksync", "--home", str(home), "relay", "--port", "0",
         "--db", url], stderr=subprocess.PIPE, text=True, env={**os.environ})
    assert proc.stderr is not None
    seen = []
    for _ in range(50):  # a few log lines may come first
        line = proc.stderr.readline()
        seen.append(line)
        if "listening on" in line or not line:
            break
    assert "listening on" in line, "".join(seen)
    # Keep reading its log, so a chatty relay never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, line.split("listening on ", 1)[1].split()[0].rstrip(",")


async def test_kill9_instance_device_fails_over_nothing_lost_nothing_twice(
        tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    p1, u1 = _relay_proc(tmp_path / "r1", pg_url)
    p2, u2 = _relay_proc(tmp_path / "r2", pg_url)
    lab = Cluster(tmp_path, pg_url)
    try:
        alice, bob, space = team_of(lab)
        from mocksync.agent.daemon import Agent
        from mocksync.agent.settings import Settings
        from mocksync.agent.spacedir import SpaceDirectory
        from mocksync.net.relay_transport import RelayTransport

        async def agent(dev: Any, urls: list[str]) -> tuple[Any, Any]:
            t = RelayTransport(urls, backoff_min_s=0.05, backoff_max_s=0.3,
                               refused_retry_s=0.3, log_check_s=0.2)
            ag = Agent(dev.home, Settings(folder=dev.folder, blind_window_s=0.0, mdns=False),
                       dev.identity, SpaceDirectory(dev.home), transport=t)
            await ag.start()
            lab.agents.append(ag)
            return ag, t

        a, ta = await agent(alice, [u1, u2])
        b, tb = await agent(bob, [u2])
        assert await ta.wait_synced(1) and await tb.wait_synced(1)
        assert ta.client.url == u1
        doc = small_env()
        share(a, doc, space)
        env = doc["uuid"]
        await edits(a, doc, 3)
        p1.send_signal(signal.SIGKILL)
        p1.wait()
        killed = time.monotonic()
        await edits(a, doc, 5, pause=0.05)  # Alice keeps editing through the failover
        await until(lambda: ta.client.url == u2 and ta.client.connected,
                    what="alice on the second instance", timeout=10)
        back = time.monotonic() - killed
        await until(lambda: env in b.envs and b.store.version_vector(env)
                    == a.store.version_vector(env), what="bob has every edit", timeout=15)
        assert rendered(b, env) == rendered(a, env)
        aid = alice.identity.device_id
        assert b.store.version_vector(env)[aid] == a.store.version_vector(env)[aid]
        seqs = [cs.seq for cs in b.store.changesets(env) if cs.device == aid] \
            if hasattr(b.store, "changesets") else []
        assert len(seqs) == len(set(seqs))  # nothing applied twice
        print(f"failover: connected to the second instance {back:.2f} s after kill -9")
    finally:
        await lab.close()
        for p in (p1, p2):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
