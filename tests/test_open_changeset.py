"""Opening an envelope decodes each layer of its change set once (issue 17).

`relay.envelope.read_changeset` reads the slot from the body it decodes for the change set,
where `peek_slot` then `ChangeSet.decode` decoded the wire and the body twice. These tests
keep the old two-step path as the oracle and show the new one gives the same verdict for
every input: the same change set (same bytes, same hash), the same EnvelopeMismatch for
bytes without a slot, and the same refusal sentence for a change set that has a slot but does
not decode; and that each change-set cap still holds.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocksync.changes import canonical
from mocksync.changes.changeset import (
    MAX_BODY_ITEMS,
    SIGNING_CONTEXT,
    WIRE_ITEMS,
    ChangeSet,
    make_changeset,
)
from mocksync.errors import ChangeSetError, MocksyncError
from mocksync.net.relay_transport import UNDECODABLE, Undecodable, _open_all
from mocksync.relay.envelope import (
    Tagger,
    open_changeset,
    open_envelope,
    peek_slot,
    read_changeset,
    seal_envelope,
)
from mocksync.relay.errors import EnvelopeMismatch

KEY = Ed25519PrivateKey.generate()
SPACE = "ab" * 16
ENV = "7f6e3c1a-0000-4000-8000-000000000001"
DEVICE = "ABCDE-FGHJK-MNPQR-STVWX"


def _chain(n: int, big: bool = False) -> list[ChangeSet]:
    out: list[ChangeSet] = []
    prev = None
    for i in range(n):
        value = os.urandom(800).hex() if big else f"l{i}"  # big: compressed ops (z)
        prev = make_changeset(KEY, space=SPACE, env=ENV, device=DEVICE, hlc=1000 + i,
                              ops=[["s", f"resp-{i}", ["v", "label"], value]],
                              deps={"ZZZZZ-FGHJK-MNPQR-STVWX": 2}, prev=prev)
        out.append(prev)
    return out


CHAIN = _chain(3) + _chain(1, big=True)
WIRES = [cs.encode() for cs in CHAIN]


def old_verdict(wire: bytes) -> tuple[Any, ...]:
    """What the two-step path (before issue 17) made of `wire`."""
    try:
        slot = peek_slot(wire)
    except EnvelopeMismatch:
        return ("mismatch",)
    try:
        cs = ChangeSet.decode(wire)
    except MocksyncError as exc:
        return ("undecodable", slot, type(exc), str(exc))
    return ("ok", slot, cs.encode(), cs.hash, cs)


def new_verdict(wire: bytes) -> tuple[Any, ...]:
    try:
        slot, cs = read_changeset(wire)
    except EnvelopeMismatch:
        return ("mismatch",)
    if isinstance(cs, ChangeSetError):
        return ("undecodable", slot, type(cs), str(cs))
    return ("ok", slot, cs.encode(), cs.hash, cs)


def test_honest_change_sets_decode_once_to_the_same_change_set() -> None:
    for wire in WIRES:
        got = new_verdict(wire)
        assert got == old_verdict(wire)
        assert got[0] == "ok" and got[2] == wire  # encode() gives back the very bytes


def _sign(body: dict[str, Any]) -> bytes:
    data = canonical.encode(body)
    return canonical.encode([data, KEY.sign(SIGNING_CONTEXT + data)])


def _body(**changes: Any) -> dict[str, Any]:
    body = canonical.decode(canonical.decode(WIRES[1])[0])
    body.update(changes)
    return {k: v for k, v in body.items() if v is not KeyError}


CASES = {
    "not cbor": b"\xff\x00",
    "not a pair": canonical.encode([b"x"]),
    "body not a map": canonical.encode([canonical.encode([1]), b"s" * 64]),
    "no slot": _sign({"v": 1}),
    "sig of the wrong size": canonical.encode([canonical.encode(_body()), b"s" * 10]),
    "sig not bytes": canonical.encode([canonical.encode(_body()), 5]),
    "extra key": _sign(_body(x=1)),
    "missing key": _sign(_body(h=KeyError)),
    "wire flood": canonical.encode([canonical.encode(_body()), b"s" * 64, [0] * 50]),
    "wire flood in the sig": canonical.encode([canonical.encode(_body()), [0] * 50]),
    "body flood": _sign(_body(x=[0] * (MAX_BODY_ITEMS + 1))),
    "ops bomb": _sign(_body(o=KeyError, z=zlib.compress(
        b"\x9a" + (200_000).to_bytes(4, "big") + b"\x00" * 200_000, 9))),
    "bad version": _sign(_body(v=2)),
}


def test_every_refusal_is_the_same_as_before() -> None:
    seen = set()
    for name, wire in CASES.items():
        got, want = new_verdict(wire), old_verdict(wire)
        assert got == want, name
        seen.add(got[0])
    assert seen == {"mismatch", "undecodable"}
    assert new_verdict(CASES["wire flood"]) == ("mismatch",)
    assert f"more than {WIRE_ITEMS} items" in new_verdict(CASES["wire flood in the sig"])[3]
    assert f"more than {MAX_BODY_ITEMS} items" in new_verdict(CASES["body flood"])[3]
    assert "more than" in new_verdict(CASES["ops bomb"])[3]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(WIRES), st.integers(0, 10_000), st.integers(0, 255),
       st.booleans())
def test_mutated_change_sets_same_verdict(wire: bytes, where: int, byte: int,
                                          in_body: bool) -> None:
    """Any byte of the wire or of its body (re-wrapped) changed: the same verdict."""
    if in_body:
        body, sig = canonical.decode(wire)
        mutated = bytearray(body)
        mutated[where % len(mutated)] = byte
        wire = canonical.encode([bytes(mutated), sig])
    else:
        mutated = bytearray(wire)
        mutated[where % len(mutated)] = byte
        wire = bytes(mutated)
    assert new_verdict(wire) == old_verdict(wire)


def test_open_all_hands_on_decoded_change_sets_and_refusals() -> None:
    keys = {1: os.urandom(32)}
    tagger = Tagger(SPACE, keys)
    tag = tagger(ENV)
    sealed = [seal_envelope(SPACE, tag, keys, w) for w in WIRES]
    bad = seal_envelope(SPACE, tag, keys, CASES["extra key"])
    moved = seal_envelope(SPACE, "cd" * 16, keys, WIRES[0])  # sealed for another env tag
    out = _open_all(SPACE, tag, keys, tagger, sealed + [bad, moved])
    for (slot, cs), wire in zip(out[:len(WIRES)], WIRES, strict=True):
        assert isinstance(cs, ChangeSet) and cs.encode() == wire and slot.seq == cs.seq
    assert isinstance(out[-2], Undecodable)
    assert out[-2].reason.startswith(UNDECODABLE) and "unexpected keys" in out[-2].reason
    assert isinstance(out[-1], MocksyncError)
    # open_envelope (the wire bytes, for callers that want them) agrees with open_changeset
    slot, wire = open_envelope(SPACE, tag, keys, sealed[0], tagger)
    slot2, cs = open_changeset(SPACE, tag, keys, sealed[0], tagger)
    assert slot == slot2 and isinstance(cs, ChangeSet) and cs.encode() == wire


def test_a_decoded_change_set_signed_again_does_not_keep_the_old_wire() -> None:
    cs = ChangeSet.decode(WIRES[0])
    other = Ed25519PrivateKey.generate()
    again = cs.sign(other)
    assert again.sig != cs.sig
    assert again.encode() != WIRES[0]
    assert ChangeSet.decode(again.encode()).sig == again.sig
