"""`Store.warm` (issue 15): what the first commit after a start needs is loaded on the store
worker at start, so the first save of a big environment decodes no change set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes import ChangeSet
from mocksync.model import snapshot_ops
from mocksync.store import Store

from envfactory import ENV_UUID, small_env

SPACE = "ab" * 16
NOW = 1_800_000_000_000


def _reopened(tmp_path: Path) -> tuple[Store, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    st = Store(tmp_path / "log.db")
    st.commit_local(key, space=SPACE, env=ENV_UUID, device="DEVA",
                    ops=snapshot_ops(small_env()), now_ms=NOW)
    st.close()
    return Store(tmp_path / "log.db"), key  # a start: nothing in memory


def _no_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("decoded a stored change set")

    monkeypatch.setattr(ChangeSet, "decode", staticmethod(refuse))


def test_a_commit_after_warm_decodes_no_stored_change_set(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    st, key = _reopened(tmp_path)
    st.warm(ENV_UUID)
    _no_decode(monkeypatch)
    route = small_env()["routes"][0]["uuid"]
    cs, _ = st.commit_local(key, space=SPACE, env=ENV_UUID, device="DEVA",
                            ops=[("s", route, ("v", "endpoint"), "warm")], now_ms=NOW + 1)
    assert cs.seq == 2 and st.state(ENV_UUID).entity(route).get(("v", "endpoint")) == "warm"
    st.close()


def test_without_warm_the_first_commit_decodes_the_last_one(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """(What `warm` spares: the check above would fail without it.)"""
    st, key = _reopened(tmp_path)
    st.state(ENV_UUID)
    _no_decode(monkeypatch)
    route = small_env()["routes"][0]["uuid"]
    with pytest.raises(AssertionError, match="decoded"):
        st.commit_local(key, space=SPACE, env=ENV_UUID, device="DEVA",
                        ops=[("s", route, ("v", "endpoint"), "cold")], now_ms=NOW + 1)
    st.close()
