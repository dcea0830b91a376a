"""The one bounded wait of the test suite.

Every test that waits for something the system does by itself waits through here, so every
wait has a deadline and fails with a sentence naming what was awaited and what was seen last,
instead of hanging until pytest-timeout kills the run without saying why. The journeys'
black-box `wait` is this one too (with their own "not yet" errors), so nothing here imports
`mocksync` at module level.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

#: Longest a test waits for anything the system should do by itself (seconds).
WAIT_S = 10.0
#: What a look may raise while the thing looked at is in flux (a file mid-replace, a document
#: not there yet, a daemon still starting): try again rather than fail. The daemon's
#: `ControlError` is added on first use (`_transient`): the journeys, which never import
#: `mocksync`, pass their own tuple.
TRANSIENT: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError)
#: How much of the last value seen a timeout message shows.
SHOWN_CHARS = 600


def _transient() -> tuple[type[BaseException], ...]:
    from mocksync.agent.errors import ControlError

    return (*TRANSIENT, ControlError)


class _Looker:
    """One wait's looks: the value, or None when the look raised something transient; keeps
    what was seen last for the timeout message."""

    def __init__(self, pred: Callable[[], Any],
                 transient: tuple[type[BaseException], ...] | None) -> None:
        self.pred = pred
        self.transient = transient if transient is not None else _transient()
        self.last: Any = None

    def look(self) -> Any:
        try:
            value = self.pred()
        except self.transient as exc:
            value, self.last = None, f"{type(exc).__name__}: {exc}"
        else:
            self.last = value
        return value

    def timed_out(self, what: str, timeout: float,
                  why: Callable[[], Any] | None) -> AssertionError:
        shown = repr(why() if why is not None else self.last)
        if len(shown) > SHOWN_CHARS:
            shown = shown[:SHOWN_CHARS] + "..."
        return AssertionError(f"timed out after {timeout} s waiting for {what} "
                              f"(last seen: {shown})")


def _looks(pred: Callable[[], Any], what: str, timeout: float, why: Callable[[], Any] | None,
           transient: tuple[type[BaseException], ...] | None) -> Iterator[Any]:
    """The one polling loop: yields None after each look that found nothing (the caller
    pauses), the value once one is found (then stops); raises when `timeout` has passed."""
    looker = _Looker(pred, transient)
    deadline = time.monotonic() + timeout
    while True:
        value = looker.look()
        if value:
            yield value
            return
        if time.monotonic() > deadline:
            raise looker.timed_out(what, timeout, why)
        yield None


async def wait_until(pred: Callable[[], Any], what: str, timeout: float = WAIT_S,
                     step: float = 0.01, why: Callable[[], Any] | None = None,
                     transient: tuple[type[BaseException], ...] | None = None) -> Any:
    """Poll `pred` until it returns something truthy (returned); fail naming `what` and the
    last thing seen (`why()` when given) after `timeout` seconds. `transient`: what a look
    may raise meaning "not yet" (default `TRANSIENT` and the daemon's `ControlError`)."""
    for value in _looks(pred, what, timeout, why, transient):
        if value:
            return value
        await asyncio.sleep(step)
    raise AssertionError("unreachable: _looks ends with a value or raises")


def wait_sync(pred: Callable[[], Any], what: str, timeout: float = WAIT_S,
              step: float = 0.02, why: Callable[[], Any] | None = None,
              transient: tuple[type[BaseException], ...] | None = None) -> Any:
    """`wait_until` for code that is not on an event loop (subprocess daemons, threads)."""
    for value in _looks(pred, what, timeout, why, transient):
        if value:
            return value
        time.sleep(step)
    raise AssertionError("unreachable: _looks ends with a value or raises")
