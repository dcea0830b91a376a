"""Version vectors: merge laws, dominance, gaps, causality."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.changes import vv

DEVICES = ["A7Q2-K9", "B3XM-P4", "C8LD-Z1", "D2WE-R6"]
vvs = st.dictionaries(st.sampled_from(DEVICES), st.integers(1, 50), max_size=4)


def test_merge_takes_the_maximum_and_does_not_mutate():
    a = {"A": 3, "B": 1}
    b = {"B": 4, "C": 2}
    assert vv.merge(a, b) == {"A": 3, "B": 4, "C": 2}
    assert a == {"A": 3, "B": 1} and b == {"B": 4, "C": 2}


def test_dominates_and_concurrent():
    assert vv.dominates({"A": 3, "B": 2}, {"A": 3})
    assert vv.dominates({"A": 3}, {})
    assert vv.dominates({}, {})
    assert not vv.dominates({"A": 3}, {"A": 3, "B": 1})
    assert vv.concurrent({"A": 2}, {"B": 1})
    assert vv.concurrent({"A": 2, "B": 1}, {"A": 1, "B": 2})
    assert not vv.concurrent({"A": 2}, {"A": 2})
    assert not vv.concurrent({"A": 2, "B": 1}, {"A": 1})


def test_missing_gives_exclusive_inclusive_ranges():
    local = {"A": 3, "B": 5}
    remote = {"A": 7, "B": 5, "C": 2}
    assert vv.missing(local, remote) == {"A": (3, 7), "C": (0, 2)}
    assert vv.missing(remote, local) == {}


def test_covers():
    v = {"A": 4}
    assert vv.covers(v, "A", 4)
    assert vv.covers(v, "A", 1)
    assert not vv.covers(v, "A", 5)
    assert not vv.covers(v, "B", 1)


def test_happened_before():
    # same device: chain order
    assert vv.happened_before("A", 2, "A", 3, {})
    assert not vv.happened_before("A", 3, "A", 3, {})
    assert not vv.happened_before("A", 4, "A", 3, {"A": 9})
    # other device: b's author had seen a
    assert vv.happened_before("A", 2, "B", 1, {"A": 2})
    assert vv.happened_before("A", 2, "B", 1, {"A": 5})
    assert not vv.happened_before("A", 3, "B", 1, {"A": 2})
    assert not vv.happened_before("A", 1, "B", 1, {})


@settings(max_examples=200, deadline=None)
@given(a=vvs, b=vvs, c=vvs)
def test_merge_is_a_semilattice(a, b, c):
    assert vv.merge(a, b) == vv.merge(b, a)
    assert vv.merge(vv.merge(a, b), c) == vv.merge(a, vv.merge(b, c))
    assert vv.merge(a, a) == a
    m = vv.merge(a, b)
    assert vv.dominates(m, a) and vv.dominates(m, b)


@settings(max_examples=200, deadline=None)
@given(a=vvs, b=vvs)
def test_missing_fills_exactly_the_gap(a, b):
    gap = vv.missing(a, b)
    filled = dict(a)
    for device, (have, upto) in gap.items():
        assert have == a.get(device, 0) < upto == b[device]
        filled[device] = upto
    assert filled == vv.merge(a, b)
    assert (gap == {}) == vv.dominates(a, b)


@settings(max_examples=200, deadline=None)
@given(a=vvs, b=vvs)
def test_exactly_one_relation_holds(a, b):
    a_ge_b, b_ge_a = vv.dominates(a, b), vv.dominates(b, a)
    equal = a_ge_b and b_ge_a
    relations = [equal, a_ge_b and not equal, b_ge_a and not equal, vv.concurrent(a, b)]
    assert sum(relations) == 1


@settings(max_examples=200, deadline=None)
@given(deps=vvs, device=st.sampled_from(DEVICES), seq=st.integers(1, 60))
def test_happened_before_matches_covers(deps, device, seq):
    # for different devices, "a -> b" is exactly "b's deps cover a"
    assert vv.happened_before(device, seq, "Z-OTHER", 1, deps) == vv.covers(deps, device, seq)
