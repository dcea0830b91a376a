"""Sealed names in the membership log (`space.names`, issue 12): the relay verifies a log whose
names it cannot read; members read them, across key rotations; old clear-name logs still load.
"""

from __future__ import annotations

import pytest

from mocksync.changes.canonical import decode, encode
from mocksync.space import membership as M
from mocksync.space.errors import MembershipError
from mocksync.space.identity import Identity
from mocksync.space.keys import new_content_key, rotate
from mocksync.space.names import (
    MAX_SEALED_NAME_BYTES,
    names_key,
    open_name,
    seal_name,
    sealed_name_problem,
)

T = 1_000
SPACE = bytes(range(16))


def ident(n: int, name: str, member: str) -> Identity:
    return Identity.from_seeds(name, bytes([n]) * 32, bytes([n + 100]) * 32, member_name=member)


A = ident(1, "alice-laptop", "Alice")
B = ident(2, "bob-desktop", "Bob")
C = ident(3, "carol-tablet", "Carol")


def test_seal_and_open_are_bound_to_key_space_role_and_id() -> None:
    key = names_key(SPACE, {1: new_content_key()})
    assert key is not None
    blob = seal_name(key, SPACE, "member", "ab" * 8, "Zoë")
    assert b"Zo" not in blob and sealed_name_problem(blob) is None
    assert open_name(key, SPACE, "member", "ab" * 8, blob) == "Zoë"
    assert open_name(key, SPACE, "member", "cd" * 8, blob) is None  # moved to another person
    assert open_name(key, SPACE, "device", "ab" * 8, blob) is None
    assert open_name(key, bytes(16), "member", "ab" * 8, blob) is None
    other = names_key(SPACE, {1: new_content_key()})
    assert open_name(other, SPACE, "member", "ab" * 8, blob) is None
    assert open_name(None, SPACE, "member", "ab" * 8, blob) is None
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    assert open_name(key, SPACE, "member", "ab" * 8, flipped) is None
    assert names_key(SPACE, {2: new_content_key()}) is None  # generation 1 is the one
    with pytest.raises(MembershipError):
        seal_name(key, SPACE, "member", "ab" * 8, "bad\x1bname")
    assert sealed_name_problem("Alice") is not None
    assert sealed_name_problem(b"x" * (MAX_SEALED_NAME_BYTES + 1)) is not None


def _sealed_team() -> tuple[list[M.Entry], dict[int, bytes]]:
    """Alice's space with sealed names; Bob added, then removed (key rotation)."""
    sid = M.new_space_id()
    keys = {1: new_content_key()}
    nk = names_key(sid, keys)
    entries = [M.new_genesis(A, name="secret-project", member_name="Alice", now_ms=T,
                             space_id=sid, names_key=nk)]
    st = M.verify_log(entries, nk)
    mid = M.new_member_id()
    for make in (
        lambda s: M.add_member(A, s, member_id=mid, name="Bob", role="editor", now_ms=T,
                               names_key=nk),
        lambda s: M.add_device(A, s, member_id=mid, device=B.public, sealed_key=None, now_ms=T,
                               names_key=nk),
    ):
        e = make(st)
        st = M.extend_log(entries, [e], nk)
        entries.append(e)
    rm = M.remove_device(A, st, device_id=B.device_id, covers={}, now_ms=T)
    st = M.extend_log(entries, [rm], nk)
    entries.append(rm)
    rot = rotate(keys, sid, {d.id: d.box_key for d in st.devices.values()})
    rk = M.rotate_key(A, st, generation=rot.generation, sealed=rot.sealed, now_ms=T)
    entries.append(rk)
    keys[rot.generation] = rot.key
    return entries, keys


def test_the_relay_verifies_without_reading_and_members_read_every_name() -> None:
    entries, keys = _sealed_team()
    wire = b"".join(e.wire for e in entries)
    for name in (b"secret-project", b"Alice", b"Bob", b"alice-laptop", b"bob-desktop"):
        assert name not in wire
    assert {e.version for e in entries if e.kind in ("genesis", "add_member", "add_device")} \
        == {M.SEALED_NAMES_FORMAT}
    relay = M.verify_log(entries)  # what the relay runs: no key
    assert relay.name == f"space {relay.space_id[:12]}" and "secret" not in relay.name
    assert relay.is_admin(A.device_id) and B.device_id in relay.removed_devices
    assert {m.name for m in relay.members.values()} == {f"member {m[:8]}" for m in relay.members}
    # a member holds every generation; so does a device that joins after the rotation (the
    # join seals every generation to it): generation 1 opens names written before it existed
    for held in (keys, dict(keys)):
        st = M.verify_log(entries, names_key(entries[0].space, held))
        assert st.name == "secret-project"
        assert {m.name for m in st.members.values()} == {"Alice", "Bob"}
        assert st.devices[A.device_id].name == "alice-laptop"
        assert st.removed_devices[B.device_id].name == "bob-desktop"


def test_clear_name_logs_still_load_and_mixed_forms_are_refused() -> None:
    old = [M.new_genesis(C, name="old-space", member_name="Carol", now_ms=T)]
    assert old[0].version == M.ENTRY_FORMAT
    assert M.verify_log(old).name == "old-space"  # format 1: names in the clear, still read
    # a format-2 entry whose name is text (or a format-1 entry whose name is bytes) is malformed
    body = decode(decode(old[0].wire)["body"])
    for v, name in ((M.SEALED_NAMES_FORMAT, "old-space"), (M.ENTRY_FORMAT, b"\x00" * 40)):
        bad = dict(body, v=v, data=dict(body["data"], name=name))
        b = encode(bad)
        wire = encode({"body": b, "sig": C.sign(M._SIGN_DOMAIN + b)})
        with pytest.raises(MembershipError, match="name"):
            M.Entry.from_wire(wire)
    bad = dict(body, v=3)
    b = encode(bad)
    with pytest.raises(MembershipError):
        M.Entry.from_wire(encode({"body": b, "sig": C.sign(M._SIGN_DOMAIN + b)}))
