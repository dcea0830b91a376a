"""Every merge case named in docs/design/merge.md, on the example environments (petstore & co.) and on the
small hand-built one: 3-way merges through `merge3`, and delivery-order cases through the State
API (change sets applied in every order, with duplicates). Every rendered result is checked
against the invariants a Mockoon environment must keep."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from mocksync.model import (
    Conflict,
    diff,
    dumps,
    render,
    state_from_doc,
)

from envfactory import clone, find, small_env
from envfactory import response as make_response
from helpers.mergekit import (
    CS,
    ENVS,
    add_route,
    all_entities,
    all_responses,
    assert_valid,
    children_of,
    conflict_ids,
    default_index,
    delete_folder,
    delete_route,
    descendants,
    edit,
    envs_where,
    every_order,
    genesis,
    invoked_callback,
    merged,
    move,
    new_route,
    new_uuid,
    non_crud,
    parent_of,
    referenced_bucket,
    state_of,
    tree_order,
    wire,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "environments"




def test_examples_are_used_when_present():
    names = [n for n, _ in ENVS]
    assert "small_env" in names
    on_disk = {p.stem for p in EXAMPLES.glob("*.json") if p.stat().st_size < 1_000_000}
    assert on_disk <= set(names)


# ============================================================================ 1. different
# properties of one entity


@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d)))
def test_concurrent_edits_of_different_properties_of_one_entity_merge(base):
    route = non_crud(base)[0]
    resp = route["responses"][0]
    ours, theirs = clone(base), clone(base)
    find(ours, route["uuid"])["endpoint"] = "ours/endpoint"
    find(theirs, route["uuid"])["documentation"] = "theirs documents it"
    find(ours, resp["uuid"])["statusCode"] = 418
    find(theirs, resp["uuid"])["body"] = '{"theirs": true}'
    ours["name"] = "Renamed by ours"
    theirs["port"] = 4999
    for prefer in ("ours", "theirs"):
        res = merged(base, ours, theirs, prefer)
        r = find(res.doc, route["uuid"])
        assert r["endpoint"] == "ours/endpoint"
        assert r["documentation"] == "theirs documents it"
        x = find(res.doc, resp["uuid"])
        assert x["statusCode"] == 418 and x["body"] == '{"theirs": true}'
        assert res.doc["name"] == "Renamed by ours" and res.doc["port"] == 4999
        assert res.conflicts == []
        # Nothing else changed.
        expect = clone(ours)
        find(expect, route["uuid"])["documentation"] = "theirs documents it"
        find(expect, resp["uuid"])["body"] = '{"theirs": true}'
        expect["port"] = 4999
        assert res.doc == expect


# ============================================================================ 2. adds


@pytest.mark.parametrize("base", envs_where(lambda d: d["folders"] and non_crud(d, 1)))
def test_concurrent_adds_of_the_same_kind_both_survive(base):
    folder = base["folders"][0]["uuid"]
    route = non_crud(base)[0]
    ours, theirs = clone(base), clone(base)
    # Two routes added at the same spot (end of the root), one more into a folder.
    add_route(ours, new_route(100, "ours/a"), None)
    add_route(theirs, new_route(200, "theirs/b"), None)
    add_route(theirs, new_route(300, "theirs/c"), folder, 0)
    # Responses appended to the same route.
    extra_o = make_response(0, label="ours extra")
    extra_o["uuid"] = new_uuid(400)
    extra_t = make_response(0, label="theirs extra")
    extra_t["uuid"] = new_uuid(401)
    find(ours, route["uuid"])["responses"].append(extra_o)
    find(theirs, route["uuid"])["responses"].append(extra_t)
    # Buckets on both sides.
    ours.setdefault("data", []).append({"uuid": new_uuid(500), "id": "ob01", "name": "Ours",
                                        "documentation": "", "value": "[]"})
    theirs.setdefault("data", []).append({"uuid": new_uuid(501), "id": "tb01", "name": "Theirs",
                                          "documentation": "", "value": "{}"})
    res = merged(base, ours, theirs)
    assert res.conflicts == []
    doc = res.doc
    root = tree_order(doc, None)
    assert root[: len(base["rootChildren"])] == tree_order(base, None)
    assert set(root[len(base["rootChildren"]):]) == {new_uuid(100), new_uuid(200)}
    assert tree_order(doc, folder)[0] == new_uuid(300)
    assert tree_order(doc, folder)[1:] == tree_order(base, folder)
    for n, ep in ((100, "ours/a"), (200, "theirs/b"), (300, "theirs/c")):
        assert find(doc, new_uuid(n))["endpoint"] == ep
        assert find(doc, new_uuid(n + 1))["default"] is True
    labels = [x["label"] for x in find(doc, route["uuid"])["responses"]]
    assert labels[: len(route["responses"])] == [x["label"] for x in route["responses"]]
    assert set(labels[len(route["responses"]):]) == {"ours extra", "theirs extra"}
    ids = [b["id"] for b in doc["data"]]
    assert ids[: len(base.get("data", []))] == [b["id"] for b in base.get("data", [])]
    assert set(ids[len(base.get("data", [])):]) == {"ob01", "tb01"}
    # The routes array keeps the old routes in order, the new ones after them.
    assert [r["uuid"] for r in doc["routes"]][: len(base["routes"])] == [
        r["uuid"] for r in base["routes"]]


# ============================================================================ 3. reorders


def _container_with(doc, n: int) -> str | None:
    """A tree container (None = root) holding at least n items, or raise."""
    for c in [None] + [f["uuid"] for f in doc["folders"]]:
        if len(children_of(doc, c)) >= n:
            return c
    raise LookupError


def _has_container(doc, n):
    try:
        _container_with(doc, n)
        return True
    except LookupError:
        return False


@pytest.mark.parametrize("base", envs_where(lambda d: _has_container(d, 3)))
def test_concurrent_reorders_in_one_container_both_take_effect(base):
    c = _container_with(base, 3)
    order = tree_order(base, c)
    first, last = order[0], order[-1]
    ours, theirs = clone(base), clone(base)
    move(ours, last, c, 0)  # ours: last to the front
    move(theirs, first, c)  # theirs: first to the end
    expect = [last] + order[1:-1] + [first]
    for prefer in ("ours", "theirs"):
        res = merged(base, ours, theirs, prefer)
        assert tree_order(res.doc, c) == expect
        assert res.conflicts == []


@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d, 3)))
def test_concurrent_response_reorders_both_take_effect(base):
    route = non_crud(base, 3)[0]
    rs = [x["uuid"] for x in route["responses"]]
    ours, theirs = clone(base), clone(base)
    o = find(ours, route["uuid"])["responses"]
    o.insert(0, o.pop())  # ours: last response first
    t = find(theirs, route["uuid"])["responses"]
    t.append(t.pop(0))  # theirs: first response last
    res = merged(base, ours, theirs)
    got = [x["uuid"] for x in find(res.doc, route["uuid"])["responses"]]
    assert got == [rs[-1]] + rs[1:-1] + [rs[0]]
    assert res.conflicts == []


@pytest.mark.parametrize("base", envs_where(lambda d: len(d["routes"]) >= 3 and d["folders"]))
def test_two_devices_move_different_routes_across_folders(base):
    f = base["folders"][-1]["uuid"]
    movable = [r["uuid"] for r in base["routes"] if parent_of(base, r["uuid"]) != f]
    a, b = movable[0], movable[-1]
    ours, theirs = clone(base), clone(base)
    move(ours, a, f, 0)  # ours: a to the front of folder f
    move(theirs, b, None, 0)  # theirs: b to the front of the root
    res = merged(base, ours, theirs)
    assert tree_order(res.doc, f)[0] == a
    assert tree_order(res.doc, None)[0] == b
    assert res.conflicts == []


# ============================================================================ 4. deletes


@pytest.mark.parametrize("base", envs_where(lambda d: len(d["routes"]) >= 3))
def test_deleting_different_entities_both_take_effect(base):
    a, b = base["routes"][0]["uuid"], base["routes"][-1]["uuid"]
    ours, theirs = clone(base), clone(base)
    delete_route(ours, a)
    delete_route(theirs, b)
    gone_resp = {x["uuid"] for r in base["routes"] if r["uuid"] in (a, b) for x in r["responses"]}
    if base.get("data"):
        theirs["data"] = theirs["data"][1:]
    res = merged(base, ours, theirs)
    uuids = {obj["uuid"] for _, obj in all_entities(res.doc)}
    assert a not in uuids and b not in uuids and not (gone_resp & uuids)
    assert [r["uuid"] for r in res.doc["routes"]] == [
        r["uuid"] for r in base["routes"] if r["uuid"] not in (a, b)]
    assert res.doc.get("data", []) == base.get("data", [])[1:]
    assert res.conflicts == []


# ============================================================================ 5. atomic registers


def _atomic_cases(doc) -> list[tuple[str, str, str, Any, Any]]:
    """(name, entity uuid, field, ours value, theirs value) for each atomic register kind."""
    out = []
    hdr = lambda k: {"key": k, "value": k.lower()}  # noqa: E731
    out.append(("env headers", doc["uuid"], "headers",
                doc["headers"] + [hdr("X-Ours")], doc["headers"][:-1] + [hdr("X-Theirs")]))
    if "proxyReqHeaders" in doc:
        out.append(("proxy request headers", doc["uuid"], "proxyReqHeaders",
                    [hdr("X-Ours")], [hdr("X-Theirs"), hdr("X-Too")]))
    resp = non_crud(doc)[0]["responses"][0]
    out.append(("response headers", resp["uuid"], "headers",
                resp["headers"] + [hdr("X-Ours")], [hdr("X-Theirs")] + resp["headers"]))
    rule = {"target": "query", "modifier": "q", "value": "1", "invert": False,
            "operator": "equals"}
    out.append(("rules", resp["uuid"], "rules",
                resp["rules"] + [rule], resp["rules"] + [dict(rule, value="2"), rule]))
    out.append(("inline body", resp["uuid"], "body", resp["body"] + "\n// ours",
                "// theirs\n" + resp["body"]))
    if doc.get("callbacks"):
        cb = doc["callbacks"][0]
        out.append(("response callbacks", resp["uuid"], "callbacks",
                    resp["callbacks"] + [{"uuid": cb["uuid"], "latency": 100}],
                    [{"uuid": cb["uuid"], "latency": 5}]))
        out.append(("callback body", cb["uuid"], "body", '{"ours": 1}', '{"theirs": 2}'))
        out.append(("callback headers", cb["uuid"], "headers", [hdr("X-Ours")],
                    [hdr("X-Theirs")]))
    if doc.get("data"):
        b = doc["data"][0]
        out.append(("bucket value", b["uuid"], "value", b["value"] + " ", "[1, 2]"))
    route = non_crud(doc)[0]
    out.append(("documentation", route["uuid"], "documentation", "ours doc", "theirs doc"))
    return out


ATOMIC_KINDS = ["env headers", "response headers", "rules", "response callbacks",
                "inline body", "bucket value", "callback body", "callback headers",
                "documentation", "proxy request headers"]


def test_every_atomic_register_kind_is_covered():
    covered = {name for _, doc in ENVS for name, *_ in _atomic_cases(doc)}
    assert covered == set(ATOMIC_KINDS)


@pytest.mark.parametrize("kind", ATOMIC_KINDS)
@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d)))
def test_atomic_register_replaced_whole_and_loser_recorded(base, kind):
    cases = {name: rest for name, *rest in _atomic_cases(base)}
    if kind not in cases:
        pytest.skip(f"this environment has no {kind}")
    uuid, field, ov, tv = cases[kind]
    assert ov != tv
    ours, theirs = clone(base), clone(base)
    (ours if uuid == base["uuid"] else find(ours, uuid))[field] = ov
    (theirs if uuid == base["uuid"] else find(theirs, uuid))[field] = tv

    def value(doc):
        return (doc if uuid == base["uuid"] else find(doc, uuid))[field]

    for prefer, win, lose in (("ours", ov, tv), ("theirs", tv, ov)):
        res = merged(base, ours, theirs, prefer)
        assert value(res.doc) == win  # exactly one side's value, never a mix
        mine = [c for c in res.conflicts if c.entity == uuid and c.field == ("v", field)]
        assert len(mine) == 1, res.conflicts
        c = mine[0]
        assert isinstance(c, Conflict)
        assert c.winner_value == win and c.loser_value == lose
        assert c.winner_stamp[1] == prefer and c.loser_stamp[1] != prefer
        assert c.winner_stamp > c.loser_stamp
        assert c.to_json()["winner"]["value"] == win
        assert len(res.conflicts) == 1
    # Only one side edits: taken as is, no conflict.
    res = merged(base, ours, clone(base))
    assert value(res.doc) == ov and res.conflicts == []
    res = merged(base, clone(base), theirs)
    assert value(res.doc) == tv and res.conflicts == []


@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d)))
def test_atomic_register_winner_independent_of_delivery_order(base):
    resp = non_crud(base)[0]["responses"][0]
    g = genesis(base)
    s0 = state_of(g, env_uuid=base["uuid"])
    a, b = clone(base), clone(base)
    find(a, resp["uuid"])["headers"] = [{"key": "A", "value": "1"}]
    find(b, resp["uuid"])["headers"] = [{"key": "B", "value": "2"}, {"key": "C", "value": "3"}]
    ca = edit(s0, a, "devA", 10)
    cb = edit(s0, b, "devB", 11)
    assert len(ca.ops) == len(cb.ops) == 1
    doc, states = every_order(base["uuid"], g, [ca, cb])
    assert find(doc, resp["uuid"])["headers"] == find(b, resp["uuid"])["headers"]
    ids = [conflict_ids(s) for s in states]
    assert all(i == ids[0] and len(i) == 1 for i in ids)


# ============================================================================ 6. tlsOptions


@pytest.mark.parametrize("base", envs_where(lambda d: isinstance(d.get("tlsOptions"), dict)))
def test_tls_options_merge_key_by_key(base):
    ours, theirs = clone(base), clone(base)
    ours["tlsOptions"]["certPath"] = "ours/cert.pem"
    theirs["tlsOptions"]["keyPath"] = "theirs/key.pem"
    theirs["tlsOptions"]["enabled"] = not base["tlsOptions"]["enabled"]
    for prefer in ("ours", "theirs"):
        res = merged(base, ours, theirs, prefer)
        tls = res.doc["tlsOptions"]
        assert tls["certPath"] == "ours/cert.pem" and tls["keyPath"] == "theirs/key.pem"
        assert tls["enabled"] is (not base["tlsOptions"]["enabled"])
        assert list(tls) == list(base["tlsOptions"])  # key order kept
        assert res.conflicts == []
    # The same key edited on both sides: one wins, the other is a conflict on that key.
    theirs["tlsOptions"]["certPath"] = "theirs/cert.pem"
    res = merged(base, ours, theirs, "theirs")
    assert res.doc["tlsOptions"]["certPath"] == "theirs/cert.pem"
    assert res.doc["tlsOptions"]["keyPath"] == "theirs/key.pem"
    [c] = res.conflicts
    assert c.field == ("v", "tlsOptions", "certPath")
    assert (c.winner_value, c.loser_value) == ("theirs/cert.pem", "ours/cert.pem")


# ============================================================================ 7. delete vs edit


@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d)))
def test_delete_beats_a_concurrent_edit(base):
    route = non_crud(base)[0]
    resp = route["responses"][0]
    ours, theirs = clone(base), clone(base)
    delete_route(ours, route["uuid"])
    find(theirs, route["uuid"])["endpoint"] = "edited/while/deleted"
    find(theirs, resp["uuid"])["body"] = "edited body"
    for prefer in ("ours", "theirs"):  # the delete wins whatever the stamps
        res = merged(base, ours, theirs, prefer)
        uuids = {obj["uuid"] for _, obj in all_entities(res.doc)}
        assert route["uuid"] not in uuids and resp["uuid"] not in uuids
        assert route["uuid"] not in tree_order_all(res.doc)
        lost = {(c.entity, c.field) for c in res.conflicts}
        assert (route["uuid"], ("#deleted", "v", "endpoint")) in lost, res.conflicts
        assert (resp["uuid"], ("#deleted", "v", "body")) in lost, res.conflicts
        for c in res.conflicts:
            assert c.field[0] == "#deleted"
            assert c.loser_value in ("edited/while/deleted", "edited body")
            assert c.winner_stamp[1] == "ours" and c.loser_stamp[1] == "theirs"
        assert len(res.conflicts) == 2


def tree_order_all(doc) -> list[str]:
    out = [c["uuid"] for c in doc["rootChildren"]]
    for f in doc["folders"]:
        out += [c["uuid"] for c in f["children"]]
    return out


@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d)))
def test_delete_vs_edit_in_every_delivery_order(base):
    """The edit is never resurrected, even when it arrives after the delete with a greater
    stamp, and the conflict recorded is the same whatever the order."""
    route = non_crud(base)[0]
    resp = route["responses"][0]
    g = genesis(base)
    s0 = state_of(g, env_uuid=base["uuid"])
    d, e = clone(base), clone(base)
    delete_route(d, route["uuid"])
    find(e, route["uuid"])["endpoint"] = "edited"
    find(e, resp["uuid"])["body"] = "edited body"
    cd = edit(s0, d, "devA", 10)
    ce = edit(s0, e, "devB", 20)  # later stamp than the delete
    assert len(ce.ops) == 2
    doc, states = every_order(base["uuid"], g, [cd, ce])
    assert route["uuid"] not in {r["uuid"] for r in doc["routes"]}
    assert doc == render(state_of(g, cd, env_uuid=base["uuid"]))  # as if the edit never was
    for s in states:
        assert not s.entity(route["uuid"]).live and not s.entity(resp["uuid"]).live
        fields = sorted((c.entity, c.field) for c in s.conflicts)
        assert fields == sorted([(route["uuid"], ("#deleted", "v", "endpoint")),
                                 (resp["uuid"], ("#deleted", "v", "body"))]), s.conflicts
    ids = [conflict_ids(s) for s in states]
    assert ids[0] == ids[1]
    # An edit made after seeing the delete (causally later) is no conflict, and still no
    # resurrection.
    s = state_of(g, cd, env_uuid=base["uuid"])
    late = CS(wire([("s", route["uuid"], ("v", "endpoint"), "late")]), (30, "devB"), ("devB", 1),
              {"g": 1, "devA": 1})
    res = s.apply(late.ops, late.stamp, late.origin, late.deps)
    assert res.conflicts == [] and not s.entity(route["uuid"]).live
    assert render(s) == doc


# ============================================================================ 8. default


@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d, 3)))
def test_concurrent_default_response_later_stamp_wins(base):
    route = next(r for r in non_crud(base, 3))
    rs = route["responses"]
    d0 = default_index(route)
    others = [i for i in range(len(rs)) if i != d0]
    i_o, i_t = others[0], others[1]
    ours, theirs = clone(base), clone(base)
    for doc, i in ((ours, i_o), (theirs, i_t)):
        for j, x in enumerate(find(doc, route["uuid"])["responses"]):
            x["default"] = j == i
    for prefer, i in (("ours", i_o), ("theirs", i_t)):
        res = merged(base, ours, theirs, prefer)
        got = find(res.doc, route["uuid"])["responses"]
        assert [x["default"] for x in got] == [j == i for j in range(len(rs))]
    # State API: the later stamp wins whatever the delivery order.
    g = genesis(base)
    s0 = state_of(g, env_uuid=base["uuid"])
    co = edit(s0, ours, "devA", 50)
    ct = edit(s0, theirs, "devB", 40)
    doc, _ = every_order(base["uuid"], g, [co, ct])
    assert [x["default"] for x in find(doc, route["uuid"])["responses"]] == [
        j == i_o for j in range(len(rs))]


@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d, 2)))
def test_deleting_the_default_response_makes_the_first_default(base):
    route = non_crud(base, 2)[0]
    d0 = default_index(route)
    ours, theirs = clone(base), clone(base)
    find(ours, route["uuid"])["responses"].pop(d0)
    find(theirs, route["uuid"])["documentation"] = "unrelated edit"
    res = merged(base, ours, theirs)
    got = find(res.doc, route["uuid"])["responses"]
    assert [x["default"] for x in got] == [True] + [False] * (len(got) - 1)


def _crud_with_responses(doc):
    return [r for r in doc["routes"] if r["type"] == "crud" and r["responses"]]


@pytest.mark.parametrize("base", envs_where(_crud_with_responses))
def test_concurrent_default_in_a_crud_route_leaves_at_most_one(base):
    """Mockoon's schema allows at most one default in a CRUD route; two devices each making a
    different response the default must not leave two."""
    route = _crud_with_responses(base)[0]
    ours, theirs = clone(base), clone(base)
    for doc, n in ((ours, 700), (theirs, 800)):
        rs = find(doc, route["uuid"])["responses"]
        extra = make_response(0, label=f"made default by {n}")
        extra["uuid"] = new_uuid(n)
        for x in rs:
            x["default"] = False
        extra["default"] = True
        rs.append(extra)
    res = merged(base, ours, theirs)
    got = find(res.doc, route["uuid"])["responses"]
    assert [x["uuid"] for x in got if x["default"]] == [new_uuid(700)]


# ============================================================================ 9. deleted bucket


@pytest.mark.parametrize("base", envs_where(referenced_bucket))
def test_deleted_bucket_references_render_empty(base):
    bucket = referenced_bucket(base)
    refs = [x["uuid"] for x in all_responses(base) if x["databucketID"] == bucket["id"]]
    cb_refs = [c["uuid"] for c in base.get("callbacks", []) if c["databucketID"] == bucket["id"]]
    ours, theirs = clone(base), clone(base)
    ours["data"] = [b for b in ours["data"] if b["uuid"] != bucket["uuid"]]
    # Concurrently, theirs points another response (and a callback, if any) at the bucket.
    other = next(x for x in all_responses(theirs) if x["uuid"] not in refs)
    other["databucketID"] = bucket["id"]
    other["bodyType"] = "DATABUCKET"
    if theirs.get("callbacks"):
        theirs["callbacks"][-1]["databucketID"] = bucket["id"]
        cb_refs.append(theirs["callbacks"][-1]["uuid"])
    for prefer in ("ours", "theirs"):
        res = merged(base, ours, theirs, prefer)
        assert bucket["uuid"] not in {b["uuid"] for b in res.doc["data"]}
        for u in refs + [other["uuid"]] + cb_refs:
            assert find(res.doc, u)["databucketID"] == "", u
        assert all(x["databucketID"] != bucket["id"] for x in all_responses(res.doc))
        assert all(c["databucketID"] != bucket["id"] for c in res.doc.get("callbacks", []))


@pytest.mark.parametrize("base", envs_where(
    lambda d: any(c["databucketID"] for c in d.get("callbacks", []))))
def test_deleted_bucket_named_by_a_callback_renders_empty(base):
    cb = next(c for c in base["callbacks"] if c["databucketID"])
    bucket = next(b for b in base["data"] if b["id"] == cb["databucketID"])
    ours, theirs = clone(base), clone(base)
    ours["data"] = [b for b in ours["data"] if b["uuid"] != bucket["uuid"]]
    find(theirs, cb["uuid"])["name"] = "renamed concurrently"
    res = merged(base, ours, theirs)
    got = find(res.doc, cb["uuid"])
    assert got["databucketID"] == "" and got["name"] == "renamed concurrently"


# ============================================================================ 10. deleted callback


@pytest.mark.parametrize("base", envs_where(invoked_callback))
def test_deleted_callback_invocations_are_dropped(base):
    cb = invoked_callback(base)
    ours, theirs = clone(base), clone(base)
    ours["callbacks"] = [c for c in ours["callbacks"] if c["uuid"] != cb["uuid"]]
    # Concurrently, theirs adds an invocation of it to a response that had none.
    other = next(x for x in all_responses(theirs)
                 if all(i["uuid"] != cb["uuid"] for i in x["callbacks"]))
    other["callbacks"] = other["callbacks"] + [{"uuid": cb["uuid"], "latency": 10}]
    for prefer in ("ours", "theirs"):
        res = merged(base, ours, theirs, prefer)
        assert cb["uuid"] not in {c["uuid"] for c in res.doc["callbacks"]}
        for x in all_responses(res.doc):
            assert all(i["uuid"] != cb["uuid"] for i in x["callbacks"]), x
        before = find(base, other["uuid"])["callbacks"]
        assert find(res.doc, other["uuid"])["callbacks"] == before  # the others stay


# ============================================================================ 11. folder cycle


def _sibling_folders(doc) -> tuple[dict, str, str]:
    """(base, a, b): a base where folders a and b share a parent (made so if needed)."""
    doc = clone(doc)
    for c in [None] + [f["uuid"] for f in doc["folders"]]:
        fs = [x["uuid"] for x in children_of(doc, c) if x["type"] == "folder"]
        if len(fs) >= 2:
            return doc, fs[0], fs[1]
    nested = next(f["uuid"] for f in doc["folders"] if parent_of(doc, f["uuid"]) is not None)
    move(doc, nested, parent_of(doc, parent_of(doc, nested)))
    return _sibling_folders(doc)


@pytest.mark.parametrize("base", envs_where(lambda d: len(d["folders"]) >= 2))
def test_folder_cycle_from_two_concurrent_moves(base):
    base, a, b = _sibling_folders(base)
    inside_a, inside_b = tree_order(base, a), tree_order(base, b)
    ours, theirs = clone(base), clone(base)
    move(ours, a, b)  # ours: a into b
    move(theirs, b, a)  # theirs: b into a
    for prefer, cut, kept in (("ours", a, b), ("theirs", b, a)):
        res = merged(base, ours, theirs, prefer)
        doc = res.doc
        # The move with the greatest stamp (the preferred side's) is dropped: that folder lands
        # at the end of the root, and the other folder's move holds.
        assert tree_order(doc, None)[-1] == cut
        assert tree_order(doc, cut) == (inside_a if cut == a else inside_b) + [kept]
        assert tree_order(doc, kept) == (inside_b if kept == b else inside_a)
        assert sorted(f["uuid"] for f in doc["folders"]) == sorted(f["uuid"] for f in base["folders"])


def test_three_folder_cycle_cut_at_the_greatest_stamp():
    base = small_env()
    for n, name in ((3, "c"), (4, "d")):
        base["folders"].append({"uuid": new_uuid(n), "name": name, "children": []})
        base["rootChildren"].append({"type": "folder", "uuid": new_uuid(n)})
    f1, f3, f4 = "00000000-0000-4000-8000-000000000001", new_uuid(3), new_uuid(4)
    g = genesis(base)
    s0 = state_of(g, env_uuid=base["uuid"])
    moves = []
    for dev, hlc, (x, into) in (("devA", 10, (f1, f3)), ("devB", 30, (f3, f4)),
                                ("devC", 20, (f4, f1))):
        d = clone(base)
        move(d, x, into)
        moves.append(edit(s0, d, dev, hlc))
    doc, _ = every_order(base["uuid"], g, moves)
    assert tree_order(doc, None)[-1] == f3  # devB's move had the greatest stamp
    assert tree_order(doc, f3)[-1] == f1 and tree_order(doc, f1)[-1] == f4


# ============================================================================ 12. orphans


@pytest.mark.parametrize("base", envs_where(lambda d: d["folders"]))
def test_route_added_into_a_concurrently_deleted_folder_lands_at_end_of_root(base):
    folder = base["folders"][-1]["uuid"]
    gone = descendants(base, folder) | {folder}
    outside = [r["uuid"] for r in base["routes"] if r["uuid"] not in gone]
    ours, theirs = clone(base), clone(base)
    add_route(ours, new_route(900, "orphan/new"), folder, 0)
    if outside:
        move(ours, outside[0], folder)  # and one existing route moved into it
    delete_folder(theirs, folder)
    for prefer in ("ours", "theirs"):
        res = merged(base, ours, theirs, prefer)
        root = tree_order(res.doc, None)
        tail = {new_uuid(900)} | ({outside[0]} if outside else set())
        assert set(root[-len(tail):]) == tail
        assert folder not in {f["uuid"] for f in res.doc["folders"]}
        assert find(res.doc, new_uuid(900))["endpoint"] == "orphan/new"


# ============================================================================ 13. minimal ops


def _apply_and_check(base, new, ops):
    s = state_from_doc(base, rng=random.Random(0))
    assert render(s) == base
    s.apply(wire(ops), (5, "me"), ("me", 1), {})
    assert render(s) == new
    assert dumps(render(s)) == dumps(new)
    assert_valid(new)


@pytest.mark.parametrize("base", envs_where(lambda d: len(d["routes"]) >= 2))
def test_moving_one_route_is_one_place_op(base):
    s = state_from_doc(base, rng=random.Random(0))
    assert render(s) == base
    containers = [None] + [f["uuid"] for f in base["folders"]]
    tried = 0
    for r in base["routes"][:6]:
        u = r["uuid"]
        here = parent_of(base, u)
        for target, index in ((here, 0), (here, None), (containers[-1], 0), (None, None)):
            new = clone(base)
            move(new, u, target, index)
            if new == base:
                continue
            ops = diff(base, new, s, random.Random(1))
            assert len(ops) == 1, ops
            op = ops[0]
            assert op[0] == "s" and op[2] == ("p", "tree"), op
            if target != here:
                assert op[1] == u and op[3][0] == (target or "")
            else:  # [a, b] -> [b, a] is one move either way: either item may be the one re-keyed
                assert op[1] in tree_order(base, here) and op[3][0] == (here or "")
            _apply_and_check(base, new, ops)
            tried += 1
    assert tried >= 2


@pytest.mark.parametrize("base", envs_where(lambda d: len(d["folders"]) >= 1))
def test_moving_one_folder_is_one_place_op(base):
    s = state_from_doc(base, rng=random.Random(0))
    f = base["folders"][-1]["uuid"]
    new = clone(base)
    move(new, f, None, 0)
    if new == base:
        move(new, f, None)
    ops = diff(base, new, s, random.Random(1))
    assert len(ops) == 1 and ops[0][:3] == ("s", f, ("p", "tree")), ops
    _apply_and_check(base, new, ops)


@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d, 2)))
def test_moving_one_response_is_one_place_op(base):
    route = non_crud(base, 2)[0]
    s = state_from_doc(base, rng=random.Random(0))
    new = clone(base)
    rs = find(new, route["uuid"])["responses"]
    rs.append(rs.pop(0))
    ops = diff(base, new, s, random.Random(1))
    assert len(ops) == 1, ops
    assert ops[0][0] == "s" and ops[0][2] == ("p", "list")
    assert ops[0][1] in {x["uuid"] for x in route["responses"]}
    if len(rs) > 2:
        assert ops[0][1] == route["responses"][0]["uuid"]
    _apply_and_check(base, new, ops)


@pytest.mark.parametrize("base", envs_where(lambda d: non_crud(d)))
def test_one_property_edit_is_one_set_op(base):
    s = state_from_doc(base, rng=random.Random(0))
    route = non_crud(base)[0]
    resp = route["responses"][0]
    edits = [
        (route["uuid"], ("v", "endpoint"), lambda d: find(d, route["uuid"]).__setitem__(
            "endpoint", "changed")),
        (resp["uuid"], ("v", "statusCode"), lambda d: find(d, resp["uuid"]).__setitem__(
            "statusCode", 299)),
        (resp["uuid"], ("v", "headers"), lambda d: find(d, resp["uuid"])["headers"].append(
            {"key": "X-New", "value": "1"})),
        (base["uuid"], ("v", "name"), lambda d: d.__setitem__("name", "New name")),
        (base["uuid"], ("v", "tlsOptions", "certPath"),
         lambda d: d["tlsOptions"].__setitem__("certPath", "x.pem")),
    ]
    if base.get("data"):
        b = base["data"][0]["uuid"]
        edits.append((b, ("v", "value"), lambda d: find(d, b).__setitem__("value", "[9]")))
    for uuid, rid, change in edits:
        new = clone(base)
        change(new)
        ops = diff(base, new, s, random.Random(1))
        assert len(ops) == 1, ops
        assert ops[0][:3] == ("s", uuid, rid)
        _apply_and_check(base, new, ops)
    # No change: no op.
    assert diff(base, clone(base), s) == []


@pytest.mark.parametrize("base", envs_where(lambda d: True))
def test_merge_of_unchanged_sides_is_the_base(base):
    res = merged(base, clone(base), clone(base))
    assert res.doc == base and res.conflicts == []
    assert dumps(res.doc) == dumps(base)


# ============================================================================ conflicts recorded


@pytest.mark.parametrize("base", envs_where(lambda d: d["folders"] and non_crud(d)))
def test_move_concurrent_with_delete_records_the_same_in_both_orders(base):
    """Delete-vs-edit conflicts are about field edits; a concurrent move of the deleted route
    must not be recorded in one delivery order and not in the other."""
    route = non_crud(base)[0]
    g = genesis(base)
    s0 = state_of(g, env_uuid=base["uuid"])
    d, m = clone(base), clone(base)
    delete_route(d, route["uuid"])
    target = next(f["uuid"] for f in base["folders"] if f["uuid"] != parent_of(base, route["uuid"]))
    move(m, route["uuid"], target, 0)
    find(m, route["uuid"])["endpoint"] = "moved and edited"
    cd, cm = edit(s0, d, "devA", 10), edit(s0, m, "devB", 20)
    doc, states = every_order(base["uuid"], g, [cd, cm])
    assert route["uuid"] not in {r["uuid"] for r in doc["routes"]}
    fields = [sorted(c.field for c in s.conflicts) for s in states]
    assert fields[0] == fields[1] == [("#deleted", "v", "endpoint")]


def _three_writers(base):
    """W1 by A, then W3 by A (after W1); W2 by B, concurrent with both, on one register."""
    resp = non_crud(base)[0]["responses"][0]["uuid"]
    g = genesis(base)

    def w(dev, seq, hlc, value, deps):
        return CS(wire([("s", resp, ("v", "body"), value)]), (hlc, dev), (dev, seq), deps)

    return g, [w("devA", 1, 10, "w1", {"g": 1}), w("devB", 1, 11, "w2", {"g": 1}),
               w("devA", 2, 12, "w3", {"g": 1})]


def _delete_twice(base):
    """E edits a route; D1 deletes it concurrently; D2 deletes it after having seen E."""
    route = non_crud(base)[0]["uuid"]
    g = genesis(base)
    e = CS(wire([("s", route, ("v", "endpoint"), "e")]), (10, "devA"), ("devA", 1), {"g": 1})
    d1 = CS(wire([("d", route)]), (11, "devB"), ("devB", 1), {"g": 1})
    d2 = CS(wire([("d", route)]), (12, "devC"), ("devC", 1), {"g": 1, "devA": 1})
    return g, [e, d1, d2]


@pytest.mark.parametrize("scenario", [_three_writers, _delete_twice])
def test_conflicts_recorded_are_the_same_in_every_delivery_order(scenario):
    base = small_env()
    g, changesets = scenario(base)
    seen = set()
    for perm in itertools.permutations(changesets):  # each delivered once
        seen.add(frozenset(conflict_ids(state_of(g, *perm, env_uuid=base["uuid"]))))
    assert len(seen) == 1


def test_a_duplicate_delivery_records_nothing_new():
    base = small_env()
    g, (e, d1, d2) = _delete_twice(base)
    s = state_of(g, e, d2, d1, env_uuid=base["uuid"])
    before = conflict_ids(s)
    s.apply(e.ops, e.stamp, e.origin, e.deps)  # the same change set, again
    assert conflict_ids(s) == before


# ============================================================================ the large example


def test_large_example_merges():
    big = [p for p in sorted(EXAMPLES.glob("*.json")) if p.stat().st_size >= 1_000_000]
    if not big:
        pytest.skip("no example over 1 MB yet")
    base = json.loads(big[0].read_text("utf-8"))
    ours, theirs = clone(base), clone(base)
    route = non_crud(base, 2)[0]
    find(ours, route["uuid"])["endpoint"] = "ours"
    find(theirs, route["uuid"])["documentation"] = "theirs"
    move(ours, base["routes"][-1]["uuid"], None, 0)
    add_route(theirs, new_route(990, "theirs/new"), base["folders"][0]["uuid"], 0)
    theirs["tlsOptions"]["certPath"] = "big.pem"
    res = merged(base, ours, theirs)
    assert res.conflicts == []
    assert find(res.doc, route["uuid"])["endpoint"] == "ours"
    assert find(res.doc, route["uuid"])["documentation"] == "theirs"
    assert tree_order(res.doc, None)[0] == base["routes"][-1]["uuid"]
    assert tree_order(res.doc, base["folders"][0]["uuid"])[0] == new_uuid(990)
    assert res.doc["tlsOptions"]["certPath"] == "big.pem"


# ============================================================================ stale editor


@pytest.mark.parametrize("base", envs_where(lambda d: d["folders"] and len(d["routes"]) >= 2))
def test_a_stale_editor_does_not_undo_a_teammates_move(base):
    """docs/design/merge.md: each save is diffed against the version the editor last loaded, and must not
    silently revert a teammate's edit it has not seen. A teammate moved route R into another
    folder; the stale editor (still showing R in its old place) adds a route next to it."""
    g = genesis(base)
    s = state_of(g, env_uuid=base["uuid"])
    r = base["routes"][0]["uuid"]
    old = parent_of(base, r)
    target = next(f["uuid"] for f in base["folders"] if f["uuid"] != old)
    theirs = clone(base)
    move(theirs, r, target, 0)
    moved = edit(s, theirs, "devB", 10)
    s.apply(moved.ops, moved.stamp, moved.origin, moved.deps)
    assert parent_of(render(s), r) == target
    stale = clone(base)  # the editor has not reloaded: R still where it was
    add_route(stale, new_route(950, "added/by/stale/editor"), old)
    ops = diff(base, stale, s, random.Random(3))
    assert not any(op[0] == "s" and op[1] == r for op in ops), ops
    s.apply(wire(ops), (11, "devA"), ("devA", 1), {"g": 1, "devB": 1})
    doc = render(s)
    assert parent_of(doc, r) == target and tree_order(doc, target)[0] == r
    assert tree_order(doc, old)[-1] == new_uuid(950)
    assert_valid(doc)


@pytest.mark.parametrize("base", envs_where(lambda d: _has_container(d, 3)))
def test_a_stale_editor_does_not_undo_a_teammates_reorder(base):
    c = _container_with(base, 3)
    order = tree_order(base, c)
    g = genesis(base)
    s = state_of(g, env_uuid=base["uuid"])
    theirs = clone(base)
    move(theirs, order[-1], c, 0)  # teammate: last first
    cs = edit(s, theirs, "devB", 10)
    s.apply(cs.ops, cs.stamp, cs.origin, cs.deps)
    stale = clone(base)
    add_route(stale, new_route(960, "stale/add"), c)  # appended at the end of the container
    ops = diff(base, stale, s, random.Random(4))
    s.apply(wire(ops), (11, "devA"), ("devA", 1), {"g": 1, "devB": 1})
    assert tree_order(render(s), c) == [order[-1]] + order[:-1] + [new_uuid(960)]


def test_a_response_added_to_a_concurrently_deleted_route_is_recorded():
    """Issue 15: the response is not rendered (its route is gone) but it is not lost either:
    a conflict on it names the deleted route, whichever side is preferred."""
    base = small_env()
    route = non_crud(base)[0]
    ours, theirs = clone(base), clone(base)
    delete_route(ours, route["uuid"])
    added = make_response(0, label="added concurrently")
    added["uuid"] = new_uuid(970)
    find(theirs, route["uuid"])["responses"].append(added)
    for prefer in ("ours", "theirs"):
        res = merged(base, ours, theirs, prefer)
        assert new_uuid(970) not in {x["uuid"] for x in all_responses(res.doc)}  # gone with it
        [c] = [c for c in res.conflicts if c.entity == new_uuid(970)]
        assert c.field == ("#parent", "p", "list") and c.parent == route["uuid"]
        assert c.winner_stamp[1] == "ours" and c.loser_stamp[1] == "theirs"


@pytest.mark.parametrize("base", envs_where(lambda d: len(non_crud(d, 2)) >= 2))
def test_a_stale_editor_does_not_undo_a_teammates_response_move(base):
    a, b = non_crud(base, 2)[:2]
    x = a["responses"][-1]["uuid"]
    g = genesis(base)
    s = state_of(g, env_uuid=base["uuid"])
    theirs = clone(base)  # teammate: a's last response moved to the end of b
    find(theirs, b["uuid"])["responses"].append(find(theirs, a["uuid"])["responses"].pop())
    cs = edit(s, theirs, "devB", 10)
    s.apply(cs.ops, cs.stamp, cs.origin, cs.deps)
    stale = clone(base)
    extra = make_response(0, label="stale add")
    extra["uuid"] = new_uuid(980)
    find(stale, a["uuid"])["responses"].append(extra)
    ops = diff(base, stale, s, random.Random(5))
    assert not any(op[1] == x for op in ops), ops
    s.apply(wire(ops), (11, "devA"), ("devA", 1), {"g": 1, "devB": 1})
    doc = render(s)
    assert [r["uuid"] for r in find(doc, b["uuid"])["responses"]][-1] == x
    assert [r["uuid"] for r in find(doc, a["uuid"])["responses"]][-1] == new_uuid(980)
    assert x not in {r["uuid"] for r in find(doc, a["uuid"])["responses"]}
