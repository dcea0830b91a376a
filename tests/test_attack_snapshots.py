"""Red team of relay compaction (issue 17): what a hostile relay, a hostile member and a
stranger can do with snapshots, high-water marks and dropped history, and what holds.

What must hold, whoever attacks: a device never loses its own history or another member's
edits it already had; nothing a snapshot's checks refuse is planted; a snapshot signed by a
device that is not an active device of the space is refused (a removed device still holds old
keys and could date what it seals before its removal); the relay never drops what no snapshot
covers or what it never received; the work an attacker can cause is bounded (refused before
opening, opened once, one compaction per mark gap); and each refusal says why (`status`
problems, relay log). A hostile relay is played by writing its database by hand."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import sqlite3
import urllib.request
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes import canonical
from mocksync.devtools.pairing import pair
from mocksync.errors import ChangeSetError
from mocksync.model import diff, render, snapshot_ops
from mocksync.net.errors import RelayError, RelayRefused
from mocksync.relay import compaction, snapshots
from mocksync.relay.compaction import HeldSnapshot, Verdict, drop_floors, judge_snapshot
from mocksync.relay.envelope import Envelope
from mocksync.relay.errors import StorageError
from mocksync.relay.policy import Refusal
from mocksync.relay.storage import DB_NAME, SQLiteStorage, StoredSnapshot, encode_vv
from mocksync.space.quotas import get_plan
from mocksync.spaceio.actions import remove
from mocksync.spaceio.store import append_entries, get_space
from mocksync.store import Store

from envfactory import ENV_UUID, clone, find, small_env, u
from helpers.devices import logs_of
from helpers.relaylab import (
    Lab,
    edits,
    raw_client,
    rendered,
    save,
    settle,
    share,
    team_of,
    until,
)

ENV_BYTES = 200_000
NOW = 1_800_000_000_000
A, B = "AAAAA-AAAAA-AAAAA-AAAAA", "BBBBB-BBBBB-BBBBB-BBBBB"


# ------------------------------------------------------------------ pure decisions


def test_a_member_cannot_cover_what_the_relay_does_not_hold() -> None:
    # A lie about a teammate's future seqs would let the relay drop them, and a device that
    # starts from the snapshot skip them, when the teammate uploads them for real.
    v = judge_snapshot({A: 10}, 100, held=None, floors={}, max_env_bytes=1000, now_ms=NOW,
                       relay_vv={A: 5})
    assert not v.ok and "does not hold" in v.reason and A in v.reason
    v = judge_snapshot({A: 5, B: 1}, 100, held=None, floors={}, max_env_bytes=1000,
                       now_ms=NOW, relay_vv={A: 5})
    assert not v.ok and B in v.reason
    assert judge_snapshot({A: 5}, 100, held=None, floors={}, max_env_bytes=1000, now_ms=NOW,
                          relay_vv={A: 5, B: 3}).ok


def test_snapshots_only_grow_unless_the_held_ones_signer_was_removed() -> None:
    held = HeldSnapshot(B, {A: 5, B: 2}, 100, NOW - 10**6)
    # Covers more of A but drops B's: a device that started from the held one would lose B's.
    v = judge_snapshot({A: 9, B: 1}, 100, held=held, floors={}, max_env_bytes=1000, now_ms=NOW)
    assert not v.ok and "covers less" in v.reason
    assert judge_snapshot({A: 9, B: 2}, 100, held=held, floors={}, max_env_bytes=1000,
                          now_ms=NOW).ok
    # The held one's signer was removed: devices refuse it, so an active device's snapshot
    # replaces it at once (still covering what was dropped).
    assert judge_snapshot({A: 5, B: 2}, 100, held=held, floors={A: 3}, max_env_bytes=1000,
                          now_ms=NOW - 10**6 + 1, held_active=False).ok
    v = judge_snapshot({A: 2}, 100, held=held, floors={A: 3}, max_env_bytes=1000, now_ms=NOW,
                       held_active=False)
    assert not v.ok and "dropped" in v.reason


def test_drops_never_pass_what_the_relay_received() -> None:
    # A snapshot covering A#1..10, all of it old, while the relay received A#1..4 only:
    # at most A#1..4 go, and nothing of a device the relay holds nothing of.
    assert drop_floors({A: 10, B: 3}, {}, [A], {}, {}, {A: 4}) == {A: 4}
    # Every member acknowledged more than the relay holds: still the same cap.
    assert drop_floors({A: 10}, {A: {A: 10}}, [A], {A: 1}, {}, {A: 6}) == {A: 6}


# ------------------------------------------------------------------ storage engines


def ok(_usage: Any, _count: int) -> Refusal | None:
    return None


def allow(_held: HeldSnapshot | None, _floors: dict[str, int]) -> Verdict:
    return Verdict(True)


async def test_an_engine_never_drops_a_change_set_it_never_received(engine: Any) -> None:
    await engine.put("sp", "t", [Envelope(A, s, 1, bytes([s]) * 50) for s in range(1, 4)],
                     declared_bytes=50, uploader=A, now_ms=1_000, check=ok)
    # A snapshot that claims A#1..10 (stored without the server's judge, as a lie would be
    # if it got past it), everything old, no member left to wait for.
    assert (await engine.put_snapshot("sp", "t", StoredSnapshot(B, {A: 10}, b"x", b"s" * 64,
                                                                1_000), allow)).ok
    assert await engine.compact("sp", "t", [], 10**12) == 3
    assert await engine.floors("sp", "t") == {A: 3}
    # A's real A#4..5, uploaded later, are stored and served, not skipped as dropped.
    late = await engine.put("sp", "t", [Envelope(A, s, 1, b"late") for s in (4, 5)],
                            declared_bytes=50, uploader=A, now_ms=2_000, check=ok)
    assert [e.seq for e in late] == [4, 5]
    items, _more = await engine.fetch("sp", "t", {A: 3}, max_items=10, max_bytes=10**6)
    assert [e.seq for e in items] == [4, 5]


async def test_an_engine_lists_snapshot_slots_a_page_at_a_time(engine: Any) -> None:
    for sp, tag in [("s2", "a"), ("s1", "b"), ("s1", "a")]:
        await engine.put_snapshot(sp, tag, StoredSnapshot(A, {A: 1}, b"x", b"s" * 64, 1), allow)
    assert await engine.snapshot_slots(None, 2) == [("s1", "a"), ("s1", "b")]
    assert await engine.snapshot_slots(("s1", "b"), 2) == [("s2", "a")]
    assert await engine.snapshot_slots(("s2", "a"), 2) == []


# ------------------------------------------------------------------ a device's store


def _edit(st: Store, key: Ed25519PrivateKey, device: str, body: str, now: int) -> Any:
    doc = clone(render(st.state(ENV_UUID)))
    find(doc, u(11))["body"] = body
    ops = diff(render(st.state(ENV_UUID)), doc, st.state(ENV_UUID), random.Random(now))
    cs, _ = st.commit_local(key, space="ab" * 16, env=ENV_UUID, device=device, ops=ops,
                            now_ms=now)
    return cs


def test_a_device_never_trades_a_snapshot_for_a_smaller_one(tmp_path: Any) -> None:
    """A hostile relay (or member) serves an older snapshot to a device that started from a
    newer one: adopting it would rebuild the registers without edits the device holds only
    through the first snapshot. Refused; nothing changes."""
    ka, kb = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    a, b = Store(tmp_path / "a.sqlite3"), Store(tmp_path / "b.sqlite3")
    first, _ = a.commit_local(ka, space="ab" * 16, env=ENV_UUID, device=A,
                              ops=snapshot_ops(small_env(), random.Random(1)), now_ms=NOW)
    second = _edit(a, ka, A, '{"n": 1}', NOW + 10)
    from cryptography.hazmat.primitives import serialization

    pa = ka.public_key().public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
    for cs in (first, second):
        b.ingest(cs.encode(), pa, NOW + 20)
    _edit(a, ka, A, '{"n": "only in the newer snapshot"}', NOW + 30)
    _edit(b, kb, B, '{"n": "bob"}', NOW + 40)  # the older one covers something new: B#1
    newer = canonical.decode(canonical.encode(a.snapshot_content(ENV_UUID)))
    older = canonical.decode(canonical.encode(b.snapshot_content(ENV_UUID)))
    fresh = Store(tmp_path / "fresh.sqlite3")
    assert fresh.adopt_snapshot(newer, NOW + 50).status == "adopted"
    vv, doc = fresh.version_vector(ENV_UUID), render(fresh.state(ENV_UUID))
    with pytest.raises(ChangeSetError, match="covers less than the one this device started"):
        fresh.adopt_snapshot(older, NOW + 60)
    assert fresh.version_vector(ENV_UUID) == vv
    assert render(fresh.state(ENV_UUID)) == doc
    assert "only in the newer snapshot" in json.dumps(doc)
    for st in (a, b, fresh):
        st.close()


def test_schema_versions_migrate_up_and_refuse_newer(tmp_path: Any) -> None:
    """Snapshots added tables to both SQLite files (the device's log, the relay's): an older
    file is brought up to the new version, a newer one is refused with a sentence."""
    log = tmp_path / "log.sqlite3"
    Store(log).close()
    relay_dir = tmp_path / "relay"
    SQLiteStorage(relay_dir).close()
    for path in (log, relay_dir / DB_NAME):
        with sqlite3.connect(path) as db:
            db.execute("UPDATE meta SET v='1' WHERE k='schema'")
    Store(log).close()
    SQLiteStorage(relay_dir).close()
    for path in (log, relay_dir / DB_NAME):
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT v FROM meta WHERE k='schema'").fetchone() == ("2",)
            db.execute("UPDATE meta SET v='99' WHERE k='schema'")
    with pytest.raises(ChangeSetError, match="newer mocksync"):
        Store(log)
    with pytest.raises(StorageError, match="newer mocksync relay"):
        SQLiteStorage(relay_dir)


# ------------------------------------------------------------------ through a relay


async def _relay_vv(lab: Lab, space: str, tag: str) -> dict[str, int]:
    assert lab.relay is not None
    return (await lab.relay.db.index(space)).get(tag, {})


async def _poll(get: Any, ok: Any, what: str, timeout: float = 15.0) -> Any:
    """Wait until `ok(await get())` (either engine: its calls are coroutines)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await get()
        if ok(value):
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.05)


