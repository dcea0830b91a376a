"""Cost proportional to the edit (issue 15, part 3): incremental parse, indexed writes, the
fast parser, and diff's shortcuts. Every fast path is checked against the slow reference:
same document, same views, same ops, same text."""

from __future__ import annotations

import copy
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.devtools.envgen import generate_env
from mocksync.errors import ValidationError
from mocksync.model import diff, dumps, parse_env, render, state_from_doc
from mocksync.model import reparse as rp
from mocksync.model.jsfmt import parse_json
from mocksync.model.spans import SpanIndex, remap_ends, text_to_write

ENV = generate_env(60_000, seed=11)
TEXT = dumps(ENV)


def _views_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(
        (x.kind, x.fields, x.keys, x.path, x.places) == (y.kind, y.fields, y.keys, y.path, y.places)
        for x, y in ((a[k], b[k]) for k in a))


def _edits(doc: dict, rng: random.Random) -> None:
    """One edit a person makes in an editor, chosen at random."""
    routes = doc["routes"]
    route = rng.choice(routes)
    kind = rng.randrange(7)
    if kind == 0:
        rng.choice(route["responses"])["label"] = f"label {rng.random()}"
    elif kind == 1:
        rng.choice(route["responses"])["statusCode"] = rng.choice([200, 201, 404, 1.5])
    elif kind == 2:
        route["endpoint"] = f"pets/{rng.randrange(1000)}"
    elif kind == 3:
        resp = copy.deepcopy(route["responses"][0])
        resp["uuid"] = f"new-{rng.randrange(10**9)}"
        resp["default"] = False
        route["responses"].append(resp)
    elif kind == 4 and len(route["responses"]) > 1:
        route["responses"].pop()
    elif kind == 5 and doc["data"]:
        rng.choice(doc["data"])["value"] = "[1, 2]"
    else:
        doc["name"] = f"renamed {rng.random()}"  # a top-level field: parsed whole


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), steps=st.integers(1, 4))
def test_an_incremental_parse_equals_a_full_parse(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    doc = copy.deepcopy(ENV)
    prev = parse_env(TEXT)
    for _ in range(steps):
        _edits(doc, rng)
        text = dumps(doc)
        inc = parse_env(text, previous=prev)
        full = parse_env(text)
        assert inc.doc == full.doc and json.dumps(inc.doc) == json.dumps(full.doc)
        assert _views_equal(inc.views, full.views)
        # the diff against the previous version is the same as a full parse's
        st_ = state_from_doc(prev.doc, rng=random.Random(1))
        assert diff(prev.doc, inc.doc, st_, random.Random(2), base_views=prev.views,
                    new_views=inc.views) == \
            diff(prev.doc, full.doc, st_, random.Random(2), base_views=prev.views,
                 new_views=full.views)
        prev = inc


def test_a_one_property_save_shares_everything_else() -> None:
    prev = parse_env(TEXT)
    doc = copy.deepcopy(ENV)
    target = doc["routes"][3]["responses"][0]
    target["label"] = "changed"
    inc = parse_env(dumps(doc), previous=prev)
    assert inc.spans is not None  # the index travels on to the next save
    changed = [u for u, v in inc.views.items() if prev.views.get(u) is not v]
    assert changed == [target["uuid"]]
    assert inc.doc["routes"][4] is prev.doc["routes"][4]
    ops = diff(prev.doc, inc.doc, state_from_doc(prev.doc), base_views=prev.views,
               new_views=inc.views)
    assert ops == [("s", target["uuid"], ("v", "label"), "changed")]


def test_bad_text_in_an_entity_is_refused_as_by_a_full_parse() -> None:
    prev = parse_env(TEXT)
    broken = TEXT.replace('"label": ', '"label" ', 1)
    with pytest.raises(ValidationError, match="line"):
        parse_env(broken, previous=prev)
    uuid = ENV["routes"][0]["responses"][0]["uuid"]
    dup = TEXT.replace(ENV["routes"][1]["responses"][0]["uuid"], uuid, 1)
    with pytest.raises(ValidationError, match="duplicate uuid"):
        parse_env(dup, previous=prev)


def test_common_prefix_and_suffix_find_the_changed_region() -> None:
    a = "x" * 200_000 + "abc" + "y" * 100_000
    b = "x" * 200_000 + "aXc" + "y" * 100_000
    p = rp.common_prefix(a, b)
    assert p == 200_001
    assert rp.common_suffix(a, b, min(len(a), len(b)) - p) == 100_001
    assert rp.common_prefix("abc", "abc") == 3 and rp.common_prefix("", "a") == 0
    assert rp.common_suffix("ab", "b", 1) == 1


def test_index_spans_name_each_entity_text() -> None:
    spans = rp.index_text(TEXT)
    assert spans.top.items() and spans.resp.items()
    for s, e, path in spans.top.items():
        obj = ENV[path[0]][path[1]]
        assert json.loads(TEXT[s:e]) == obj
    for s, e, path in spans.resp.items():
        assert json.loads(TEXT[s:e]) == ENV["routes"][path[1]]["responses"][path[2]]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), steps=st.integers(1, 5), block=st.sampled_from([1, 3, 7, 256]))
