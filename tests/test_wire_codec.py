"""The wire-schema codec (`mocksync.wire`): typed records <-> canonical CBOR maps.

A toy format exercises every checker: round trips, every refusal (naming the field, the right
error class for a limit), exact key sets, the size ceiling and the item cap, and hypothesis
fuzzing (whatever decodes re-encodes to the same bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocksync.changes import canonical
from mocksync.errors import LimitError, MocksyncError, ValidationError
from mocksync.wire import (
    Bool,
    Bytes,
    Codec,
    FieldError,
    Ident,
    Int,
    ListOf,
    MapOf,
    Message,
    Nullable,
    Record,
    RecordCheck,
    Struct,
    Text,
    WireError,
    WireLimit,
    derived,
    wire,
)

_NAME = Text(8, re.compile(r"[a-z]+"), "a name")


@dataclass(frozen=True, slots=True)
class Point(Record):
    x: int = wire("x", Int(0, 100))
    y: int = wire("y", Int(0, 100))


@dataclass(frozen=True, slots=True)
class Pair:
    name: str
    size: int


def _total(items: Any, where: str) -> None:
    if sum(p.size for p in items) > 10:
        raise FieldError(where, "more than 10 in total", limit=True)


@dataclass(frozen=True, slots=True)
class Shape(Message):
    KIND = "shape"
    MAX_BYTES = 400
    name: str = wire("n", _NAME)
    flag: bool = wire("f", Bool())
    blob: bytes = wire("b", Bytes(1, 4))
    note: str | None = wire("o", Nullable(Text(5)))
    tags: list[str] = wire("g", ListOf(_NAME, 3, lo=1))
    sizes: dict[str, int] = wire("z", MapOf(_NAME, Int(1, 9), 2))
    at: Point = wire("p", RecordCheck(Point))
    pairs: tuple[Pair, ...] = wire("q", ListOf(
        Struct((("name", _NAME), ("size", Int(1, 9))), "a pair [name, size]", build=Pair,
               parts=lambda p: (p.name, p.size)), 4, tuple_=True, whole=_total))


@dataclass(frozen=True, slots=True)
class Dot(Message):
    KIND = "dot"
    n: int = wire("n", Int(-5, 5))


CODEC = Codec([Shape, Dot], label="toy message", max_bytes=1000, max_items=200)
GOOD = Shape("box", True, b"ab", None, ["a", "b"], {"w": 2}, Point(1, 2),
             (Pair("p", 3), Pair("q", 4)))
GOOD_MAP = {"t": "shape", "n": "box", "f": True, "b": b"ab", "o": None, "g": ["a", "b"],
            "z": {"w": 2}, "p": {"x": 1, "y": 2}, "q": [["p", 3], ["q", 4]]}


def test_round_trip_is_canonical_cbor_of_the_short_key_map() -> None:
    data = CODEC.encode(GOOD)
    assert data == canonical.encode(GOOD_MAP)
    assert CODEC.decode(data) == GOOD
    assert CODEC.to_map(GOOD) == GOOD_MAP
    assert CODEC.decode(CODEC.encode(Dot(-5))) == Dot(-5)


def _refused(changes: dict[str, Any]) -> MocksyncError:
    bad = {**GOOD_MAP, **changes}
    with pytest.raises(WireError) as err:
        CODEC.decode(canonical.encode(bad))
    return err.value


@pytest.mark.parametrize(("changes", "where", "limit"), [
    ({"n": "BOX"}, "shape.n", False),                  # pattern
    ({"n": "abcdefghij"}, "shape.n", True),            # text length
    ({"n": 5}, "shape.n", False),                      # type
    ({"f": 1}, "shape.f", False),                      # bool is not int
    ({"b": b""}, "shape.b", False),                    # too short
    ({"b": b"abcde"}, "shape.b", True),                # too long
    ({"b": "ab"}, "shape.b", False),                   # text is not bytes
    ({"o": "toolong"}, "shape.o", True),               # nullable inner limit
    ({"g": []}, "shape.g", False),                     # too few entries
    ({"g": ["a", "b", "c", "d"]}, "shape.g", True),    # too many entries
    ({"g": ["a", 1]}, "shape.g[1]", False),            # element
    ({"g": "a"}, "shape.g", False),                    # not a list
    ({"z": {"a": 1, "b": 2, "c": 3}}, "shape.z", True),  # too many map entries
    ({"z": {"A": 1}}, "shape.z key", False),           # map key
    ({"z": {"a": 0}}, "shape.z[a]", False),            # map value
    ({"z": []}, "shape.z", False),                     # not a map
    ({"p": {"x": 1}}, "shape.p", False),               # nested record: missing key
    ({"p": {"x": 1, "y": 2, "w": 3}}, "shape.p", False),  # nested record: extra key
    ({"p": {"x": 1, "y": 101}}, "shape.p.y", False),   # nested record: field
    ({"q": [["p"]]}, "shape.q[0]", False),             # struct length
    ({"q": [["p", 10]]}, "shape.q[0] size", False),    # struct part
    ({"q": [["a", 9], ["b", 9]]}, "shape.q", True),    # whole-list check
])
def test_every_refusal_names_its_field(changes: dict[str, Any], where: str, limit: bool) -> None:
    exc = _refused(changes)
    assert str(exc).startswith(f"toy message {where}: "), str(exc)
    assert isinstance(exc, LimitError) is limit
    assert isinstance(exc, ValidationError)


def test_exact_key_set_and_kinds() -> None:
    extra = _refused({"extra": 1})
    assert "unexpected keys ['extra']" in str(extra)
    missing = {k: v for k, v in GOOD_MAP.items() if k != "f"}
    with pytest.raises(WireError, match=r"missing keys \['f'\]"):
        CODEC.decode(canonical.encode(missing))
    with pytest.raises(WireError, match="unknown kind 'circle'"):
        CODEC.decode(canonical.encode({"t": "circle"}))
    with pytest.raises(WireError, match="t: missing or not text"):
        CODEC.decode(canonical.encode({"n": 1}))
    with pytest.raises(WireError, match="expected a map"):
        CODEC.decode(canonical.encode([1, 2]))


def test_frame_ceilings_come_before_parsing() -> None:
    with pytest.raises(WireLimit, match="over the 1000 byte limit"):
        CODEC.decode(b"\xa0" * 1001)
    with pytest.raises(WireError, match="more than 200 items"):
        CODEC.decode(canonical.encode({"t": "dot", "n": [0] * 300}))
    with pytest.raises(WireError, match="expected binary data"):
        CODEC.decode("text")
    with pytest.raises(WireError, match="canonical"):
        CODEC.decode(b"\xa1\x61t\x78\x03dot")  # a padded length head is not canonical
    # The per-kind limit: a Shape frame over its own MAX_BYTES, under the codec's ceiling.
    big = Shape("box", True, b"ab", None, ["abcdefgh"] * 3, {"w": 2}, Point(1, 2), ())
    assert len(CODEC.encode(big)) <= 400
    codec = Codec([Shape], label="toy message", max_bytes=1000)

    @dataclass(frozen=True, slots=True)
    class Tiny(Message):
        KIND = "tiny"
        MAX_BYTES = 10
        s: str = wire("s", Text(100))

    small = Codec([Tiny], label="toy message", max_bytes=1000)
    with pytest.raises(WireLimit, match="tiny: .* over the 10 byte limit"):
        small.encode(Tiny("x" * 20))
    with pytest.raises(WireLimit, match="tiny: .* over the 10 byte limit"):
        small.decode(canonical.encode({"t": "tiny", "s": "x" * 20}))
    assert codec.kinds == {"shape": Shape}


def test_encode_checks_what_leaves() -> None:
    with pytest.raises(WireError, match="shape.n"):
        CODEC.encode(Shape("BAD", True, b"ab", None, ["a"], {}, Point(1, 2), ()))
    with pytest.raises(WireError, match="shape.q\\[0\\]: expected a pair"):
        CODEC.encode(Shape("ok", True, b"ab", None, ["a"], {}, Point(1, 2), ("x",)))  # type: ignore[arg-type]
    with pytest.raises(WireError, match="expected a Point"):
        CODEC.encode(Shape("ok", True, b"ab", None, ["a"], {}, {"x": 1}, ()))  # type: ignore[arg-type]

    @dataclass(frozen=True, slots=True)
    class Stray(Message):
        KIND = "stray"
        n: int = wire("n", Int(0, 1))

    with pytest.raises(WireError, match="not a message of this side"):
        CODEC.encode(Stray(0))


def test_schema_mistakes_are_caught_when_the_codec_is_built() -> None:
    @dataclass(frozen=True, slots=True)
    class NoKey(Message):
        KIND = "nokey"
        n: int = 0

    with pytest.raises(TypeError, match="not declared with wire"):
        Codec([NoKey], label="x", max_bytes=10)
    with pytest.raises(TypeError, match="repeated KIND"):
        Codec([Dot, Dot], label="x", max_bytes=10)


# ------------------------------------------------------------------------------ hypothesis

_names = st.from_regex(r"[a-z]{1,8}", fullmatch=True)
_shapes = st.builds(
    Shape, _names, st.booleans(), st.binary(min_size=1, max_size=4),
    st.none() | st.text(max_size=5), st.lists(_names, min_size=1, max_size=3),
    st.dictionaries(_names, st.integers(1, 9), max_size=2),
    st.builds(Point, st.integers(0, 100), st.integers(0, 100)),
    st.lists(st.builds(Pair, _names, st.integers(1, 2)), max_size=4).map(tuple))


@settings(max_examples=200, deadline=None)
@given(_shapes)
def test_fuzz_every_valid_record_round_trips(shape: Shape) -> None:
    data = CODEC.encode(shape)
    assert CODEC.decode(data) == shape
    assert canonical.decode(data) == CODEC.to_map(shape)


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10, 200), st.binary(max_size=6),
                  st.text(max_size=9), _names)
_value = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_names, inner, max_size=3)), max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(GOOD_MAP)), _value, max_size=10),
       st.sampled_from(["shape", "dot", "zzz"]))
def test_fuzz_whatever_decodes_re_encodes_to_the_same_bytes(fields: dict[str, Any],
                                                           kind: str) -> None:
    data = canonical.encode({**fields, "t": kind})
    try:
        msg = CODEC.decode(data)
    except MocksyncError as exc:
        assert isinstance(exc, WireError) and str(exc)
        return
    assert CODEC.encode(msg) == data


# ------------------------------------------------------------------ derived fields, cross checks


@dataclass(frozen=True, slots=True)
class Span(Message):
    """Two ends sent, the width derived (as a sync `cs` derives its space from its bytes), and
    a rule across both ends (as a sync `want`)."""

    KIND = "span"
    lo: int = wire("a", Int(0, 100))
    hi: int = wire("b", Int(0, 100))
    width: int = derived()

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> Span:
        return cls(values["lo"], values["hi"], values["hi"] - values["lo"])

    def cross_check(self) -> None:
        if self.hi <= self.lo:
            raise FieldError(".b", f"{self.hi} is not above a ({self.lo})")
        if self.hi - self.lo > 10:
            raise FieldError("", "wider than 10", limit=True)


@dataclass(frozen=True, slots=True)
class Named(Message):
    KIND = "named"
    who: str = wire("w", Ident(1, 5, "a name of 1..5 printable characters"))
    tag: str = wire("g", Ident(2, 2, "a two-letter tag", re.compile(r"[a-z]+")))


SPAN_CODEC = Codec([Span, Named], label="toy", max_bytes=200)


def test_a_derived_field_is_not_sent_and_is_rebuilt_on_decode() -> None:
    data = SPAN_CODEC.encode(Span(3, 7, 4))
    assert canonical.decode(data) == {"t": "span", "a": 3, "b": 7}
    assert SPAN_CODEC.decode(data) == Span(3, 7, 4)


def test_a_cross_check_refuses_both_ways_naming_the_field() -> None:
    for bad, error, text in ((Span(5, 5, 0), WireError, "toy span.b: 5 is not above a (5)"),
                             (Span(0, 11, 11), WireLimit, "toy span: wider than 10")):
        with pytest.raises(error) as info:
            SPAN_CODEC.encode(bad)
        assert str(info.value) == text
        with pytest.raises(error) as info:
            SPAN_CODEC.decode(canonical.encode({"t": "span", "a": bad.lo, "b": bad.hi}))
        assert str(info.value) == text


def test_an_ident_refuses_every_wrong_shape_as_malformed_not_as_a_limit() -> None:
    assert SPAN_CODEC.decode(SPAN_CODEC.encode(Named("é b", "ab"))) == Named("é b", "ab")
    for who, tag in (("", "ab"), ("toolong", "ab"), ("a\nb", "ab"), (5, "ab"), ("a", "AB"),
                     ("a", "abc")):
        with pytest.raises(WireError) as info:
            SPAN_CODEC.decode(canonical.encode({"t": "named", "w": who, "g": tag}))
        assert not isinstance(info.value, LimitError)
        assert "expected a " in str(info.value)


def test_a_field_error_is_a_refusal_of_the_project() -> None:
    assert issubclass(FieldError, MocksyncError)
