"""Real Agents syncing through a real relay on 127.0.0.1 (RelayTransport, in-process asyncio).

Each test builds devices with `init_device` + `create_space` + `pair`, starts a relay on an
ephemeral loopback port, and drives Agents by writing environment files. Covered: catch-up of
a device while every other device is offline, offline edits on both sides merged with
conflicts, a relay restart mid-stream, a relay that tampers with / drops / withholds /
reorders stored change sets, a member forging a change set, and a relay database that holds no
plaintext of any environment.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from mocksync.changes import ChangeSet
from mocksync.relay.envelope import Tagger, seal_envelope
from mocksync.relay.storage import SQLiteStorage
from mocksync.space.identity import Identity
from mocksync.spaceio.store import get_space

from envfactory import small_env
from helpers.devices import Device
from helpers.relaylab import Lab, edits, rendered, save, share, take, team_of, until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "environments"


# ------------------------------------------------------------------------------ catch-up


async def test_offline_device_catches_up_from_relay_alone(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    assert await ta.wait_synced(1)
    doc = small_env()
    share(a, doc, space)
    doc["name"] = "Edited while Bob was away"
    await edits(a, doc, 5)
    env = doc["uuid"]
    want_vv = a.store.version_vector(env)
    want = rendered(a, env)
    await until(lambda: lab.relay.storage.vv(space, ta._tagger(space)(env)) == want_vv,
                what="relay to hold all of alice's change sets")
    await lab.stop_agent(a)  # every other device is offline now

    b, tb = await lab.agent(bob)
    assert await tb.wait_synced(1)
    assert b.store.version_vector(env) == want_vv
    assert rendered(b, env) == want
    await until(lambda: any(p.name.endswith(".json") for p in b.folder.iterdir()),
                what="bob's file")
    written = json.loads(next(p for p in b.folder.iterdir() if p.suffix == ".json").read_text())
    assert written["name"] == "Edited while Bob was away"
    st = tb.status()["relay"]
    assert st["state"] == "connected" and st["counters"]["received"] == sum(want_vv.values())
    assert not st["gaps"] and not st["problems"]


async def test_live_push_between_online_devices(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    b, tb = await lab.agent(bob)
    assert await ta.wait_synced(1) and await tb.wait_synced(1)
    doc = small_env()
    share(a, doc, space)
    env = doc["uuid"]
    await until(lambda: b.store.has_env(env), what="bob to receive the shared env live")
    doc["name"] = "live"
    save(a, doc)
    await until(lambda: rendered(b, env).get("name") == "live", what="live edit at bob")
    # and back the other way
    bdoc = copy.deepcopy(rendered(b, env))
    bdoc["port"] = 4321
    bpath = next(p for p in b.folder.iterdir() if p.suffix == ".json")
    save(b, bdoc, bpath.name)
    await until(lambda: rendered(a, env).get("port") == 4321, what="bob's edit at alice")


async def test_both_edit_offline_then_merge_with_conflicts(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    b, tb = await lab.agent(bob)
    doc = small_env()
    share(a, doc, space)
    env = doc["uuid"]
    await until(lambda: b.store.has_env(env), what="bob has the env")
    await until(lambda: any(p.suffix == ".json" for p in b.folder.iterdir()), what="bob's file")
    bname = next(p for p in b.folder.iterdir() if p.suffix == ".json").name
    await lab.stop_agent(a)
    await lab.stop_agent(b)

    # Offline on both sides: the same field differently, and one field each.
    adoc = copy.deepcopy(doc)
    adoc["name"] = "Alice's name"
    adoc["port"] = 3100
    bdoc = copy.deepcopy(doc)
    bdoc["name"] = "Bob's name"
    bdoc["latency"] = 250
    a, ta = await lab.agent(alice)
    save(a, adoc)
    await lab.stop_agent(a)
    b, tb = await lab.agent(bob)
    save(b, bdoc, bname)
    await tb.wait_synced(1)
    a, ta = await lab.agent(alice)
    await ta.wait_synced(1)
    await until(lambda: a.store.version_vector(env) == b.store.version_vector(env),
                what="both devices to hold the same change sets")
    ra, rb = rendered(a, env), rendered(b, env)
    assert ra == rb
    assert ra["port"] == 3100 and ra["latency"] == 250  # both sides' edits kept
    assert ra["name"] in ("Alice's name", "Bob's name")
    loser = "Bob's name" if ra["name"] == "Alice's name" else "Alice's name"
    for side in (a, b):  # each device lists the conflict: winner applied, loser recorded
        conflicts = side.store.conflicts(env)
        assert [(c["entity"], c["field"]) for c in conflicts] == [(env, ["v", "name"])]
        assert conflicts[0]["winner"]["value"] == ra["name"]
        assert conflicts[0]["loser"]["value"] == loser
        assert {conflicts[0]["winner"]["device"], conflicts[0]["loser"]["device"]} == {
            alice.identity.device_id, bob.identity.device_id}


async def test_relay_restart_mid_stream_loses_nothing(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    b, tb = await lab.agent(bob)
    doc = small_env()
    share(a, doc, space)
    env = doc["uuid"]
    await until(lambda: b.store.has_env(env), what="bob has the env")
    path = (a.folder / "env.json").resolve()
    for i in range(30):
        doc["routes"][0]["responses"][0]["label"] = f"stream {i}"
        path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        await take(a, path)  # (in a store turn, as the watcher takes a save)
        if i == 10:
            await lab.stop_relay()  # edits 11..19 happen with no relay at all
        if i == 19:
            await lab.start_relay()  # same port, same database
        await asyncio.sleep(0.01)
    await until(lambda: b.store.version_vector(env) == a.store.version_vector(env),
                timeout=15, what="bob to catch up after the relay restart")
    assert rendered(b, env) == rendered(a, env)
    assert rendered(b, env)["routes"][0]["responses"][0]["label"] == "stream 29"
    tag = ta._tagger(space)(env)
    assert lab.relay.storage.vv(space, tag) == a.store.version_vector(env)
    assert a.store.version_vector(env)[alice.identity.device_id] == 31


# ------------------------------------------------------------------------------ a dishonest relay


async def _alice_wrote(lab: Lab, n_edits: int = 4) -> tuple[Device, Device, str, str, str, dict]:
    """Alice shares an env and edits it; the relay holds seqs 1..n_edits+1; alice goes offline."""
    alice, bob, space = team_of(lab)
    if lab.relay is None:
        await lab.start_relay()
    a, ta = await lab.agent(alice)
    doc = small_env()
    share(a, doc, space)
    await edits(a, doc, n_edits)
    env = doc["uuid"]
    tag = ta._tagger(space)(env)
    want = a.store.version_vector(env)
    await until(lambda: lab.relay.storage.vv(space, tag) == want, what="relay holds everything")
    final = rendered(a, env)
    await lab.stop_agent(a)
    return alice, bob, space, env, tag, final


async def test_tampered_ciphertext_is_refused_and_logged(lab: Lab) -> None:
    alice, bob, space, env, tag, final = await _alice_wrote(lab)
    aid = alice.identity.device_id
    with lab.db() as db:
        (ct,) = db.execute("SELECT ct FROM envelopes WHERE tag=? AND device=? AND seq=2",
                           (tag, aid)).fetchone()
        bad = bytearray(ct)
        bad[40] ^= 0x01
        db.execute("UPDATE envelopes SET ct=? WHERE tag=? AND device=? AND seq=2",
                   (bytes(bad), tag, aid))
    b, tb = await lab.agent(bob)
    assert await tb.wait_synced(1)
    st = tb.status()["relay"]
    assert any(p["seq"] == 2 and "failed authentication" in p["reason"] for p in st["problems"])
    assert b.store.version_vector(env) == {aid: 1}  # nothing after the altered one applied
    gaps = st["gaps"]
    assert gaps and gaps[0]["env"] == env and gaps[0]["pending"] == 3


async def test_dropped_change_set_shows_as_gap_and_heals(lab: Lab) -> None:
    alice, bob, space, env, tag, final = await _alice_wrote(lab)
    aid = alice.identity.device_id
    with lab.db() as db:
        db.execute("DELETE FROM envelopes WHERE tag=? AND device=? AND seq=2", (tag, aid))
    b, tb = await lab.agent(bob)
    assert await tb.wait_synced(1)
    assert b.store.version_vector(env) == {aid: 1}
    gaps = tb.status()["relay"]["gaps"]
    assert gaps == [{"space": space, "env": env, "pending": 3, "reason": gaps[0]["reason"]}]
    assert "wait for predecessors" in gaps[0]["reason"]
    # The relay's version vector (contiguous prefix) shows alice's chain stops at 1, so alice
    # re-uploads the rest when she reconnects, and bob's pending change sets apply.
    assert lab.relay.storage.vv(space, tag) == {aid: 1}
    a, ta = await lab.agent(alice)
    await until(lambda: b.store.version_vector(env) == {aid: 5}, what="the gap to heal")
    assert rendered(b, env) == final
    assert tb.status()["relay"]["gaps"] == []


class WithholdingStorage:
    """A relay storage that claims everything in its index but never serves one slot."""

    def __init__(self, inner: SQLiteStorage, device: str, seq: int) -> None:
        self.inner, self.device, self.seq = inner, device, seq

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fetch(self, space, tag, have, *, max_items, max_bytes):
        items, more = self.inner.fetch(space, tag, have, max_items=max_items, max_bytes=max_bytes)
        return [e for e in items if (e.device, e.seq) != (self.device, self.seq)], more


class ReorderingStorage:
    """A relay storage that serves every page backwards."""

    def __init__(self, inner: SQLiteStorage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fetch(self, space, tag, have, *, max_items, max_bytes):
        items, more = self.inner.fetch(space, tag, have, max_items=max_items, max_bytes=max_bytes)
        return list(reversed(items)), more


async def test_withholding_relay_is_named_in_status(lab: Lab) -> None:
    alice, bob, space, env, tag, final = await _alice_wrote(lab)
    aid = alice.identity.device_id
    await lab.stop_relay()
    await lab.start_relay(storage=WithholdingStorage(SQLiteStorage(lab.tmp / "relay"), aid, 3))
    b, tb = await lab.agent(bob)
    assert await tb.wait_synced(1)
    st = tb.status()["relay"]
    assert st["withheld"] == [{"space": space, "env": env, "device": aid, "relay_claimed": 5,
                               "got": 2}]
    assert st["gaps"][0]["pending"] == 2
    assert b.store.version_vector(env) == {aid: 2}


async def test_reordering_relay_is_harmless(lab: Lab) -> None:
    alice, bob, space, env, tag, final = await _alice_wrote(lab, n_edits=8)
    await lab.stop_relay()
    await lab.start_relay(storage=ReorderingStorage(SQLiteStorage(lab.tmp / "relay")))
    b, tb = await lab.agent(bob)
    assert await tb.wait_synced(1)
    assert b.store.version_vector(env) == {alice.identity.device_id: 9}
    assert rendered(b, env) == final
    st = tb.status()["relay"]
    assert st["gaps"] == [] and st["problems"] == [] and st["withheld"] == []


async def test_forged_change_set_in_a_valid_envelope_is_refused(lab: Lab) -> None:
    """A member (who has the content key) uploads a change set claiming to be alice's next
    one but signed by another key: the relay cannot tell, the receiving store can."""
    alice, bob, space, env, tag, final = await _alice_wrote(lab, n_edits=1)
    aid = alice.identity.device_id
    stored = get_space(bob.home, space)
    real = ChangeSet.decode(_open(stored, space, tag, lab, aid, 2))
    forger = Identity.generate("mallory", now=0)
    forged = ChangeSet(space=space, env=env, device=aid, seq=3, hlc=real.hlc + 1,
                       deps={}, prev_hash=real.hash,
                       ops=(["s", env, ["v", "name"], '"forged"'],)).sign(forger.signing_key)
    wire = forged.encode()
    sealed = seal_envelope(space, tag, stored.keys, wire)
    lab.relay.storage.put(space, tag, [sealed], declared_bytes=1000, uploader="x", now_ms=0)
    b, tb = await lab.agent(bob)
    assert await tb.wait_synced(1)
    st = tb.status()["relay"]
    assert any(p.get("seq") == 3 and "signature" in p["reason"] for p in st["problems"])
    assert b.store.version_vector(env) == {aid: 2}
    assert rendered(b, env)["name"] != "forged"


def _open(stored, space: str, tag: str, lab: Lab, device: str, seq: int) -> bytes:
    from mocksync.relay.envelope import open_envelope

    items, _ = lab.relay.storage.fetch(space, tag, {device: seq - 1}, max_items=1, max_bytes=10**6)
    _slot, wire = open_envelope(space, tag, stored.keys, items[0], Tagger(space, stored.keys))
    return wire


async def test_relay_database_holds_no_plaintext(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    b, tb = await lab.agent(bob)
    doc = json.loads((EXAMPLES / "petstore.json").read_text())
    share(a, doc, space, "petstore.json")
    env = doc["uuid"]
    await until(lambda: b.store.has_env(env), what="bob has petstore")
    doc["routes"][0]["documentation"] = "zebra-quokka secret note"
    save(a, doc, "petstore.json")
    await until(lambda: "zebra-quokka" in json.dumps(rendered(b, env)), what="edit at bob")
    await lab.close()  # flush everything to disk (WAL included)
    blob = b"".join(p.read_bytes() for p in (lab.tmp / "relay").iterdir() if p.is_file())
    assert len(blob) > 10_000  # the relay did store the environment (as ciphertext)
    needles = {doc["name"], doc["uuid"], "zebra-quokka", "findByStatus", "v1/pets/:petId/photos",
               doc["routes"][0]["uuid"], doc["routes"][0]["responses"][0]["uuid"],
               '"status": "ok"'}
    for needle in needles:
        for form in (needle.encode(), needle.encode("utf-16-le")):
            assert form not in blob, f"relay database holds plaintext {needle!r}"
    # ...while the harness can find a string it knows is there (the test can fail).
    assert alice.identity.device_id.encode() in blob


# ------------------------------------------------------------------------------ presence


async def test_presence_through_the_relay(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    b, tb = await lab.agent(bob)
    doc = small_env()
    share(a, doc, space)
    env = doc["uuid"]
    await until(lambda: b.store.has_env(env), what="bob has the env")
    ta.set_presence(space=space, env=env, entity=doc["routes"][0]["uuid"], editor="mockoon")
    aid = alice.identity.device_id

    def seen() -> list[dict[str, Any]]:
        return [p for p in tb.who() if p["device"] == aid and p["space"] == space]

    await until(lambda: bool(seen()) and seen()[0]["env"] == env, what="alice's presence at bob")
    assert seen()[0]["entity"] == doc["routes"][0]["uuid"]
    assert seen()[0]["member"] == "alice" and seen()[0]["via"] == "relay"
    assert any(p["device"] == aid for p in b.status()["peers"])
    # A device arriving later learns who is where from the relay's snapshot.
    await lab.stop_agent(b)
    b, tb = await lab.agent(bob)
    assert await tb.wait_synced(1)
    await until(lambda: bool(seen()) and seen()[0]["entity"] == doc["routes"][0]["uuid"],
                what="alice's presence in bob's snapshot")
    assert seen()[0]["env"] == env
    ta.set_presence(space=None)  # looking at nothing now
    await until(lambda: bool(seen()) and seen()[0]["env"] is None, what="presence cleared")
    await lab.stop_agent(a)
    await until(lambda: not seen(), what="alice to go offline at bob")
