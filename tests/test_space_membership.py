"""The signed membership log (docs/design/security.md §1 for membership input, §2, §8).

Each test builds a small log with real keys and checks what `verify_log` proves from it:
forged and foreign entries refuse the whole log, entries by non-admins or removed devices are
void, removal wins over concurrent entries, and `accepts_change` keeps a removed device's
change sets up to its removal's cut and refuses the rest.
"""

from __future__ import annotations

import random

import pytest

from mocksync.space import membership as M
from mocksync.space.errors import MembershipError
from mocksync.space.identity import Identity
from mocksync.space.keys import new_content_key, rotate


def ident(n: int, name: str | None = None) -> Identity:
    return Identity.from_seeds(name or f"dev{n}", bytes([n]) * 32, bytes([n + 100]) * 32,
                               member_name=f"person{n}")


A, B, C, D, E, X = (ident(i) for i in range(1, 7))
T = 1_000


class Log:
    """A log under construction: every append goes through `extend_log` like a real device."""

    def __init__(self, creator: Identity = A, *, kind: str = "team", device_limit: int = 2) -> None:
        self.entries = [M.new_genesis(creator, name="team", member_name="Alice", kind=kind,
                                      device_limit=device_limit, now_ms=T)]
        self.state = M.verify_log(self.entries)
        self.member_of: dict[str, str] = {creator.device_id: next(iter(self.state.members))}

    def add(self, entry: M.Entry) -> M.SpaceState:
        self.state = M.extend_log(self.entries, [entry])
        self.entries.append(entry)
        return self.state

    def add_person(self, by: Identity, dev: Identity, role: str = "editor") -> str:
        mid = M.new_member_id()
        self.add(M.add_member(by, self.state, member_id=mid, name=dev.member_name, role=role,
                              now_ms=T))
        self.add(M.add_device(by, self.state, member_id=mid, device=dev.public, sealed_key=None,
                              now_ms=T))
        self.member_of[dev.device_id] = mid
        return mid

    def add_own_device(self, by: Identity, owner: Identity, dev: Identity) -> None:
        mid = self.member_of[owner.device_id]
        self.add(M.add_device(by, self.state, member_id=mid, device=dev.public, sealed_key=None,
                              now_ms=T))
        self.member_of[dev.device_id] = mid


# ---------------------------------------------------------------- basics


def test_genesis_makes_creator_admin_with_key_generation_one():
    log = Log()
    st = log.state
    assert st.is_member(A.device_id) and st.is_admin(A.device_id)
    assert st.key_generation == 1 and st.kind == "team" and st.model == 1
    assert len(st.space_id) == 32 and st.creator == A.device_id
    assert not st.is_member(B.device_id)


def test_admin_adds_member_and_device():
    log = Log()
    mid = log.add_person(A, B)
    st = log.state
    assert st.is_member(B.device_id)
    assert st.role_of(B.device_id) == "editor"
    assert st.members[mid].devices == (B.device_id,)
    assert st.devices[B.device_id].box_key == B.box_public
    assert not st.void


def test_entry_hash_is_stable_and_wire_roundtrips():
    log = Log()
    log.add_person(A, B)
    for e in log.entries:
        assert M.Entry.from_wire(e.wire) == e


# ---------------------------------------------------------------- forged and malformed


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def test_forged_signature_refuses_the_log():
    log = Log()
    log.add_person(A, B)
    # flip a bit inside the signature (the last bytes of the wire are the sig)
    tampered = _flip(log.entries[1].wire, len(log.entries[1].wire) - 3)
    with pytest.raises(MembershipError, match="invalid signature"):
        M.verify_log([log.entries[0], tampered, *[e.wire for e in log.entries[2:]]])


def test_altered_body_with_original_signature_is_refused():
    log = Log()
    log.add_person(A, B, role="editor")
    add_member = log.entries[1]
    # re-sign nothing: swap the role in the body and keep A's signature
    from mocksync.changes.canonical import decode, encode

    outer = decode(add_member.wire)
    body = decode(outer["body"])
    body["data"]["role"] = "admin"
    forged = encode({"body": encode(body), "sig": outer["sig"]})
    with pytest.raises(MembershipError, match="invalid signature"):
        M.verify_log([log.entries[0].wire, forged, log.entries[2].wire])


