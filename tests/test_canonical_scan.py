"""The decoding gate proves canonical form in its scan, with no re-encode (issues 15 + 17).

`changes.canonical.decode` used to build a value and re-encode it to check the bytes were
canonical; that re-encode cost as much as the decode, on every frame. The scan now checks the
same thing on the bytes (shortest heads, definite lengths, map keys in cbor2's length-first
order, no repeated key, shortest exact floats, the one NaN). This file keeps the old gate,
as it was, as an oracle (`old_decode`: the structural scan, cbor2, then the re-encode
comparison) and shows that both accept exactly the same inputs, with hypothesis, over:
arbitrary bytes, canonical encodings of arbitrary values, those encodings mutated, and
hand-built CBOR whose heads, float widths and key orders are chosen at random (most of it
non-canonical). The one deliberate difference: two NaN map keys, which the old gate let
through (cbor2 keeps both, NaN being unequal to itself), are a refused duplicate now.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Mapping
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mocksync.changes.canonical import (
    _NO_TAGS,
    _SIMPLE_OK,
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_ITEMS,
    _refuse_tag,
    decode,
    encode,
    scan,
)
from mocksync.changes.errors import DecodeLimit, DecodeRefused

# ------------------------------------------------------------------------------ the oracle


def old_scan(data: bytes, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH) -> None:
    """The gate's structural scan before issue 17 (no key order, no float form)."""
    n, i, items, remaining = len(data), 0, 0, 1
    stack: list[int] = []
    while True:
        if remaining == 0:
            if not stack:
                break
            remaining = stack.pop()
            continue
        if i >= n:
            raise DecodeRefused("truncated")
        ib = data[i]
        major, info = ib >> 5, ib & 31
        i += 1
        remaining -= 1
        items += 1
        if items > max_items:
            raise DecodeLimit("items")
        if major == 7:
            if info < 24:
                if info not in _SIMPLE_OK:
                    raise DecodeRefused("simple")
                continue
            if info in (25, 26, 27):
                i += 1 << (info - 24)
                if i > n:
                    raise DecodeRefused("truncated float")
                continue
            raise DecodeRefused("simple/break")
        if info < 24:
            arg = info
        elif info < 28:
            size = 1 << (info - 24)
            if i + size > n:
                raise DecodeRefused("truncated head")
            arg = int.from_bytes(data[i:i + size], "big")
            i += size
            if arg < (24 if size == 1 else 1 << (4 * size)):
                raise DecodeRefused("non-shortest")
        else:
            raise DecodeRefused("indefinite or reserved")
        if major <= 1:
            continue
        if major <= 3:
            if arg > n - i:
                raise DecodeRefused("string too long")
            i += arg
            continue
        if major == 6:
            raise DecodeRefused("tag")
        count = arg if major == 4 else 2 * arg
        if count > n - i:
            raise DecodeRefused("container too long")
        if count:
            stack.append(remaining)
            if len(stack) > max_depth:
                raise DecodeLimit("depth")
            remaining = count
    if i != n:
        raise DecodeRefused("trailing")


