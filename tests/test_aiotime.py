"""`within`: a time-limited await that never loses a cancel (see mocksync/aiotime.py)."""

from __future__ import annotations

import asyncio

import pytest

from mocksync.aiotime import within


async def _cancel_as_it_finishes(waiter: object) -> asyncio.Task[object]:
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def run() -> object:
        return await waiter(fut)  # type: ignore[operator]

    task = asyncio.create_task(run())
    await asyncio.sleep(0)  # the task now waits on `fut`
    fut.set_result("reply")  # the reply lands...
    task.cancel()  # ...and the stop comes in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await task
    return task


async def test_a_cancel_that_lands_as_the_awaited_result_does_is_kept() -> None:
    """The daemon's loops end by being cancelled; with `asyncio.wait_for` on Python 3.11
    this very interleaving let the task go on (and a `stop()` awaiting it hung)."""
    task = await _cancel_as_it_finishes(lambda fut: within(10, fut))
    assert task.cancelled()


async def test_within_times_out_and_returns_as_wait_for_does() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await within(0.01, never)
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    ready.set_result(7)
    assert await within(None, ready) == 7
    assert await within(1, asyncio.sleep(0, result="x")) == "x"


def test_no_daemon_code_awaits_with_wait_for() -> None:
    """Every time-limited await goes through `within` (a new `wait_for` would bring the lost
    cancel back on Python 3.11)."""
    from pathlib import Path

    import mocksync

    root = Path(mocksync.__file__).parent
    users = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if "asyncio.wait_for(" in p.read_text(encoding="utf-8") and p.name != "aiotime.py"]
    assert users == []