def test_the_index_carried_through_saves_is_the_index_of_the_new_text(
        seed: int, steps: int, block: int) -> None:
    """The spans `reparse` moves through each edit (blocks of any size: moved, rebuilt,
    a route's responses replaced) are exactly those a fresh index of the text finds."""
    rng = random.Random(seed)
    doc = copy.deepcopy(ENV)
    saved = rp.SPAN_BLOCK
    rp.SPAN_BLOCK = block
    try:
        prev = parse_env(TEXT)
        incremental = 0
        for _ in range(steps):
            _edits(doc, rng)
            text = dumps(doc)
            inc = parse_env(text, previous=prev)
            if inc.spans is not None:
                incremental += 1
                fresh = rp.index_text(text)
                assert inc.spans.top.items() == fresh.top.items()
                assert inc.spans.resp.items() == fresh.resp.items()
                assert len(inc.spans) == len(fresh)
            prev = inc
    finally:
        rp.SPAN_BLOCK = saved


def test_a_span_list_moves_grows_drops_and_replaces() -> None:
    spans = [(0, 10, ("routes", 0)), (12, 20, ("routes", 1)), (22, 30, ("routes", 2)),
             (40, 50, ("routes", 3))]
    saved = rp.SPAN_BLOCK
    rp.SPAN_BLOCK = 2
    try:
        sl = rp.SpanList.of(list(reversed(spans)))
        assert sl.items() == spans and len(sl) == 4
        assert sl.holding(14, 16) == (12, 20, ("routes", 1)) and sl.holding(10, 12) is None
        assert sl.holding(45, 45) == (40, 50, ("routes", 3)) and sl.holding(-1, 0) is None
        # replace [14, 16) by 5 chars (+3): 12..20 holds it and grows; the rest moves
        grown = sl.moved(14, 16, 3)
        assert grown.items() == [(0, 10, ("routes", 0)), (12, 23, ("routes", 1)),
                                 (25, 33, ("routes", 2)), (43, 53, ("routes", 3))]
        assert sl.items() == spans  # (immutable: the old list is untouched)
        # an edit cutting into spans drops them, the rest move back
        assert [s[:2] for s in sl.moved(5, 15, -10).items()] == [(12, 20), (30, 40)]
        # the spans starting in [20, 45) replaced by new ones
        assert sl.replaced(20, 45, [(25, 26, ("x", 0))]).items() == [
            (0, 10, ("routes", 0)), (12, 20, ("routes", 1)), (25, 26, ("x", 0))]
        assert rp.SpanList.of([]).items() == [] and rp.SpanList.of([]).holding(0, 1) is None
    finally:
        rp.SPAN_BLOCK = saved


# ---------------------------------------------------------------------------- writes


def test_remap_ends_moves_drops_and_grows_spans() -> None:
    ends = {0: 10, 12: 20, 22: 30, 40: 50}
    # replace [14, 16) by 5 chars (+3): 12..20 holds it; 22.. and 40.. move; 0..10 stays
    assert remap_ends(ends, [(14, 16, "abcde")]) == {0: 10, 12: 23, 25: 33, 43: 53}
    # an edit cutting into a span drops it (0..10 and 12..20 here), the rest move back
    assert remap_ends(ends, [(5, 15, "")]) == {12: 20, 30: 40}
    # one replacing a span whole keeps the extent of its replacement
    assert remap_ends(ends, [(22, 30, "x")]) == {0: 10, 12: 20, 22: 23, 33: 43}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), steps=st.integers(1, 4))
