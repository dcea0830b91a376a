"""Issue 11 follow-ups: leaving a space, knowing one was removed, and names people can tell
apart (`space.membership` `leave`, `space.standing`, `spaceio.actions.leave_space`, the join
name check).

The `leave` entry: signed by a device of the leaving member (no admin needed), it removes the
member and all its devices with their cut; void for someone else's member, in a personal
space, or for the last admin (and so refused by `extend_log`); an older build refuses the
whole log saying to update. A removal proves itself: `departure` reads who removed the device
and when from the verified log only, and a forged removal (not signed by an admin) is void or
does not verify. Two members of one name are shown `name (id prefix)`; a join with a name
another member uses is refused without using up the invite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mocksync.changes.canonical import decode, encode
from mocksync.paths import Home
from mocksync.space import membership as M
from mocksync.space.errors import JoinRefusedError, MembershipError
from mocksync.space.identity import Identity
from mocksync.space.invite import AdminSession, Admission, InviteBook, InviteToken, JoinerSession
from mocksync.space.keys import new_content_key
from mocksync.space.names import names_key
from mocksync.space.standing import departure, device_labels, member_labels, name_taken
from mocksync.spaceio import actions
from mocksync.spaceio.learn import learn_entries
from mocksync.spaceio.store import add_space, get_space

T = 1_700_000_000_000
NOW = T / 1000


def ident(n: int, member: str) -> Identity:
    return Identity.from_seeds(f"dev{n}", bytes([n]) * 32, bytes([n + 70]) * 32,
                               member_name=member)


A, B, C = ident(1, "Alice"), ident(2, "Bob"), ident(3, "Carol")


def team_log(roles: tuple[str, str] = ("admin", "editor")) -> tuple[list[M.Entry], str, str]:
    """A: admin (genesis); B and C joined with `roles`. Returns the log and B's, C's member."""
    log = [M.new_genesis(A, name="team", member_name="Alice", now_ms=T)]
    mids = []
    for dev, role in zip((B, C), roles, strict=True):
        mid = M.new_member_id()
        mids.append(mid)
        log.append(M.add_member(A, M.verify_log(log), member_id=mid, name=dev.member_name,
                                role=role, now_ms=T))
        log.append(M.add_device(A, M.verify_log(log), member_id=mid, device=dev.public,
                                sealed_key=None, now_ms=T))
    return log, mids[0], mids[1]


def raw(signer: Identity, state: M.SpaceState, kind: str, data: object) -> bytes:
    body = encode({"v": 1, "space": state.space_id_bytes, "kind": kind,
                   "author": signer.device_id, "parents": sorted(state.heads),
                   "counter": state.next_counter, "time": T, "data": data})
    return encode({"body": body, "sig": signer.sign(M._SIGN_DOMAIN + body)})


# ---------------------------------------------------------------- the leave entry


def test_a_member_leaves_on_its_own_and_a_rotation_is_due() -> None:
    log, bob, carol = team_log()
    st = M.verify_log(log)
    e = M.leave(C, st, covers={C.device_id: {"t" * 32: 4}}, now_ms=T + 5)
    after = M.extend_log(log, [e])
    assert carol not in after.members and carol in after.removed_members
    assert not after.is_member(C.device_id)
    r = after.removed_devices[C.device_id]
    assert (r.kind, r.by, r.at_ms) == ("leave", C.device_id, T + 5)
    assert after.accepts_change(C.device_id, "t" * 32, 4)
    assert not after.accepts_change(C.device_id, "t" * 32, 5)
    assert after.rotation_needed
    assert actions.rotator(after) == A.device_id
    d = departure(after, C.device_id)
    assert d is not None and d.kind == "left"
    assert d.sentence().startswith("left team at ")
    assert "edits stay on this device only" in d.sentence()


def test_a_leave_for_another_member_is_void_and_refused() -> None:
    log, bob, carol = team_log()
    st = M.verify_log(log)
    forged = M.Entry.from_wire(raw(C, st, "leave", {"member": bob, "covers": {}}))
    with pytest.raises(MembershipError, match="a member leaves only on its own"):
        M.extend_log(log, [forged])
    assert M.verify_log(log + [forged]).is_member(B.device_id)


def test_the_last_admin_cannot_leave() -> None:
    log, bob, carol = team_log(("editor", "editor"))
    st = M.verify_log(log)
    alice = st.member_of(A.device_id)
    assert alice is not None
    lone = M.Entry.from_wire(raw(A, st, "leave", {"member": alice.id, "covers": {}}))
    with pytest.raises(MembershipError, match="the last admin cannot leave"):
        M.extend_log(log, [lone])
    # with another admin (Bob), the same leave holds
    log2, _b, _c = team_log(("admin", "editor"))
    e = M.leave(A, M.verify_log(log2), covers={}, now_ms=T)
    after = M.extend_log(log2, [e])
    assert not after.is_member(A.device_id) and after.admin_devices() == [B.device_id]


def test_a_personal_space_cannot_be_left() -> None:
    log = [M.new_genesis(A, name="personal", member_name="Alice", kind="personal", now_ms=T)]
    st = M.verify_log(log)
    alice = st.member_of(A.device_id)
    assert alice is not None
    e = M.Entry.from_wire(raw(A, st, "leave", {"member": alice.id, "covers": {}}))
    with pytest.raises(MembershipError, match="personal space cannot be left"):
        M.extend_log(log, [e])


def test_a_build_without_leave_refuses_the_whole_log_saying_update(monkeypatch) -> None:
    log, _bob, _carol = team_log()
    e = M.leave(C, M.verify_log(log), covers={}, now_ms=T)
    monkeypatch.setattr(M, "KINDS", tuple(k for k in M.KINDS if k != "leave"))
    with pytest.raises(MembershipError, match="update mocksync"):
        M.Entry.from_wire(e.wire)


def test_a_malformed_leave_is_refused() -> None:
    log, bob, _carol = team_log()
    st = M.verify_log(log)
    for data in ({"member": bob}, {"member": bob, "covers": {}, "x": 1},
                 {"member": "nope", "covers": {}}):
        with pytest.raises(MembershipError):
            M.Entry.from_wire(raw(B, st, "leave", data))


# ---------------------------------------------------------------- proof of removal


def test_departure_comes_from_the_signed_removal_only() -> None:
    log, bob, carol = team_log(("editor", "editor"))
    st = M.verify_log(log)
    assert departure(st, C.device_id) is None
    rm = M.remove_member(A, st, member_id=carol, covers={C.device_id: {}}, now_ms=T + 60_000)
    after = M.extend_log(log, [rm])
    d = departure(after, C.device_id)
    assert d is not None and (d.kind, d.by_device, d.by_name) == ("removed", A.device_id, "Alice")
    assert d.sentence() == ("removed from team by Alice at 2023-11-14 22:14 UTC; edits stay on "
                            "this device only; ask an admin to invite you back")
    # an editor (or a relay, which signs nothing of the log) cannot fake a removal
    fake = M.Entry.from_wire(raw(B, st, "remove_member", {"member": carol, "covers": {}}))
    with pytest.raises(MembershipError, match="not an admin"):
        M.extend_log(log, [fake])
    body = decode(rm.wire)
    tampered = encode({"body": body["body"], "sig": bytes(64)})
    with pytest.raises(MembershipError, match="invalid signature"):
        M.verify_log(log + [tampered])


def test_a_removed_device_stores_the_proof_and_leaving_writes_nothing_when_refused(
        tmp_path: Path) -> None:
    keys = {1: new_content_key()}
    log, bob, carol = team_log()
    carol_home = Home(tmp_path / "carol")
    carol_home.ensure()
    add_space(carol_home, log, keys, now=NOW)
    rm = M.remove_member(A, M.verify_log(log), member_id=carol, covers={C.device_id: {}},
                         now_ms=T)
    learned = learn_entries(carol_home, C, M.verify_log(log).space_id,
                            get_space(carol_home, "team"), [rm.wire])
    assert learned.removals and not learned.signed
    held = get_space(carol_home, "team")
    assert departure(held.state, C.device_id) is not None
    before = len(held.entries)
    with pytest.raises(MembershipError, match="no longer a member"):
        actions.leave_space(carol_home, C, "team", now=NOW)
    assert len(get_space(carol_home, "team").entries) == before


def test_leave_space_and_the_admin_rotates_when_it_learns_it(tmp_path: Path) -> None:
    keys = {1: new_content_key()}
    log, bob, carol = team_log(("editor", "editor"))
    homes = {}
    for who in ("alice", "carol"):
        homes[who] = Home(tmp_path / who)
        homes[who].ensure()
        add_space(homes[who], log, keys, now=NOW)
    with pytest.raises(MembershipError, match="last admin"):
        actions.leave_space(homes["alice"], A, "team", now=NOW)
    left = actions.leave_space(homes["carol"], C, "team", now=NOW)
    assert not left.state.is_member(C.device_id)
    mine = get_space(homes["alice"], "team")
    learned = learn_entries(homes["alice"], A, mine.space_id, mine,
                            [e.wire for e in left.entries])
    assert [e.kind for e in learned.fresh] == ["leave"]
    assert [e.kind for e in learned.signed] == ["rotate_key"]
    after = get_space(homes["alice"], "team")
    assert after.state.key_generation == 2 and 2 in after.keys
    assert not after.state.rotation_needed
    assert C.device_id not in {d for d, _g in after.state.sealed_keys if _g == 2}


# ---------------------------------------------------------------- names


def test_members_of_one_name_are_told_apart() -> None:
    log = [M.new_genesis(A, name="team", member_name="dave", now_ms=T)]
    mid = M.new_member_id()
    log.append(M.add_member(A, M.verify_log(log), member_id=mid, name="Dave", role="editor",
                            now_ms=T))
    log.append(M.add_device(A, M.verify_log(log), member_id=mid, device=B.public,
                            sealed_key=None, now_ms=T))
    st = M.verify_log(log)
    labels = member_labels(st.members)
    assert labels[mid] == f"Dave ({mid[:6]})"
    assert len(set(labels.values())) == 2
    assert device_labels(st)[B.device_id] == ("dev2", f"Dave ({mid[:6]})")
    assert name_taken(st, "DAVE") is not None and name_taken(st, "erin") is None


def test_a_join_with_a_name_another_member_uses_is_refused_and_the_invite_kept() -> None:
    entries = [M.new_genesis(A, name="team", member_name="Alice", now_ms=1)]
    keys = {1: new_content_key()}
    book = InviteBook(M.verify_log(entries).space_id)
    state = M.verify_log(entries, names_key(entries[0].space, keys))
    _, token = book.issue(state, A, now=NOW, relay="https://relay.example:8765")
    token = InviteToken.parse(token.encode())
    twin = ident(9, "alice")
    joiner, admin = JoinerSession(token, twin), AdminSession(A, book, entries, keys)
    with pytest.raises(JoinRefusedError, match="--member-name NAME"):
        to_admin = [joiner.start(NOW + 1)]
        while to_admin:
            to_joiner = [o for m in to_admin for o in admin.receive(m, NOW + 1)]
            to_admin = [o for m in to_joiner for o in joiner.receive(m, NOW + 1)]
    assert admin.outcome is None or not isinstance(admin.outcome, Admission)
    # the same token, another name: admitted
    joiner2 = JoinerSession(token, twin, member_name="Alice B")
    admin2 = AdminSession(A, book, entries, keys)
    to_admin = [joiner2.start(NOW + 2)]
    while to_admin:
        to_joiner = [o for m in to_admin for o in admin2.receive(m, NOW + 2)]
        to_admin = [o for m in to_joiner for o in joiner2.receive(m, NOW + 2)]
    assert isinstance(admin2.outcome, Admission)
    assert joiner2.result is not None
    assert joiner2.result.state.members[joiner2.result.member_id].name == "Alice B"
