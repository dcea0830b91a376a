"""The order a catch-up uploads a space's environments in: shared first, first (pure + store).

Why it matters: a relay plan that admits fewer environments than a device shared while
offline keeps the ones that reach it first. The tags' own order is a keyed hash (a coin toss
per space), so without an order the environment refused changed from run to run; now the
newest share is the one held, as `share` says once the plan is known
(test_relay_access.py::test_quota_on_environment_count_reaches_status is the journey).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.model import diff, render, snapshot_ops
from mocksync.net.relay_transport import catch_up_order
from mocksync.store import Store

from envfactory import small_env

SPACE = "ab" * 16
NOW = 1_800_000_000_000


def test_local_tags_come_first_in_their_order_then_the_relays_sorted() -> None:
    assert catch_up_order({"zz", "aa", "mm"}, ["mm", "zz"]) == ["mm", "zz", "aa"]
    assert catch_up_order({"b", "a"}, []) == ["a", "b"]
    assert catch_up_order([], ["z", "a"]) == ["z", "a"]  # shared order, not sorted
    assert catch_up_order(["q"], ["z", "z", "q"]) == ["z", "q"]  # each tag once


def test_store_lists_environments_shared_first_first(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    st = Store(tmp_path / "s.sqlite3")
    try:
        # uuids in the opposite order of the shares: the order is the stamps', not the names'.
        shared = ["e0000000-0000-4000-8000-00000000000c", "e0000000-0000-4000-8000-00000000000b",
                  "e0000000-0000-4000-8000-00000000000a"]
        for i, env in enumerate(shared):
            doc = small_env()
            doc["uuid"] = env
            st.commit_local(key, space=SPACE, env=env, device="D", ops=snapshot_ops(doc),
                            now_ms=NOW + i * 1000)
        # A later edit of the first one does not make it newer.
        before = render(st.state(shared[0]))
        edited = copy.deepcopy(before)
        edited["port"] = 3999
        ops = diff(before, edited, st.state(shared[0]), random.Random(1))
        assert ops
        st.commit_local(key, space=SPACE, env=shared[0], device="D", ops=ops, now_ms=NOW + 10_000)
        assert st.envs_oldest_first() == shared
        assert st.envs() == sorted(shared)
    finally:
        st.close()
