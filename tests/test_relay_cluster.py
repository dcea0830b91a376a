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
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mocksync.devtools.pairing import pair
from mocksync.net import ice
from mocksync.net.relay_client import failover, relay_urls
from mocksync.net.relay_join import RelayJoinTransport
from mocksync.net.webrtc import PeerLink
from mocksync.relay.engine import PresenceBook
from mocksync.relay.envelope import Envelope
from mocksync.relay.errors import StorageError
from mocksync.relay.pgstorage import (
    LISTEN_RETRY_MAX_S,
    MAX_IDS_PER_NOTIFY,
    MAX_NOTIFIES_PER_READ,
    MAX_NOTIFY_READ_BYTES,
    SCHEMA_VERSION,
    catchup_messages,
    check_url,
    listen_backoff,
    plan_migrations,
    read_more,
    redact,
)
from mocksync.relay.policy import Refusal
from mocksync.relay.server import RelayConfig, RelayServer
from mocksync.space.errors import InviteError
from mocksync.space.invite import InviteToken, JoinerSession
from mocksync.space.quotas import get_plan
from mocksync.spaceio.actions import create_space, issue_invite, record_join
from mocksync.spaceio.join import join_space
from mocksync.spaceio.store import get_space

from envfactory import small_env
from helpers.relaylab import Lab, edits, rendered, share, take, team_of, until

LOOP = ("127.0.0.1",)

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


def test_presence_book_resync_replaces_what_was_announced() -> None:
    book = PresenceBook()
    book.apply("i1", "sp", "gone", (None, None))
    book.apply("i1", "sp", "kept", ("t", None))
    book.apply("i2", "sp", "moved", (None, None))
    changed = book.resync([("i1", "sp", "kept", ("t", None)), ("i1", "sp", "moved", ("t", "e")),
                           ("i2", "sp2", "new", (None, None))])
    assert changed == [("sp", "gone", None), ("sp", "moved", ("t", "e")),
                       ("sp2", "new", (None, None))]
    assert book.online("sp") == {"kept": ("t", None), "moved": ("t", "e")}
    assert book.resync([]) == [("sp", "kept", None), ("sp", "moved", None), ("sp2", "new", None)]