def old_decode(data: bytes) -> Any:
    """The gate before issue 17: scan, build, and refuse unless the value re-encodes to `data`."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DecodeLimit("size")
    old_scan(data)
    try:
        obj = cbor2.loads(data, tag_hook=_refuse_tag, semantic_decoders=_NO_TAGS,
                          max_depth=MAX_DEPTH + 1, allow_indefinite=False,
                          allow_duplicate_keys=False)
    except DecodeRefused:
        raise
    except Exception as exc:
        raise DecodeRefused(str(exc)) from None
    try:
        again = encode(obj)
    except Exception as exc:
        raise DecodeRefused(str(exc)) from None
    if again != data:
        raise DecodeRefused("not canonical")
    return obj


def _has_nan_keys(v: Any) -> bool:
    """Does `v` hold a map with two NaN keys (the one input the gates disagree on)?"""
    if isinstance(v, Mapping):  # cbor2's frozendict (a map used as a key) too
        nans = sum(1 for k in v if isinstance(k, float) and math.isnan(k))
        return nans > 1 or any(_has_nan_keys(k) or _has_nan_keys(x) for k, x in v.items())
    if isinstance(v, list | tuple):
        return any(_has_nan_keys(x) for x in v)
    return False


def same_verdict(data: bytes) -> str:
    """Feed `data` to both gates; fail unless they agree. The verdict, for `event` stats."""
    try:
        want = old_decode(data)
    except DecodeRefused:
        with pytest.raises(DecodeRefused):
            decode(data)
        return "refused"
    try:
        got = decode(data)
    except DecodeRefused as exc:
        assert _has_nan_keys(want), f"the old gate accepted {data.hex()}, the new one: {exc}"
        assert "repeats the key before it" in str(exc)
        return "nan keys"
    assert encode(got) == encode(want) == data  # the same value (NaN-safe comparison)
    return "accepted"


def check(data: bytes) -> None:
    same_verdict(data)


# ------------------------------------------------------------------------------ strategies

_ints = st.integers(-(2**64), 2**64 - 1)
_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 65504.0, 65520.0, 5.960464477539063e-08, 1.401298464324817e-45,
     3.4028234663852886e+38, 1e39, float("nan"), float("inf"), -float("inf"), 1.5, 0.1])
_keys = st.one_of(st.text(max_size=4), st.binary(max_size=3), st.integers(-300, 70_000),
                  _floats, st.booleans(), st.none())
_leaf = st.one_of(st.none(), st.booleans(), _ints, _floats, st.text(max_size=12),
                  st.binary(max_size=12))
_values = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20)


def _head(major: int, arg: int, width: int) -> bytes:
    """A head of `major` with `arg` in `width` extra bytes (0 = in the first byte), whether
    or not that is the shortest form."""
    if width == 0:
        return bytes([major << 5 | arg])
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | info]) + arg.to_bytes(width, "big")


@st.composite
def head(draw: st.DrawFn, major: int, arg: int) -> bytes:
    """Mostly the shortest head, sometimes a padded (non-canonical) one."""
    widths = [w for w in (0, 1, 2, 4, 8) if arg < (24 if w == 0 else 1 << (8 * w))]
    return _head(major, arg, draw(st.sampled_from(widths) if draw(st.integers(0, 5)) == 0
                                  else st.just(widths[0])))


@st.composite
def raw_float(draw: st.DrawFn) -> bytes:
    """A float in a random width: the same value in another width, a NaN payload, any bits."""
    how = draw(st.integers(0, 3))
    if how == 0:
        return bytes([0xF9]) + draw(st.binary(min_size=2, max_size=2))
    if how == 1:
        return bytes([0xFA]) + draw(st.binary(min_size=4, max_size=4))
    if how == 2:
        return bytes([0xFB]) + draw(st.binary(min_size=8, max_size=8))
    v = draw(_floats)
    fmts = [(0xF9, ">e"), (0xFA, ">f"), (0xFB, ">d")]
    out = []
    for ib, fmt in fmts:
        with contextlib.suppress(OverflowError):
            out.append(bytes([ib]) + struct.pack(fmt, v))
    return draw(st.sampled_from(out))


@st.composite
def raw_item(draw: st.DrawFn, depth: int = 0) -> bytes:
    """Hand-built CBOR, often non-canonical: padded heads, floats of any width, map entries
    in random order (duplicates included)."""
    kind = draw(st.integers(0, 8 if depth < 3 else 5))
    if kind == 0:
        v = draw(st.integers(0, 2**64 - 1))
        return draw(head(draw(st.sampled_from([0, 1])), v))
    if kind == 1:
        b = draw(st.binary(max_size=6))
        return draw(head(2, len(b))) + b
    if kind == 2:
        t = draw(st.text(max_size=4)).encode()
        return draw(head(3, len(t))) + t
    if kind == 3:
        return draw(raw_float())
    if kind == 4:
        return bytes([draw(st.sampled_from([0xF4, 0xF5, 0xF6, 0xF7, 0xF0, 0xF8]))])
    if kind == 5:
        return encode(draw(_leaf))
    if kind == 6:
        parts = draw(st.lists(raw_item(depth + 1), max_size=3))
        return draw(head(4, len(parts))) + b"".join(parts)
    if kind == 7:  # a map of canonical keys in a random order, keys repeated at times
        keys = draw(st.lists(_keys.map(encode), max_size=4))
        if keys and draw(st.booleans()):
            keys.append(draw(st.sampled_from(keys)))
        if draw(st.booleans()):
            keys.sort(key=lambda k: (len(k), k))
        vals = draw(st.lists(raw_item(depth + 1), min_size=len(keys), max_size=len(keys)))
        return draw(head(5, len(keys))) + b"".join(k + v for k, v in zip(keys, vals,
                                                                          strict=True))
    entries = draw(st.lists(st.tuples(raw_item(depth + 1), raw_item(depth + 1)), max_size=3))
    return draw(head(5, len(entries))) + b"".join(k + v for k, v in entries)


_SETTINGS = settings(max_examples=400, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------ equivalence


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40))
@example(bytes.fromhex("a2f97e0001f97e0002"))  # two NaN keys: the one deliberate difference
@example(bytes.fromhex("a2616101190100 02".replace(" ", "")))  # 'a' before 256: canonical
@example(bytes.fromhex("a2190100026161 01".replace(" ", "")))  # 256 before 'a': not
def test_arbitrary_bytes_same_verdict(data: bytes) -> None:
    check(data)


@_SETTINGS
@given(_values)
def test_every_encoded_value_is_accepted_by_both(value: Any) -> None:
    data = encode(value)
    assert same_verdict(data) in ("accepted", "nan keys")
    scan(data)  # the scan alone accepts every canonical encoding


@_SETTINGS
@given(_values, st.integers(0, 2**16), st.integers(0, 255), st.integers(0, 2))
def test_mutated_encodings_same_verdict(value: Any, where: int, byte: int, how: int) -> None:
    data = bytearray(encode(value))
    at = where % (len(data) + 1)
    if how == 0 and at < len(data):
        data[at] = byte
    elif how == 1:
        data.insert(at, byte)
    elif at < len(data):
        del data[at]
    check(bytes(data))


# The default run's count; `test_hand_built_cbor_same_verdict_long` (make test-long) runs 20,000.
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw_item())
def test_hand_built_cbor_same_verdict(data: bytes) -> None:
    check(data)


@pytest.mark.long
@settings(max_examples=20_000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw_item() | st.binary(max_size=24))
def test_hand_built_cbor_same_verdict_long(data: bytes) -> None:
    check(data)


@_SETTINGS
@given(st.floats(allow_nan=True, allow_infinity=True) | st.binary(min_size=8, max_size=8).map(
    lambda b: struct.unpack(">d", b)[0]))
def test_every_float_in_every_width_same_verdict(v: float) -> None:
    for ib, fmt in ((0xF9, ">e"), (0xFA, ">f"), (0xFB, ">d")):
        try:
            raw = struct.pack(fmt, v)
        except OverflowError:
            continue
        check(bytes([ib]) + raw)
    check(encode(v))


def test_every_half_precision_float_same_verdict() -> None:
    """All 65,536 half-precision bit patterns (NaN payloads and signs included)."""
    for h in range(1 << 16):
        check(b"\xf9" + h.to_bytes(2, "big"))


# ------------------------------------------------------------------------------ named refusals


@pytest.mark.parametrize("data, needle", [
    (bytes.fromhex("a2617a0161610 2".replace(" ", "")), "out of canonical order"),
    (bytes.fromhex("a2190100026161 01".replace(" ", "")), "out of canonical order"),
    (bytes.fromhex("a261610161610 2".replace(" ", "")), "repeats the key before it"),
    (bytes.fromhex("a2f97e0001f97e0002"), "repeats the key before it"),
    (bytes.fromhex("fa3fc00000"), "shortest exact form"),  # 1.5 as single: fits a half
    (bytes.fromhex("fb3ff8000000000000"), "shortest exact form"),  # 1.5 as double
    (bytes.fromhex("f97e01"), "shortest exact form"),  # a NaN with a payload
    (bytes.fromhex("f9fe00"), "shortest exact form"),  # a negative NaN
    (bytes.fromhex("fa7fc00000"), "shortest exact form"),  # NaN as single
    (bytes.fromhex("fa7f800000"), "shortest exact form"),  # infinity as single
    (bytes.fromhex("81a2617a0161610 2".replace(" ", "")), "byte 5"),  # offsets are named
])
def test_non_canonical_forms_are_named(data: bytes, needle: str) -> None:
    with pytest.raises(DecodeRefused, match=needle):
        scan(data)
    with pytest.raises(DecodeRefused):
        old_decode(data) if not _has_nan_keys(cbor2.loads(data)) else decode(data)


def test_map_order_is_cbor2s_length_first_order() -> None:
    """Not RFC 8949's bytewise order: 'a' (2 bytes) sorts before 256 (3 bytes) although
    0x19 < 0x61; the scan follows what encode() writes."""
    data = encode({256: 1, "a": 2})
    assert data == bytes.fromhex("a26161021901000 1".replace(" ", ""))
    assert decode(data) == {256: 1, "a": 2}


def test_nested_maps_keep_their_own_key_order() -> None:
    """A map inside a key or a value does not disturb the order check of the map around it."""
    doc = {"b": {"z": 1, "a": [{"y": 2, "x": 3}]}, "a": 0, "cc": {"k": {}}}
    assert decode(encode(doc)) == doc
    # the inner map's keys out of order: refused, found at the inner map's key
    inner_bad = bytes.fromhex("a161 62 a2 617a 01 6161 02".replace(" ", ""))
    with pytest.raises(DecodeRefused, match="byte 7"):
        scan(inner_bad)


def test_duplicate_keys_by_value_still_refused_by_cbor2() -> None:
    """1, 1.0 and true are different bytes (the scan lets them pass in order) but one Python
    key: cbor2's duplicate check refuses them, as before."""
    for data in (bytes.fromhex("a20101f93c0002"), bytes.fromhex("a2f90000f5f98000f4")):
        scan(data)
        with pytest.raises(DecodeRefused, match="Duplicate"):
            decode(data)


def test_caps_hold_with_the_key_checks() -> None:
    deep = b"\xa1\x61k" * (MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(DecodeLimit, match="deeper than"):
        scan(deep)
    ok = b"\xa1\x61k" * MAX_DEPTH + b"\x00"
    assert scan(ok) == 2 * MAX_DEPTH + 1
    wide = encode({f"k{i:03d}": i for i in range(300)})
    with pytest.raises(DecodeLimit, match="more than 599 items"):
        scan(wide, max_items=599)
    assert scan(wide, max_items=601) == 601