def test_entry_signed_by_a_stranger_is_refused():
    log = Log()
    stranger_entry = M.add_member(X, log.state, member_id=M.new_member_id(), name="Mallory",
                                  role="admin", now_ms=T)
    with pytest.raises(MembershipError, match="no entry of this log adds"):
        M.verify_log(log.entries + [stranger_entry])


def test_stranger_claiming_to_be_admin_is_refused():
    log = Log()

    class Impostor:
        device_id = A.device_id
        public = A.public

        @staticmethod
        def sign(data: bytes) -> bytes:
            return X.sign(data)

    e = M.add_member(Impostor, log.state, member_id=M.new_member_id(), name="Mallory",
                     role="admin", now_ms=T)
    with pytest.raises(MembershipError, match="invalid signature"):
        M.verify_log(log.entries + [e])


def test_missing_parent_two_genesis_and_foreign_space_are_refused():
    log = Log()
    log.add_person(A, B)
    with pytest.raises(MembershipError, match="missing"):
        M.verify_log([log.entries[0], log.entries[2]])
    other = M.new_genesis(B, name="other", member_name="Bob", now_ms=T)
    with pytest.raises(MembershipError, match="2 genesis"):
        M.verify_log(log.entries + [other])
    with pytest.raises(MembershipError, match="no genesis"):
        M.verify_log(log.entries[1:])
    foreign_state = M.verify_log([other])
    foreign = M.add_member(B, foreign_state, member_id=M.new_member_id(), name="x",
                           role="editor", now_ms=T)
    # graft the foreign entry onto our log: it names another space
    with pytest.raises(MembershipError):
        M.verify_log(log.entries + [foreign])


def test_wrong_counter_is_refused():
    log = Log()
    e = M._sign(A, log.state.space_id_bytes, "migrate", {"model": 2}, list(log.state.heads),
                log.state.next_counter + 5, T)
    with pytest.raises(MembershipError, match="counter"):
        M.verify_log(log.entries + [e])


def test_malformed_and_oversized_entries_are_refused_with_clear_errors():
    with pytest.raises(MembershipError, match="byte limit"):
        M.Entry.from_wire(b"\x00" * (M.MAX_ENTRY_BYTES + 1))
    with pytest.raises(MembershipError):
        M.Entry.from_wire(b"\xa0")  # an empty map: no body
    with pytest.raises(MembershipError):
        M.Entry.from_wire(b"not cbor at all")
    with pytest.raises(MembershipError, match="unknown field"):
        log = Log()
        M.sign_entry(A, log.state, "migrate", {"model": 2, "extra": 1}, now_ms=T)


def test_bad_input_changes_nothing():
    log = Log()
    before = list(log.entries)
    bad = M.add_member(X, log.state, member_id=M.new_member_id(), name="M", role="admin", now_ms=T)
    with pytest.raises(MembershipError):
        log.add(bad)
    assert log.entries == before
    assert M.verify_log(log.entries) == log.state


# ---------------------------------------------------------------- authority


def test_entry_signed_by_non_admin_is_void():
    log = Log()
    log.add_person(A, B, role="editor")
    sneaky = M.add_member(B, log.state, member_id=M.new_member_id(), name="Friend",
                          role="admin", now_ms=T)
    with pytest.raises(MembershipError, match="not an admin"):
        M.extend_log(log.entries, [sneaky])
    st = M.verify_log(log.entries + [sneaky])
    assert "not an admin" in st.void[sneaky.hash_hex]
    assert len(st.members) == 2


def test_promoted_editor_can_then_add_members():
    log = Log()
    mid_b = log.add_person(A, B)
    log.add(M.set_role(A, log.state, member_id=mid_b, role="admin", now_ms=T))
    log.add_person(B, C)
    assert log.state.is_member(C.device_id)


def test_author_must_have_seen_its_own_addition():
    log = Log()
    genesis = log.state
    mid_b = log.add_person(A, B, role="admin")
    # a longer branch of A's, concurrent with B's addition
    branch = [M.migrate(A, genesis, model=2, now_ms=T)]
    for model in (3, 4):
        st = M.extend_log([log.entries[0], *branch], [])
        branch.append(M.migrate(A, st, model=model, now_ms=T))
    tip = M.verify_log([log.entries[0], *branch])
    # B signs on top of that branch only: it sorts after its addition but never saw it
    e = M._sign(B, tip.space_id_bytes, "set_role", {"member": mid_b, "role": "admin"},
                list(tip.heads), tip.next_counter, T)
    st = M.verify_log(log.entries + branch + [e])
    assert st.model == 4
    assert "own addition" in st.void[e.hash_hex]


