"""A big document is built in slices, and the slices give exactly cbor2's value (issue 15).

One `cbor2.loads` of a 15 MB change set's ops held the GIL ~760 ms on the transport's worker
thread, and the daemon's event loop stood still as long. `canonical.decode` now builds any
array or map longer than `SLICE_BYTES` element by element (one cbor2 call each), after the
same scan as before. These tests force tiny thresholds so that every container is sliced and
show, with hypothesis, that the sliced build accepts and refuses exactly what one call does
and gives the very same value (types, key order, float spellings, array/map keys as tuples and
frozen dicts); then, on a generated 15 MB environment, that no cbor2 call builds more than
`SLICE_BYTES` of containers (the GIL bound, stated in bytes rather than timed).
"""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocksync.changes import canonical
from mocksync.changes.errors import DecodeRefused
from mocksync.errors import ChangeSetError

#: Thresholds the equivalence tests force: 0 slices every non-empty container.
TINY = (0, 1, 5, 40)


def same(a: Any, b: Any) -> bool:
    """Equal with the same types and key order (NaN equal to NaN, -0.0 not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or repr(a) == repr(b)
    if isinstance(a, dict | cbor2.frozendict):
        return list(map(repr, a)) == list(map(repr, b)) and all(
            same(x, y) for x, y in zip(a.values(), b.values(), strict=True))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def outcome(data: bytes, slice_bytes: int) -> tuple[str, Any]:
    """What `decode` makes of `data` with `slice_bytes` as the threshold: the value, or the
    refusal's type."""
    saved = canonical.SLICE_BYTES
    canonical.SLICE_BYTES = slice_bytes
    try:
        return "ok", canonical.decode(data)
    except ChangeSetError as exc:
        return "refused", type(exc).__name__
    finally:
        canonical.SLICE_BYTES = saved


def agree(data: bytes) -> None:
    want = outcome(data, 1 << 40)  # one cbor2 call, as before
    for tiny in TINY:
        got = outcome(data, tiny)
        assert got[0] == want[0], (data.hex(), tiny, got, want)
        assert same(got[1], want[1]), (data.hex(), tiny, got, want)


scalar = st.one_of(
    st.none(), st.booleans(), st.integers(canonical.MIN_INT, canonical.MAX_INT),
    st.floats(), st.text(max_size=12), st.binary(max_size=12),
)
key = st.one_of(st.text(max_size=4), st.integers(-30, 30), st.binary(max_size=3),
                st.floats(width=16), st.tuples(st.integers(0, 3), st.text(max_size=2)))
value = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(key, inner, max_size=6)),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=value)
def test_sliced_build_gives_the_same_value_as_one_call(doc: Any) -> None:
    data = canonical.encode(doc)
    reference = cbor2.loads(data)
    for tiny in TINY:
        kind, got = outcome(data, tiny)
        assert kind == "ok", (data.hex(), tiny, got)
        assert same(got, reference), (data.hex(), tiny, got, reference)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=value, edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
                                 min_size=1, max_size=3))
def test_mutated_encodings_are_accepted_and_refused_alike(doc: Any,
                                                          edits: list[tuple[int, int]]) -> None:
    data = bytearray(canonical.encode(doc))
    for at, byte in edits:
        data[at % len(data)] = byte
    agree(bytes(data))


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes((major << 5 | info,)) + n.to_bytes(width, "big")
    raise ValueError(n)


# Raw items the scan accepts but cbor2 may not, or that build unusual values: keys equal by
# value (1, 1.0, true), invalid UTF-8, array and map keys, empty containers.
raw_scalar = st.sampled_from([
    b"\x01", b"\xf9\x3c\x00", b"\xf5", b"\xf4", b"\xf6", b"\x00", b"\xf9\x00\x00",
    b"\xf9\x80\x00", b"\xf9\x7e\x00", b"\x61a", b"\x62\xc3\x28", b"\x41\xff", b"\x80", b"\xa0",
    b"\x39\x01\x00", b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
])


def _array(items: list[bytes]) -> bytes:
    return _head(4, len(items)) + b"".join(items)


def _map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    # canonical order (length first, then bytewise), byte-equal keys dropped: the scan's rules
    unique = {k: v for k, v in pairs}
    ordered = sorted(unique, key=lambda k: (len(k), k))
    return _head(5, len(ordered)) + b"".join(k + unique[k] for k in ordered)


