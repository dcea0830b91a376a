"""Refusals: a file that is not an environment we can sync, and ops from a peer that are
malformed, are refused with a sentence naming the problem, and refusing changes nothing."""

from __future__ import annotations

import contextlib
import json
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mocksync.model.validate as validate_mod
from mocksync.errors import MocksyncError, ValidationError
from mocksync.model import (
    BadOpError,
    DuplicateUuidError,
    JSONSyntaxError,
    MigrationTooNewError,
    NotAnEnvironmentError,
    State,
    diff,
    dumps,
    parse_env,
    render,
    snapshot_ops,
    state_from_doc,
    to_wire,
    validate_ops,
)
from mocksync.model.ops import MAX_KEY_LENGTH, MAX_KEYS_PER_OBJECT

from envfactory import ENV_UUID, clone, small_env, u

#: `make test-long` sets MOCKSYNC_LONG=1: the property tests below then draw many more examples.
LONG = bool(os.environ.get("MOCKSYNC_LONG"))
#: Examples of `test_ops_that_pass_validation_never_crash_render` under MOCKSYNC_LONG=1.
RENDER_EXAMPLES_LONG = 4000


def text_of(doc) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


# ============================================================================ parse_env


def test_a_good_file_parses():
    parsed = parse_env(text_of(small_env()))
    assert parsed.uuid == ENV_UUID and parsed.name == "Small"
    assert parse_env(text_of(small_env()).encode("utf-8")).doc == small_env()
    # A UTF-8 byte order mark is tolerated.
    assert parse_env(b"\xef\xbb\xbf" + text_of(small_env()).encode("utf-8")).doc == small_env()


def test_not_json_names_line_and_column():
    text = '{\n  "uuid": "x",\n  "lastMigration": 33,\n  "routes": [\n}'
    with pytest.raises(JSONSyntaxError) as ei:
        parse_env(text)
    assert (ei.value.line, ei.value.column) == (5, 1)
    assert "line 5, column 1" in str(ei.value)
    text = '{\n  "uuid": "x",\n  "name": "a" "b"\n}'
    with pytest.raises(JSONSyntaxError) as ei:
        parse_env(text)
    assert ei.value.line == 3 and ei.value.column == 15
    assert "line 3" in str(ei.value) and "column 15" in str(ei.value)
    with pytest.raises(JSONSyntaxError):
        parse_env("")
    with pytest.raises(JSONSyntaxError):
        parse_env(text_of(small_env()) + ",")  # trailing garbage


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_are_refused(literal):
    text = text_of(small_env()).replace('"latency": 0,', f'"latency": {literal},', 1)
    assert literal in text
    with pytest.raises(ValidationError) as ei:
        parse_env(text)
    assert "not valid JSON" in str(ei.value)


@pytest.mark.parametrize("text", ["[]", "42", '"env"', "null", "true"])
def test_not_an_object(text):
    with pytest.raises(NotAnEnvironmentError) as ei:
        parse_env(text)
    assert "not a Mockoon environment" in str(ei.value)


def test_no_uuid():
    doc = small_env()
    del doc["uuid"]
    with pytest.raises(NotAnEnvironmentError) as ei:
        parse_env(text_of(doc))
    assert "uuid" in str(ei.value)
    doc = small_env()
    del doc["routes"][1]["uuid"]
    with pytest.raises(NotAnEnvironmentError) as ei:
        parse_env(text_of(doc))
    assert "routes[1]" in str(ei.value) and "uuid" in str(ei.value)
    doc = small_env()
    doc["routes"][0]["responses"][1]["uuid"] = ""
    with pytest.raises(NotAnEnvironmentError) as ei:
        parse_env(text_of(doc))
    assert "routes[0].responses[1]" in str(ei.value)


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d.pop("lastMigration"), "lastMigration"),
    (lambda d: d.__setitem__("lastMigration", True), "lastMigration"),
    (lambda d: d.__setitem__("lastMigration", "33"), "lastMigration"),
    (lambda d: d.pop("routes"), "routes"),
    (lambda d: d.__setitem__("routes", {}), "routes"),
    (lambda d: d.__setitem__("folders", "x"), "folders"),
    (lambda d: d["routes"][0].__setitem__("responses", None), "responses"),
    (lambda d: d["rootChildren"].append("r"), "rootChildren[3]"),
    (lambda d: d["data"].append(7), "data[1]"),
])
def test_not_an_environment_says_where(mutate, where):
    doc = small_env()
    mutate(doc)
    with pytest.raises(NotAnEnvironmentError) as ei:
        parse_env(text_of(doc))
    assert where in str(ei.value)


