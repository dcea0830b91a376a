"""No edit vanishes without a trace (issue 15 part 1): whatever the merge rules drop because
something was deleted concurrently is a conflict listed the same way in every delivery order,
and `resolve --take` can bring it back (the parent with the addition) or confirm the delete.

One case per parent/child relation of the model: a response in a route, a route in a folder,
a folder in a folder, a reference to a data bucket, an invocation of a callback, and the edit
of a deleted bucket or callback; each with the delete on either device (either stamp wins),
through the State API (every delivery order, duplicates, the restore arriving before the
delete it undoes) and through `merge3` (the merge driver's path). Pure: no sockets or clocks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from mocksync.model import State, merge3, render
from mocksync.model.resolution import resolution_ops, restore_ops
from mocksync.model.state import ABSENT

from envfactory import ENV_UUID, clone, find, small_env, u
from envfactory import response as make_response
from helpers.mergekit import (
    CS,
    add_route,
    delete_folder,
    delete_route,
    edit,
    every_order,
    genesis,
    new_route,
    new_uuid,
    parent_of,
    state_of,
    tree_order,
    wire,
)

Doc = dict[str, Any]


# ============================================================================ the cases
# Each case: (delete side edit, add side edit, the entity holding the dropped work, the
# conflict field, the deleted entity it names, a check of the restored document).


def _new_response(doc: Doc) -> None:
    added = make_response(0, label="added meanwhile")
    added["uuid"] = new_uuid(970)
    find(doc, u(10))["responses"].append(added)


def _restored_route(doc: Doc) -> None:
    assert [x["uuid"] for x in find(doc, u(10))["responses"]] == [u(11), u(12), new_uuid(970)]
    assert u(10) in tree_order(doc, u(1))


def _new_route_in_nested(doc: Doc) -> None:
    add_route(doc, new_route(900, "nested/new"), u(2))


def _restored_nested(doc: Doc) -> None:
    assert tree_order(doc, u(2)) == [u(20), new_uuid(900)]
    assert u(2) in tree_order(doc, u(1)) and find(doc, u(20))["responses"]


def _new_folder_in_api(doc: Doc) -> None:
    doc["folders"].append({"uuid": new_uuid(980), "name": "added", "children": []})
    find(doc, u(1))["children"].append({"type": "folder", "uuid": new_uuid(980)})


def _restored_api(doc: Doc) -> None:
    assert tree_order(doc, u(1)) == [u(10), u(2), new_uuid(980)]
    assert tree_order(doc, u(2)) == [u(20)]


def _delete_bucket(doc: Doc) -> None:
    doc["data"] = []


def _use_bucket(doc: Doc) -> None:
    find(doc, u(31))["databucketID"] = "b1id"


def _restored_bucket(doc: Doc) -> None:
    assert [b["uuid"] for b in doc["data"]] == [u(50)]
    assert find(doc, u(31))["databucketID"] == "b1id"
    assert find(doc, u(41))["databucketID"] == "b1id"  # the older reference shows again


def _delete_callback(doc: Doc) -> None:
    doc["callbacks"] = []


def _invoke_callback(doc: Doc) -> None:
    find(doc, u(31))["callbacks"] = [{"uuid": u(60), "latency": 5}]


def _restored_callback(doc: Doc) -> None:
    assert [c["uuid"] for c in doc["callbacks"]] == [u(60)]
    assert find(doc, u(31))["callbacks"] == [{"uuid": u(60), "latency": 5}]


def _edit_callback(doc: Doc) -> None:
    find(doc, u(60))["body"] = "edited meanwhile"


def _edit_bucket(doc: Doc) -> None:
    find(doc, u(50))["value"] = "[1]"


CASES: dict[str, tuple[Callable, Callable, str, tuple, str | None, Callable]] = {
    "response added to a deleted route": (
        lambda d: delete_route(d, u(10)), _new_response, new_uuid(970),
        ("#parent", "p", "list"), u(10), _restored_route),
    "route added into a deleted folder": (
        lambda d: delete_folder(d, u(2)), _new_route_in_nested, new_uuid(900),
        ("#parent", "p", "tree"), u(2), _restored_nested),
    "folder added into a deleted folder": (
        lambda d: delete_folder(d, u(1)), _new_folder_in_api, new_uuid(980),
        ("#parent", "p", "tree"), u(1), _restored_api),
    "reference to a deleted bucket": (
        _delete_bucket, _use_bucket, u(31), ("#ref", "v", "databucketID"), u(50),
        _restored_bucket),
    "invocation of a deleted callback": (
        _delete_callback, _invoke_callback, u(31), ("#ref", "v", "callbacks"), u(60),
        _restored_callback),
    "edit of a deleted callback": (
        _delete_callback, _edit_callback, u(60), ("#deleted", "v", "body"), None,
        lambda doc: find(doc, u(60))["body"] == "edited meanwhile" or pytest.fail("body")),
    "edit of a deleted bucket": (
        _delete_bucket, _edit_bucket, u(50), ("#deleted", "v", "value"), None,
        lambda doc: find(doc, u(50))["value"] == "[1]" or pytest.fail("value")),
}

#: (deleting device, its hlc, adding device, its hlc): the delete with the smaller stamp, then
#: with the greater one (so neither the stamp nor the device decides).
SIDES = [("devA", 10, "devB", 20), ("devB", 20, "devA", 10)]


def listing_of(c) -> dict[str, Any]:
    """A conflict as the store lists it (what the daemon hands to `resolution_ops`)."""
    d = c.to_json()
    d["loser"]["absent"] = c.loser_value is ABSENT
    d["winner"]["absent"] = c.winner_value is ABSENT
    return d


def two_sides(case: str, deleter: str, dh: int, adder: str, ah: int):
    delete, add, *_ = CASES[case]
    base = small_env()
    g = genesis(base)
    s0 = state_of(g, env_uuid=ENV_UUID)
    d, a = clone(base), clone(base)
    delete(d)
    add(a)
    return base, g, edit(s0, d, deleter, dh), edit(s0, a, adder, ah)


@pytest.mark.parametrize("sides", SIDES, ids=["delete-first-stamp", "delete-last-stamp"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_dropped_work_is_one_conflict_in_every_delivery_order(case, sides):
    _d, _a, holder, field, parent, _check = CASES[case]
    deleter, _dh, adder, _ah = sides
    base, g, cd, ca = two_sides(case, *sides)
    doc, states = every_order(ENV_UUID, g, [cd, ca])
    lists = [[(c.id, c.entity, c.field, c.parent, c.winner_stamp, c.loser_stamp)
              for c in s.conflicts] for s in states]
    assert lists[0] == lists[1]  # same conflicts, same order
    [c] = [c for c in states[0].conflicts if c.field == field]
    assert (c.entity, c.parent) == (holder, parent)
    assert c.winner_value is ABSENT and c.winner_stamp[1] == deleter
    assert c.loser_stamp[1] == adder
    if field[0] == "#parent" and field[-1] == "list":
        assert holder not in str(doc)  # the response is not rendered: its route is gone
    if field[0] == "#parent" and field[-1] == "tree":
        assert tree_order(doc, None)[-1] == holder  # the orphan shows at the root's end


@pytest.mark.parametrize("sides", SIDES, ids=["delete-first-stamp", "delete-last-stamp"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_taking_the_addition_restores_the_parent_with_it_everywhere(case, sides):
    *_, field, _parent, check = CASES[case]
    deleter, _dh, adder, _ah = sides
    base, g, cd, ca = two_sides(case, *sides)
    s = state_of(g, cd, ca, env_uuid=ENV_UUID)
    [c] = [c for c in s.conflicts if c.field == field]
    ops = resolution_ops(s, listing_of(c), take_loser=True, rng=random.Random(3))
    assert ops and all(op[0] == "c" and op[3] == [] for op in ops)
    r = CS(wire(ops), (30, "devC"), ("devC", 1), {"g": 1, deleter: 1, adder: 1})
    # Every order, the restore included: also before the delete it undoes.
    doc, states = every_order(ENV_UUID, g, [cd, ca, r])
    for st in states:
        assert st.conflicts == []
    check(doc)
    assert render(state_of(g, cd, ca, r, env_uuid=ENV_UUID)) == doc


@pytest.mark.parametrize("case", sorted(CASES))
def test_taking_the_delete_clears_the_conflict_and_keeps_what_shows(case):
    *_, field, parent, _check = CASES[case]
    base, g, cd, ca = two_sides(case, *SIDES[0])
    s = state_of(g, cd, ca, env_uuid=ENV_UUID)
    shown = render(s)
    [c] = [c for c in s.conflicts if c.field == field]
    ops = resolution_ops(s, listing_of(c), take_loser=False, rng=random.Random(4))
    r = CS(wire(ops), (30, "devC"), ("devC", 1), {"g": 1, "devA": 1, "devB": 1})
    doc, states = every_order(ENV_UUID, g, [cd, ca, r])
    for st in states:
        assert st.conflicts == []
    assert doc == shown  # nothing visible changes: the merge's result is made explicit
    if parent is not None:
        assert parent not in {e.uuid for e in states[0].live()}


def test_restoring_a_route_brings_back_what_its_delete_took_not_older_deletes():
    """r12 was deleted before (its own change set); the route's delete took r11 with it."""
    base = small_env()
    g = genesis(base)
    s0 = state_of(g, env_uuid=ENV_UUID)
    one = clone(base)
    find(one, u(10))["responses"].pop()  # r12
    first = edit(s0, one, "devA", 5)
    s1 = state_of(g, first, env_uuid=ENV_UUID)
    two = clone(render(s1))
    delete_route(two, u(10))
    second = edit(s1, two, "devA", 6, seq=2, deps={"g": 1})
    s = state_of(g, first, second, env_uuid=ENV_UUID)
    ops = restore_ops(s, u(10))
    assert ops == [("c", u(10), "route", []), ("c", u(11), "response", [])]
    assert restore_ops(s, u(30)) == []  # not deleted: nothing to do


