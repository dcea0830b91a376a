"""Who may write a change set (`space.writers`): the one decision the relay and every member
make, and the store's take-back that makes a late-learned removal converge (issue 12).

Pure decisions are tested on real signed membership logs; the take-back on two real stores:
one member that applied a removed device's change set before it learned of the removal, one
that never did. After `revoke` they hold the same registers, files and conflicts.
"""

from __future__ import annotations

import random

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.model import diff, render, snapshot_ops
from mocksync.space import membership as M
from mocksync.space.identity import Identity
from mocksync.space.writers import BAD_SEQ, NOT_A_DEVICE, REMOVED, cut_of, judge_change, overreach
from mocksync.store import Store

from envfactory import ENV_UUID, clone, find, small_env, u

T = 1_000
TAG = "aa" * 16
OTHER_TAG = "bb" * 16


def ident(n: int) -> Identity:
    return Identity.from_seeds(f"dev{n}", bytes([n]) * 32, bytes([n + 100]) * 32,
                               member_name=f"person{n}")


A, B, C = ident(1), ident(2), ident(3)


def team(cut: int | None = 2) -> tuple[list[M.Entry], M.SpaceState]:
    """A (admin) and B (editor); B removed with cut `cut` on TAG unless `cut` is None."""
    entries = [M.new_genesis(A, name="team", member_name="Alice", now_ms=T)]
    st = M.verify_log(entries)
    mid = M.new_member_id()
    for make in (
        lambda s: M.add_member(A, s, member_id=mid, name="Bob", role="editor", now_ms=T),
        lambda s: M.add_device(A, s, member_id=mid, device=B.public, sealed_key=None, now_ms=T),
    ):
        e = make(st)
        st = M.extend_log(entries, [e])
        entries.append(e)
    if cut is not None:
        e = M.remove_device(A, st, device_id=B.device_id, covers={TAG: cut}, now_ms=T)
        st = M.extend_log(entries, [e])
        entries.append(e)
    return entries, st


# ---------------------------------------------------------------- the decision (pure)
def test_active_device_is_accepted_with_its_own_key() -> None:
    _, st = team(cut=None)
    v = judge_change(st, B.device_id, TAG, 7)
    assert v.accept and v.sign_key == B.public.sign_key
    assert cut_of(st, B.device_id, TAG) is None


def test_removed_device_is_accepted_up_to_its_cut_and_refused_after() -> None:
    _, st = team(cut=2)
    ok = judge_change(st, B.device_id, TAG, 2)
    assert ok.accept and ok.sign_key == B.public.sign_key  # still verified with its own key
    late = judge_change(st, B.device_id, TAG, 3)
    assert not late.accept and late.code == REMOVED and late.sign_key is None
    assert B.device_id in late.reason and "after #2" in late.reason
    # an environment its removal names no seq for: nothing of it is accepted
    other = judge_change(st, B.device_id, OTHER_TAG, 1)
    assert not other.accept and other.code == REMOVED and "after #0" in other.reason
    assert cut_of(st, B.device_id, TAG) == 2 and cut_of(st, B.device_id, OTHER_TAG) == 0


def test_strangers_and_bad_seqs_are_refused() -> None:
    _, st = team(cut=2)
    v = judge_change(st, C.device_id, TAG, 1)
    assert not v.accept and v.code == NOT_A_DEVICE and C.device_id in v.reason
    for seq in (0, -1, True, "3"):
        bad = judge_change(st, A.device_id, TAG, seq)  # type: ignore[arg-type]
        assert not bad.accept and bad.code == BAD_SEQ


def test_overreach_names_only_what_exceeds_a_cut() -> None:
    _, st = team(cut=2)
    over = overreach(st, TAG, {A.device_id: 40, B.device_id: 5})
    assert list(over) == [B.device_id]
    cut, reason = over[B.device_id]
    assert cut == 2 and "removed" in reason
    assert overreach(st, TAG, {A.device_id: 40, B.device_id: 2}) == {}
    assert overreach(st, OTHER_TAG, {B.device_id: 1}) == {B.device_id: (0, over[B.device_id][1]
                                                                           .replace("#2", "#0"))}


def test_a_device_added_back_writes_again() -> None:
    entries, st = team(cut=2)
    mid = st.removed_devices[B.device_id].member
    e = M.add_device(A, st, member_id=mid, device=B.public, sealed_key=None, now_ms=T)
    st = M.extend_log(entries, [e])
    assert judge_change(st, B.device_id, TAG, 50).accept
    assert overreach(st, TAG, {B.device_id: 50}) == {}


