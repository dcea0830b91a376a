"""One backoff rule for every retry (`mocksync.backoff`)."""

from __future__ import annotations

import pytest

from mocksync.backoff import Backoff, backoff_delay


def test_delay_doubles_to_its_cap_and_never_overflows() -> None:
    assert [backoff_delay(n, 0.5, 5.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_delay(10_000, 0.5, 5.0) == 5.0
    assert backoff_delay(2, 1.0, 100.0, factor=3.0) == 9.0


def test_spread_is_bounded_by_the_jitter_the_caller_drew() -> None:
    assert backoff_delay(0, 1.0, 10.0, spread=0.2, jitter=1.0) == pytest.approx(1.2)
    assert backoff_delay(0, 1.0, 10.0, spread=0.2, jitter=-1.0) == pytest.approx(0.8)
    assert backoff_delay(0, 1.0, 10.0, jitter=1.0) == 1.0  # no spread, no effect


@pytest.mark.parametrize("step, jitter", [(-1, 0.0), (0, 1.5), (0, -1.01)])
def test_bad_input_is_refused(step: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        backoff_delay(step, 1.0, 2.0, jitter=jitter)


def test_a_failing_operation_backs_off_and_resets() -> None:
    b = Backoff(first_s=1.0, max_s=3.0, spread=0.5)
    assert b.failed(100.0) == 1.0 and (b.failures, b.since, b.next_at) == (1, 100.0, 101.0)
    assert b.failed(102.0) == 2.0 and b.since == 100.0
    assert b.failed(105.0, jitter=1.0) == 3.0  # capped even once spread
    b.reset()
    assert b.failed(200.0) == 1.0 and b.since == 200.0


def test_a_bad_jitter_changes_nothing() -> None:
    b = Backoff(first_s=1.0, max_s=3.0)
    with pytest.raises(ValueError):
        b.failed(1.0, jitter=2.0)
    assert (b.failures, b.since, b.next_at) == (0, 0.0, 0.0)
