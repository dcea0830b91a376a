"""Big environments without long GIL holds (issue 15, P15c): the fast paths give the very
results of the plain ones.

A C call that holds the GIL for hundreds of milliseconds on the store worker stalls the event
loop as long, so big work is done by a faster parser (orjson) or in slices (change set ops
encoded `OPS_PER_ENCODE` at a time). Each such path must be indistinguishable from the
reference: the parser for every JSON text (numbers past 64 bits, float spellings, -0.0,
duplicate keys, lone surrogates), the sliced encoder for every op list."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.changes import canonical
from mocksync.changes import changeset as csmod
from mocksync.errors import ValidationError
from mocksync.model.jsfmt import finite_float, parse_json


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def reference(text: str) -> Any:
    """The standard library's reading, the one `parse_json` must equal."""
    return json.loads(text, parse_constant=_no_constant, parse_float=finite_float)


def same(a: Any, b: Any) -> bool:
    """Equal with the same types, key order and float spelling (so -0.0 is not 0.0 and an
    integer is not a float)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


number = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?\Z")
string = st.one_of(
    st.text(max_size=12).map(lambda s: json.dumps(s, ensure_ascii=False)),
    # escapes, lone surrogates among them (JavaScript reads and writes those)
    st.lists(st.integers(0, 0xFFFF), max_size=4).map(
        lambda cs: '"' + "".join(f"\\u{c:04x}" for c in cs) + '"'),
)
scalar = st.one_of(number, string, st.sampled_from(["true", "false", "null"]))


def _object(members: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in members) + "}"


json_text = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(lambda xs: "[" + ",".join(xs) + "]"),
        # keys drawn from a small set: repeated keys are frequent
        st.lists(st.tuples(st.sampled_from(['"a"', '"b"', '"\\u0061"', '"\\ud800"']), inner),
                 max_size=5).map(_object),
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(text=json_text)
def test_the_fast_parser_reads_every_text_as_the_standard_one(text: str) -> None:
    try:
        want = reference(text)
    except ValueError:  # beyond a double (1e400): refused, by both
        with pytest.raises(ValidationError):
            parse_json(text)
        return
    got = parse_json(text)
    assert same(got, want), (text, got, want)
    assert same(parse_json(text.encode("utf-8", "surrogatepass")), want)


@pytest.mark.parametrize("text", [
    "[18446744073709551616]", "[-18446744073709551617]", "[9223372036854775808]",
    "[1.7976931348623157e308]", "[5e-324]", "[-0.0]", "[-0]", "[0.1]", "[1E+2]",
    "[123456789012345678901234567890.5]", '{"a": 1, "a": -0.0}', '["\\udc00\\ud800"]',
])
def test_the_fast_parser_on_the_known_differences(text: str) -> None:
    assert same(parse_json(text), reference(text))


def test_a_number_beyond_a_double_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_json("[1e400]")
    assert math.isfinite(parse_json("[1e308]")[0])


# ---------------------------------------------------------------------------- sliced CBOR

op = st.tuples(st.sampled_from(["s", "c", "d"]), st.text(max_size=8),
               st.one_of(st.none(), st.integers(-2**64, 2**64 - 1), st.floats(allow_nan=False),
                         st.text(max_size=20), st.binary(max_size=8),
                         st.lists(st.integers(), max_size=3),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=3)))


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op.map(list), max_size=300), per=st.sampled_from([1, 2, 7, 64]))
def test_ops_encoded_in_slices_are_the_canonical_bytes(ops: list[Any], per: int) -> None:
    saved = csmod.OPS_PER_ENCODE
    csmod.OPS_PER_ENCODE = per
    try:
        assert csmod.encode_ops(ops) == canonical.encode(ops)
    finally:
        csmod.OPS_PER_ENCODE = saved


@pytest.mark.parametrize("n", [0, 23, 24, 255, 256, 65535, 65536, 70_000])
def test_every_array_head_width_is_canonical(n: int) -> None:
    ops = [["s", "u", i % 7] for i in range(n)]
    assert csmod.encode_ops(ops) == canonical.encode(ops)


# ---------------------------------------------------------------------------- sliced join


@pytest.mark.parametrize("per", [1, 2, 3, 1 << 15])
def test_a_render_joined_in_slices_is_the_same_text(per: int, monkeypatch: pytest.MonkeyPatch,
                                                    ) -> None:
    from mocksync.devtools.envgen import generate_env
    from mocksync.model import jsfmt

    doc = generate_env(20_000, seed=3)
    want = jsfmt.dumps(doc)
    monkeypatch.setattr(jsfmt, "JOIN_PARTS", per)
    assert jsfmt.dumps(doc) == want
    for n in range(0, 8):
        parts = [chr(0x61 + i) * (i % 3) + "\u00e9" * (i % 2) for i in range(n)]
        assert jsfmt._join(parts) == "".join(parts)
