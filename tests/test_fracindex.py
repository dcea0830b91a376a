"""Fractional-index position keys: every key made is valid and strictly between its neighbours,
bulk keys are increasing, jitter keeps concurrent inserts apart, and the common edits (append
at the end, insert at the front) keep keys short."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.model.fracindex import (
    DIGITS,
    JITTER_DIGITS,
    MAX_KEY_LENGTH,
    is_valid_key,
    key_between,
    keys_between,
)

# A valid key: base-62 digits, not ending in the smallest digit.
valid_keys = st.builds(
    lambda body, last: body + last,
    st.text(alphabet=DIGITS, max_size=12),
    st.sampled_from(DIGITS[1:]),
)
maybe_rng = st.one_of(st.none(), st.integers(0, 2**32).map(random.Random))


def test_digits_sort_like_their_values():
    # Keys are compared as plain strings, so the alphabet must be in code point order.
    assert list(DIGITS) == sorted(DIGITS)
    assert len(set(DIGITS)) == len(DIGITS) == 62


@pytest.mark.parametrize("key", ["V", "1", "z", "0001", "Az9", "a" * MAX_KEY_LENGTH])
def test_valid_keys(key):
    assert is_valid_key(key)


@pytest.mark.parametrize(
    "key", ["", "0", "V0", "a-b", "é", None, 5, ["V"], "a" * (MAX_KEY_LENGTH + 1), "V "]
)
def test_invalid_keys(key):
    assert not is_valid_key(key)


def test_first_key_of_an_empty_list():
    k = key_between(None, None)
    assert is_valid_key(k)
    k2 = key_between(None, None, random.Random(3))
    assert is_valid_key(k2)
    assert len(k2) == len(k) + JITTER_DIGITS


@pytest.mark.parametrize("lo,hi", [("V", "V"), ("W", "V"), ("", "")])
def test_refuses_bounds_out_of_order(lo, hi):
    with pytest.raises(ValueError):
        key_between(lo, hi)


@pytest.mark.parametrize(
    "lo,hi",
    [
        (None, "1"), (None, "01"), (None, "0001"), ("z", None), ("zzzz", None), ("y", None),
        ("V", "W"), ("V", "V1"), ("V", "V01"), ("Vz", "W"), ("Vzzz", "W1"), ("1", "2"),
        ("0001", "0002"), ("A", "B"), ("9", "A"), ("Z", "a"), ("yz", "z"), ("zy", "zz"),
    ],
)
def test_tight_spots(lo, hi):
    for rng in (None, random.Random(1), random.Random(2)):
        k = key_between(lo, hi, rng)
        assert is_valid_key(k), k
        assert lo is None or lo < k, (lo, k)
        assert hi is None or k < hi, (k, hi)


@settings(max_examples=400, deadline=None)
@given(a=st.one_of(st.none(), valid_keys), b=st.one_of(st.none(), valid_keys), rng=maybe_rng)
def test_key_between_is_valid_and_strictly_between(a, b, rng):
    if a is not None and b is not None:
        if a == b:
            return
        a, b = min(a, b), max(a, b)
    k = key_between(a, b, rng)
    assert is_valid_key(k)
    if a is not None:
        assert a < k
    if b is not None:
        assert k < b


@settings(max_examples=200, deadline=None)
@given(a=st.one_of(st.none(), valid_keys), b=st.one_of(st.none(), valid_keys),
       n=st.integers(0, 60), rng=maybe_rng)
def test_keys_between_are_increasing_valid_and_inside(a, b, n, rng):
    if a is not None and b is not None:
        if a == b:
            return
        a, b = min(a, b), max(a, b)
    ks = keys_between(a, b, n, rng)
    assert len(ks) == n
    assert all(is_valid_key(k) for k in ks)
    assert ks == sorted(ks)
    assert len(set(ks)) == n
    if ks:
        assert a is None or a < ks[0]
        assert b is None or ks[-1] < b


def test_keys_between_lengths_grow_like_log_n():
    ks = keys_between(None, None, 5000, random.Random(0))
    assert ks == sorted(ks) and len(set(ks)) == 5000
    assert max(map(len, ks)) <= 12


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), inserts=st.lists(st.floats(0, 1), min_size=1, max_size=150))
def test_random_inserts_keep_a_sorted_valid_list(seed, inserts):
    """A list edited by many inserts at random spots (as devices do) stays strictly ordered."""
    rng = random.Random(seed)
    keys: list[str] = []
    for where in inserts:
        i = int(where * len(keys))
        lo = keys[i - 1] if i > 0 else None
        hi = keys[i] if i < len(keys) else None
        k = key_between(lo, hi, rng)
        keys.insert(i, k)
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert all(is_valid_key(k) for k in keys)


def test_two_devices_inserting_at_the_same_spot_pick_different_keys():
    lo, hi = "V", "W"
    a = key_between(lo, hi, random.Random(1))
    b = key_between(lo, hi, random.Random(2))
    assert a != b
    assert lo < a < hi and lo < b < hi
    # Without jitter the same spot gives the same key (ties then sort by uuid).
    assert key_between(lo, hi) == key_between(lo, hi)


@pytest.mark.parametrize("jitter", [False, True])
def test_2000_appends_stay_short(jitter):
    rng = random.Random(7) if jitter else None
    k = None
    prev = []
    for _ in range(2000):
        k = key_between(k, None, rng)
        prev.append(k)
    assert prev == sorted(prev) and len(set(prev)) == 2000
    assert all(is_valid_key(x) for x in prev)
    assert max(map(len, prev)) < 100


@pytest.mark.parametrize("jitter", [False, True])
def test_2000_prepends_stay_short(jitter):
    rng = random.Random(8) if jitter else None
    k = None
    prev = []
    for _ in range(2000):
        k = key_between(None, k, rng)
        prev.append(k)
    assert prev == sorted(prev, reverse=True) and len(set(prev)) == 2000
    assert all(is_valid_key(x) for x in prev)
    assert max(map(len, prev)) < 100


def test_repeated_inserts_at_one_spot_stay_valid():
    rng = random.Random(9)
    a = key_between(None, None, rng)
    b = key_between(a, None, rng)
    hi, lo = b, a
    for _ in range(500):
        hi = key_between(a, hi, rng)  # always right after a
        lo = key_between(lo, b, rng)  # always right before b
        assert a < hi < b and a < lo < b
    assert is_valid_key(hi) and is_valid_key(lo)
    assert len(hi) < 200 and len(lo) < 200


def test_20000_appends_stay_valid():
    """Keys grow a digit per ~30 appends; MAX_KEY_LENGTH leaves room for ~100,000."""
    rng = random.Random(10)
    k = None
    for _ in range(20_000):
        k = key_between(k, None, rng)
    assert is_valid_key(k)