def test_space_keeps_an_admin():
    log = Log()
    mid_a = next(iter(log.state.members))
    with pytest.raises(MembershipError, match="without an admin"):
        log.add(M.set_role(A, log.state, member_id=mid_a, role="editor", now_ms=T))
    with pytest.raises(MembershipError, match="without an admin"):
        log.add(M.remove_device(A, log.state, device_id=A.device_id, covers={}, now_ms=T))


def test_personal_space_has_one_member_and_takes_own_devices():
    log = Log(kind="personal")
    with pytest.raises(MembershipError, match="personal space"):
        log.add(M.add_member(A, log.state, member_id=M.new_member_id(), name="Bob",
                             role="editor", now_ms=T))
    log.add_own_device(A, A, B)
    assert log.state.is_admin(B.device_id)


def test_device_over_the_member_limit_is_refused():
    log = Log(device_limit=2)
    log.add_own_device(A, A, B)
    mid = log.member_of[A.device_id]
    third = M.add_device(A, log.state, member_id=mid, device=C.public, sealed_key=None, now_ms=T)
    with pytest.raises(MembershipError, match="already has 2 devices"):
        log.add(third)
    assert not M.verify_log(log.entries + [third]).is_member(C.device_id)


def test_concurrent_device_adds_over_the_limit_keep_exactly_the_limit():
    log = Log(device_limit=2)
    mid_b = log.add_person(A, B, role="admin")
    base = log.state
    e1 = M.add_device(A, base, member_id=mid_b, device=C.public, sealed_key=None, now_ms=T)
    e2 = M.add_device(B, base, member_id=mid_b, device=D.public, sealed_key=None, now_ms=T)
    st = M.verify_log(log.entries + [e1, e2])
    assert len(st.members[mid_b].devices) == 2
    assert len(st.void) == 1


# ---------------------------------------------------------------- removal


def test_removed_device_cannot_add_itself_back():
    log = Log()
    mid_b = log.add_person(A, B, role="admin")
    log.add(M.remove_device(A, log.state, device_id=B.device_id, covers={}, now_ms=T))
    assert not log.state.is_member(B.device_id)
    # after its removal: B is no longer a device, so nothing it signs counts
    readd = M.add_device(B, log.state, member_id=mid_b, device=B.public, sealed_key=None, now_ms=T)
    with pytest.raises(MembershipError, match="removed"):
        log.add(readd)
    assert not M.verify_log(log.entries + [readd]).is_member(B.device_id)


def test_admin_re_adds_a_removed_device_only_after_seeing_its_removal():
    log = Log()
    mid_b = log.add_person(A, B, role="admin")
    before = log.state
    removal = M.remove_device(A, before, device_id=B.device_id, covers={"env1": 2}, now_ms=T)
    # an admin entry concurrent with the removal cannot undo it
    concurrent = M.add_device(A, before, member_id=mid_b, device=B.public, sealed_key=None,
                              now_ms=T)
    st = M.verify_log(log.entries + [removal, concurrent])
    assert not st.is_member(B.device_id)
    log.add(removal)
    readd = M.add_device(A, log.state, member_id=mid_b, device=B.public, sealed_key=None,
                         now_ms=T)
    log.add(readd)
    st = log.state
    assert st.is_member(B.device_id) and B.device_id not in st.removed_devices
    assert st.accepts_change(B.device_id, "env1", 50)  # active again: its chain continues
    # what B signs after being re-added counts (removal-wins voids only what it did unseen)
    by_b = M.add_member(B, st, member_id=M.new_member_id(), name="Eve", role="editor", now_ms=T)
    log.add(by_b)
    assert len(log.state.members) == 3
    # removed again: B is out, and what it signed before stays
    log.add(M.remove_device(A, log.state, device_id=B.device_id, covers={}, now_ms=T))
    assert not log.state.is_member(B.device_id) and len(log.state.members) == 3