async def _scene(lab: Lab, envs: int = 1, **relay: Any) -> dict[str, Any]:
    """alice shares `envs` environments and edits the first through the relay, then goes
    offline (her store's snapshot content kept); bob is a member turned hostile; carol
    joined but never synced."""
    alice, bob, space = team_of(lab)
    carol = lab.device("carol")
    pair(alice.home, carol.home, "team")
    await lab.start_relay(plan=get_plan("team", max_env_bytes=ENV_BYTES), **relay)
    a, ta = await lab.agent(alice)
    docs = []
    for i in range(envs):
        doc = small_env()
        doc["uuid"] = f"{doc['uuid'][:-2]}{i:02d}"
        share(a, doc, space, f"env{i}.json")
        docs.append(doc)
    await edits(a, docs[0], 3, "env0.json")
    aid = alice.identity.device_id
    tagger = ta._tagger(space)
    tags = [tagger(d["uuid"]) for d in docs]
    heads = [a.store.version_vector(d["uuid"])[aid] for d in docs]
    for tag, head in zip(tags, heads, strict=True):
        await _poll(lambda t=tag: _relay_vv(lab, space, t), lambda v, h=head: v == {aid: h},
                    "the relay to hold alice's chains")
    env = docs[0]["uuid"]
    content = a.store.snapshot_content(env)
    before = rendered(a, env)
    await lab.stop_agent(a)
    return {"alice": alice, "bob": bob, "carol": carol, "space": space, "env": env,
            "envs": [d["uuid"] for d in docs], "tag": tags[0], "tags": tags, "aid": aid,
            "head": heads[0], "content": content, "before": before}


