"""Relay compaction: the pure decisions, the sealed format, and adopting a snapshot in a store.

No sockets here: `relay.compaction` decides what a snapshot covers, what may be dropped and
when a device makes one; `Store.snapshot_content` / `adopt_snapshot` rebuild a device from a
snapshot and keep merging, with nothing lost and nothing applied twice."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes import canonical
from mocksync.errors import ChangeSetError
from mocksync.model import diff, render, snapshot_ops
from mocksync.relay import compaction as c
from mocksync.space.envtags import Tagger
from mocksync.store import Store

from envfactory import ENV_UUID, clone, find, small_env, u

SPACE = "ab" * 16
NOW = 1_800_000_000_000
A, B, C = "AAAAA-AAAAA-AAAAA-AAAAA", "BBBBB-BBBBB-BBBBB-BBBBB", "CCCCC-CCCCC-CCCCC-CCCCC"


def pub(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ------------------------------------------------------------------ pure decisions


def test_drop_floors_needs_every_member_ack_or_age():
    snap = {A: 10, B: 4}
    # B never said what it holds: nothing goes (young: all covered envelopes are recent).
    assert c.drop_floors(snap, {A: {A: 10, B: 4}}, [A, B], {A: 1, B: 1}, {}) == {}
    # Both hold A#1..7 and B#1..4: exactly that prefix goes, never above the snapshot.
    acks = {A: {A: 12, B: 4}, B: {A: 7, B: 9}}
    assert c.drop_floors(snap, acks, [A, B], {A: 1, B: 1}, {}) == {A: 7, B: 4}
    # Past retention: the old ones go whatever the acks (A#1..5 old, A#6 young).
    assert c.drop_floors(snap, {}, [A, B], {A: 6}, {}) == {A: 5, B: 4}
    # Never below what was dropped already, and nothing new reported when nothing moves.
    assert c.drop_floors(snap, {}, [A, B], {A: 1, B: 1}, {A: 7}) == {}


def test_judge_snapshot_limits_and_coverage():
    ok = c.judge_snapshot({A: 5}, 100, held=None, floors={}, max_env_bytes=1000, now_ms=NOW)
    assert ok.ok
    big = c.judge_snapshot({A: 5}, 1000 * c.SNAPSHOT_SIZE_FACTOR + 1, held=None, floors={},
                           max_env_bytes=1000, now_ms=NOW)
    assert not big.ok and "limit" in big.reason
    short = c.judge_snapshot({A: 5}, 100, held=None, floors={A: 6}, max_env_bytes=1000,
                             now_ms=NOW)
    assert not short.ok and "dropped" in short.reason
    held = c.HeldSnapshot(B, {A: 5, B: 2}, 100, NOW - 1000)
    same = c.judge_snapshot({A: 5}, 100, held=held, floors={}, max_env_bytes=1000, now_ms=NOW)
    assert not same.ok and "covers as much" in same.reason
    soon = c.judge_snapshot({A: 6, B: 2}, 100, held=held, floors={}, max_env_bytes=1000,
                            now_ms=NOW)
    assert not soon.ok and "ago" in soon.reason
    later = c.judge_snapshot({A: 6, B: 2}, 100, held=held, floors={}, max_env_bytes=1000,
                             now_ms=NOW + int(c.MIN_SNAPSHOT_INTERVAL_S * 1000))
    assert later.ok


def test_needs_snapshot_and_when_to_make_one():
    assert c.needs_snapshot({A: 3}, {A: 4})
    assert c.needs_snapshot({}, {B: 1})
    assert not c.needs_snapshot({A: 4, B: 9}, {A: 4})
    assert not c.snapshot_due(0, 0, 100, since_last_s=None)
    assert c.snapshot_due(c.SNAPSHOT_CHANGESETS, 10, 100, since_last_s=None)
    assert c.snapshot_due(3, 201, 100, since_last_s=None)  # history over 2 x the env size
    assert not c.snapshot_due(3, 150, 100, since_last_s=None)
    assert not c.snapshot_due(10_000, 10**9, 100, since_last_s=1.0)  # too soon after the last
    assert not c.snapshot_due(10_000, 10**9, 100, since_last_s=None, every=0)  # off


class _Ident:
    def __init__(self, device: str) -> None:
        self.device_id = device
        self.key = Ed25519PrivateKey.generate()

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def test_sealed_snapshot_round_trip_and_refusals():
    keys = {1: bytes(range(32))}
    tagger = Tagger(SPACE, keys)
    tag = tagger(ENV_UUID)
    me = _Ident(A)
    content = {"e": ENV_UUID, "vv": {A: 3}, "x": b"state"}
    vv, ct, sig = c.seal_snapshot(SPACE, tag, keys, me, content)
    assert vv == {A: 3} and b"state" not in ct
    got = c.open_snapshot(SPACE, tag, keys, A, pub(me.key), vv, ct, sig, tagger)
    assert got == content
    with pytest.raises(c.SnapshotError, match="not a device"):
        c.open_snapshot(SPACE, tag, keys, A, None, vv, ct, sig, tagger)
    other = _Ident(B)
    with pytest.raises(c.SnapshotError, match="signature"):
        c.open_snapshot(SPACE, tag, keys, A, pub(other.key), vv, ct, sig, tagger)
    with pytest.raises(c.SnapshotError, match="signature"):  # a claimed coverage it lacks
        c.open_snapshot(SPACE, tag, keys, A, pub(me.key), {A: 9}, ct, sig, tagger)
    flipped = ct[:-1] + bytes([ct[-1] ^ 1])
    sig2 = me.sign(c.snapshot_sig_bytes(SPACE, tag, vv, flipped))
    with pytest.raises(c.SnapshotError):
        c.open_snapshot(SPACE, tag, keys, A, pub(me.key), vv, flipped, sig2, tagger)


# ------------------------------------------------------------------ stores


def _edit(st: Store, key, device: str, field_body: str, now: int, seed: int):
    doc = clone(render(st.state(ENV_UUID)))
    find(doc, u(11))["body"] = field_body
    ops = diff(render(st.state(ENV_UUID)), doc, st.state(ENV_UUID), random.Random(seed))
    cs, _ = st.commit_local(key, space=SPACE, env=ENV_UUID, device=device, ops=ops, now_ms=now)
    return cs


@pytest.fixture
def team(tmp_path):
    ka, kb = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    a, b = Store(tmp_path / "a.sqlite3"), Store(tmp_path / "b.sqlite3")
    first, _ = a.commit_local(ka, space=SPACE, env=ENV_UUID, device=A,
                              ops=snapshot_ops(small_env(), random.Random(1)), now_ms=NOW)
    b.ingest(first.encode(), pub(ka), NOW)
    wires = [first]
    for i in range(6):
        st, key, dev = (a, ka, A) if i % 2 else (b, kb, B)
        cs = _edit(st, key, dev, f'{{"n": {i}}}', NOW + 10 * (i + 1), i)
        other = b if st is a else a
        other.ingest(cs.encode(), pub(ka if dev == A else kb), NOW + 10 * (i + 1))
        wires.append(cs)
    keys = {A: pub(ka), B: pub(kb)}
    yield a, b, ka, kb, keys, wires
    a.close()
    b.close()


def test_a_fresh_store_adopts_a_snapshot_and_keeps_merging(team, tmp_path):
    a, b, ka, kb, keys, _wires = team
    content = canonical.decode(canonical.encode(a.snapshot_content(ENV_UUID)))
    fresh = Store(tmp_path / "fresh.sqlite3")
    res = fresh.adopt_snapshot(content, NOW + 100)
    assert res.status == "adopted"
    assert fresh.version_vector(ENV_UUID) == a.version_vector(ENV_UUID)
    assert render(fresh.state(ENV_UUID)) == render(a.state(ENV_UUID))
    assert fresh.head_space(ENV_UUID) == SPACE and ENV_UUID in fresh.envs()
    # Later change sets from both chains link onto the snapshot's heads.
    later = [_edit(a, ka, A, '{"later": "a"}', NOW + 200, 50),
             _edit(b, kb, B, '{"later": "b"}', NOW + 201, 51)]
    a.ingest(later[1].encode(), keys[B], NOW + 202)
    b.ingest(later[0].encode(), keys[A], NOW + 202)
    for cs in later:
        assert fresh.ingest(cs.encode(), keys[cs.device], NOW + 203).status == "applied"
        # Nothing applied twice: the same change set again is a duplicate.
        assert fresh.ingest(cs.encode(), keys[cs.device], NOW + 204).status == "duplicate"
    assert render(fresh.state(ENV_UUID)) == render(a.state(ENV_UUID)) == render(b.state(ENV_UUID))
    assert [x["id"] for x in fresh.conflicts()] == [x["id"] for x in a.conflicts()]
    # The same snapshot again changes nothing.
    assert fresh.adopt_snapshot(content, NOW + 300).status == "duplicate"
    fresh.close()


def test_a_store_with_local_history_keeps_it_over_a_snapshot(team, tmp_path):
    a, b, ka, kb, keys, wires = team
    # C joined early, holds the first change set, then edited offline.
    kc = Ed25519PrivateKey.generate()
    cst = Store(tmp_path / "c.sqlite3")
    cst.ingest(wires[0].encode(), keys[A], NOW)
    mine = _edit(cst, kc, C, '{"offline": "c"}', NOW + 500, 99)
    content = canonical.decode(canonical.encode(a.snapshot_content(ENV_UUID)))
    cst.adopt_snapshot(content, NOW + 600)
    vv = cst.version_vector(ENV_UUID)
    assert vv[C] == mine.seq and vv[A] == a.version_vector(ENV_UUID)[A]
    # Its own offline edit is still there, merged with everything the snapshot holds.
    a.ingest(mine.encode(), pub(kc), NOW + 700)
    assert render(cst.state(ENV_UUID)) == render(a.state(ENV_UUID))
    cst.close()


def test_malformed_snapshot_changes_nothing(team, tmp_path):
    a, *_rest = team
    content = canonical.decode(canonical.encode(a.snapshot_content(ENV_UUID)))
    fresh = Store(tmp_path / "fresh.sqlite3")
    for broken in ({**content, "f": 99}, {**content, "h": {}},
                   {**content, "r": [["x", b"not json"]]}, "nope"):
        with pytest.raises(ChangeSetError):
            fresh.adopt_snapshot(broken, NOW)
        assert fresh.version_vector(ENV_UUID) == {} and fresh.envs() == []
    fresh.close()
