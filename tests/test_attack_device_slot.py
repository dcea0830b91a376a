"""Attack: a member squats or poisons another device's chain ("a device's slot is its own").

The relay keeps the first envelope stored in each (device, seq) slot and cannot open it. Before
issue 12 any member could upload an envelope for a teammate's next seq: a change set built
with the library's own code, claiming the victim's device id and signed with the attacker's
key. Devices refused it (bad signature) but the relay kept it, ignored the victim's genuine
change set for that slot, and every device fetching from the relay stayed stuck behind it.

Now the relay stores an envelope for device D only when D's own authenticated session uploads
it (`relay.policy.foreign_slot`), says so in its log, and peers still verify every change set
against the author's key from the membership log, whichever way it arrives.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from mocksync.changes import ChangeSet
from mocksync.devtools.pairing import pair
from mocksync.errors import MocksyncError
from mocksync.net.errors import RelayRefused
from mocksync.relay import policy
from mocksync.relay.envelope import Tagger, open_envelope, seal_envelope
from mocksync.spaceio.store import get_space

from envfactory import small_env
from helpers.devices import logs_of
from helpers.relaylab import (
    Lab,
    edits,
    raw_client,
    rendered,
    settle,
    share,
    take,
    team_of,
    until,
)


def test_slot_rule_is_pure() -> None:
    from mocksync.relay.envelope import Envelope

    e = Envelope("AAAAA-AAAAA-AAAAA-AAAAA", 3, 1, b"x")
    assert policy.foreign_slot("AAAAA-AAAAA-AAAAA-AAAAA", e) is None
    r = policy.foreign_slot("BBBBB-BBBBB-BBBBB-BBBBB", e)
    assert r is not None and r.code == "bad_envelope" and "its own" in r.reason


async def _team_with_history(lab: Lab) -> dict[str, Any]:
    """alice (victim) shares and edits an env, then goes offline; carol (an honest third
    device) holds the same history; bob is the malicious member."""
    alice, bob, space = team_of(lab)
    carol = lab.device("carol")
    pair(alice.home, carol.home, "team")
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    doc = small_env()
    share(a, doc, space)
    await edits(a, doc, 3)
    env = doc["uuid"]
    tag = ta._tagger(space)(env)
    head = a.store.version_vector(env)[alice.identity.device_id]
    await until(lambda: lab.relay.storage.vv(space, tag) == {alice.identity.device_id: head},
                what="the relay to hold alice's chain")
    await lab.stop_agent(a)
    c, tc = await lab.agent(carol)
    await until(lambda: c.store.version_vector(env) == {alice.identity.device_id: head},
                what="carol to catch up")
    return {"alice": alice, "bob": bob, "carol": carol, "space": space, "env": env, "tag": tag,
            "head": head, "c": c, "tc": tc, "doc": doc}


def _forged_next(lab: Lab, t: dict[str, Any]) -> tuple[bytes, Any]:
    """Bob builds alice's next change set with the library's own code, signed by his key."""
    bob, space, tag = t["bob"], t["space"], t["tag"]
    aid = t["alice"].identity.device_id
    stored = get_space(bob.home, space)
    items, _ = lab.relay.storage.fetch(space, tag, {aid: t["head"] - 1}, max_items=1,
                                       max_bytes=10**7)
    _slot, wire = open_envelope(space, tag, stored.keys, items[0], Tagger(space, stored.keys))
    real = ChangeSet.decode(wire)
    forged = ChangeSet(space=space, env=t["env"], device=aid, seq=real.seq + 1,
                       hlc=real.hlc + 1, deps={}, prev_hash=real.hash,
                       ops=(["s", t["env"], ["v", "name"], '"owned by bob"'],),
                       ).sign(bob.identity.signing_key)
    fw = forged.encode()
    return fw, seal_envelope(space, tag, stored.keys, fw)


async def test_relay_refuses_a_squat_and_the_victim_keeps_its_slot(lab: Lab, caplog: Any
                                                                    ) -> None:
    t = await _team_with_history(lab)
    space, tag, env, head = t["space"], t["tag"], t["env"], t["head"]
    aid = t["alice"].identity.device_id
    forged_wire, sealed = _forged_next(lab, t)
    caplog.set_level(logging.INFO, logger="mocksync.relay")
    m = await raw_client(lab, t["bob"].identity, logs_of(t["bob"], space))
    try:
        assert await settle(m) == "connected"
        with pytest.raises(RelayRefused) as err:
            await m.put(space, tag, [sealed], declared_bytes=1000)
        assert err.value.code == "bad_envelope" and "its own" in str(err.value)
    finally:
        await m.stop()
    assert lab.relay.storage.vv(space, tag) == {aid: head}  # nothing stored in alice's slot
    assert any("put by" in r.getMessage() and "its own" in r.getMessage()
               for r in caplog.records if r.name == "mocksync.relay")
    # The same change set arriving over the LAN: carol's store refuses it (bob's signature is
    # not alice's key), changes nothing.
    c = t["c"]
    with pytest.raises(MocksyncError, match="signature"):
        c.receive(space, forged_wire)
    assert c.store.version_vector(env) == {aid: head}
    assert rendered(c, env)["name"] != "owned by bob"
    # Alice comes back and edits: her genuine next change set takes the slot and reaches carol.
    a, _ta = await lab.agent(t["alice"])
    doc = t["doc"]
    doc["name"] = "alice's edit"
    share_path = a.folder / "env.json"
    share_path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    await take(a, share_path.resolve())
    await until(lambda: c.store.version_vector(env).get(aid, 0) == head + 1,
                what="alice's genuine change set to reach carol")
    assert rendered(c, env)["name"] == "alice's edit"


async def test_without_the_rule_the_squat_blocks_the_victim(lab: Lab, monkeypatch: Any
                                                           ) -> None:
    """The attack as it was: with the slot rule switched off, bob's squat is stored, alice's
    genuine change set for that slot is dropped, and carol never gets past it. (Proves the
    test above fails when the rule is missing.)"""
    monkeypatch.setattr(policy, "foreign_slot", lambda uploader, envelope: None)
    t = await _team_with_history(lab)
    space, tag, env, head = t["space"], t["tag"], t["env"], t["head"]
    aid = t["alice"].identity.device_id
    _fw, sealed = _forged_next(lab, t)
    m = await raw_client(lab, t["bob"].identity, logs_of(t["bob"], space))
    try:
        assert await settle(m) == "connected"
        assert await m.put(space, tag, [sealed], declared_bytes=1000) == 1
    finally:
        await m.stop()
    a, ta = await lab.agent(t["alice"])
    doc = t["doc"]
    doc["name"] = "alice's edit"
    p = a.folder / "env.json"
    p.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    await take(a, p.resolve())
    await until(lambda: a.store.version_vector(env)[aid] == head + 1, what="alice's commit")
    await ta.wait_synced(1)
    c, tc = t["c"], t["tc"]
    await until(lambda: any("signature" in p["reason"] for p in tc.status()["relay"]["problems"]),
                what="carol to refuse the squatted envelope")
    assert c.store.version_vector(env) == {aid: head}  # stuck behind the squat