def test_listen_backoff_doubles_up_to_its_ceiling() -> None:
    assert [listen_backoff(n, 0.2, 5.0) for n in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert listen_backoff(10_000) == LISTEN_RETRY_MAX_S


def test_catchup_replays_missed_puts_grouped_without_our_own() -> None:
    rows = [(7, "s1", "t", "d1"), (3, "s1", "t", "d1"), (5, "s2", "t", "d2"), (6, "s1", "t", "d9")]
    assert catchup_messages(rows, skip={6}) == [
        {"k": "put", "i": "", "s": "s1", "e": "t", "u": "d1", "ids": [3, 7]},
        {"k": "put", "i": "", "s": "s2", "e": "t", "u": "d2", "ids": [5]}]
    many = [(i, "s", "t", "d") for i in range(1, MAX_IDS_PER_NOTIFY + 2)]
    assert [len(m["ids"]) for m in catchup_messages(many)] == [MAX_IDS_PER_NOTIFY, 1]
    assert catchup_messages([]) == []


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


def test_read_more_gathers_puts_only_within_count_and_bytes() -> None:
    put = {"k": "put", "ids": [1], "z": 10}
    assert read_more([put])
    assert not read_more([put, {"k": "pre"}])  # a non-put ends the read (order kept)
    assert not read_more([{"k": "mail", "id": 3}])
    assert not read_more([put] * MAX_NOTIFIES_PER_READ)
    assert not read_more([{**put, "z": MAX_NOTIFY_READ_BYTES}])
    assert not read_more([{"k": "put", "ids": [1]}])  # an older instance's put: no size


async def test_waiting_put_notifications_are_read_with_one_query(pg_url: str) -> None:
    """Puts heard while the instance is busy come out in commit order, each with its own
    envelopes, from one read of the table."""
    from mocksync.relay.engine import RemotePut
    from mocksync.relay.pgstorage import PgStorage

    got: list[Any] = []
    gate = asyncio.Event()

    async def slow(ev: Any) -> None:
        if isinstance(ev, RemotePut):
            await gate.wait()  # the first put holds the consumer: the rest queue up
            got.append(ev)

    async def ignore(_ev: Any) -> None:
        return None

    a, b = PgStorage(pg_url), PgStorage(pg_url)
    await a.open(ignore)
    await b.open(slow)
    try:
        def ok(_u: Any, _c: int) -> Refusal | None:
            return None

        for seq in range(1, 6):
            await a.put("sp", "t", [Envelope("d1", seq, 1, bytes([seq]) * seq)],
                        declared_bytes=50, uploader="d1", now_ms=seq, check=ok)
        await until(lambda: b._events.qsize() == 4, what="four puts wait behind the first")
        alone: list[Any] = []  # notifications read one by one from now on
        real = b._event

        async def counted(msg: dict[str, Any]) -> Any:
            alone.append(msg)
            return await real(msg)

        b._event = counted  # type: ignore[method-assign]
        gate.set()
        await until(lambda: len(got) == 5, what="all five puts handed on")
        assert [[(e.seq, e.ct) for e in ev.envelopes] for ev in got] == [
            [(n, bytes([n]) * n)] for n in range(1, 6)]
        assert alone == [], "the four waiting puts were read together"
    finally:
        await b.close()
        await a.close()


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

    async def on(self, dev: Any, *urls: str, **kw: Any) -> Any:
        from mocksync.agent.daemon import Agent
        from mocksync.agent.settings import Settings
        from mocksync.agent.spacedir import SpaceDirectory
        from mocksync.net.relay_transport import RelayTransport

        t = RelayTransport(list(urls), backoff_min_s=0.05, backoff_max_s=0.3,
                           refused_retry_s=0.3, log_check_s=0.2, **kw)
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
async def cluster(tmp_path: Path, pg_url: str) -> AsyncIterator[Cluster]:
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
    await take(b, path)
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
    db["uuid"] = "e0000000-0000-4000-8000-0000000000b2"  # another environment
    share(a, da, space, "a.json")
    share(b, db, space, "b.json")  # at the same time, at the other instance
    # One of the two devices is told, in its status, that the relay refused its environment.
    await until(lambda: bool(ta.status()["relay"]["quota"] or tb.status()["relay"]["quota"]),
                what="a quota refusal in a device's status", timeout=10)
    await asyncio.sleep(0.5)  # the other upload has long been answered too
    refused = [(ag, t, d) for ag, t, d in ((a, ta, da), (b, tb, db)) if t.status()["relay"]["quota"]]
    assert len(refused) == 1, "exactly one of the two uploads is refused"
    ag, t, d = refused[0]
    st = t.status()["relay"]
    assert st["reason"] == ("quota exceeded: team plan allows 1 environments and the space "
                            "already has 1")
    assert st["quota"] == [{"space": space, "env": d["uuid"], "reason": st["reason"]}]
    env = next(e for e in ag.status()["environments"] if e["uuid"] == d["uuid"])
    assert env["state"] == "held" and env["reason"].startswith(st["reason"])
    assert await r1.db.env_count(space) == 1  # type: ignore[attr-defined]
    held = {tag for tag, vv in (await r2.db.index(space)).items() if vv}
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
        tmp_path: Path, pg_url: str) -> None:
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
        made = a.store.version_vector(env)[aid]
        assert made >= 9  # the share and 8 edits, some of them during the failover
        assert b.store.version_vector(env)[aid] == made
        # Nothing applied twice, nothing missing: Bob's log holds each of Alice's change sets
        # exactly once.
        per = Counter((cs.device, cs.seq) for cs, _t in b.store.log(env))
        assert sorted(seq for (dev, seq), n in per.items() if dev == aid) == list(
            range(1, made + 1))
        assert set(per.values()) == {1}, {k: n for k, n in per.items() if n > 1}
        print(f"failover: connected to the second instance {back:.2f} s after kill -9")
    finally:
        await lab.close()
        for p in (p1, p2):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)


# ------------------------------------------------------------------------------ across instances