def test_device_removed_again_concurrently_with_its_own_entry_loses_it():
    log = Log()
    mid_b = log.add_person(A, B, role="admin")
    log.add(M.remove_device(A, log.state, device_id=B.device_id, covers={}, now_ms=T))
    log.add(M.add_device(A, log.state, member_id=mid_b, device=B.public, sealed_key=None,
                         now_ms=T))
    base = log.state
    second = M.remove_device(A, base, device_id=B.device_id, covers={}, now_ms=T)
    unseen = M.add_member(B, base, member_id=M.new_member_id(), name="Eve", role="admin",
                          now_ms=T)
    st = M.verify_log(log.entries + [second, unseen])
    assert not st.is_member(B.device_id) and unseen.hash_hex in st.void


def test_removal_wins_over_concurrent_entries_of_the_removed_device():
    log = Log()
    log.add_person(A, B, role="admin")
    before_removal = log.state
    # B, not yet aware of its removal, adds an accomplice, then the accomplice acts
    accomplice_mid = M.new_member_id()
    b1 = M.add_member(B, before_removal, member_id=accomplice_mid, name="Eve", role="admin",
                      now_ms=T)
    s1 = M.extend_log(log.entries, [b1])
    b2 = M.add_device(B, s1, member_id=accomplice_mid, device=E.public, sealed_key=None, now_ms=T)
    s2 = M.extend_log(log.entries + [b1], [b2])
    e1 = M.add_member(E, s2, member_id=M.new_member_id(), name="Eve2", role="admin", now_ms=T)
    # concurrently, A removes B (its removal does not see b1/b2)
    rm = M.remove_device(A, before_removal, device_id=B.device_id, covers={}, now_ms=T)
    st = M.verify_log(log.entries + [b1, b2, e1, rm])
    assert not st.is_member(B.device_id)
    assert not st.is_member(E.device_id)
    assert accomplice_mid not in st.members
    assert {b1.hash_hex, b2.hash_hex, e1.hash_hex} <= set(st.void)
    assert "removal wins" in st.void[b1.hash_hex]


def test_entries_the_removal_saw_stay_valid():
    log = Log()
    log.add_person(A, B, role="admin")
    c_mid = log.add_person(B, C)  # B adds C before being removed; A's removal sees it
    log.add(M.remove_device(A, log.state, device_id=B.device_id, covers={}, now_ms=T))
    assert log.state.is_member(C.device_id)
    assert log.state.members[c_mid].devices == (C.device_id,)


def test_mutual_concurrent_removal_is_deterministic_and_keeps_an_admin():
    log = Log()
    log.add_person(A, B, role="admin")
    base = log.state
    r1 = M.remove_device(A, base, device_id=B.device_id, covers={}, now_ms=T)
    r2 = M.remove_device(B, base, device_id=A.device_id, covers={}, now_ms=T)
    st = M.verify_log(log.entries + [r1, r2])
    assert st.is_member(A.device_id) != st.is_member(B.device_id)
    assert st.admin_devices()
    again = M.verify_log(list(reversed(log.entries + [r1, r2])))
    assert again == st


def test_remove_member_removes_all_their_devices_and_tombstones_the_member():
    log = Log(device_limit=2)
    mid_b = log.add_person(A, B)
    log.add_own_device(A, B, C)
    log.add(M.remove_member(A, log.state, member_id=mid_b,
                            covers={B.device_id: {"env1": 3}, C.device_id: {"env1": 1}},
                            now_ms=T))
    st = log.state
    assert mid_b not in st.members and mid_b in st.removed_members
    assert not st.is_member(B.device_id) and not st.is_member(C.device_id)
    assert st.accepts_change(B.device_id, "env1", 3)
    assert not st.accepts_change(C.device_id, "env1", 2)
    with pytest.raises(MembershipError, match="can never be added back"):
        log.add(M.add_member(A, st, member_id=mid_b, name="Bob", role="editor", now_ms=T))


# ---------------------------------------------------------------- accepts_change (SECURITY 2)


