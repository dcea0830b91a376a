"""Conflicts are derived from the log, not from arrival order (issue 11 item 8).

The same change sets give the same conflicts on every device in every delivery order, a write
made after seeing both sides (a resolution) clears them everywhere, and a register's frontier
survives a restart. Pure: no store, no sockets, no clocks.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from mocksync.model.state import ABSENT, State, close_deps, happened_before

ENV = "env-1"
ENT = "route-1"
REGS = [("v", "endpoint"), ("v", "method"), ("v", "body")]


class CS:
    """A change set as the state sees it: ops, stamp, origin, deps."""

    def __init__(self, ops: list[tuple], hlc: int, device: str, seq: int,
                 deps: dict[str, int]) -> None:
        self.ops, self.stamp, self.origin, self.deps = ops, (hlc, device), (device, seq), deps

    def apply_to(self, s: State) -> Any:
        return s.apply(self.ops, self.stamp, self.origin, self.deps)


GENESIS = CS([("c", ENV, "env", [(("v", "name"), "env")]),
              ("c", ENT, "route", [(rid, "base") for rid in REGS])], 1, "G", 1, {})


def setv(value: Any, hlc: int, device: str, seq: int, deps: dict[str, int],
         rid: tuple[str, ...] = REGS[0]) -> CS:
    return CS([("s", ENT, rid, value)], hlc, device, seq, deps)


def state_of(*changesets: CS) -> State:
    s = State(ENV)
    for cs in changesets:
        cs.apply_to(s)
    return s


def listing(s: State) -> list[tuple]:
    return [(c.id, c.entity, c.field, c.winner_value, c.winner_stamp, c.loser_value,
             c.loser_stamp) for c in s.conflicts]


def every_order(changesets: list[CS]) -> list[list[tuple]]:
    """The listing after each permutation (then everything delivered again, late)."""
    out = []
    for perm in itertools.permutations(changesets):
        s = state_of(GENESIS, *perm)
        for cs in reversed(perm):
            cs.apply_to(s)
        out.append(listing(s))
    return out


def test_two_concurrent_writes_are_one_conflict_in_both_orders():
    a = setv("by-a", 10, "A", 1, {"G": 1})
    b = setv("by-b", 11, "B", 1, {"G": 1})
    lists = every_order([a, b])
    assert lists[0] == lists[1]
    [(_id, _e, field, wv, ws, lv, ls)] = lists[0]
    assert (field, wv, ws, lv, ls) == (REGS[0], "by-b", (11, "B"), "by-a", (10, "A"))


def test_the_loser_is_the_write_concurrent_with_the_winner_not_its_authors_older_one():
    """W1 by A, W3 by A after W1, W2 by B concurrent with both: only W2 lost (W1 was
    overwritten by its own author), in every one of the six orders."""
    w1 = setv("w1", 10, "A", 1, {"G": 1})
    w2 = setv("w2", 11, "B", 1, {"G": 1})
    w3 = setv("w3", 12, "A", 2, {"G": 1})
    lists = every_order([w1, w2, w3])
    assert all(x == lists[0] for x in lists)
    assert [(c[3], c[5]) for c in lists[0]] == [("w3", "w2")]


def test_equal_values_written_concurrently_are_no_conflict():
    a = setv("same", 10, "A", 1, {"G": 1})
    b = setv("same", 11, "B", 1, {"G": 1})
    assert every_order([a, b]) == [[], []]


def test_a_write_that_saw_both_sides_clears_the_conflict_in_every_order():
    """`resolve --take theirs` on a third device is a change set whose deps cover both
    writes: wherever it lands, before or after either side, nothing stays listed."""
    a = setv("by-a", 10, "A", 1, {"G": 1})
    b = setv("by-b", 11, "B", 1, {"G": 1})
    r = setv("by-a", 12, "C", 1, {"G": 1, "A": 1, "B": 1})
    for perm in itertools.permutations([a, b, r]):
        s = state_of(GENESIS, *perm)
        assert listing(s) == [], perm
        assert s.entity(ENT).regs[REGS[0]].value == "by-a"
        assert s.contested == set()


def test_a_later_write_by_one_side_that_saw_the_other_also_clears_it():
    a = setv("by-a", 10, "A", 1, {"G": 1})
    b = setv("by-b", 11, "B", 1, {"G": 1})
    b2 = setv("by-b", 12, "B", 2, {"G": 1, "A": 1})  # resolve --take ours on B
    assert every_order([a, b, b2]) == [[]] * 6


def test_only_the_unresolved_side_stays_listed_when_three_wrote():
    a = setv("a", 10, "A", 1, {"G": 1})
    b = setv("b", 11, "B", 1, {"G": 1})
    c = setv("c", 12, "C", 1, {"G": 1})
    r = setv("b", 13, "D", 1, {"G": 1, "A": 1, "B": 1})  # saw A and B, not C
    lists = every_order([a, b, c, r])
    assert all(x == lists[0] for x in lists)
    # C's write is concurrent with the resolution: C holds the register (greater hlc? no:
    # the resolution's 13 wins), and C's "c" is the one loser left.
    assert [(x[3], x[5]) for x in lists[0]] == [("b", "c")]


def test_an_edit_concurrent_with_a_delete_is_listed_and_a_delete_that_saw_it_is_not():
    e = setv("edited", 10, "A", 1, {"G": 1})
    d1 = CS([("d", ENT)], 11, "B", 1, {"G": 1})
    lists = every_order([e, d1])
    assert lists[0] == lists[1]
    assert [(x[2], x[5]) for x in lists[0]] == [(("#deleted",) + REGS[0], "edited")]
    d2 = CS([("d", ENT)], 12, "C", 1, {"G": 1, "A": 1})  # deleted after seeing the edit
    assert every_order([e, d2]) == [[], []]
    # Deleting again after seeing the edit (resolving the delete conflict) clears it.
    d3 = CS([("d", ENT)], 13, "B", 2, {"G": 1, "A": 1})
    assert every_order([e, d1, d3]) == [[]] * 6


def test_frontier_and_deletes_survive_a_reload():
    a = setv("by-a", 10, "A", 1, {"G": 1})
    b = setv("by-b", 11, "B", 1, {"G": 1})
    e = setv("x", 12, "A", 2, {"G": 1}, rid=REGS[1])
    s = state_of(GENESIS, a, b)
    d = CS([("d", ENT)], 14, "B", 2, {"G": 1, "B": 1})
    deps = {cs.origin: cs.deps for cs in (GENESIS, a, b, e, d)}
    t = State(ENV, deps_lookup=deps.get)
    for uuid in s.entities:
        t.load_record(uuid, s.entity_record(uuid))
    assert listing(t) == listing(s) and len(listing(t)) == 1
    # Still a working register: a resolution after the reload clears it.
    setv("by-a", 13, "C", 1, {"G": 1, "A": 1, "B": 1}).apply_to(t)
    assert listing(t) == []
    for cs in (e, d):
        cs.apply_to(s)
    u = State(ENV, deps_lookup=deps.get)
    for uuid in s.entities:
        u.load_record(uuid, s.entity_record(uuid))
    assert listing(u) == listing(s) != []
    assert u.entity(ENT).dels == s.entity(ENT).dels


def test_a_copy_keeps_conflicts_and_is_independent():
    a = setv("by-a", 10, "A", 1, {"G": 1})
    b = setv("by-b", 11, "B", 1, {"G": 1})
    s = state_of(GENESIS, a, b)
    c = s.copy()
    setv("done", 12, "C", 1, {"G": 1, "A": 1, "B": 1}).apply_to(c)
    assert listing(c) == [] and len(listing(s)) == 1


def test_close_deps():
    deps = {("A", 1): {"C": 5}, ("B", 2): {"A": 1, "C": 5}, ("D", 3): {"B": 2, "C": 7}}
    # B applied A#1 (which had seen C#5) before C#5 arrived: its next change set says C#5.
    assert close_deps({"A": 1, "B": 2}, None, "B", deps.get) == {"A": 1, "C": 5}
    # An editor that had only seen A#1: not D#3, though applied here.
    assert close_deps({"A": 1, "B": 2, "D": 3}, {"A": 1}, "B", deps.get) == {"A": 1, "C": 5}
    # Never more than applied, and never the device itself.
    assert close_deps({"A": 1}, {"A": 9, "Z": 3}, "B", deps.get) == {"A": 1, "C": 5}
    # Our own previous change set's knowledge is kept (B#2 had seen A#1).
    assert close_deps({"A": 1, "B": 2}, {}, "B", deps.get) == {"A": 1, "C": 5}


def test_closed_deps_keep_a_chain_of_overwrites_free_of_conflicts_in_every_order():
    """C writes x; A, having seen it, writes y; B receives A's change set before C's (the
    relay delivers each device's chain separately) and writes z. Every write saw the one
    before, so nothing is in conflict; with B's deps unclosed ({A: 1}) one order would list
    C's x as concurrent with z and another would not."""
    c1 = setv("x", 10, "C", 1, {"G": 1})
    a1 = setv("y", 11, "A", 1, {"G": 1, "C": 1})
    known = {GENESIS.origin: GENESIS.deps, c1.origin: c1.deps, a1.origin: a1.deps}
    deps = close_deps({"G": 1, "A": 1}, None, "B", known.get)
    assert deps == {"A": 1, "C": 1, "G": 1}
    b1 = setv("z", 12, "B", 1, deps)
    assert every_order([c1, a1, b1]) == [[]] * 6
    unclosed = setv("z", 12, "B", 1, {"G": 1, "A": 1})
    assert len({tuple(x) for x in every_order([c1, a1, unclosed])}) == 2  # order-dependent


# ------------------------------------------------------------------ random histories


def _simulate(seed: int) -> list[CS]:
    """Devices that write and receive change sets in random, non-causal order (each author's
    own chain in order, as the store enforces), stamping deps as the store does: the version
    vector of what the editor had (sometimes an older one), closed with `close_deps`."""
    rng = random.Random(seed)
    devices = ["A", "B", "C", "D"][: rng.randint(2, 4)]
    sent: list[CS] = []
    have: dict[str, list[CS]] = {d: [GENESIS] for d in devices}
    snapshots: dict[str, list[dict[str, int]]] = {d: [{"G": 1}] for d in devices}
    clock = {d: 1 for d in devices}
    deps_of = {GENESIS.origin: GENESIS.deps}
    for _ in range(rng.randint(6, 14)):
        d = rng.choice(devices)
        vv: dict[str, int] = {}
        for cs in have[d]:
            vv[cs.origin[0]] = max(vv.get(cs.origin[0], 0), cs.origin[1])
        missing = [cs for cs in sent if cs not in have[d]
                   and cs.origin[1] == vv.get(cs.origin[0], 0) + 1]
        if missing and rng.random() < 0.5:
            cs = rng.choice(missing)
            have[d].append(cs)
            clock[d] = max(clock[d], cs.stamp[0])
            snapshots[d].append({**vv, cs.origin[0]: cs.origin[1]})
            continue
        seen = rng.choice(snapshots[d]) if rng.random() < 0.3 else None
        seq = vv.get(d, 0) + 1
        deps = close_deps(vv, seen, d, deps_of.get)
        clock[d] += 1
        rid = rng.choice(REGS)
        ops: list[tuple] = ([("d", ENT)] if rng.random() < 0.08 else
                            [("s", ENT, rid, rng.choice(["x", "y", "z"]))])
        cs = CS(ops, clock[d], d, seq, deps)
        deps_of[cs.origin] = deps
        sent.append(cs)
        have[d].append(cs)
        snapshots[d].append({**vv, d: seq})
    return sent


def _reference(sent: list[CS]) -> set[tuple]:
    """Conflicts by definition, from the whole set at once: in each register, the writes
    no other write happened after, other than the winner, with another value."""
    deps = {cs.origin: cs.deps for cs in sent}
    writes: dict[tuple, list[tuple]] = {}
    deletes = [cs.origin for cs in sent if cs.ops[0][0] == "d"]
    for cs in sent:
        for op in cs.ops:
            if op[0] == "s":
                writes.setdefault(op[2], []).append((op[3], cs.stamp, cs.origin))

    def before(a, b):
        return a != b and happened_before(a, b, deps[b])

    out = set()
    for rid, ws in writes.items():
        top = [w for w in ws if not any(before(w[2], x[2]) for x in ws)]
        winner = max(ws, key=lambda w: w[1])
        for value, stamp, origin in top:
            if deletes:
                if all(not before(origin, d) and not before(d, origin) for d in deletes):
                    out.add((("#deleted",) + rid, value, stamp))
            elif origin != winner[2] and value != winner[0]:
                out.add((rid, value, stamp))
    return out


@pytest.mark.parametrize("seed", range(60))
def test_random_histories_list_the_same_conflicts_in_every_order(seed):
    sent = _simulate(seed)
    rng = random.Random(seed)
    results = set()
    for _ in range(8):
        order = sent[:]
        rng.shuffle(order)
        s = state_of(GENESIS, *order)
        for cs in rng.sample(order, len(order) // 2):  # duplicates
            cs.apply_to(s)
        results.add(tuple(listing(s)))
        got = {(c.field, None if c.loser_value is ABSENT else c.loser_value, c.loser_stamp)
               for c in s.conflicts}
        assert got == _reference(sent), order
    assert len(results) == 1


def test_the_take_that_flips_a_conflict_depends_on_who_wrote_its_loser() -> None:
    from mocksync.errors import ValidationError
    from mocksync.model.resolution import flip_take, takes_loser

    c = {"winner": {"device": "W", "value": 1}, "loser": {"device": "L", "value": 2}}
    # On the device whose write lost, "ours" is the lost value: `--take ours` flips.
    assert flip_take(c, "L") == "ours"
    assert takes_loser(c, "ours", "L") and not takes_loser(c, "theirs", "L")
    # On the winner's device and on a device that wrote neither, "ours" is the kept value.
    for dev in ("W", "X"):
        assert flip_take(c, dev) == "theirs"
        assert takes_loser(c, "theirs", dev) and not takes_loser(c, "ours", dev)
    with pytest.raises(ValidationError):
        takes_loser(c, "mine", "L")
