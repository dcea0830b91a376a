"""Attack class: hostile CBOR (issue 12). The decoding gate refuses it at once, at every site.

What was seen on the old decoder: 159 bytes of shared references (tags 28/29) froze the relay
for 39 s while the canonical re-encode expanded them; a rational (tag 30) of two 400 KB
integers stalled it 11 s. Here each hostile shape is fed to `canonical.decode` and to every
module that decodes untrusted bytes, and must be refused with the project's own error well
under 10 ms (asserted with a generous 50 ms so a loaded machine cannot fail it spuriously);
Hypothesis then throws random bombs, deep nests and huge declared lengths at the gate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attack_tools import cbor_head as _head
from attack_tools import rational_bomb, shared_bomb
from mocksync.changes import canonical
from mocksync.changes.canonical import decode, encode, scan
from mocksync.changes.changeset import ChangeSet
from mocksync.changes.errors import DecodeLimit, DecodeRefused
from mocksync.errors import ChangeSetError, MocksyncError
from mocksync.net import handshake
from mocksync.relay import protocol
from mocksync.relay.envelope import peek_slot
from mocksync.relay.errors import EnvelopeMismatch
from mocksync.space.invite import InviteToken
from mocksync.space.membership import Entry
from mocksync.sync import messages

#: The bound a refusal must meet, in CPU time of the refusing thread (the target is "well
#: under 10 ms"; thread CPU time does not count the time other processes hold the core, so
#: the bound holds on a loaded 2-core machine and still fails on anything that expands or
#: loops: the bomb below costs seconds when honoured).
FAST_S = 0.05


BOMB = shared_bomb()


def refused_fast(fn: Callable[[bytes], Any], data: bytes,
                 error: type[BaseException] = MocksyncError) -> BaseException:
    start = time.thread_time()
    with pytest.raises(error) as info:
        fn(data)
    took = time.thread_time() - start
    assert took < FAST_S, f"refusal took {took * 1000:.1f} ms"
    return info.value


def test_the_bomb_is_small_and_would_be_huge() -> None:
    assert len(BOMB) <= 165
    # What a decoder that honours tags builds: the top level really is shared 3-fold per level
    # (the same object), i.e. 3^13 leaves for anything that walks it, like a re-encode.
    value = cbor2.loads(BOMB)
    assert value[13][0] is value[13][1] is value[13][2] is value[12]
    assert 3 ** 13 > 1_500_000


def test_shared_reference_bomb_refused_at_its_first_tag() -> None:
    err = refused_fast(decode, BOMB, DecodeRefused)
    assert "tag 28 (shareable value)" in str(err) and "at byte 1" in str(err)


def test_rational_of_two_400kb_integers_refused_fast() -> None:
    data = rational_bomb()
    assert len(data) > 800_000
    err = refused_fast(decode, data, DecodeRefused)
    assert "tag 30 (rational number)" in str(err)


@pytest.mark.parametrize("tag", [0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 35, 256, 258, 1004,
                                 55799, 2**32, 2**64 - 1])
def test_every_semantic_tag_is_refused(tag: int) -> None:
    data = _head(6, tag) + b"\x00"
    err = refused_fast(decode, data, DecodeRefused)
    assert f"tag {tag}" in str(err)


def test_tag_inside_a_valid_document_is_found() -> None:
    data = b"\xa1\x61a\x83\x01\x02\xa1\x61b" + b"\xc2\x41\x01"  # {"a": [1, 2, {"b": bignum}]}
    with pytest.raises(DecodeRefused, match="tag 2"):
        decode(data)


@pytest.mark.parametrize("head, what", [
    (b"\x9b" + (2**63).to_bytes(8, "big"), "list"),
    (b"\x9a\xff\xff\xff\xff", "list"),
    (b"\xbb" + (2**62).to_bytes(8, "big"), "map"),
    (b"\x5b" + (2**63).to_bytes(8, "big"), "string"),
    (b"\x7a\xff\xff\xff\xff", "string"),
])
def test_declared_lengths_beyond_the_data_are_refused_without_allocating(head: bytes,
                                                                        what: str) -> None:
    err = refused_fast(decode, head + b"\x00" * 100, DecodeRefused)
    assert f"a {what}" in str(err) and "remain" in str(err)


def test_deep_nesting_refused_at_the_limit() -> None:
    data = b"\x81" * 200_000 + b"\x00"
    err = refused_fast(decode, data, DecodeLimit)
    assert f"deeper than {canonical.MAX_DEPTH}" in str(err)
    ok = b"\x81" * canonical.MAX_DEPTH + b"\x00"
    assert scan(ok) == canonical.MAX_DEPTH + 1
    assert decode(ok) is not None


def test_item_cap_is_enforced() -> None:
    data = encode(list(range(1000)))
    assert scan(data) == 1001
    with pytest.raises(DecodeLimit, match="more than 500 items"):
        decode(data, max_items=500)
    assert decode(data, max_items=1001) == list(range(1000))


def test_size_cap_is_checked_before_parsing() -> None:
    data = encode(b"x" * 2000)
    with pytest.raises(DecodeLimit, match="over the 1000 byte limit"):
        decode(data, max_bytes=1000)


@pytest.mark.parametrize("data, needle", [
    (b"\x9f\x00\xff", "indefinite"),
    (b"\x5f\x41\x00\xff", "indefinite"),
    (b"\x18\x05", "non-shortest"),
    (b"\x19\x00\x05", "non-shortest"),
    (b"\xf7", "simple value 23"),
    (b"\xf0", "simple value 16"),
    (b"\xf8\x20", "simple/break"),
    (b"\xff", "simple/break"),
    (b"\x1c", "reserved"),
    (b"\x00\x00", "trailing"),
    (b"\x82\x00", "declares 2 entries but only 1 bytes remain"),
    (b"\x82\x81\x00", "truncated"),
    (b"\xfb\x00", "truncated float"),
    (b"\xa2\x61b\x00\x61a\x00", "canonical"),  # keys out of order
    (b"\xa2\x61a\x00\x61a\x00", "repeats the key before it"),  # duplicate key
    (b"\xfb\x3f\xf8\x00\x00\x00\x00\x00\x00", "canonical"),  # 1.5 as a double
    (b"\x62\xff\xfe", "not valid CBOR"),  # bad UTF-8
    (b"", "truncated"),
])
def test_malformed_and_non_canonical_shapes(data: bytes, needle: str) -> None:
    err = refused_fast(decode, data, DecodeRefused)
    assert needle in str(err)


def test_big_integers_are_outside_the_format() -> None:
    assert decode(encode(2**64 - 1)) == 2**64 - 1
    assert decode(encode(-(2**64))) == -(2**64)
    with pytest.raises(DecodeRefused, match="tag 2"):
        decode(cbor2.dumps(2**64, canonical=True))
    # A change set may not carry one either: it would be refused on every other device.
    from mocksync.changes.errors import MalformedChangeSet
    with pytest.raises(MalformedChangeSet, match="64-bit range"):
        ChangeSet(space="ab" * 16, env="e1", device="D1", seq=1, hlc=1, deps={},
                  prev_hash=b"", ops=(["set", "x", 2**70],), model=1).body_bytes()


def test_not_bytes_is_refused() -> None:
    with pytest.raises(DecodeRefused, match="expected bytes"):
        decode("text")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ every decode site

def _sites() -> list[tuple[str, Callable[[bytes], Any], type[BaseException]]]:
    return [
        ("change set", ChangeSet.decode, ChangeSetError),
        ("membership entry", Entry.from_wire, MocksyncError),
        ("relay frame (client)", lambda b: protocol.decode_message(b, sender=protocol.CLIENT),
         protocol.RelayProtocolError),
        ("relay frame (joiner)", lambda b: protocol.decode_message(b, sender=protocol.JOINER),
         protocol.RelayProtocolError),
        ("relay frame (relay)", lambda b: protocol.decode_message(b, sender=protocol.RELAY),
         protocol.RelayProtocolError),
        ("peer sync message", messages.decode_message, MocksyncError),
        ("LAN signaling body", handshake.peek_sender, MocksyncError),
        ("sealed change set", peek_slot, EnvelopeMismatch),
    ]


@pytest.mark.parametrize("name, fn, error", _sites(), ids=[s[0] for s in _sites()])
@pytest.mark.parametrize("payload", ["shared", "rational", "deep", "huge"])
def test_every_decode_site_refuses_fast(name: str, fn: Callable[[bytes], Any],
                                        error: type[BaseException], payload: str) -> None:
    data = {"shared": BOMB, "rational": rational_bomb(20_000),
            "deep": b"\x81" * 50_000 + b"\x00", "huge": b"\x9b" + (2**63).to_bytes(8, "big")}
    refused_fast(fn, data[payload], error)
    # Wrapped in the two-layer shape signed messages use ([body bytes, signature]):
    wrapped = encode([data[payload][:60_000], b"s" * 64])
    refused_fast(fn, wrapped, error)


def test_invite_token_payload_goes_through_the_gate() -> None:
    import base64
    import hashlib

    from mocksync.space import invite
    payload = BOMB
    check = hashlib.sha256(invite._CHECK_DOMAIN + payload).digest()[:invite.CHECKSUM_BYTES]
    text = invite.TOKEN_PREFIX + base64.b32encode(payload + check).decode().rstrip("=")
    err = refused_fast(InviteToken.parse, text, invite.InviteError)
    assert "tag 28" in str(err)


# ------------------------------------------------------------------------ fuzz

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1),
                  st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
_values = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=5)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=5), max_leaves=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_valid_documents_round_trip(value: Any) -> None:
    data = encode(value)
    assert encode(decode(data)) == data


_tag_heads = st.builds(_head, st.just(6), st.integers(0, 2**64 - 1))
_len_heads = st.builds(_head, st.sampled_from([2, 3, 4, 5]), st.integers(2**20, 2**64 - 1))
_bombs = st.one_of(
    st.builds(shared_bomb, st.integers(2, 40), st.integers(2, 20)),
    st.builds(lambda d, inner: b"\x81" * d + inner, st.integers(canonical.MAX_DEPTH + 1, 100_000),
              st.sampled_from([b"\x00", b"\xd8\x1c\x00", b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff"])),
    st.builds(lambda h, tail: h + tail, _len_heads, st.binary(max_size=64)),
    st.builds(lambda h, tail: h + tail, _tag_heads, st.binary(max_size=64)),
    st.builds(lambda n: b"\xd8\x1e\x82" + (b"\xc2" + _head(2, n) + b"\x07" * n) * 2,
              st.integers(1, 200_000)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=_values, bomb=_bombs, where=st.integers(0, 3))
def test_fuzz_bombs_anywhere_are_refused_fast(prefix: Any, bomb: bytes, where: int) -> None:
    """A bomb alone, or planted inside a valid document (as a list element, a map value, or
    after it as trailing bytes): always a DecodeRefused, always fast."""
    body = encode(prefix)
    data = [bomb, b"\x82" + body + bomb, b"\xa1\x61k" + bomb, body + bomb][where]
    start = time.thread_time()
    with pytest.raises(DecodeRefused):
        decode(data)
    assert time.thread_time() - start < FAST_S


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_decode_or_refuse(data: bytes) -> None:
    """Arbitrary bytes: a value that re-encodes to exactly these bytes, or a DecodeRefused."""
    start = time.thread_time()
    try:
        value = decode(data)
    except DecodeRefused:
        pass
    else:
        assert encode(value) == data
    assert time.thread_time() - start < FAST_S
