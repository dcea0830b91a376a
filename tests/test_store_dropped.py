"""The store lists dropped work like any conflict (issue 15): a response added on one device
to a route another device deleted is listed on every device whatever arrived first (the
delete reaching a log that already holds the response lists it on the response, which the
delete did not touch), and the restore `resolve --take` commits clears it everywhere, also
after a restart."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.model import render, snapshot_ops
from mocksync.model.resolution import resolution_ops
from mocksync.store import Store

from envfactory import ENV_UUID, response, small_env, u

SPACE = "cd" * 16
NOW = 1_800_000_000_000
ADDED = "aaaaaaaa-0000-4000-8000-000000000971"


def pub(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def team(tmp_path):
    keys = {d: Ed25519PrivateKey.generate() for d in ("DEVA", "DEVB", "DEVC")}
    stores = {d: Store(tmp_path / f"{d}.sqlite3") for d in keys}
    yield keys, stores, tmp_path
    for st in stores.values():
        st.close()


def commit(keys, stores, dev, ops, t):
    cs, _ = stores[dev].commit_local(keys[dev], space=SPACE, env=ENV_UUID, device=dev, ops=ops,
                                     now_ms=NOW + t)
    return cs


def deliver(keys, store, changesets, t=0):
    for cs in changesets:
        store.ingest(cs.encode(), pub(keys[cs.device]), NOW + t)


def listing(store):
    return [(c["id"], c["entity"], c["field"], c.get("parent")) for c in store.conflicts(ENV_UUID)]


def test_dropped_work_is_listed_everywhere_and_a_restore_clears_it(team):
    keys, st, tmp = team
    g = commit(keys, st, "DEVA", snapshot_ops(small_env(), random.Random(1)), 0)
    deliver(keys, st["DEVB"], [g])
    deliver(keys, st["DEVC"], [g])
    # A deletes route /users (and its responses); B, concurrently, adds a response to it.
    gone = commit(keys, st, "DEVA", [("d", u(10)), ("d", u(11)), ("d", u(12))], 10)
    extra = response(0, label="added by B")
    resp = {**extra, "uuid": ADDED}
    add = commit(keys, st, "DEVB", [("c", ADDED, "response", [
        (("k",), list(resp)), (("p", "list"), [u(10), "zz"]),
        *[(("v", k), v) for k, v in resp.items() if k != "uuid"]])], 11)
    deliver(keys, st["DEVA"], [add], 20)  # the addition reaches the deleter's log
    deliver(keys, st["DEVB"], [gone], 20)  # the delete reaches a log holding the response
    deliver(keys, st["DEVC"], [add, gone], 30)  # a third device, both at once
    lists = [listing(st[d]) for d in ("DEVA", "DEVB", "DEVC")]
    assert lists[0] == lists[1] == lists[2]
    [(cid, entity, field, parent)] = lists[0]
    assert (entity, field, parent) == (ADDED, ["#parent", "p", "list"], u(10))

    # `resolve --take theirs` on A (the winner's device): the route comes back with it.
    [c] = st["DEVA"].conflicts(ENV_UUID)
    ops = resolution_ops(st["DEVA"].state(ENV_UUID), c, take_loser=True)
    r = commit(keys, st, "DEVA", ops, 40)
    deliver(keys, st["DEVB"], [r], 50)
    for d in ("DEVA", "DEVB"):
        assert listing(st[d]) == []
        doc = render(st[d].state(ENV_UUID))
        route = next(x for x in doc["routes"] if x["uuid"] == u(10))
        assert [x["uuid"] for x in route["responses"]] == [u(11), u(12), ADDED]
    # C restarts before the restore reaches it: still listed, then cleared on arrival.
    st["DEVC"].close()
    st["DEVC"] = Store(tmp / "DEVC.sqlite3")
    assert listing(st["DEVC"]) == lists[0]
    deliver(keys, st["DEVC"], [r], 60)
    assert listing(st["DEVC"]) == []
    assert render(st["DEVC"].state(ENV_UUID)) == render(st["DEVA"].state(ENV_UUID))
