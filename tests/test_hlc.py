"""Hybrid logical clock: packing, monotonicity, causality, drift refusal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.changes import hlc
from mocksync.changes.errors import ClockDriftError, InvalidHLC
from mocksync.changes.hlc import (
    COUNTER_MAX,
    MAX_DRIFT_MS,
    Clock,
    pack,
    physical_ms,
    too_far_in_future,
    unpack,
)
from mocksync.errors import ChangeSetError

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def test_pack_unpack_round_trip_and_order():
    h = pack(T0, 7)
    assert unpack(h) == (T0, 7)
    assert physical_ms(h) == T0
    assert h == (T0 << 16) | 7
    # int order is (physical, counter) order
    assert pack(T0, COUNTER_MAX) < pack(T0 + 1, 0)
    assert pack(T0, 1) < pack(T0, 2)


@pytest.mark.parametrize(
    "ms,counter",
    [(-1, 0), (0, -1), (0, COUNTER_MAX + 1), (hlc.MAX_PHYSICAL_MS + 1, 0), (1.5, 0), (True, 0)],
)
def test_pack_refuses_out_of_range(ms, counter):
    with pytest.raises(InvalidHLC):
        pack(ms, counter)


def test_unpack_refuses_out_of_range():
    for bad in (-1, 1 << 64, "5", None):
        with pytest.raises(InvalidHLC):
            unpack(bad)


def test_tick_uses_wall_clock_when_it_moves_forward():
    c = Clock()
    assert c.tick(T0) == pack(T0, 0)
    assert c.tick(T0 + 5) == pack(T0 + 5, 0)
    assert c.last == pack(T0 + 5, 0)


def test_tick_counts_when_clock_stalls_or_goes_back():
    c = Clock()
    c.tick(T0)
    assert c.tick(T0) == pack(T0, 1)
    assert c.tick(T0 - 10_000) == pack(T0, 2)
    assert c.last == pack(T0, 2)


def test_tick_counter_overflow_rolls_into_next_millisecond():
    c = Clock(last=pack(T0, COUNTER_MAX))
    assert c.tick(T0) == pack(T0 + 1, 0)
    assert c.tick(T0) == pack(T0 + 1, 1)


def test_tick_at_the_end_of_time_refuses():
    c = Clock(last=hlc.MAX_HLC)
    with pytest.raises(InvalidHLC):
        c.tick(0)
    assert c.last == hlc.MAX_HLC


def test_observe_follows_the_standard_receive_rule():
    # remote ahead of local, wall clock behind both: remote counter + 1
    c = Clock(last=pack(T0, 3))
    assert c.observe(pack(T0 + 10, 5), T0) == pack(T0 + 10, 6)
    # same physical on both: max counter + 1
    c = Clock(last=pack(T0, 9))
    assert c.observe(pack(T0, 4), T0 - 1) == pack(T0, 10)
    # local ahead: local counter + 1
    c = Clock(last=pack(T0 + 50, 2))
    assert c.observe(pack(T0, 40), T0) == pack(T0 + 50, 3)
    # wall clock ahead of both: (now, 0)
    c = Clock(last=pack(T0, 2))
    assert c.observe(pack(T0 + 1, 9), T0 + 100) == pack(T0 + 100, 0)


def test_observe_then_tick_orders_after_remote():
    c = Clock()
    remote = pack(T0 + 30_000, 77)  # within the drift allowance
    c.observe(remote, T0)
    assert c.tick(T0) > remote


def test_observe_refuses_stamps_beyond_drift_and_changes_nothing():
    c = Clock(last=pack(T0, 1))
    far = pack(T0 + MAX_DRIFT_MS + 1, 0)
    with pytest.raises(ClockDriftError) as info:
        c.observe(far, T0)
    assert isinstance(info.value, ChangeSetError)
    msg = str(info.value)
    assert str(MAX_DRIFT_MS + 1) in msg and str(MAX_DRIFT_MS) in msg
    assert c.last == pack(T0, 1)
    # exactly at the limit is accepted
    assert c.observe(pack(T0 + MAX_DRIFT_MS, 0), T0) == pack(T0 + MAX_DRIFT_MS, 1)


def test_custom_drift_limit():
    c = Clock(max_drift_ms=10)
    with pytest.raises(ClockDriftError, match="10 ms"):
        c.observe(pack(T0 + 11, 0), T0)
    assert c.last == 0


def test_observe_refuses_malformed_remote():
    c = Clock(last=pack(T0, 0))
    for bad in (-1, 1 << 64, 2.0, "x"):
        with pytest.raises(InvalidHLC):
            c.observe(bad, T0)
    assert c.last == pack(T0, 0)


def test_too_far_in_future():
    assert not too_far_in_future(pack(T0 + MAX_DRIFT_MS, 5), T0, MAX_DRIFT_MS)
    assert too_far_in_future(pack(T0 + MAX_DRIFT_MS + 1, 0), T0, MAX_DRIFT_MS)
    assert not too_far_in_future(pack(T0 - 1_000_000, 0), T0, MAX_DRIFT_MS)
    assert too_far_in_future(pack(T0 + 2, 0), T0, 1)


def test_clock_refuses_bad_construction():
    with pytest.raises(InvalidHLC):
        Clock(last=-1)
    with pytest.raises(InvalidHLC):
        Clock(max_drift_ms=-5)


events = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(0, 2**20)),
        st.tuples(
            st.just("observe"),
            st.integers(0, 2**20),
            st.integers(0, 2**20 + 70_000),
            st.integers(0, 40),
        ),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 2**20), steps=events)
def test_clock_is_strictly_monotonic_and_causal(start, steps):
    base = T0 - 2**19
    c = Clock(last=pack(base + start, 0))
    for step in steps:
        before = c.last
        if step[0] == "tick":
            now = base + step[1]
            stamp = c.tick(now)
            assert stamp > before
            assert physical_ms(stamp) >= now  # never behind the wall clock
            assert physical_ms(stamp) <= max(now, physical_ms(before)) + 1
        else:
            _, now_off, remote_off, counter = step
            now, remote = base + now_off, pack(base + remote_off, counter)
            if too_far_in_future(remote, now, c.max_drift_ms):
                with pytest.raises(ClockDriftError):
                    c.observe(remote, now)
                assert c.last == before
                continue
            stamp = c.observe(remote, now)
            assert stamp > before
            assert stamp > remote
            assert physical_ms(stamp) >= now
            # never runs ahead of the greatest of its inputs by more than the counter step
            assert physical_ms(stamp) <= max(now, physical_ms(before), physical_ms(remote)) + 1
        assert c.last == stamp