def test_duplicate_uuids_are_refused_naming_both():
    doc = small_env()
    doc["routes"][2]["uuid"] = doc["routes"][0]["uuid"]  # copy-paste of a route
    with pytest.raises(DuplicateUuidError) as ei:
        parse_env(text_of(doc))
    msg = str(ei.value)
    assert u(10) in msg and "routes[0]" in msg and "routes[2]" in msg
    assert ei.value.dupes == {u(10): ["routes[0]", "routes[2]"]}
    # A response that reuses a bucket's uuid, and one that reuses the environment's.
    doc = small_env()
    doc["routes"][1]["responses"][0]["uuid"] = u(50)
    doc["routes"][2]["responses"][0]["uuid"] = ENV_UUID
    with pytest.raises(DuplicateUuidError) as ei:
        parse_env(text_of(doc))
    msg = str(ei.value)
    assert u(50) in msg and "data[0]" in msg and "routes[1].responses[0]" in msg
    assert ENV_UUID in msg and "the environment" in msg and "routes[2].responses[0]" in msg


def test_migration_newer_than_supported():
    doc = small_env()
    doc["lastMigration"] = 34
    with pytest.raises(MigrationTooNewError) as ei:
        parse_env(text_of(doc))
    assert (ei.value.found, ei.value.supported) == (34, 33)
    assert "34" in str(ei.value) and "33" in str(ei.value)
    assert parse_env(text_of(doc), max_migration=34).doc["lastMigration"] == 34
    doc["lastMigration"] = 20  # older is fine
    assert parse_env(text_of(doc)).doc["lastMigration"] == 20


@pytest.mark.parametrize("raw", [
    b'{"uuid": "\xff\xfe", "lastMigration": 33, "routes": []}',
    b'{"uuid": "a", "name": "caf\xe9", "lastMigration": 33, "routes": []}',  # latin-1
    b"\xc3",
])
def test_non_utf8_bytes_are_refused(raw):
    with pytest.raises(ValidationError) as ei:
        parse_env(raw)
    assert "UTF-8" in str(ei.value)