def _seal(t: dict[str, Any], signer: Any = None, *, content: Any = None, tag: str | None = None,
          space: str | None = None, keys: Any = None) -> tuple[dict[str, int], bytes, bytes]:
    signer = signer or t["bob"]
    return compaction.seal_snapshot(space or t["space"], tag or t["tag"],
                                    keys or get_space(signer.home, t["space"]).keys,
                                    signer.identity, content or t["content"])


def _serve(lab: Lab, t: dict[str, Any], signer: str | None, vv: dict[str, int], ct: bytes,
           sig: bytes, floors: dict[str, int]) -> None:
    """Play a hostile relay: whatever snapshot and floors it likes, written by hand."""
    db = lab.db()
    try:
        db.execute("DELETE FROM snapshots WHERE space=? AND tag=?", (t["space"], t["tag"]))
        if signer is not None:
            db.execute("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (t["space"], t["tag"], signer, encode_vv(vv), ct, sig, 1))
        for device, seq in floors.items():
            db.execute("INSERT OR REPLACE INTO floors VALUES (?, ?, ?, ?)",
                       (t["space"], t["tag"], device, seq))
    finally:
        db.close()


async def _carol_refuses(lab: Lab, t: dict[str, Any], words: str) -> Any:
    c, tc = await lab.agent(t["carol"])
    await until(lambda: any(p["what"] == "snapshot" for p in tc.problems),
                what="carol to refuse the snapshot")
    reason = next(p for p in tc.problems if p["what"] == "snapshot")["reason"]
    assert words in reason, reason
    assert c.store.version_vector(t["env"]) == {} and t["env"] not in c.store.envs()
    assert tc.snapshots.counters["adopted"] == 0
    await lab.stop_agent(c)
    return reason


async def test_a_hostile_relay_cannot_plant_a_snapshot(lab: Lab, monkeypatch: Any) -> None:
    t = await _scene(lab)
    space, tag, aid, head = t["space"], t["tag"], t["aid"], t["head"]
    floors = {aid: head}
    vv, ct, sig = _seal(t)
    # Forged: one byte of the ciphertext changed.
    _serve(lab, t, t["bob"].id, vv, ct[:-1] + bytes([ct[-1] ^ 1]), sig, floors)
    await _carol_refuses(lab, t, "signature")
    # Another environment's snapshot, re-signed for this slot by a member: it does not open
    # (its sealing binds the environment's tag).
    vv2, ct2, _ = _seal(t, tag=t["tag"][::-1])
    resigned = t["bob"].identity.sign(compaction.snapshot_sig_bytes(space, tag, vv2, ct2))
    _serve(lab, t, t["bob"].id, vv2, ct2, resigned, floors)
    await _carol_refuses(lab, t, "does not open")
    # Another space's snapshot (bob's personal space keys), re-signed for this slot.
    other = get_space(t["bob"].home, t["bob"].personal).keys
    vv3, ct3, _ = _seal(t, keys=other)
    resigned = t["bob"].identity.sign(compaction.snapshot_sig_bytes(space, tag, vv3, ct3))
    _serve(lab, t, t["bob"].id, vv3, ct3, resigned, floors)
    await _carol_refuses(lab, t, "snapshot refused")
    # Signed by a stranger's key under a member's name.
    stranger = Ed25519PrivateKey.generate()
    _serve(lab, t, t["bob"].id, vv, ct,
           stranger.sign(compaction.snapshot_sig_bytes(space, tag, vv, ct)), floors)
    await _carol_refuses(lab, t, "signature")
    # Huge: over the plan's limit, refused before anything is opened.
    opened: list[Any] = []
    real_open = compaction.open_snapshot
    monkeypatch.setattr(compaction, "open_snapshot",
                        lambda *a: opened.append(1) or real_open(*a))
    huge = b"\x00" * (compaction.SNAPSHOT_SIZE_FACTOR * ENV_BYTES + 1)
    _serve(lab, t, t["bob"].id, vv, huge, sig, floors)
    await _carol_refuses(lab, t, "byte limit")
    assert opened == []
    # History dropped with no snapshot at all: carol says so and holds nothing made up.
    _serve(lab, t, None, {}, b"", b"", floors)
    await _carol_refuses(lab, t, "holds no snapshot")
    # Alice holds the whole history: none of it touches her.
    a, ta = await lab.agent(t["alice"])
    await until(lambda: ta.counters.get("syncs", 0) >= 1, what="alice to sync")
    assert a.store.version_vector(t["env"]) == {aid: head}
    assert rendered(a, t["env"]) == t["before"]


async def test_compacted_forever_costs_one_open_and_blocks_no_other_env(lab: Lab,
                                                                         monkeypatch: Any
                                                                         ) -> None:
    """A relay answers `compacted` to every fetch of one environment and serves a snapshot
    that does not cover what it says it dropped: carol refuses it once, does not open it
    again on later catch-ups, and the space's other environment still reaches her."""
    t = await _scene(lab, envs=2)
    vv, ct, sig = _seal(t)
    _serve(lab, t, t["bob"].id, vv, ct, sig, {t["aid"]: t["head"] + 5})
    opened: list[Any] = []
    real_open = compaction.open_snapshot
    monkeypatch.setattr(compaction, "open_snapshot",
                        lambda *a: opened.append(1) or real_open(*a))
    c, tc = await lab.agent(t["carol"])
    other = t["envs"][1]
    await until(lambda: other in c.store.envs(), what="the other env to reach carol")
    await until(lambda: tc.snapshots.counters["refused"] >= 1, what="carol to refuse")
    for _ in range(2):  # two more catch-ups, as after reconnecting
        assert tc.client is not None
        await tc._catch_up_all(tc.client, reconnect=False)
    assert len(opened) == 1  # refused once, remembered by its signature
    assert tc.snapshots.counters["refused"] >= 2  # still said in status each time
    assert "does not cover" in next(p for p in tc.problems if p["what"] == "snapshot")["reason"]
    assert t["env"] not in c.store.envs()


async def test_a_hostile_member_gets_nothing_past_the_relay(lab: Lab, caplog: Any) -> None:
    t = await _scene(lab)
    space, tag, aid, head = t["space"], t["tag"], t["aid"], t["head"]
    caplog.set_level(logging.INFO, logger="mocksync.relay")
    m = await raw_client(lab, t["bob"].identity, logs_of(t["bob"], space))
    try:
        assert await settle(m) == "connected"
        # Claims alice's future seqs.
        lie = {**t["content"], "vv": {aid: head + 50},
               "h": {aid: [head + 50, t["content"]["h"][aid][1]]}}
        vv, ct, sig = _seal(t, content=lie)
        with pytest.raises(RelayRefused, match="does not hold"):
            await m.put_snapshot(space, tag, vv, ct, sig)
        # Replays a snapshot alice signed, as its own upload.
        vv, ct, sig = _seal(t, t["alice"])
        with pytest.raises(RelayRefused, match="signature"):
            await m.put_snapshot(space, tag, vv, ct, sig)
        assert lab.relay.storage.snapshot(space, tag) is None
        # An honest-looking one is kept (the relay cannot read it: the signature names bob).
        vv, ct, sig = _seal(t)
        await m.put_snapshot(space, tag, vv, ct, sig)
        # Then one covering less, and one at once again: refused, the held one stays.
        older = {**t["content"], "vv": {aid: head - 1},
                 "h": {aid: [head - 1, t["content"]["h"][aid][1]]}}
        vv2, ct2, sig2 = _seal(t, content=older)
        with pytest.raises(RelayRefused, match="covers as much"):
            await m.put_snapshot(space, tag, vv2, ct2, sig2)
        held = lab.relay.storage.snapshot(space, tag)
        assert held is not None and held.ct == ct
        # A flood of marks naming thousands of made-up devices: kept only for real ones,
        # and one compaction per gap, not one per mark.
        calls: list[Any] = []
        real = lab.relay.db.compact

        async def counting(*a: Any, **kw: Any) -> int:
            calls.append(a)
            return await real(*a, **kw)

        lab.relay.db.compact = counting  # type: ignore[method-assign]
        fake = {f"{i:05d}-FAKEX-FAKEX-FAKEX": 2**40 for i in range(4000)}
        for _ in range(40):
            await m.high_water(space, tag, {**fake, aid: head})
        assert (await m.index(space))[tag] == {aid: head}  # answered after the flood
        db = lab.db()
        holders = db.execute("SELECT DISTINCT device FROM acks").fetchall()
        db.close()
        assert holders == [(aid,)]
        assert len(calls) <= 1
    finally:
        await m.stop()
    # Nothing was dropped: carol has said nothing, and retention is a month.
    assert lab.relay.storage.floors(space, tag) == {}
    assert any("refused" in r.getMessage() for r in caplog.records
               if r.name == "mocksync.relay.compaction")


async def test_a_stranger_gets_nothing_in(lab: Lab) -> None:
    t = await _scene(lab)
    eve = lab.device("eve")
    m = await raw_client(lab, eve.identity, logs_of(t["alice"], t["space"]))
    try:
        await settle(m)
        assert t["space"] not in m.accepted
        vv, ct, sig = _seal(t, eve, keys=get_space(t["bob"].home, t["space"]).keys)
        with pytest.raises((RelayError, RelayRefused)):
            await m.put_snapshot(t["space"], t["tag"], vv, ct, sig)
        with contextlib.suppress(RelayError):  # sent or not: the relay keeps nothing
            await m.high_water(t["space"], t["tag"], {t["aid"]: t["head"]})
    finally:
        await m.stop()
    assert lab.relay.storage.snapshot(t["space"], t["tag"]) is None
    db = lab.db()
    assert db.execute("SELECT COUNT(*) FROM acks").fetchone() == (0,)
    db.close()


async def test_a_removed_devices_snapshot_is_refused_and_replaced(lab: Lab) -> None:
    t = await _scene(lab)
    space, tag, aid, head = t["space"], t["tag"], t["aid"], t["head"]
    m = await raw_client(lab, t["bob"].identity, logs_of(t["bob"], space))
    try:
        assert await settle(m) == "connected"
        vv, ct, sig = _seal(t)  # made while bob was a member
        await m.put_snapshot(space, tag, vv, ct, sig)
    finally:
        await m.stop()
    remove(t["alice"].home, t["alice"].identity, space, t["bob"].id)
    a, ta = await lab.agent(t["alice"])  # the relay learns the removal from alice's log
    await until(lambda: t["bob"].id not in lab.relay.state(space).devices,
                what="the relay to learn bob's removal")
    await lab.stop_agent(a)
    # The relay lets nothing more go on the strength of it...
    assert await snapshots.compact(lab.relay, space, tag) == 0
    # ...and bob, removed, cannot upload another.
    m = await raw_client(lab, t["bob"].identity, logs_of(t["bob"], space))
    try:
        await settle(m)
        assert space not in m.accepted
    finally:
        await m.stop()
    # A hostile relay that drops history on the strength of it anyway: carol refuses it.
    after = get_space(t["alice"].home, space)  # carol learns the removal
    append_entries(t["carol"].home, space, after.entries, after.keys)
    _serve(lab, t, t["bob"].id, vv, ct, sig, {aid: head})
    await _carol_refuses(lab, t, "not a device of the space")
    # An active device's snapshot replaces it at once, though it covers no more.
    db = lab.db()
    db.execute("DELETE FROM floors")
    db.close()
    m = await raw_client(lab, t["alice"].identity, logs_of(t["alice"], space))
    try:
        assert await settle(m) == "connected"
        vv, ct, sig = _seal(t, t["alice"])
        await m.put_snapshot(space, tag, vv, ct, sig)
    finally:
        await m.stop()
    held = lab.relay.storage.snapshot(space, tag)
    assert held is not None and held.signer == aid


def _health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/v1/health", timeout=10) as r:  # noqa: S310 (loopback)
        return json.loads(r.read())


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
async def test_the_relay_compacts_on_its_timer_and_says_so(lab: Lab, db: str,
                                                           request: pytest.FixtureRequest
                                                           ) -> None:
    """Retention-based drops happen on the relay's own timer, with no upload or mark after
    the snapshot; the health endpoint counts snapshots and dropped change sets."""
    url = None if db == "sqlite" else request.getfixturevalue("pg_url")
    t = await _scene(lab, compact_interval_s=0.2, db_url=url)
    space, tag, aid, head = t["space"], t["tag"], t["aid"], t["head"]
    m = await raw_client(lab, t["bob"].identity, logs_of(t["bob"], space))
    try:
        assert await settle(m) == "connected"
        vv, ct, sig = _seal(t)
        await m.put_snapshot(space, tag, vv, ct, sig)
    finally:
        await m.stop()
    relay = lab.relay
    assert relay is not None
    # At upload: carol holds nothing and retention is a month; nothing went.
    await asyncio.sleep(0.5)  # two timer rounds
    assert await relay.db.floors(space, tag) == {}
    # Then the month passes (retention 0 from now on), and no device says anything.
    relay.config = dataclasses.replace(relay.config, retention_s=0.0)
    await _poll(lambda: relay.db.floors(space, tag), lambda f: f == {aid: head},
                "the timer to drop what retention let go")
    health = await asyncio.to_thread(_health, relay.url)
    assert health["compaction"]["snapshots"] == 1
    assert health["compaction"]["dropped"] == head
    assert health["compaction"]["rounds"] >= 1


async def test_a_daemon_snapshots_when_history_outgrows_the_environment(lab: Lab) -> None:
    """Few but big change sets: the count trigger (10,000 here) never fires, the history
    bytes against the environment's size do."""
    alice, _bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice, snapshot_every=10_000)
    doc = small_env()
    share(a, doc, space)
    env = doc["uuid"]
    aid = alice.identity.device_id
    tag = ta._tagger(space)(env)
    await until(lambda: lab.relay.storage.vv(space, tag) == a.store.version_vector(env),
                what="the relay to hold the env")
    await ta.snapshots.round(ta.client)
    assert lab.relay.storage.snapshot(space, tag) is None  # one change set: nothing due
    for _ in range(8):
        doc["routes"][0]["responses"][0]["body"] = os.urandom(4000).hex()
        save(a, doc)
    await until(lambda: lab.relay.storage.vv(space, tag).get(aid) ==
                a.store.version_vector(env)[aid], what="the relay to hold the edits")
    assert a.store.history_bytes(env, {}) > 2 * ta._declared(env)
    await ta.snapshots.round(ta.client)
    held = lab.relay.storage.snapshot(space, tag)
    assert held is not None and held.vv == a.store.version_vector(env)
    assert ta.snapshots.counters["made"] == 1
