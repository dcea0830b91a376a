"""The one bounded wait of the test suite.

Every test that waits for something the system does by itself waits through here, so every
wait has a deadline and fails with a sentence naming what was awaited (and, if asked, what was
seen last), instead of hanging until pytest-timeout kills the run without saying why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mocksync.agent.client import ControlError

#: Longest a test waits for anything the system should do by itself (seconds).
WAIT_S = 10.0
#: What a look may raise while the thing looked at is in flux (a file mid-replace, a document
#: not there yet, a daemon still starting): try again rather than fail.
TRANSIENT = (OSError, ValueError, KeyError, ControlError)


def _look(pred: Callable[[], Any]) -> Any:
    try:
        return pred()
    except TRANSIENT:
        return None


def _timed_out(what: str, timeout: float, why: Callable[[], Any] | None) -> AssertionError:
    detail = f": {why()}" if why is not None else ""
    return AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


async def wait_until(pred: Callable[[], Any], what: str, timeout: float = WAIT_S,
                     step: float = 0.01, why: Callable[[], Any] | None = None) -> Any:
    """Poll `pred` until it returns something truthy (returned); fail naming `what` (and
    `why()`, the last thing seen, when given) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = _look(pred)
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, why)
        await asyncio.sleep(step)


def wait_sync(pred: Callable[[], Any], what: str, timeout: float = WAIT_S,
              step: float = 0.02, why: Callable[[], Any] | None = None) -> Any:
    """`wait_until` for code that is not on an event loop (subprocess daemons, threads)."""
    deadline = time.monotonic() + timeout
    while True:
        value = _look(pred)
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, why)
        time.sleep(step)