async def test_webrtc_offer_from_one_instance_opens_a_data_channel_on_the_other(
        cluster: Cluster) -> None:
    alice, bob, space = team_of(cluster)
    r1, r2 = await cluster.start_instances(2)
    a, ta = await cluster.on(alice, r1.url)
    b, tb = await cluster.on(bob, r2.url)
    assert await ta.wait_synced(1) and await tb.wait_synced(1)
    aid, bid = alice.identity.device_id, bob.identity.device_id
    await until(lambda: bid in ta.client.presence.get(space, {}), what="bob seen at r1")
    await until(lambda: aid in tb.client.presence.get(space, {}), what="alice seen at r2")
    got: list[bytes] = []
    offerer = PeerLink(bid, bind=LOOP, ice_servers=(), outgoing=True,
                       on_frame=lambda _l, f: None, on_closed=lambda _l, r: None)
    answerer = PeerLink(aid, bind=LOOP, ice_servers=(), outgoing=False,
                        on_frame=lambda _l, f: got.append(f), on_closed=lambda _l, r: None)
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    tasks: list[asyncio.Task[None]] = []

    async def answer(body: bytes) -> None:  # Bob, at r2: the offer came from r1
        offer, _ = ice.filter_remote_sdp(json.loads(body)["sdp"], ice.bind_networks(LOOP))
        sdp = await answerer.answer(offer)
        await tb.send_signal(space, aid, json.dumps({"type": "answer", "sdp": sdp}).encode())

    tb.signal_handlers.append(
        lambda sp, sender, body: tasks.append(asyncio.ensure_future(answer(body)))
        if sender == aid and sp == space else None)
    ta.signal_handlers.append(lambda sp, sender, body: answers.put_nowait(body)
                              if sender == bid else None)
    try:
        sdp = await offerer.offer()
        await ta.send_signal(space, bid, json.dumps({"type": "offer", "sdp": sdp}).encode())
        reply = json.loads(await asyncio.wait_for(answers.get(), 10))
        assert reply["type"] == "answer"
        filtered, n = ice.filter_remote_sdp(reply["sdp"], ice.bind_networks(LOOP))
        assert n >= 1
        await offerer.accept_answer(filtered)
        await asyncio.gather(offerer.wait_open(10), answerer.wait_open(10))
        offerer.send(b"hello across instances")
        await until(lambda: got == [b"hello across instances"], what="the frame on the channel")
        # Each signal crossed the database once: r1 -> r2 (offer) and r2 -> r1 (answer).
        assert [s["from"] for s in tb.signals] == [aid]
        assert [s["from"] for s in ta.signals] == [bid]
    finally:
        await offerer.close()
        await answerer.close()
        for t in tasks:
            t.cancel()


def _invite_to(alice: Any, space_name: str, relay_url: str) -> InviteToken:
    _rec, token = issue_invite(alice.home, alice.identity, space_name)
    return InviteToken(**{**token.__dict__, "relay": relay_url})


async def _join(dev: Any, token: InviteToken, timeout: float = 10.0) -> Any:
    return await join_space(JoinerSession(token, dev.identity), [RelayJoinTransport()],
                            timeout=timeout)


async def test_join_through_the_other_instance_reaches_the_inviter(cluster: Cluster) -> None:
    alice, carol = cluster.device("alice"), cluster.device("carol")
    create_space(alice.home, alice.identity, "team")
    r1, r2 = await cluster.start_instances(2)
    _a, ta = await cluster.on(alice, r1.url)
    assert await ta.wait_synced(1)
    space = get_space(alice.home, "team").space_id
    await until(lambda: r2.book.remote(space, alice.identity.device_id) is not None,
                what="r2 knows alice is online at r1")
    result = await _join(carol, _invite_to(alice, "team", r2.url))  # carol dials r2
    record_join(carol.home, result)
    assert get_space(carol.home, "team").state.is_member(carol.identity.device_id)
    assert get_space(alice.home, "team").state.is_member(carol.identity.device_id)
    # The relay learned carol from alice's upload at r1: she can connect at r2.
    _c, tc = await cluster.on(carol, r2.url)
    assert await tc.wait_synced(1, timeout=10)
    assert space in tc.client.accepted


async def test_one_token_used_at_both_instances_at_once_admits_one(cluster: Cluster) -> None:
    alice, carol, dave = (cluster.device(n) for n in ("alice", "carol", "dave"))
    create_space(alice.home, alice.identity, "team")
    r1, r2 = await cluster.start_instances(2)
    _a, ta = await cluster.on(alice, r1.url)
    assert await ta.wait_synced(1)
    space = get_space(alice.home, "team").space_id
    await until(lambda: r2.book.remote(space, alice.identity.device_id) is not None,
                what="r2 knows alice is online at r1")
    token = _invite_to(alice, "team", r1.url)
    at_r2 = InviteToken(**{**token.__dict__, "relay": r2.url})
    results = await asyncio.gather(_join(carol, token), _join(dave, at_r2),
                                   return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], InviteError), repr(lost[0])
    state = get_space(alice.home, "team").state
    members = [d.name for d in (carol, dave) if state.is_member(d.identity.device_id)]
    assert len(members) == 1, members