raw = st.recursive(
    raw_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(_array),
        st.lists(st.tuples(st.one_of(raw_scalar, inner), inner), max_size=5).map(_map),
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=raw)
def test_hand_built_cbor_is_accepted_and_refused_alike(data: bytes) -> None:
    agree(data)


@pytest.mark.parametrize("data, kind", [
    (_map([(b"\x01", b"\x61a"), (b"\xf9\x3c\x00", b"\x61b")]), "refused"),  # 1 and 1.0
    (_array([_map([(b"\x01", b"\xf6"), (b"\xf5", b"\xf6")])]), "refused"),  # 1 and true
    (_array([b"\x62\xc3\x28"]), "refused"),  # invalid UTF-8
    (_map([(_array([b"\x01", b"\x61a"]), b"\xf6")]), "ok"),  # an array key: a tuple
    (_map([(_map([(b"\x01", b"\x80")]), b"\xf6")]), "ok"),  # a map key: a frozen dict
])
def test_the_known_hard_cases(data: bytes, kind: str) -> None:
    assert outcome(data, 1 << 40)[0] == kind
    agree(data)


def test_a_container_key_is_built_as_cbor2_builds_keys() -> None:
    data = _map([(_array([b"\x01", _array([b"\x02"])]), b"\xf6")])
    kind, got = outcome(data, 0)
    assert kind == "ok"
    assert list(got) == [(1, (2,))] and type(next(iter(got))) is tuple


def test_scan_lists_exactly_the_long_containers() -> None:
    inner = [list(range(30)), "x" * 100, {"k": list(range(5))}]
    data = canonical.encode(inner)
    spans: dict[int, int] = {}
    canonical.scan(data, spans=spans, span_bytes=20)
    assert spans[0] == len(data)  # the whole document
    first = data.index(canonical.encode(inner[0]))
    assert spans[first] == first + len(canonical.encode(inner[0]))
    assert len(spans) == 2  # the string is no container, the small map is not long


# ----------------------------------------------------------------- the 15 MB first sync


@pytest.fixture(scope="module")
def ops_bytes() -> bytes:
    from mocksync.changes.changeset import encode_ops
    from mocksync.devtools.envgen import generate_env
    from mocksync.model import snapshot_ops, to_wire

    doc = generate_env(15_000_000, seed=7)
    return encode_ops([to_wire(op) for op in snapshot_ops(doc)])


@pytest.mark.long
def test_a_15_mb_snapshot_is_built_in_calls_of_at_most_slice_bytes(
        ops_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(ops_bytes) > 10_000_000
    calls: list[tuple[int, int, int]] = []  # (start, end, major type) of each cbor2 call

    class Recording:
        def __init__(self, sliced: Any, inner: Any) -> None:
            self.sliced, self.inner = sliced, inner

        def decode(self) -> Any:
            start = self.sliced.fp.tell()
            value = self.inner.decode()
            calls.append((start, self.sliced.fp.tell(), ops_bytes[start] >> 5))
            return value

    real_make = canonical._SlicedDecode.make_decoder

    def make_decoder(self: Any, read_size: int) -> Any:
        return Recording(self, real_make(self, read_size))

    monkeypatch.setattr(canonical._SlicedDecode, "make_decoder", make_decoder)
    got = canonical.decode(ops_bytes)
    assert got == cbor2.loads(ops_bytes)
    assert len(calls) >= len(got)  # built element by element, not in one call
    containers = [end - start for start, end, major in calls if major in (4, 5)]
    assert containers and max(containers) <= canonical.SLICE_BYTES
    # and every byte was built by exactly one call (the heads of split containers aside)
    assert sum(end - start for start, end, _ in calls) > 0.99 * len(ops_bytes)


def test_a_small_document_is_still_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_slicing(*_args: Any) -> None:
        raise AssertionError("sliced a document under SLICE_BYTES")

    monkeypatch.setattr(canonical._SlicedDecode, "__init__", no_slicing)
    assert canonical.decode(canonical.encode([list(range(100))] * 10))[9][99] == 99


def test_a_refused_big_document_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(canonical.encode([["s", "x" * 10, i] for i in range(20_000)]))
    assert len(data) > canonical.SLICE_BYTES
    data[-1] = 0x1c  # a reserved head in the last op: scan refuses before any build

    def no_build(*_args: Any) -> None:
        raise AssertionError("built a value the scan refused")

    monkeypatch.setattr(canonical._SlicedDecode, "__init__", no_build)
    with pytest.raises(DecodeRefused):
        canonical.decode(bytes(data))
