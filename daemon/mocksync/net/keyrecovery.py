"""What a device does when a change set arrives sealed with a key generation it lacks (pure).

Why this exists: removing a member rotates the space's content key (a `rotate_key` membership
entry seals the new generation to every remaining device). Senders upload that entry to the
relay before the first envelope sealed with it (`relay_transport._upload`), so a connected
device normally learns the key first. But a device can still meet an unknown generation (an
envelope stored by an older sender, entries it failed to receive, a rotation it was added
concurrently with); without a way out it would drop those change sets, and every later one of
the same chain would wait for them forever. So the transport records the generation it lacks
and asks this module what to do: pull again as soon as it holds the key, otherwise wait a
little for the membership entries that carry it, then reconnect (the relay re-sends the whole
log at each welcome, and the catch-up that follows re-fetches what could not be opened), a
bounded number of times with growing waits. Never stuck silently: when it gives up, `status`
says which generation is missing and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backoff import backoff_delay

#: Seconds to wait for membership entries carrying a missing key before reconnecting.
KEY_WAIT_S = 1.0
#: Longest wait between two reconnects made to fetch a missing key.
KEY_WAIT_MAX_S = 60.0
#: Reconnects made for one missing generation before giving up (status then says so).
MAX_KEY_RECONNECTS = 5

PULL, RECONNECT, GIVE_UP = "pull", "reconnect", "give_up"


@dataclass(frozen=True)
class KeyStep:
    """`action`: PULL (the key is here: fetch the change sets again now), RECONNECT (after
    waiting `wait_s` for the key to arrive by itself), or GIVE_UP (with `reason`)."""

    action: str
    wait_s: float = 0.0
    reason: str = ""


def key_step(held_gen: int, needed_gen: int, reconnects: int) -> KeyStep:
    """The next step for change sets sealed with `needed_gen` when this device holds key
    generations up to `held_gen` and has already reconnected `reconnects` times for it."""
    if needed_gen <= held_gen:
        return KeyStep(PULL)
    if reconnects >= MAX_KEY_RECONNECTS:
        return KeyStep(GIVE_UP, reason=(
            f"change sets are sealed with key generation {needed_gen}, but this device holds "
            f"only up to {held_gen} and the relay's membership log gave it no newer key after "
            f"{reconnects} tries; ask an admin to check `mocksync members` (a device added "
            "while the key rotated needs the key sealed to it again)"))
    return KeyStep(RECONNECT, wait_s=backoff_delay(reconnects, KEY_WAIT_S, KEY_WAIT_MAX_S))


__all__ = ["GIVE_UP", "KEY_WAIT_MAX_S", "KEY_WAIT_S", "KeyStep", "MAX_KEY_RECONNECTS", "PULL",
           "RECONNECT", "key_step"]