def test_an_edit_of_a_response_of_a_deleted_route_restores_route_and_response():
    base = small_env()
    g = genesis(base)
    s0 = state_of(g, env_uuid=ENV_UUID)
    d, e = clone(base), clone(base)
    delete_route(d, u(10))
    find(e, u(12))["body"] = "edited meanwhile"
    cd, ce = edit(s0, d, "devA", 10), edit(s0, e, "devB", 20)
    s = state_of(g, cd, ce, env_uuid=ENV_UUID)
    [c] = s.conflicts
    assert (c.entity, c.field) == (u(12), ("#deleted", "v", "body"))
    ops = resolution_ops(s, listing_of(c), take_loser=True)
    r = CS(wire(ops), (30, "devB"), ("devB", 2), {"g": 1, "devA": 1})
    doc, states = every_order(ENV_UUID, g, [cd, ce, r])
    assert [x["body"] for x in find(doc, u(10))["responses"]][1] == "edited meanwhile"
    assert parent_of(doc, u(10)) == u(1)
    assert all(st.conflicts == [] for st in states)


def test_a_delete_after_the_restore_deletes_again():
    base, g, cd, ca = two_sides("response added to a deleted route", *SIDES[0])
    s = state_of(g, cd, ca, env_uuid=ENV_UUID)
    [c] = s.conflicts
    r = CS(wire(resolution_ops(s, listing_of(c), True)), (30, "devC"), ("devC", 1),
           {"g": 1, "devA": 1, "devB": 1})
    again = CS(wire([("d", u(10)), ("d", new_uuid(970))]), (40, "devA"), ("devA", 2),
               {"g": 1, "devB": 1, "devC": 1})
    doc, states = every_order(ENV_UUID, g, [cd, ca, r, again])
    assert u(10) not in {x["uuid"] for x in doc["routes"]}
    assert all(st.conflicts == [] for st in states)