# ---------------------------------------------------------------- taking back (store)
def _pub(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _edit(store: Store, key: Ed25519PrivateKey, device: str, uuid: str, body: str,
          now: int):
    doc = clone(render(store.state(ENV_UUID)))
    find(doc, uuid)["body"] = body
    ops = diff(render(store.state(ENV_UUID)), doc, store.state(ENV_UUID), random.Random(now))
    cs, _ = store.commit_local(key, space="ab" * 16, env=ENV_UUID, device=device, ops=ops,
                               now_ms=now)
    return cs


def _tables(store: Store) -> tuple[list, list]:
    ents = store.db.execute("SELECT uuid, record FROM entities WHERE env=? ORDER BY uuid",
                            (ENV_UUID,)).fetchall()
    confl = store.db.execute("SELECT id FROM conflicts WHERE env=? ORDER BY id",
                             (ENV_UUID,)).fetchall()
    return ents, confl


def test_revoke_converges_with_a_member_that_never_applied(tmp_path) -> None:
    ka, kb = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    alice, bob = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    early, late = Store(tmp_path / "early.db"), Store(tmp_path / "late.db")
    try:
        a1, _ = alice.commit_local(ka, space="ab" * 16, env=ENV_UUID, device="A",
                                   ops=snapshot_ops(small_env(), random.Random(1)), now_ms=T)
        bob.ingest(a1, _pub(ka), T)
        b1 = _edit(bob, kb, "B", u(11), "bob 1", T + 1)
        b2 = _edit(bob, kb, "B", u(31), "bob after the cut", T + 2)  # made after the cut
        b3 = _edit(bob, kb, "B", u(21), "bob deletes more", T + 3)
        # `late` applied all of Bob's change sets before learning of his removal (cut: #1)
        for cs, k in ((a1, ka), (b1, kb), (b2, kb), (b3, kb)):
            late.ingest(cs, _pub(k), T + 4)
        alice.ingest(b1, _pub(kb), T + 4)
        a2 = _edit(alice, ka, "A", u(11), "alice wins", T + 5)
        # and it received Alice's later edit, as did `early`, which refused Bob's late sets
        late.ingest(a2, _pub(ka), T + 6)
        for cs in (a1, b1):
            early.ingest(cs, _pub(ka if cs.device == "A" else kb), T + 6)
        early.ingest(a2, _pub(ka), T + 6)
        assert render(late.state(ENV_UUID)) != render(early.state(ENV_UUID))  # diverged

        taken = late.revoke(ENV_UUID, "B", 1, "removed after #1", T + 7)
        assert taken == [2, 3]
        assert render(late.state(ENV_UUID)) == render(early.state(ENV_UUID))
        assert _tables(late) == _tables(early)
        assert late.version_vector(ENV_UUID) == early.version_vector(ENV_UUID) == {"A": 2, "B": 1}
        assert late.held_seqs(ENV_UUID) == {"A": 2, "B": 1}
        rej = late.rejected(10)
        assert sorted(r["seq"] for r in rej) == [2, 3]
        assert all(r["device"] == "B" and r["reason"] == "removed after #1" for r in rej)
        # taking back again changes nothing; a re-sent late set is still refused by key=None
        assert late.revoke(ENV_UUID, "B", 1, "removed after #1", T + 8) == []
        # survives a reopen (the rebuilt registers are what is on disk)
        late.close()
        late = Store(tmp_path / "late.db")
        assert render(late.state(ENV_UUID)) == render(early.state(ENV_UUID))
    finally:
        for s in (alice, bob, early, late):
            s.close()


def test_refusals_are_listed_once_and_bounded(tmp_path, monkeypatch) -> None:
    import mocksync.store.log as logmod

    ka = Ed25519PrivateKey.generate()
    st = Store(tmp_path / "s.db")
    try:
        cs, _ = st.commit_local(ka, space="ab" * 16, env=ENV_UUID, device="A",
                                ops=snapshot_ops(small_env(), random.Random(1)), now_ms=T)
        before = st.version_vector(ENV_UUID)
        st.refuse(cs, "not a member", T)
        st.refuse(cs, "not a member", T + 1)  # the same refusal again: listed once
        assert len(st.rejected(50)) == 1 and st.version_vector(ENV_UUID) == before
        monkeypatch.setattr(logmod, "MAX_REJECTED_ROWS", 3)
        for i in range(6):
            st.refuse(cs, f"reason {i}", T)
        rows = st.rejected(50)
        assert [r["reason"] for r in rows] == ["reason 5", "reason 4", "reason 3"]
    finally:
        st.close()
