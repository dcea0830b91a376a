"""Fuzzing the space package's inputs (docs/design/security.md §1 for membership, §6, §8): random and mutated
membership logs, random logs built by arbitrary (also unauthorised) actors with arbitrary
concurrency, random and mutated invite tokens and handshake messages.

Two things must always hold: nothing escapes but a MocksyncError subclass, and nothing is
wrongly accepted (a mutated entry never verifies, a non-admin's or a removed device's entry is
never in effect, a tampered handshake never admits anyone).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocksync.changes.canonical import decode, encode
from mocksync.errors import MocksyncError
from mocksync.space import membership as M
from mocksync.space.errors import InviteError, MembershipError
from mocksync.space.identity import Identity
from mocksync.space.invite import AdminSession, Admission, InviteBook, InviteToken, JoinerSession
from mocksync.space.keys import new_content_key

FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
T = 5

DEVS = [Identity.from_seeds(f"d{i}", bytes([i + 1]) * 32, bytes([i + 101]) * 32,
                            member_name=f"m{i}") for i in range(5)]
A = DEVS[0]
MEMBER_IDS = ["a" * 16, "b" * 16, "c" * 16, "d" * 16]
GENESIS = M.new_genesis(A, name="fuzz", member_name="Alice", member_id="0" * 16,
                        device_limit=2, now_ms=T)


def _build_reference_log() -> list[M.Entry]:
    """A valid log with concurrency, a void entry, a removal with a cut and a rotation."""
    B, C, D, E = DEVS[1:]
    log = [GENESIS]

    def add(e):
        log.append(e)
        return M.verify_log(log)

    st_ = M.verify_log(log)
    st_ = add(M.add_member(A, st_, member_id=MEMBER_IDS[0], name="Bob", role="admin", now_ms=T))
    st_ = add(M.add_device(A, st_, member_id=MEMBER_IDS[0], device=B.public, sealed_key=None, now_ms=T))
    st_ = add(M.add_member(B, st_, member_id=MEMBER_IDS[1], name="Carol", role="editor", now_ms=T))
    st_ = add(M.add_device(B, st_, member_id=MEMBER_IDS[1], device=C.public, sealed_key=None, now_ms=T))
    fork = st_
    add(M.add_member(C, fork, member_id=MEMBER_IDS[2], name="void", role="admin", now_ms=T))
    add(M.add_member(B, fork, member_id=MEMBER_IDS[3], name="Dan", role="editor", now_ms=T))
    st_ = add(M.remove_device(A, fork, device_id=B.device_id, covers={"env": 4}, now_ms=T))
    st_ = add(M.rotate_key(A, st_, generation=2, sealed={A.device_id: b"\x01" * 40}, now_ms=T))
    add(M.migrate(A, st_, model=2, now_ms=T))
    return log


REFERENCE = _build_reference_log()
REFERENCE_STATE = M.verify_log(REFERENCE)
REFERENCE_HASHES = {e.hash_hex for e in REFERENCE}


def test_reference_log_is_what_the_fuzzers_think_it_is():
    assert REFERENCE_STATE.void  # C's add_member (editor) and B's concurrent add are void
    assert not REFERENCE_STATE.is_member(DEVS[1].device_id)
    assert REFERENCE_STATE.key_generation == 2 and REFERENCE_STATE.model == 2


# ---------------------------------------------------------------- random and mutated logs


@FUZZ
@given(st.lists(st.binary(max_size=400), max_size=6))
def test_random_bytes_never_verify(blobs):
    with pytest.raises(MembershipError):
        M.verify_log(blobs)


def _mutate(data: bytes, rnd: random.Random) -> bytes:
    op = rnd.randrange(4)
    i = rnd.randrange(len(data))
    if op == 0:
        return data[:i] + bytes([data[i] ^ (1 << rnd.randrange(8))]) + data[i + 1:]
    if op == 1:
        return data[:i]
    if op == 2:
        return data[:i] + bytes([rnd.randrange(256)]) + data[i:]
    return data[:i] + data[i + 1:]


@FUZZ
@given(seed=st.integers(0, 2**32), n_mut=st.integers(0, 3), drop=st.integers(0, 3),
       dup=st.booleans())
def test_mutated_logs_never_wrongly_accept(seed, n_mut, drop, dup):
    rnd = random.Random(seed)
    wires = [e.wire for e in REFERENCE]
    for _ in range(n_mut):
        k = rnd.randrange(len(wires))
        wires[k] = _mutate(wires[k], rnd)
    for _ in range(drop):
        wires.pop(rnd.randrange(len(wires)))
    if dup and wires:
        wires.append(rnd.choice(wires))
    rnd.shuffle(wires)
    try:
        state = M.verify_log(wires)
    except MembershipError:
        return
    # whatever verified consists only of untouched original entries ...
    assert set(state.order) <= REFERENCE_HASHES
    # ... and proves exactly what those entries prove
    assert state == M.verify_log([e for e in REFERENCE if e.hash_hex in set(state.order)])


# ---------------------------------------------------------------- random logs by any actor


KINDS = ["add_member", "add_device", "remove_device", "remove_member", "set_role", "migrate",
         "rotate_key"]


def _build_prefix() -> list[M.Entry]:
    """Everyone but the last device is in: Bob (admin), Carol (editor), Dan (admin)."""
    log = [GENESIS]
    for member, name, role, dev in ((0, "Bob", "admin", 1), (1, "Carol", "editor", 2),
                                    (2, "Dan", "admin", 3)):
        state = M.verify_log(log)
        log.append(M.add_member(A, state, member_id=MEMBER_IDS[member], name=name, role=role,
                                now_ms=T))
        state = M.verify_log(log)
        log.append(M.add_device(A, state, member_id=MEMBER_IDS[member], device=DEVS[dev].public,
                                sealed_key=None, now_ms=T))
    return log


PREFIX = _build_prefix()


@st.composite
def random_logs(draw):
    entries = list(PREFIX[: draw(st.sampled_from([1, 3, len(PREFIX)]))])
    for _ in range(draw(st.integers(1, 9))):
        added = {GENESIS.author} | {e.data["device"]["id"] for e in entries if e.kind == "add_device"}
        known = [d for d in DEVS if d.device_id in added]
        # mostly devices some entry added (else the log is refused as a whole, see below)
        actor = draw(st.sampled_from(known if draw(st.integers(0, 9)) else DEVS))
        kind = draw(st.sampled_from(KINDS))
        picks = draw(st.lists(st.integers(0, len(entries) - 1), min_size=1, max_size=3))
        parents = sorted({entries[p].hash for p in picks})
        counter = 1 + max(entries[p].counter for p in picks)
        mid = draw(st.sampled_from(MEMBER_IDS + ["0" * 16]))
        dev = DEVS[draw(st.integers(0, len(DEVS) - 1))]
        role = draw(st.sampled_from(M.ROLES))
        if kind == "add_member":
            data = {"member": {"id": mid, "name": "x"}, "role": role}
        elif kind == "add_device":
            data = {"member": mid, "device": dev.public.to_cbor(), "key": None}
        elif kind == "remove_device":
            data = {"device": dev.device_id, "covers": {"env": draw(st.integers(0, 5))}}
        elif kind == "remove_member":
            data = {"member": mid, "covers": {dev.device_id: {"env": draw(st.integers(0, 5))}}}
        elif kind == "set_role":
            data = {"member": mid, "role": role}
        elif kind == "migrate":
            data = {"model": draw(st.integers(1, 4))}
        else:
            data = {"gen": draw(st.integers(2, 4)), "sealed": {dev.device_id: b"\x02" * 40}}
        entries.append(M._sign(actor, GENESIS.space, kind, data, parents, counter, T))
    return entries


def _ancestors(entries: list[M.Entry], target: str) -> set[str]:
    by = {e.hash_hex: e for e in entries}
    seen: set[str] = set()
    todo = [p.hex() for p in by[target].parents]
    while todo:
        h = todo.pop()
        if h not in seen:
            seen.add(h)
            todo.extend(p.hex() for p in by[h].parents)
    return seen


@FUZZ
@given(random_logs(), st.randoms(use_true_random=False))
def test_random_logs_keep_the_invariants(entries, rnd):
    try:
        state = M.verify_log(entries)
    except MembershipError as exc:
        # the only structural failure such a log can have: a signer nobody ever added
        assert "which no entry of this log adds" in str(exc)
        return
    live = [e for e in entries if e.hash_hex not in state.void]
    # removed devices are never active, and never come back
    assert not set(state.devices) & set(state.removed_devices)
    # devices belong to active members, within the device limit
    for dev in state.devices.values():
        assert dev.id in state.members[dev.member].devices
    assert all(len(m.devices) <= state.device_limit for m in state.members.values())
    # there is always an admin device
    assert state.admin_devices()
    # entries by devices whose member never held the admin role are void
    ever_admin = {"0" * 16}
    for e in live:
        if e.kind == "add_member" and e.data["role"] == "admin":
            ever_admin.add(e.data["member"]["id"])
        if e.kind == "set_role" and e.data["role"] == "admin":
            ever_admin.add(e.data["member"])
    device_member = {GENESIS.author: "0" * 16}
    for e in live:
        if e.kind == "add_device":
            device_member[e.data["device"]["id"]] = e.data["member"]
    for e in entries[1:]:
        if device_member.get(e.author) not in ever_admin:
            assert e.hash_hex in state.void, (e.short, e.author)
    # removal wins: a removed device's entries that its removal did not see are void
    for did, removal in state.removed_devices.items():
        seen = _ancestors(entries, removal.entry)
        for e in entries:
            if e.author == did and e.hash_hex not in seen and e.hash_hex != removal.entry:
                assert e.hash_hex in state.void
        cut = removal.covers.get("env", 0)
        assert not state.accepts_change(did, "env", cut + 1)
        assert not state.accepts_change(did, "other-env", 1)
    # the result does not depend on the order the entries arrived in
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert M.verify_log(shuffled) == state


# ---------------------------------------------------------------- tokens and handshakes


def _space():
    entries = [GENESIS]
    state = M.verify_log(entries)
    book = InviteBook(state.space_id)
    _, token = book.issue(state, A, now=100.0)
    return entries, book, token


@FUZZ
@given(st.text(max_size=300))
def test_random_token_text_is_refused_with_invite_errors(text):
    try:
        InviteToken.parse(text)
    except InviteError:
        return
    raise AssertionError("random text parsed as a token")


@FUZZ
@given(seed=st.integers(0, 2**32), n=st.integers(1, 3))
def test_mutated_tokens_parse_only_to_the_original(seed, n):
    _, _, token = _space()
    text = token.encode()
    rnd = random.Random(seed)
    chars = list(text)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567-=_ "
    for _ in range(n):
        i = rnd.randrange(len(chars))
        op = rnd.randrange(3)
        if op == 0:
            chars[i] = rnd.choice(alphabet)
        elif op == 1:
            del chars[i]
        else:
            chars.insert(i, rnd.choice(alphabet))
    try:
        parsed = InviteToken.parse("".join(chars))
    except InviteError:
        return
    assert parsed == token


@FUZZ
@given(st.lists(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda t, extra: encode({"t": t, **extra}),
              st.sampled_from(["join-hello", "join-proof", "join-challenge", "x"]),
              st.dictionaries(st.sampled_from(["invite", "space", "nonce", "device", "proof",
                                               "sig", "member_name"]),
                              st.one_of(st.binary(max_size=40), st.integers(), st.text(max_size=5)),
                              max_size=7)),
), max_size=4))
def test_admin_never_raises_and_never_admits_on_garbage(messages):
    entries, book, _ = _space()
    admin = AdminSession(A, book, entries, {1: new_content_key()})
    for m in messages:
        admin.receive(m, 150.0)
    assert not isinstance(admin.outcome, Admission)


@FUZZ
@given(seed=st.integers(0, 2**32), target=st.sampled_from(["hello", "proof"]))
def test_tampered_handshake_messages_never_admit(seed, target):
    entries, book, token = _space()
    joiner = JoinerSession(token, DEVS[1])
    admin = AdminSession(A, book, entries, {1: new_content_key()})
    rnd = random.Random(seed)
    original = hello = joiner.start(150.0)
    if target == "hello":
        hello = _mutate(hello, rnd)  # may still be a well-formed hello, e.g. another nonce
    reply = admin.receive(hello, 150.0)
    if decode(reply[0])["t"] == "join-refused":
        assert not isinstance(admin.outcome, Admission)
        return
    proof = joiner.receive(reply[0], 150.0)[0]
    if target == "proof":
        original, proof = proof, _mutate(proof, rnd)
        tampered = proof
    else:
        tampered = hello
    admin.receive(proof, 150.0)
    if isinstance(admin.outcome, Admission):
        assert tampered == original  # only an unchanged exchange may admit


@FUZZ
@given(st.binary(max_size=300))
def test_joiner_raises_only_project_errors(data):
    _, _, token = _space()
    joiner = JoinerSession(token, DEVS[1])
    joiner.start(150.0)
    try:
        joiner.receive(data, 150.0)
    except MocksyncError:
        assert joiner.state == "failed"
    assert joiner.result is None