async def _session_rows(r: RelayServer, space: str | None = None) -> list[tuple[str, str]]:
    """The session rows in the database (of one space, or of every space)."""
    rows = await r.db.pool.fetch(  # type: ignore[attr-defined]
        "SELECT instance, device FROM relay_sessions WHERE $1::text IS NULL OR space = $1 "
        "ORDER BY space, device", space)
    return [(x["instance"], x["device"]) for x in rows]


async def test_device_limit_counts_devices_at_every_instance(cluster: Cluster) -> None:
    alice, phone = cluster.device("alice"), cluster.device("alice-phone")
    personal = pair(alice.home, phone.home, "personal")  # a second device of the same member
    r1, r2 = await cluster.start_instances(2, plan=get_plan("team", max_devices_per_member=1))
    a, ta = await cluster.on(alice, r1.url, spaces=[personal])
    assert await ta.wait_synced(1)
    _p, tp = await cluster.on(phone, r2.url, spaces=[personal])
    await until(lambda: tp.status()["relay"]["state"] == "refused", what="the phone refused")
    st = tp.status()["relay"]
    assert st["code"] == "too_many_devices"
    assert st["reason"].startswith("device limit reached: team plan allows 1 simultaneous "
                                   "devices per member and 1 are online")
    assert await _session_rows(r2, personal) == [(r1.db.instance, alice.identity.device_id)]
    await cluster.stop_agent(a)  # the laptop leaves r1: the phone may come in at r2
    assert await tp.wait_synced(1, timeout=10)
    assert await _session_rows(r1, personal) == [(r2.db.instance, phone.identity.device_id)]


async def test_a_session_dying_between_admission_and_registration_leaves_no_row(
        cluster: Cluster) -> None:
    alice, _bob, space = team_of(cluster)
    (r1,) = await cluster.start_instances(1)
    real_admit = r1.db.admit
    calls = 0

    async def admit_then_fail(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        got = await real_admit(*args, **kw)  # the row is written and committed
        raise ConnectionResetError("the session dies before it is registered")
        return got

    r1.db.admit = admit_then_fail  # type: ignore[method-assign]
    a, _ta = await cluster.on(alice, r1.url)
    await until(lambda: calls >= 3, what="three admissions that died")
    await cluster.stop_agent(a)  # no further attempt
    await asyncio.sleep(0.2)  # the background removals
    assert calls >= 3 and not r1.by_space
    assert await _session_rows(r1) == []  # not online anywhere: no row says it is
    r1.db.admit = real_admit  # type: ignore[method-assign]
    _a2, ta2 = await cluster.on(alice, r1.url)
    assert await ta2.wait_synced(1, timeout=10)  # registered: its row stays while it is online
    assert await _session_rows(r1, space) == [(r1.db.instance, alice.identity.device_id)]


async def test_listen_connection_lost_reconnects_and_replays_what_was_missed(
        cluster: Cluster) -> None:
    alice, bob, space = team_of(cluster)
    r1, r2 = await cluster.start_instances(2)
    r2.db.listen_retry_s = (1.0, 1.0)  # type: ignore[attr-defined]  # a gap to put into
    a, ta = await cluster.on(alice, r1.url)
    b, tb = await cluster.on(bob, r2.url)
    assert await ta.wait_synced(1) and await tb.wait_synced(1)
    doc = small_env()
    share(a, doc, space)
    env = doc["uuid"]
    await until(lambda: env in b.envs and b.store.version_vector(env)
                == a.store.version_vector(env), what="bob has the share live")
    connected_at = tb.client.connected_at
    pid = r2.db._listen.get_server_pid()  # type: ignore[attr-defined]
    assert await r1.db.pool.fetchval(  # type: ignore[attr-defined]
        "SELECT pg_terminate_backend($1)", pid)
    await until(lambda: not r2.db.listening, what="r2 noticed its LISTEN connection closed")  # type: ignore[attr-defined]
    await edits(a, doc, 2)  # put at r1 while r2 hears nothing
    aid = alice.identity.device_id
    await until(lambda: b.store.version_vector(env).get(aid) == a.store.version_vector(env)[aid],
                what="bob has the edits made while r2 was not listening", timeout=10)
    assert r2.db.relistens == 1  # type: ignore[attr-defined]
    assert tb.client.connected_at == connected_at  # replayed to the live session, no reconnect
    assert rendered(b, env) == rendered(a, env)
    await edits(a, doc, 1)  # and live again
    await until(lambda: b.store.version_vector(env) == a.store.version_vector(env),
                what="bob hears live edits after the reconnect")
