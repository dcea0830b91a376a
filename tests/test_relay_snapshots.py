"""Snapshots through a real relay (in process, 127.0.0.1): what the relay refuses of a
malicious member's snapshot, and what a device does with one that passes the relay but not
its own checks. Bad snapshots change nothing; a device never loses what it holds."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.devtools.pairing import pair
from mocksync.net.errors import RelayRefused
from mocksync.relay import compaction
from mocksync.relay.errors import Compacted
from mocksync.space.quotas import get_plan
from mocksync.spaceio.store import get_space

from envfactory import small_env
from helpers.devices import logs_of
from helpers.relaylab import Lab, edits, raw_client, rendered, settle, share, team_of, until

ENV_BYTES = 200_000


async def _history(lab: Lab, **relay: Any) -> dict[str, Any]:
    """alice shares and edits an env through the relay, then goes offline; bob is the
    malicious member; carol joined the space but never synced."""
    alice, bob, space = team_of(lab)
    carol = lab.device("carol")
    pair(alice.home, carol.home, "team")
    await lab.start_relay(plan=get_plan("team", max_env_bytes=ENV_BYTES), **relay)
    a, ta = await lab.agent(alice)
    doc = small_env()
    share(a, doc, space)
    await edits(a, doc, 3)
    env = doc["uuid"]
    tag = ta._tagger(space)(env)
    aid = alice.identity.device_id
    head = a.store.version_vector(env)[aid]
    await until(lambda: lab.relay.storage.vv(space, tag) == {aid: head},
                what="the relay to hold alice's chain")
    before = rendered(a, env)
    await lab.stop_agent(a)
    return {"alice": alice, "bob": bob, "carol": carol, "space": space, "env": env, "tag": tag,
            "aid": aid, "head": head, "before": before}


def _seal(t: dict[str, Any], content: dict[str, Any], signer: Any = None) -> tuple[Any, ...]:
    keys = get_space(t["bob"].home, t["space"]).keys
    return compaction.seal_snapshot(t["space"], t["tag"], keys, signer or t["bob"].identity,
                                    content)


class _Stranger:
    device_id = "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ"

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


async def test_relay_refuses_bad_snapshots_and_keeps_nothing_of_them(lab: Lab, caplog: Any
                                                                      ) -> None:
    t = await _history(lab)
    space, tag, aid, head = t["space"], t["tag"], t["aid"], t["head"]
    caplog.set_level(logging.INFO, logger="mocksync.relay")
    m = await raw_client(lab, t["bob"].identity, logs_of(t["bob"], space))
    try:
        assert await settle(m) == "connected"
        content = {"e": t["env"], "vv": {aid: head}}
        vv, sealed, _sig = _seal(t, content)
        forged = _Stranger().sign(compaction.snapshot_sig_bytes(space, tag, vv, sealed))
        with pytest.raises(RelayRefused) as err:
            await m.put_snapshot(space, tag, vv, sealed, forged)
        assert err.value.code == "bad_snapshot" and "signature" in str(err.value)
        big = {**content, "pad": b"x" * (compaction.SNAPSHOT_SIZE_FACTOR * ENV_BYTES)}
        vv, sealed, sig = _seal(t, big)
        with pytest.raises(RelayRefused) as err:
            await m.put_snapshot(space, tag, vv, sealed, sig)
        assert err.value.code == "bad_snapshot" and "limit" in str(err.value)
        assert lab.relay.storage.snapshot(space, tag) is None  # refusals kept nothing
        vv, sealed, sig = _seal(t, content)
        await m.put_snapshot(space, tag, vv, sealed, sig)
        held = lab.relay.storage.snapshot(space, tag)
        assert held is not None and held.signer == t["bob"].identity.device_id
        with pytest.raises(RelayRefused, match="covers as much"):
            await m.put_snapshot(space, tag, vv, sealed, sig)
    finally:
        await m.stop()
    assert any("snapshot from" in r.getMessage() and "refused" in r.getMessage()
               for r in caplog.records if r.name == "mocksync.relay.compaction")


async def test_a_device_refuses_a_snapshot_it_cannot_use_and_keeps_its_history(lab: Lab
                                                                               ) -> None:
    # Retention 0: whatever a snapshot covers is dropped as soon as one is stored.
    t = await _history(lab, retention_s=0.0)
    space, tag, aid, head, env = t["space"], t["tag"], t["aid"], t["head"], t["env"]
    m = await raw_client(lab, t["bob"].identity, logs_of(t["bob"], space))
    try:
        assert await settle(m) == "connected"
        # Well signed by a member, but its content is not a state a store can adopt.
        vv, sealed, sig = _seal(t, {"e": env, "vv": {aid: head}, "f": 99})
        await m.put_snapshot(space, tag, vv, sealed, sig)
    finally:
        await m.stop()
    await until(lambda: lab.relay.storage.floors(space, tag) == {aid: head},
                what="the relay to drop the history the snapshot covers")
    with pytest.raises(Compacted):
        lab.relay.storage.fetch(space, tag, {}, max_items=10, max_bytes=10**6)
    # Carol, new, needs the snapshot: she refuses it, says why, and holds nothing made up.
    c, tc = await lab.agent(t["carol"])
    await until(lambda: any(p["what"] == "snapshot" for p in tc.problems),
                what="carol to refuse the snapshot")
    problem = next(p for p in tc.problems if p["what"] == "snapshot")
    assert "format" in problem["reason"]
    assert c.store.version_vector(env) == {} and env not in c.store.envs()
    # Alice holds the whole history: she never needs the snapshot and keeps everything.
    a, _ta = await lab.agent(t["alice"])
    await until(lambda: a.transport is not None, what="alice to start")
    assert a.store.version_vector(env) == {aid: head}
    assert rendered(a, env) == t["before"]
