"""The store lists conflicts as derived from its log: the same on every device, a resolution
clears them everywhere, and a save stamped with what its editor had seen is concurrent with
a teammate's edit that arrived meanwhile (issue 11 item 8: two saves 16 ms apart)."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.model import snapshot_ops
from mocksync.store import Store

from envfactory import ENV_UUID, small_env, u

SPACE = "ab" * 16
NOW = 1_800_000_000_000
FIELD = ("v", "body")


def pub(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def team(tmp_path):
    keys = {d: Ed25519PrivateKey.generate() for d in ("DEVA", "DEVB", "DEVC")}
    stores = {d: Store(tmp_path / f"{d}.sqlite3") for d in keys}
    yield keys, stores
    for st in stores.values():
        st.close()


def commit(keys, stores, dev, ops, t, seen=None):
    cs, _ = stores[dev].commit_local(keys[dev], space=SPACE, env=ENV_UUID, device=dev, ops=ops,
                                     now_ms=NOW + t, seen=seen)
    return cs


def deliver(keys, store, changesets, t=0):
    for cs in changesets:
        store.ingest(cs.encode(), pub(keys[cs.device]), NOW + t)


def listing(store):
    return [(c["id"], c["field"], c["winner"]["value"], c["loser"]["value"])
            for c in store.conflicts(ENV_UUID)]


def test_a_save_made_before_a_teammates_edit_arrived_is_a_conflict_everywhere(team):
    keys, st = team
    g = commit(keys, st, "DEVA", snapshot_ops(small_env(), random.Random(1)), 0)
    deliver(keys, st["DEVB"], [g])
    editor_had = st["DEVB"].version_vector(ENV_UUID)  # B's file: the shared version
    a = commit(keys, st, "DEVA", [("s", u(11), FIELD, "by A")], 10)
    deliver(keys, st["DEVB"], [a], 12)  # A's edit lands on B 12 ms later...
    # ...4 ms before B's editor saves, on the version it had: not an overwrite of A's.
    b = commit(keys, st, "DEVB", [("s", u(11), FIELD, "by B")], 16, seen=editor_had)
    assert b.deps == {"DEVA": 1}
    deliver(keys, st["DEVA"], [b], 20)
    deliver(keys, st["DEVC"], [b, a, g], 30)  # a third device, in another order
    lists = [listing(st[d]) for d in ("DEVA", "DEVB", "DEVC")]
    assert lists[0] == lists[1] == lists[2]
    assert [(f, w, lo) for _i, f, w, lo in lists[0]] == [(list(FIELD), "by B", "by A")]

    # `resolve --take theirs` on C: a change set that saw both; everywhere it lands, the
    # conflict goes and the value is A's.
    r = commit(keys, st, "DEVC", [("s", u(11), FIELD, "by A")], 40)
    assert listing(st["DEVC"]) == []
    for d in ("DEVA", "DEVB"):
        deliver(keys, st[d], [r], 50)
        assert listing(st[d]) == []
        assert st[d].state(ENV_UUID).entity(u(11)).regs[FIELD].value == "by A"


def test_without_what_the_editor_had_the_save_claims_to_have_seen_everything(team):
    """The old behaviour, still right for a command's edit (it saw all applied)."""
    keys, st = team
    g = commit(keys, st, "DEVA", snapshot_ops(small_env(), random.Random(1)), 0)
    deliver(keys, st["DEVB"], [g])
    a = commit(keys, st, "DEVA", [("s", u(11), FIELD, "by A")], 10)
    deliver(keys, st["DEVB"], [a], 12)
    b = commit(keys, st, "DEVB", [("s", u(11), FIELD, "by B")], 16)
    assert b.deps == {"DEVA": 2}
    assert listing(st["DEVB"]) == []


def test_the_listing_survives_a_restart_and_a_resolution_after_it_clears_it(team, tmp_path):
    keys, st = team
    g = commit(keys, st, "DEVA", snapshot_ops(small_env(), random.Random(1)), 0)
    deliver(keys, st["DEVB"], [g])
    a = commit(keys, st, "DEVA", [("s", u(11), FIELD, "by A")], 10)
    b = commit(keys, st, "DEVB", [("s", u(11), FIELD, "by B")], 11)
    deliver(keys, st["DEVA"], [b], 20)
    before = listing(st["DEVA"])
    assert len(before) == 1
    st["DEVA"].close()
    st["DEVA"] = reopened = Store(tmp_path / "DEVA.sqlite3")
    assert listing(reopened) == before
    r = commit(keys, st, "DEVA", [("s", u(11), FIELD, "by B")], 30)  # --take theirs on A
    assert listing(reopened) == []
    deliver(keys, st["DEVB"], [a, r], 40)
    assert listing(st["DEVB"]) == []
