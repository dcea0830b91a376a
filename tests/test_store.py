"""The durable log: one transaction per change set, refusals change nothing."""

from __future__ import annotations

import hashlib
import random
import sqlite3

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes import ChangeSet, ClockDriftError, MalformedChangeSet, SignatureError
from mocksync.changes.hlc import pack
from mocksync.errors import ChangeSetError
from mocksync.model import diff, render, snapshot_ops
from mocksync.store import (
    APPLIED,
    PENDING,
    QUARANTINED,
    EquivocationError,
    Store,
    UnknownDeviceError,
)

from envfactory import ENV_UUID, clone, find, small_env, u

SPACE = "ab" * 16
NOW = 1_800_000_000_000


def pub(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(store: Store) -> str:
    """Everything the store holds, hashed: to prove a refusal changed nothing."""
    h = hashlib.sha256()
    for table in ("changesets", "entities", "conflicts", "meta"):
        for row in store.db.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
            h.update(repr(row).encode())
    return h.hexdigest()


@pytest.fixture
def author(tmp_path):
    key = Ed25519PrivateKey.generate()
    st = Store(tmp_path / "author.sqlite3")
    doc = small_env()
    cs1, _ = st.commit_local(key, space=SPACE, env=ENV_UUID, device="DEVA",
                             ops=snapshot_ops(doc, random.Random(1)), now_ms=NOW)
    edited = clone(doc)
    find(edited, u(11))["body"] = '{"users": ["ana"]}'
    ops = diff(render(st.state(ENV_UUID)), edited, st.state(ENV_UUID), random.Random(2))
    cs2, _ = st.commit_local(key, space=SPACE, env=ENV_UUID, device="DEVA", ops=ops, now_ms=NOW + 5)
    yield key, st, [cs1, cs2], edited
    st.close()


@pytest.fixture
def reader(tmp_path):
    st = Store(tmp_path / "reader.sqlite3")
    yield st
    st.close()


def test_apply_in_any_order_and_idempotent(author, reader):
    key, _, (cs1, cs2), edited = author
    assert reader.ingest(cs2.encode(), pub(key), NOW).status == PENDING
    res = reader.ingest(cs1.encode(), pub(key), NOW)
    assert res.status == APPLIED and [c.seq for c in res.applied] == [1, 2]
    assert render(reader.state(ENV_UUID)) == edited
    before = fingerprint(reader)
    assert reader.ingest(cs2.encode(), pub(key), NOW).status == "duplicate"
    assert fingerprint(reader) == before
    assert reader.version_vector(ENV_UUID) == {"DEVA": 2}


def test_state_survives_reopen(author, reader, tmp_path):
    key, _, (cs1, cs2), edited = author
    reader.ingest(cs1.encode(), pub(key), NOW)
    reader.ingest(cs2.encode(), pub(key), NOW)
    reader.close()
    again = Store(tmp_path / "reader.sqlite3")
    assert render(again.state(ENV_UUID)) == edited
    assert [c.seq for c, _ in again.log(ENV_UUID)] == [1, 2]
    again.close()


def test_one_property_edit_is_small(author):
    _, _, (_, cs2), _ = author
    assert len(cs2.encode()) < 1000
    assert len(cs2.ops) == 1


def _refused(reader: Store, wire: bytes, key_bytes: bytes | None, exc: type[Exception]) -> None:
    before = fingerprint(reader)
    with pytest.raises(exc):
        reader.ingest(wire, key_bytes, NOW)
    assert fingerprint(reader) == before


def test_tampered_truncated_wrong_key_unknown_refused(author, reader):
    key, _, (cs1, _), _ = author
    wire = cs1.encode()
    flipped = bytearray(wire)
    flipped[len(wire) // 2] ^= 0x01
    _refused(reader, bytes(flipped), pub(key), ChangeSetError)
    for cut in (1, 10, len(wire) // 2, len(wire) - 1):
        _refused(reader, wire[:cut], pub(key), MalformedChangeSet)
    other = Ed25519PrivateKey.generate()
    _refused(reader, wire, pub(other), SignatureError)
    _refused(reader, wire, None, UnknownDeviceError)
    assert reader.count(ENV_UUID) == 0


def test_replay_is_a_noop_and_cross_env_replay_fails_signature(author, reader):
    key, _, (cs1, _), _ = author
    reader.ingest(cs1.encode(), pub(key), NOW)
    before = fingerprint(reader)
    assert reader.ingest(cs1.encode(), pub(key), NOW + 10_000).status == "duplicate"
    assert fingerprint(reader) == before
    # The same signature cannot be carried onto another environment.
    moved = ChangeSet(space=cs1.space, env="another-env", device=cs1.device, seq=1, hlc=cs1.hlc,
                      deps={}, prev_hash=b"", ops=cs1.ops, sig=cs1.sig)
    _refused(reader, moved.encode(), pub(key), SignatureError)


def test_equivocation_rejected_and_logged(author, reader):
    key, _, (cs1, _), _ = author
    reader.ingest(cs1.encode(), pub(key), NOW)
    fork = ChangeSet(space=SPACE, env=ENV_UUID, device="DEVA", seq=1, hlc=cs1.hlc + 1, deps={},
                     prev_hash=b"", ops=(["s", u(11), ["v", "body"], '"forged"'],)).sign(key)
    with pytest.raises(EquivocationError):
        reader.ingest(fork.encode(), pub(key), NOW)
    assert render(reader.state(ENV_UUID))["routes"][0]["responses"][0]["body"] != "forged"
    assert "equivocation" in reader.rejected()[0]["reason"]


def test_broken_chain_refused(author, reader):
    key, _, (cs1, cs2), _ = author
    reader.ingest(cs1.encode(), pub(key), NOW)
    bad = ChangeSet(space=SPACE, env=ENV_UUID, device="DEVA", seq=2, hlc=cs2.hlc, deps={},
                    prev_hash=b"\x00" * 32, ops=cs2.ops).sign(key)
    _refused(reader, bad.encode(), pub(key), ChangeSetError)


def test_malformed_ops_refused_before_apply(reader):
    key = Ed25519PrivateKey.generate()
    bad = ChangeSet(space=SPACE, env=ENV_UUID, device="DEVB", seq=1, hlc=pack(NOW, 0), deps={},
                    prev_hash=b"", ops=(["s", u(1), ["p", "tree"], '["", "0"]'],)).sign(key)
    _refused(reader, bad.encode(), pub(key), ChangeSetError)


def test_future_stamp_quarantined_then_released(author, reader):
    key = Ed25519PrivateKey.generate()
    future = NOW + 3_600_000
    cs = ChangeSet(space=SPACE, env=ENV_UUID, device="DEVF", seq=1, hlc=pack(future, 0), deps={},
                   prev_hash=b"", ops=(["s", u(11), ["v", "label"], '"from the future"'],)).sign(key)
    assert reader.ingest(cs.encode(), pub(key), NOW).status == QUARANTINED
    assert reader.count(ENV_UUID, APPLIED) == 0
    assert reader.clock.last < pack(NOW + 60_001, 0)
    res = reader.release_quarantine(ENV_UUID, future, lambda d: pub(key))
    assert [c.seq for c in res.applied] == [1]
    assert reader.count(ENV_UUID, QUARANTINED) == 0


def test_clock_survives_restart(tmp_path):
    key = Ed25519PrivateKey.generate()
    st = Store(tmp_path / "s.sqlite3")
    cs, _ = st.commit_local(key, space=SPACE, env=ENV_UUID, device="D", ops=snapshot_ops(small_env()),
                            now_ms=NOW)
    st.close()
    st = Store(tmp_path / "s.sqlite3")
    # The wall clock went backwards: the next stamp must still be greater.
    cs2, _ = st.commit_local(key, space=SPACE, env=ENV_UUID, device="D",
                             ops=[("s", u(11), ("v", "label"), "x")], now_ms=NOW - 100_000)
    assert cs2.hlc > cs.hlc
    st.close()


def test_failed_commit_leaves_memory_consistent(author, reader, monkeypatch):
    key, _, (cs1, cs2), edited = author
    reader.ingest(cs1.encode(), pub(key), NOW)
    rendered_before = render(reader.state(ENV_UUID))
    real = reader._persist

    def boom(*a, **kw):
        real(*a, **kw)
        raise sqlite3.OperationalError("disk full (simulated)")

    monkeypatch.setattr(reader, "_persist", boom)
    with pytest.raises(sqlite3.OperationalError):
        reader.ingest(cs2.encode(), pub(key), NOW)
    monkeypatch.setattr(reader, "_persist", real)
    assert render(reader.state(ENV_UUID)) == rendered_before
    assert reader.version_vector(ENV_UUID) == {"DEVA": 1}
    assert reader.ingest(cs2.encode(), pub(key), NOW).status == APPLIED
    assert render(reader.state(ENV_UUID)) == edited


def test_concurrent_writes_recorded_as_conflicts(author, reader):
    key, _, (cs1, _), _ = author
    reader.ingest(cs1.encode(), pub(key), NOW)
    kb = Ed25519PrivateKey.generate()
    a = ChangeSet(space=SPACE, env=ENV_UUID, device="DEVA", seq=2, hlc=cs1.hlc + 10,
                  deps={}, prev_hash=cs1.hash,
                  ops=(["s", u(11), ["v", "body"], '"A"'],)).sign(key)
    b = ChangeSet(space=SPACE, env=ENV_UUID, device="DEVB", seq=1, hlc=cs1.hlc + 20,
                  deps={"DEVA": 1}, prev_hash=b"",
                  ops=(["s", u(11), ["v", "body"], '"B"'],)).sign(kb)
    reader.ingest(a.encode(), pub(key), NOW)
    res = reader.ingest(b.encode(), pub(kb), NOW)
    assert len(res.conflicts) == 1
    c = reader.conflicts(ENV_UUID)[0]
    assert c["winner"]["value"] == "B" and c["loser"]["value"] == "A"
    assert reader.mark_resolved(ENV_UUID, c["id"])
    assert reader.conflicts(ENV_UUID) == []


def test_clock_drift_error_type():
    from mocksync.changes import Clock

    with pytest.raises(ClockDriftError):
        Clock(last=0).observe(pack(NOW + 10_000_000, 0), NOW)


def test_batch_ingest_matches_one_by_one(author, reader, tmp_path):
    """The catch-up path: same result as ingesting one by one, gaps and refusals included."""
    key, st, (cs1, cs2), edited = author
    more = []
    doc = edited
    for i in range(5):
        doc = clone(doc)
        find(doc, u(31))["body"] = f"v{i}"
        ops = diff(render(st.state(ENV_UUID)), doc, st.state(ENV_UUID), random.Random(i))
        c, _ = st.commit_local(key, space=SPACE, env=ENV_UUID, device="DEVA", ops=ops,
                               now_ms=NOW + 10 + i)
        more.append(c)
    chain = [cs1, cs2] + more
    # seq 4 arrives first on its own: it waits as pending until the batch fills the gap.
    assert reader.ingest(chain[3].encode(), pub(key), NOW).status == PENDING
    stranger = Ed25519PrivateKey.generate()
    forged = ChangeSet(space=SPACE, env=ENV_UUID, device="DEVX", seq=1, hlc=cs1.hlc, deps={},
                       prev_hash=b"", ops=cs2.ops).sign(stranger)
    items = [(c, pub(key)) for c in reversed(chain)] + [(forged, pub(key))]
    res, errors = reader.ingest_batch(items, NOW + 1000)
    assert [type(e).__name__ for _c, e in errors] == ["SignatureError"]
    assert sorted(c.seq for c in res.applied) == [1, 2, 3, 4, 5, 6, 7]
    assert render(reader.state(ENV_UUID)) == render(st.state(ENV_UUID))
    assert reader.version_vector(ENV_UUID) == {"DEVA": 7}
    # Survives a restart: the batch was committed, registers included.
    reader.close()
    again = Store(tmp_path / "reader.sqlite3")
    assert render(again.state(ENV_UUID)) == render(st.state(ENV_UUID))
    res2, errors2 = again.ingest_batch([(c, pub(key)) for c in chain], NOW + 2000)
    assert res2.applied == [] and errors2 == []
    again.close()
