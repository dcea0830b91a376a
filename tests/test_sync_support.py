"""Sanity tests of the sync network simulator (`helpers.syncsupport`): links drop, duplicate
and reorder as configured, and the in-memory log behaves like the store."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes import HEADER_SIZE, split
from mocksync.sync import Ping, decode_message, encode_message

from helpers.syncsupport import SPACE, Conn, FakeLog, LinkParams, Net, env_id, pub, set_ops


def test_links_drop_duplicate_and_reorder_as_configured():
    net = Net(seed=7)
    net.add("A", [(SPACE, env_id(0))])
    net.add("B", [(SPACE, env_id(0))])
    net.params[frozenset("AB")] = LinkParams(drop=0.5, dup=0.5, delay_min=1, delay_max=200)
    net.conns[99] = Conn(99, "A", "B")
    for i in range(400):
        (frame,) = split(i, encode_message(Ping(i)))
        net._send("A", (99, "B"), frame)
    arrivals = [item[3] for _, _, kind, item in sorted(net._heap) if kind == "frame"]
    nonces = [decode_message(f[HEADER_SIZE:]).nonce for f in arrivals]
    assert 100 < net.frames_dropped < 300
    assert len(nonces) > 400 - net.frames_dropped  # some were duplicated
    assert len(set(nonces)) == 400 - net.frames_dropped
    assert nonces != sorted(nonces)  # and they arrive out of order


def test_fake_log_applies_in_order_holds_gaps_and_ignores_duplicates():
    a = FakeLog("A", Ed25519PrivateKey.generate())
    b = FakeLog("B", Ed25519PrivateKey.generate())
    env = env_id(1)
    w = [a.commit(SPACE, env, set_ops(env, str(i)), 1000 + i).encode() for i in range(3)]
    assert b.ingest(w[2], pub(a.key), 0) == ("pending", [])
    assert b.ingest(w[2], pub(a.key), 0)[0] == "duplicate"
    status, applied = b.ingest(w[0], pub(a.key), 0)
    assert status == "applied" and [c.seq for c in applied] == [1]
    status, applied = b.ingest(w[1], pub(a.key), 0)
    assert [c.seq for c in applied] == [2, 3]
    assert b.version_vector(SPACE, env) == {"A": 3}
    assert b.ingest(w[0], pub(a.key), 0)[0] == "duplicate"
    assert b.wires(SPACE, env, "A", 1, 3) == w[1:]