def test_a_restore_concurrent_with_another_delete_wins():
    """Observed-remove: a delete removes only the births its author had seen."""
    base, g, cd, ca = two_sides("response added to a deleted route", *SIDES[0])
    s = state_of(g, cd, ca, env_uuid=ENV_UUID)
    [c] = s.conflicts
    r = CS(wire(resolution_ops(s, listing_of(c), True)), (30, "devC"), ("devC", 1),
           {"g": 1, "devA": 1, "devB": 1})
    late = CS(wire([("d", u(10))]), (50, "devD"), ("devD", 1), {"g": 1, "devA": 1})
    doc, _states = every_order(ENV_UUID, g, [cd, ca, r, late])
    assert u(10) in {x["uuid"] for x in doc["routes"]}


def test_restores_and_dropped_work_survive_a_reload():
    base, g, cd, ca = two_sides("response added to a deleted route", *SIDES[0])
    s = state_of(g, cd, ca, env_uuid=ENV_UUID)
    deps = {x.origin: x.deps for x in (g, cd, ca)}

    def reload(st: State) -> State:
        t = State(ENV_UUID, deps_lookup=deps.get)
        for uuid in st.entities:
            t.load_record(uuid, st.entity_record(uuid))
        return t

    t = reload(s)
    assert [c.id for c in t.conflicts] == [c.id for c in s.conflicts] != []
    [c] = s.conflicts
    r = CS(wire(resolution_ops(s, listing_of(c), True)), (30, "devC"), ("devC", 1),
           {"g": 1, "devA": 1, "devB": 1})
    deps[r.origin] = r.deps
    t.apply(r.ops, r.stamp, r.origin, r.deps)
    s.apply(r.ops, r.stamp, r.origin, r.deps)
    u2 = reload(t)
    assert render(u2) == render(s) and u2.conflicts == []
    assert u2.entity(u(10)).restores == s.entity(u(10)).restores == [("devC", 1)]