def test_removed_device_changes_kept_up_to_the_cut_and_refused_after():
    log = Log()
    log.add_person(A, B)
    assert log.state.accepts_change(B.device_id, "env1", 1000)  # active: any seq
    log.add(M.remove_device(A, log.state, device_id=B.device_id,
                            covers={"env1": 7, "env2": 2}, now_ms=T))
    st = log.state
    # before the removal (covered): kept
    assert st.accepts_change(B.device_id, "env1", 1)
    assert st.accepts_change(B.device_id, "env1", 7)
    assert st.accepts_change(B.device_id, "env2", 2)
    # after it: refused
    assert not st.accepts_change(B.device_id, "env1", 8)
    assert not st.accepts_change(B.device_id, "env2", 3)
    assert not st.accepts_change(B.device_id, "env3", 1)
    # strangers and nonsense seqs: refused
    assert not st.accepts_change(X.device_id, "env1", 1)
    assert not st.accepts_change(A.device_id, "env1", 0)
    assert st.removed_devices[B.device_id].covers == {"env1": 7, "env2": 2}
    assert st.removed_devices[B.device_id].sign_key == B.sign_public  # to verify kept sets


# ---------------------------------------------------------------- keys and model


def test_rotation_rules():
    log = Log()
    log.add_person(A, B)
    space = log.state.space_id_bytes
    keys = {1: new_content_key()}
    log.add(M.remove_device(A, log.state, device_id=B.device_id, covers={}, now_ms=T))
    assert log.state.rotation_needed
    # sealing the new key to the removed device is void
    leak = rotate(keys, space, {A.device_id: A.box_public, B.device_id: B.box_public})
    bad = M.rotate_key(A, log.state, generation=leak.generation, sealed=leak.sealed, now_ms=T)
    with pytest.raises(MembershipError, match="not an active device"):
        log.add(bad)
    # skipping a generation is void
    rot = rotate(keys, space, {A.device_id: A.box_public})
    with pytest.raises(MembershipError, match="next one is 2"):
        log.add(M.rotate_key(A, log.state, generation=3, sealed=rot.sealed, now_ms=T))
    log.add(M.rotate_key(A, log.state, generation=rot.generation, sealed=rot.sealed, now_ms=T))
    assert log.state.key_generation == 2 and not log.state.rotation_needed
    assert log.state.sealed_key_for(A.device_id, 2) == rot.sealed[A.device_id]


def test_device_added_without_current_key_is_reported_missing():
    log = Log(device_limit=3)
    log.add_own_device(A, A, B)
    assert log.state.devices_missing_key() == [B.device_id]


def test_migrate_only_moves_forward():
    log = Log()
    log.add(M.migrate(A, log.state, model=2, now_ms=T))
    assert log.state.model == 2
    with pytest.raises(MembershipError, match="already at model 2"):
        log.add(M.migrate(A, log.state, model=2, now_ms=T))


# ---------------------------------------------------------------- determinism


def test_state_does_not_depend_on_entry_order_or_duplicates():
    log = Log()
    log.add_person(A, B, role="admin")
    base = log.state
    concurrent = [
        M.add_member(A, base, member_id=M.new_member_id(), name="Carol", role="editor", now_ms=T),
        M.add_member(B, base, member_id=M.new_member_id(), name="Dan", role="editor", now_ms=T),
        M.remove_device(A, base, device_id=B.device_id, covers={"e": 1}, now_ms=T),
    ]
    all_entries = log.entries + concurrent
    reference = M.verify_log(all_entries)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = all_entries + all_entries[:2]
        rng.shuffle(shuffled)
        assert M.verify_log(shuffled) == reference
    assert not reference.is_member(B.device_id)
    assert len(reference.members) == 3  # Alice, Bob (no devices left), Carol; Dan's add is void


def test_removal_by_a_concurrently_removed_admin_has_no_effect():
    log = Log()
    log.add_person(A, B, role="admin")
    log.add_person(A, D, role="admin")
    base = log.state
    b_removes_d = M.remove_device(B, base, device_id=D.device_id, covers={}, now_ms=T)
    a_removes_b = M.remove_device(A, base, device_id=B.device_id, covers={}, now_ms=T)
    d_acts = M.migrate(D, base, model=2, now_ms=T)
    st = M.verify_log(log.entries + [b_removes_d, a_removes_b, d_acts])
    assert not st.is_member(B.device_id)
    assert st.is_member(D.device_id)  # B's removal of D was void: removal wins for B first
    assert b_removes_d.hash_hex in st.void and d_acts.hash_hex not in st.void
    assert st.model == 2
