"""The lifecycle register read the same way everywhere, and the store keeping tombstones.

Pure tests (no sockets, no clocks): `model.lifecycle` on States built from ops, and the store's
`retire_env` (what an unshare/delete leaves in the log: the tombstone and the device's chain,
so it can still be uploaded, offered, and never reused or resurrected).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.model import snapshot_ops, state_from_doc
from mocksync.model.lifecycle import is_tombstoned, lifecycle_of, reshare_refusal
from mocksync.model.ops import DELETED, LIFECYCLE, SHARED, UNSHARED
from mocksync.model.state import State
from mocksync.store import Store

from envfactory import small_env


def _state(*values: str) -> State:
    """An environment shared, then its lifecycle set to each of `values` in turn."""
    doc = small_env()
    st = state_from_doc(doc, stamp=(1, "a"))
    for i, v in enumerate(values, start=2):
        st.apply([("s", doc["uuid"], LIFECYCLE, v)], (i, "b"))
    return st


def test_a_shared_environment_is_not_tombstoned() -> None:
    st = _state()
    assert lifecycle_of(st) == SHARED and not is_tombstoned(st)
    assert reshare_refusal(st, "env.json") is None


def test_nothing_known_yet_reads_as_shared() -> None:
    st = State("7d2c3d57-0000-4000-8000-000000000000")
    assert lifecycle_of(st) == SHARED and not is_tombstoned(st)


def test_unshared_and_deleted_are_tombstones() -> None:
    for value in (UNSHARED, DELETED):
        st = _state(value)
        assert lifecycle_of(st) == value and is_tombstoned(st)


def test_a_tombstone_that_arrives_before_the_environment_still_counts() -> None:
    """Another device's tombstone may be applied before the sharer's first change set (its
    chain is independent): the register wins by its later stamp either way."""
    doc = small_env()
    st = State(doc["uuid"])
    st.apply([("s", doc["uuid"], LIFECYCLE, DELETED)], (5, "b"))
    assert is_tombstoned(st)
    st.apply(snapshot_ops(doc), (1, "a"))
    assert lifecycle_of(st) == DELETED


def test_reshare_refusal_names_the_file_the_value_and_the_way_out() -> None:
    st = _state(DELETED)
    why = reshare_refusal(st, "orders.json")
    assert why is not None
    assert "orders.json" in why and "deleted" in why and st.env_uuid in why
    assert "mocksync share orders.json --copy" in why


# ------------------------------------------------------------------------------ store


def _commit(store: Store, key: Ed25519PrivateKey, env: str, ops: list[tuple], t: int) -> None:
    store.commit_local(key, space="ab" * 16, env=env, device="DEVA", ops=ops, now_ms=t)


def test_retire_keeps_the_log_and_drops_what_only_a_file_needs(tmp_path: Path) -> None:
    store = Store(tmp_path / "log.sqlite3")
    key = Ed25519PrivateKey.generate()
    doc = small_env()
    env = doc["uuid"]
    _commit(store, key, env, snapshot_ops(doc), 1_000)
    _commit(store, key, env, [("s", env, LIFECYCLE, UNSHARED)], 2_000)
    store.set_base(env, str(tmp_path / "env.json"), "0" * 64, b"{}")
    wires = store.wires_missing(env, {})

    store.retire_env(env)

    assert store.version_vector(env) == {"DEVA": 2}
    assert store.wires_missing(env, {}) == wires  # the tombstone can still be uploaded
    assert env in store.envs() and is_tombstoned(store.state(env))
    assert store.get_base(env) is None
    # The device's chain goes on: a later change set never reuses a sequence number.
    _commit(store, key, env, [("s", env, LIFECYCLE, DELETED)], 3_000)
    assert store.version_vector(env) == {"DEVA": 3}
    store.close()


def test_retired_state_survives_a_restart(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    doc = small_env()
    env = doc["uuid"]
    store = Store(tmp_path / "log.sqlite3")
    _commit(store, key, env, snapshot_ops(doc), 1_000)
    _commit(store, key, env, [("s", env, LIFECYCLE, DELETED)], 2_000)
    store.retire_env(env)
    store.close()
    again = Store(tmp_path / "log.sqlite3")
    assert lifecycle_of(again.state(env)) == DELETED
    assert again.version_vector(env) == {"DEVA": 2}
    again.close()
