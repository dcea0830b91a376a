"""The first sync's fast paths give the very results of the exact ones (issue 15: a 15 MB
environment reaching a new device within 5 s).

A new device's first sync decodes every register value of the environment, writes every
entity's record and renders every response: C paths (orjson) now do each of these where they
agree with the reference, and the reference does the rest. Each test below holds a fast path
to its reference on the inputs where they could differ: numbers past 64 bits, float
spellings, -0.0, lone surrogates, duplicate keys, deep nesting, frontiers and tombstones, and
every layout the writer keeps."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.changes import changeset
from mocksync.changes.errors import MalformedChangeSet
from mocksync.devtools.envgen import generate_env
from mocksync.model import jsfmt, snapshot_ops
from mocksync.model.jsfmt import Layout, finite_float
from mocksync.model.limits import MAX_VALUE_DEPTH
from mocksync.model.ops import Set, dec_value
from mocksync.model.state import ABSENT, RECORD_FORMAT, State

# ------------------------------------------------------------------------ register values


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def reference_value(text: str) -> Any:
    """How a register value was read before the fast path: the standard decoder."""
    return json.JSONDecoder(parse_constant=_no_constant, parse_float=finite_float).decode(text)


def same(a: Any, b: Any) -> bool:
    """Equal with the same types, key order and float spelling (-0.0 is not 0.0, 1 not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def outcome(fn: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", fn(text)
    except (ValueError, RecursionError):
        return "refused", None


number = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?\Z")
string = st.one_of(
    st.text(max_size=8).map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.lists(st.integers(0, 0xFFFF), max_size=3).map(
        lambda cs: '"' + "".join(f"\\u{c:04x}" for c in cs) + '"'),
)
scalar = st.one_of(number, string, st.sampled_from(["true", "false", "null", "NaN", "1e400"]))
json_text = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(['"a"', '"b"', '"\\u0061"', '"\\ud800"']), inner),
                 max_size=4).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(text=json_text)
def test_a_register_value_reads_as_the_standard_decoder_reads_it(text: str) -> None:
    got, want = outcome(dec_value, text), outcome(reference_value, text)
    assert got[0] == want[0], (text, got, want)
    assert same(got[1], want[1]), (text, got, want)


@pytest.mark.parametrize("text", [
    "[18446744073709551616]",            # past 64 bits: exact integer, not a double
    "[-9223372036854775809, 1]",
    '{"a": 1, "a": 2}',                  # duplicate keys: the last value, the first place
    '["\\ud800"]',                       # an escaped lone surrogate
    '["\\ud83d\\ude00", "caf\\u00e9"]',
    "[-0.0, 0.0, -0, 1.0, 1e5, 1E-7]",
    "[1e400]", "[NaN]", "[Infinity]", "[1,]", "{}", "[]", " [ 1 ] ",
    "[" * 40 + "]" * 40,                 # read alike (the depth limit is check_value's)
    "[" * 2000 + "]" * 2000,             # past orjson's recursion limit: the standard path
])
def test_tricky_values_read_exactly(text: str) -> None:
    got, want = outcome(dec_value, text), outcome(reference_value, text)
    assert got[0] == want[0] and same(got[1], want[1])


# ------------------------------------------------------------------------ entity records


def reference_record(state: State, uuid: str) -> bytes:
    """The record as the standard encoder wrote it, lists and all (the reference)."""
    e = state.entities[uuid]

    def write(value: Any, stamp: Any, origin: Any) -> list[Any]:
        return [value is not ABSENT, None if value is ABSENT else value, stamp[0], stamp[1],
                list(origin) if origin else None]

    regs = []
    for rid, r in e.regs.items():
        row = [list(rid)] + write(r.value, r.stamp, r.origin)
        if r.front:
            row.append([write(*w) for w in r.front])
        regs.append(row)
    rec: list[Any] = [RECORD_FORMAT, e.kind, e.created, e.deleted,
                      list(e.del_stamp) if e.del_stamp else None,
                      list(e.del_origin) if e.del_origin else None, regs]
    if e.dels or e.restores:
        rec.append([[list(s), list(o) if o else None] for s, o in e.dels])
    if e.restores:
        rec.append([list(o) if o else None for o in e.restores])
    return json.dumps(rec, separators=(",", ":"), allow_nan=False).encode("ascii")


def _odd_state() -> State:
    doc = generate_env(120_000, seed=3)
    resp = doc["routes"][0]["responses"][0]
    resp["latency"] = 1.5                                   # a float
    resp["label"] = "caf\u00e9 \U0001f600 \ud800 \x00"      # non-ASCII, a lone surrogate
    resp["statusCode"] = 2 ** 70                            # past 64 bits: the standard encoder
    resp["headers"] = [{"key": "k", "value": -0.0}]
    st_ = State(doc["uuid"])
    st_.apply(list(snapshot_ops(doc)), (100, "dev-a"), ("dev-a", 1), {})
    # concurrent writes to one register (a frontier) and a deleted entity (a tombstone)
    st_.apply([Set(resp["uuid"], ("v", "body"), "from b")], (200, "dev-b"), ("dev-b", 1), {})
    st_.apply([Set(resp["uuid"], ("v", "body"), "from c")], (150, "dev-c"), ("dev-c", 1), {})
    st_.apply([("d", doc["routes"][1]["uuid"])], (300, "dev-b"), ("dev-b", 2), {"dev-b": 1})
    return st_