def test_oversized_file_is_refused(monkeypatch):
    text = text_of(small_env())
    monkeypatch.setattr(validate_mod, "MAX_ENV_FILE_BYTES", len(text) - 1)
    with pytest.raises(ValidationError) as ei:
        parse_env(text)
    assert "limit" in str(ei.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_files_parse_or_are_refused_cleanly(data):
    """Whatever happens to the bytes, parse_env either returns or raises a ValidationError."""
    raw = bytearray(text_of(small_env()).encode("utf-8"))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        how = data.draw(st.sampled_from(["drop", "byte", "dup"]))
        if how == "drop":
            del raw[i]
        elif how == "byte":
            raw[i] = data.draw(st.integers(0, 255))
        else:
            raw[i:i] = raw[i:i + data.draw(st.integers(1, 40))]
    try:
        parsed = parse_env(bytes(raw))
    except ValidationError:
        return
    # If it parsed, it is usable: registers and a render that writes.
    dumps(render(state_from_doc(parsed.doc)), parsed.layout).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_are_refused_cleanly(raw):
    with contextlib.suppress(ValidationError):
        parse_env(raw)


# ============================================================================ validate_ops

U = ENV_UUID
GOOD_OPS = [
    ["s", U, ["v", "name"], '"new"'],
    ["s", U, ["v", "tlsOptions", "certPath"], '"a.pem"'],
    ["s", u(10), ["p", "tree"], '["", "V"]'],
    ["s", U, ["k"], '["uuid", "name"]'],
    ["x", U, ["v", "name"]],
    ["d", u(10)],
    ["c", "aaaaaaaa-0000-4000-8000-000000000001", "bucket",
     [[["v", "id"], '"zz"'], [["p", "list"], f'["{U}", "W"]'], [["k"], '["uuid", "id"]']]],
]

BAD_OPS = [
    ("not a list", "s"),
    ("empty", []),
    ("unknown name", ["z", U]),
    ("name not a string", [5, U]),
    ("no uuid", ["s"]),
    ("empty uuid", ["s", "", ["v", "a"], '"x"']),
    ("uuid not a string", ["d", 5]),
    ("set too short", ["s", U, ["v", "a"]]),
    ("set too long", ["s", U, ["v", "a"], '"x"', '"y"']),
    ("uuid is no register", ["s", U, ["v", "uuid"], '"x"']),
    ("unknown register kind", ["s", U, ["q", "a"], '"x"']),
    ("register id too short", ["s", U, ["v"], '"x"']),
    ("register id too deep", ["s", U, ["v", "a", "b", "c"], '"x"']),
    ("register id empty", ["s", U, [], '"x"']),
    ("register id not strings", ["s", U, ["v", 1], '"x"']),
    ("register id part too long", ["s", U, ["v", "a" * (MAX_KEY_LENGTH + 1)], '"x"']),
    ("unknown place", ["s", U, ["p", "elsewhere"], '["", "V"]']),
    ("place key ends in 0", ["s", U, ["p", "tree"], '["", "V0"]']),
    ("place key bad digit", ["s", U, ["p", "tree"], '["", "V-"]']),
    ("place not a pair", ["s", U, ["p", "tree"], '[""]']),
    ("place container not a string", ["s", U, ["p", "list"], '[1, "V"]']),
    ("key order not strings", ["s", U, ["k"], "[1, 2]"]),
    ("key order not a list", ["s", U, ["k"], '"uuid"']),
    ("key order too long", ["s", U, ["k"], json.dumps([str(i) for i in range(MAX_KEYS_PER_OBJECT + 1)])]),
    ("value not JSON text", ["s", U, ["v", "a"], 5]),
    ("value bad JSON", ["s", U, ["v", "a"], "{nope"]),
    ("value NaN", ["s", U, ["v", "a"], "NaN"]),
    ("value Infinity", ["s", U, ["v", "a"], "[Infinity]"]),
    ("value overflows a double", ["s", U, ["v", "latency"], "1e400"]),
    ("value nested overflow", ["s", U, ["v", "a"], '{"x": [-1e999]}']),
    ("unset of a place", ["x", U, ["p", "tree"]]),
    ("unset of a key order", ["x", U, ["k"]]),
    ("unset too long", ["x", U, ["v", "a"], '"x"']),
    ("delete too long", ["d", U, "again"]),
    ("create unknown kind", ["c", U, "widget", []]),
    ("create registers not a list", ["c", U, "route", "regs"]),
    ("create pair not a pair", ["c", U, "route", [["v", "a"]]]),
    ("create bad value", ["c", U, "route", [[["v", "a"], "nope"]]]),
    ("create bad place", ["c", U, "route", [[["p", "tree"], '["", ""]']]]),
    ("create too short", ["c", U, "route"]),
]


def test_good_ops_are_accepted_and_normalised():
    ops = validate_ops(GOOD_OPS)
    assert len(ops) == len(GOOD_OPS)
    assert ops[0] == ("s", U, ("v", "name"), "new")
    assert ops[2] == ("s", u(10), ("p", "tree"), ["", "V"])
    assert ops[-1][0] == "c" and ops[-1][3][0] == (("v", "id"), "zz")
    assert [to_wire(op) for op in ops] != []  # and they go back to the wire
    assert validate_ops([to_wire(op) for op in ops]) == ops


@pytest.mark.parametrize("why,op", BAD_OPS, ids=[w for w, _ in BAD_OPS])
def test_malformed_op_is_refused(why, op):
    with pytest.raises(BadOpError) as ei:
        validate_ops([GOOD_OPS[0], op])
    assert str(ei.value).startswith("op 1 is malformed: ")
    assert isinstance(ei.value, ValidationError) and isinstance(ei.value, MocksyncError)


@pytest.mark.parametrize("ops", ["s", None, {"s": 1}, 5])
def test_ops_must_be_a_list(ops):
    with pytest.raises(ValidationError):
        validate_ops(ops)


def _snapshot(s: State) -> tuple:
    return (
        {uid: s.entity_record(uid) for uid in s.entities},
        dumps(render(s)),
        [c.id for c in s.conflicts],
    )


def receive(s: State, wire_ops, stamp=(50, "peer"), origin=("peer", 1), deps=None):
    """How a receiver applies a peer's change set: validate everything, then apply."""
    return s.apply(validate_ops(wire_ops), stamp, origin, deps or {})


@pytest.mark.parametrize("why,op", BAD_OPS, ids=[w for w, _ in BAD_OPS])
def test_a_bad_op_changes_nothing_and_apply_is_never_reached(why, op, monkeypatch):
    s = state_from_doc(small_env(), rng=random.Random(0))
    before = _snapshot(s)
    calls = []
    real_apply = State.apply
    monkeypatch.setattr(State, "apply", lambda *a, **k: calls.append(a) or real_apply(*a, **k))
    # Good ops first, the bad one last: nothing at all may be applied.
    batch = GOOD_OPS[:4] + [op]
    with pytest.raises(BadOpError):
        receive(s, batch)
    assert calls == []
    assert _snapshot(s) == before
    # The good ones alone do apply (the refusal was the bad op's doing).
    receive(s, GOOD_OPS[:4])
    assert len(calls) == 1
    assert _snapshot(s) != before


def test_diff_output_survives_the_wire():
    base = small_env()
    s = state_from_doc(base, rng=random.Random(0))
    new = clone(base)
    new["name"] = "Renamed ✓ \ud800"
    new["routes"][0]["responses"][0]["headers"] = [{"value": "v", "key": "k"}]  # key order kept
    new["rootChildren"].reverse()
    new["x-future"] = {"b": 1.5e-7, "a": [1, 2.0, None]}
    ops = diff(base, new, s, random.Random(1))
    wire = [to_wire(op) for op in ops]
    back = validate_ops(json.loads(json.dumps(wire)))
    s.apply(back, (9, "me"), ("me", 1), {})
    assert render(s) == new
    assert list(render(s)["routes"][0]["responses"][0]["headers"][0]) == ["value", "key"]
    assert validate_ops([to_wire(op) for op in snapshot_ops(base, random.Random(2))])


# ============================================================================ render never crashes

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
FIELDS = ["id", "databucketID", "callbacks", "default", "type", "uuid", "name", "body",
          "headers", "responses", "children", "rootChildren", "tlsOptions", "data", "routes"]
ENTITIES = [ENV_UUID, u(1), u(2), u(10), u(11), u(12), u(40), u(41), u(50), u(60)]


# 150 examples in the default run; `make test-long` (MOCKSYNC_LONG=1) runs RENDER_EXAMPLES_LONG.
@settings(max_examples=RENDER_EXAMPLES_LONG if LONG else 150, deadline=None)
@given(edits=st.lists(st.tuples(st.sampled_from(ENTITIES), st.sampled_from(FIELDS), json_values),
                      min_size=1, max_size=6),
       moves=st.lists(st.tuples(st.sampled_from(ENTITIES), st.sampled_from(["tree", "list"]),
                                st.sampled_from(ENTITIES + ["", "nowhere"]),
                                st.sampled_from(["1", "V", "Vz", "z", "0001"])), max_size=4),
       orders=st.lists(st.tuples(st.sampled_from(ENTITIES),
                                 st.lists(st.sampled_from(FIELDS + ["x"]), max_size=6)), max_size=2),
       kill=st.lists(st.sampled_from([u(50), u(60), u(1), u(11)]), max_size=2))
def test_ops_that_pass_validation_never_crash_render(edits, moves, orders, kill):
    """A peer may send any JSON value for any field: whatever passes validate_ops must render
    and write (the daemon must not crash on a teammate's odd edit)."""
    s = state_from_doc(small_env(), rng=random.Random(0))
    wire = [["s", ent, ["v", f], json.dumps(v)] for ent, f, v in edits if f != "uuid"]
    wire += [["s", ent, ["p", place], json.dumps([container, key])]
             for ent, place, container, key in moves]
    wire += [["s", ent, ["k"], json.dumps(order)] for ent, order in orders]
    wire += [["d", k] for k in kill]
    s.apply(validate_ops(wire), (9, "peer"), ("peer", 1), {})
    doc = render(s)
    text = dumps(doc)
    text.encode("utf-8")
    json.loads(text)
    # Whatever the places say, the tree holds each live route and folder exactly once,
    # reachable from the root.
    live = {e.uuid for e in s.live() if e.kind in ("route", "folder")}
    folders = {f["uuid"]: f for f in doc.get("folders", []) if isinstance(f, dict)}
    seen: list[str] = []
    stack = [doc.get("rootChildren", [])]
    while stack:
        for ref in stack.pop():
            seen.append(ref["uuid"])
            if ref["type"] == "folder":
                stack.append(folders[ref["uuid"]]["children"])
    assert sorted(seen) == sorted(live)
