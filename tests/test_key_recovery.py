"""Pure decisions around key rotations and refused spaces (issue 11 items 3 and 10)."""

from __future__ import annotations

from mocksync.net.keyrecovery import (
    GIVE_UP,
    KEY_WAIT_MAX_S,
    KEY_WAIT_S,
    MAX_KEY_RECONNECTS,
    PULL,
    RECONNECT,
    key_step,
)
from mocksync.net.relay_transport import SPACE_RETRY_S, retry_refused_spaces


def test_key_already_held_means_fetch_again_now():
    assert key_step(3, 3, 0).action == PULL
    assert key_step(4, 3, 2).action == PULL


def test_missing_key_waits_then_reconnects_with_growing_bounded_waits():
    waits = []
    for n in range(MAX_KEY_RECONNECTS):
        step = key_step(2, 3, n)
        assert step.action == RECONNECT
        waits.append(step.wait_s)
    assert waits[0] == KEY_WAIT_S
    assert waits == sorted(waits) and max(waits) <= KEY_WAIT_MAX_S


def test_gives_up_after_the_bounded_tries_saying_what_is_missing():
    step = key_step(2, 3, MAX_KEY_RECONNECTS)
    assert step.action == GIVE_UP
    assert "generation 3" in step.reason and "only up to 2" in step.reason


def test_only_passing_refusals_are_asked_again_and_not_at_once():
    assert not retry_refused_spaces({}, 1000)
    assert not retry_refused_spaces({"s": "revoked"}, 1000)
    assert not retry_refused_spaces({"s": "too_many_devices"}, SPACE_RETRY_S - 1)
    assert retry_refused_spaces({"s": "too_many_devices"}, SPACE_RETRY_S)
    assert retry_refused_spaces({"s": "revoked", "t": "too_many_devices"}, SPACE_RETRY_S)
