"""Red team of `aiotime.within` (issue 15 replaced every `asyncio.wait_for` with it): the
call sites' semantics at the edges stay what they were, or get better where named."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mocksync.aiotime import within


async def test_zero_or_negative_timeout_on_a_pending_wait_times_out() -> None:
    for timeout in (0, -5):
        with pytest.raises(TimeoutError):
            await within(timeout, asyncio.Event().wait())


async def test_zero_timeout_on_what_is_ready_returns_it() -> None:
    """(`wait_for(aw, 0)` on 3.11 timed out even then: `wait_connected(0)` of a connected
    client said no. `within` answers from what is there.)"""
    ready = asyncio.Event()
    ready.set()
    assert await within(0, ready.wait()) is True
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    done.set_result(7)
    assert await within(-1, done) == 7


async def test_a_task_awaited_is_cancelled_on_timeout_and_a_shielded_one_is_not() -> None:
    bare = asyncio.create_task(asyncio.sleep(10))
    with pytest.raises(TimeoutError):
        await within(0.01, bare)
    assert bare.cancelled()
    kept = asyncio.create_task(asyncio.sleep(0.05, "kept"))
    with pytest.raises(TimeoutError):
        await within(0.01, asyncio.shield(kept))
    assert not kept.cancelled()
    assert await kept == "kept"


async def test_a_queue_item_arriving_as_the_timeout_fires_is_not_lost() -> None:
    """`control.py` waits for a subscriber's next event with `within`: a timeout landing as
    an item is put leaves the item in the queue for the next get."""
    q: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for delay in (0.0, 0.001, 0.002, 0.005):
        loop.call_later(0.01 + delay, q.put_nowait, 1)
        got: list[int] = []
        with contextlib.suppress(TimeoutError):
            got.append(await within(0.01, q.get()))
        await asyncio.sleep(0.02)
        while not q.empty():
            got.append(q.get_nowait())
        assert got == [1]