def test_an_indexed_write_equals_an_unindexed_one(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    doc = copy.deepcopy(ENV)
    state = state_from_doc(doc, rng=random.Random(0))
    cache: dict = {}
    text = TEXT.replace('": ', '":  ')  # not Mockoon's layout: only patches keep it
    layout = parse_env(TEXT).layout
    first = render(state)
    slow = text_to_write(text, first, layout)
    assert text_to_write(text, first, layout, cache) == slow
    text = slow or text
    for _ in range(steps):
        base = copy.deepcopy(doc)
        _edits(doc, rng)
        state.apply(diff(base, doc, state, random.Random(3)), (10**12 + rng.randrange(10**6), "B"))
        new = render(state)
        slow = text_to_write(text, new, layout)
        fast = text_to_write(text, new, layout, cache)
        assert fast == slow
        if fast is not None:
            text = fast
        entry = cache["\x00span-index"][0]
        assert isinstance(entry, SpanIndex) and entry.text == text
        for a, b in entry.ends.items():  # every remembered end is a value's end
            assert json.loads(text[a:b]) is not None or text[a:b] == "null"
        parsed = json.loads(text)
        for pos, (starts, stops, close) in entry.elems.items():  # element spans too
            assert text[pos] == "[" and text[close] == "]"
            items = json.loads(text[pos:close + 1])
            assert [json.loads(text[a:b]) for a, b in zip(starts, stops, strict=True)] == items
            assert any(v == items for v in parsed.values())  # a top-level array


# ---------------------------------------------------------------------------- parser


@pytest.mark.parametrize("text", [
    '{"a": 99999999999999999999}', '{"a": -9223372036854775809}', '{"a": "\\ud800"}',
    '{"a": 1.0, "b": -0, "c": -0.0, "d": 1E2, "e": 18014400656965630}', '{"a": 1, "a": 2}',
])
def test_the_fast_parser_reads_as_the_standard_one(text: str) -> None:
    want = json.loads(text)
    got = parse_json(text)
    assert got == want and json.dumps(got) == json.dumps(want)
    assert parse_json(text.encode()) == want


@pytest.mark.parametrize("text", ["[1e400]", "[NaN]", '{"a": }', "[Infinity]"])
def test_the_fast_parser_refuses_what_the_standard_one_refuses(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_json(text)


# ---------------------------------------------------------------------------- render again


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), steps=st.integers(1, 6))
def test_a_render_after_edits_equals_a_fresh_render(seed: int, steps: int) -> None:
    """The render memo (rebuild only touched leaves) gives what a cold render gives, for
    edits of every kind: leaves, routes, creates, deletes, moves, top-level fields."""
    rng = random.Random(seed)
    doc = copy.deepcopy(ENV)
    state = state_from_doc(doc, rng=random.Random(0))
    render(state)
    for n in range(steps):
        base = copy.deepcopy(doc)
        if rng.random() < 0.2 and len(doc["routes"]) > 2:  # a move or a delete
            r = doc["routes"].pop(rng.randrange(len(doc["routes"])))
            if rng.random() < 0.5:
                doc["routes"].insert(0, r)
            else:
                doc["rootChildren"] = [c for c in doc["rootChildren"] if c["uuid"] != r["uuid"]]
                for f in doc["folders"]:
                    f["children"] = [c for c in f["children"] if c["uuid"] != r["uuid"]]
        else:
            _edits(doc, rng)
        state.apply(diff(base, doc, state, random.Random(n)), (10**12 + n, "B"))
        got = render(state)
        cold = render(state.copy())
        assert json.dumps(got) == json.dumps(cold)
        doc = copy.deepcopy(got)


def test_route_and_environment_field_edits_rebuild_only_what_they_touch() -> None:
    """Issue 15: a route's own field, or a top-level field, no longer renders 25,000
    entities whole; a new top-level key (the key order changes) still does, and each render
    equals a cold one."""
    state = state_from_doc(copy.deepcopy(ENV), rng=random.Random(0))
    first = render(state)
    route = ENV["routes"][3]["uuid"]
    state.apply([("s", route, ("v", "endpoint"), "moved/here"),
                 ("s", ENV["uuid"], ("v", "port"), 4321)], (10**12, "B"))
    second = render(state)
    assert second["routes"][3]["endpoint"] == "moved/here" and second["port"] == 4321
    assert all(a is b for i, (a, b) in enumerate(zip(first["routes"], second["routes"],
                                                     strict=True)) if i != 3)
    assert json.dumps(second) == json.dumps(render(state.copy()))
    keys = [*first.keys(), "brandNew"]
    state.apply([("s", ENV["uuid"], ("v", "brandNew"), 1),
                 ("s", ENV["uuid"], ("k",), keys)], (10**12 + 1, "B"))
    third = render(state)
    assert third["brandNew"] == 1 and json.dumps(third) == json.dumps(render(state.copy()))


def test_a_one_response_edit_rebuilds_one_route() -> None:
    state = state_from_doc(copy.deepcopy(ENV), rng=random.Random(0))
    first = render(state)
    target = ENV["routes"][2]["responses"][0]["uuid"]
    state.apply([("s", target, ("v", "label"), "again")], (10**12, "B"))
    second = render(state)
    assert second is not first
    assert second["routes"][2]["responses"][0]["label"] == "again"
    assert all(a is b for i, (a, b) in enumerate(zip(first["routes"], second["routes"],
                                                     strict=True)) if i != 2)
    assert second["routes"][2] is not first["routes"][2]
    assert render(state) == second and render(state) is not second