def test_entity_records_hold_what_the_standard_encoder_wrote() -> None:
    st_ = _odd_state()
    fronts = sum(1 for e in st_.entities.values() for r in e.regs.values() if r.front)
    assert fronts and any(e.deleted for e in st_.entities.values())
    for uuid in st_.entities:
        fast, ref = st_.entity_record(uuid), reference_record(st_, uuid)
        assert json.loads(fast) == json.loads(ref), uuid
        # and a record loads back to the entity it was made from
        back = State("env")
        back.load_record(uuid, fast)
        assert back.entity_record(uuid) == fast


def test_an_entity_orjson_refuses_is_written_by_the_standard_encoder() -> None:
    st_ = _odd_state()
    odd = [u for u, e in st_.entities.items()
           if any(r.value == 2 ** 70 or (isinstance(r.value, str) and "\ud800" in r.value)
                  for r in e.regs.values())]
    assert odd
    for uuid in odd:
        assert st_.entity_record(uuid) == reference_record(st_, uuid)  # byte for byte


# ------------------------------------------------------------------------ rendering

leaf_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12,
)
LAYOUTS = [jsfmt.MOCKOON_LAYOUT, Layout("  ", "\r\n", True), Layout("    "), Layout("\t")]


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.text(max_size=5), leaf_value, max_size=5),
       layout=st.sampled_from(LAYOUTS))
def test_a_cached_render_is_the_exact_render(fields: dict[str, Any], layout: Layout) -> None:
    """The leaf entities (responses here) go through the orjson path when they hold no float:
    the text must be the exact renderer's, at every nesting level and in every layout."""
    fields.pop("uuid", None)
    doc = {"uuid": "env", "routes": [{"uuid": "r1", "responses": [
        {"uuid": "a", **fields}, {"uuid": "b", "n": [1, {"x": "y"}], "e": {}, "l": []}]}]}
    cache: dict[str, Any] = {}
    assert jsfmt.dumps(doc, layout, cache) == jsfmt._slow_dumps(doc, layout)
    assert {"a", "b"} <= set(cache)  # the leaves' texts are kept for the next write
    assert jsfmt.dumps(doc, layout, cache) == jsfmt._slow_dumps(doc, layout)  # from the cache


def test_a_generated_environment_renders_exactly() -> None:
    doc = generate_env(300_000, seed=11)
    doc["routes"][0]["responses"][0]["latency"] = 0.5  # one response through the exact path
    doc["routes"][1]["responses"][0]["label"] = "\ud800"
    for layout in LAYOUTS:
        assert jsfmt.dumps(doc, layout, {}) == jsfmt._slow_dumps(doc, layout)


def test_the_orjson_path_is_taken_only_without_floats() -> None:
    assert jsfmt._orjson_safe({"a": [1, "x", None, True, {"b": [[]]}]})
    assert not jsfmt._orjson_safe({"a": [1, {"b": [2.0]}]})
    assert not jsfmt._orjson_safe({"a": math.pi})
    assert not jsfmt._orjson_safe({"a": (1, 2)})  # only what orjson and JS write alike


# ------------------------------------------------------------------------ op checks


def _nested(depth: int, leaf: Any) -> list[Any]:
    """An op whose deepest item, `leaf`, sits at `depth` (the op itself is depth 1)."""
    value: Any = leaf
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_string_one_level_past_the_op_depth_limit_is_still_refused() -> None:
    limit = changeset.MAX_OP_DEPTH
    changeset._normalise_ops([_nested(limit, "s")])  # at the limit: fine
    with pytest.raises(MalformedChangeSet, match="nested deeper"):
        changeset._normalise_ops([_nested(limit + 1, "s")])
    with pytest.raises(MalformedChangeSet, match="nested deeper"):
        changeset._normalise_ops([_nested(limit, {"k": "s"})])


def test_value_depth_limit_still_applies_to_fields() -> None:
    from mocksync.errors import ValidationError
    from mocksync.model.ops import validate_ops

    deep = json.dumps(_nested(MAX_VALUE_DEPTH + 2, 1))  # MAX + 1 lists around a scalar
    with pytest.raises(ValidationError, match="nested more than"):
        validate_ops([["c", "u1", "response", [[["v", "rules"], deep]]]])
    ok = json.dumps(_nested(MAX_VALUE_DEPTH + 1, 1))
    assert validate_ops([["c", "u1", "response", [[["v", "rules"], ok]]]])
