"""Awaiting with a time limit, without `asyncio.wait_for`'s Python 3.11 flaw.

Why: on 3.11, a task cancelled at the moment the awaitable it waits for (with `wait_for`)
completes goes on as if never cancelled (the cancel is swallowed: CPython gh-86296, fixed in
3.12). Our loops end by being cancelled; one that swallowed its cancel ran on, and the
`stop()` awaiting its end waited forever (a daemon that never stopped: seen as a hung test
teardown under load). `asyncio.timeout` (3.11+) keeps a cancel that is not its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(timeout: float | None, aw: Awaitable[T]) -> T:
    """`await aw`, raising TimeoutError after `timeout` seconds (None: no limit), as
    `asyncio.wait_for(aw, timeout)` does, but a cancel of the caller is never lost."""
    async with asyncio.timeout(timeout):
        return await aw