def test_apply_names_what_hangs_on_a_deleted_parent():
    """The store lists conflicts of the entities an apply touched plus `naming(res.named)`:
    a delete arriving after the addition must reach the added response."""
    base, g, cd, ca = two_sides("response added to a deleted route", *SIDES[0])
    s = state_of(g, ca, env_uuid=ENV_UUID)
    res = s.apply(cd.ops, cd.stamp, cd.origin, cd.deps)
    assert new_uuid(970) not in res.touched
    assert new_uuid(970) in s.naming(res.named)
    assert [c.entity for c in s.conflicts_of(new_uuid(970))] == [new_uuid(970)]


# ============================================================================ merge3


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("deleting", ["ours", "theirs"])
@pytest.mark.parametrize("prefer", ["ours", "theirs"])
def test_the_file_merge_records_dropped_work(case, deleting, prefer):
    delete, add, holder, field, parent, _check = CASES[case]
    base = small_env()
    d, a = clone(base), clone(base)
    delete(d)
    add(a)
    ours, theirs = (d, a) if deleting == "ours" else (a, d)
    res = merge3(base, ours, theirs, prefer)
    [c] = [c for c in res.conflicts if c.field == field]
    assert (c.entity, c.parent) == (holder, parent)
    assert c.winner_stamp[1] == deleting


def test_restore_refuses_more_than_the_limit(monkeypatch):
    from mocksync.errors import ValidationError
    from mocksync.model import resolution

    base, g, cd, ca = two_sides("folder added into a deleted folder", *SIDES[0])
    s = state_of(g, cd, ca, env_uuid=ENV_UUID)
    monkeypatch.setattr(resolution, "MAX_RESTORED", 2)
    with pytest.raises(ValidationError, match="more than 2 entities"):
        restore_ops(s, u(1))
