"""The store worker (agent/storeworker.py): jobs run on one other thread, in submission order;
a loop-side turn never overlaps a job; the collector is off during a job and big jobs freeze
what they built; nothing is taken after close."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from mocksync.agent.errors import WorkerClosedError
from mocksync.agent.storeworker import FREEZE_AFTER_OBJECTS, StoreWorker


async def test_jobs_run_off_the_loop_in_submission_order() -> None:
    w = StoreWorker()
    loop_thread = threading.get_ident()
    seen: list[tuple[int, int]] = []

    def job(i: int) -> int:
        time.sleep(0.005 * (5 - i % 5))  # later jobs are quicker: order is not by duration
        seen.append((i, threading.get_ident()))
        return i * i

    results = await asyncio.gather(*(w.run(job, i) for i in range(12)))
    assert results == [i * i for i in range(12)]
    assert [i for i, _t in seen] == list(range(12))
    threads = {t for _i, t in seen}
    assert len(threads) == 1 and loop_thread not in threads
    await w.close()


async def test_a_turn_never_overlaps_a_job_and_waits_its_place() -> None:
    w = StoreWorker()
    log: list[str] = []
    running = threading.Event()

    def slow() -> None:
        running.set()
        log.append("job start")
        time.sleep(0.1)
        log.append("job end")

    async def turn() -> None:
        while not running.is_set():
            await asyncio.sleep(0.001)
        assert w.busy
        async with w.turn():
            log.append("turn")

    ticks = 0

    async def ticker() -> None:  # the loop keeps running while the turn waits
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    t = asyncio.create_task(ticker())
    await asyncio.gather(w.run(slow), turn())
    t.cancel()
    assert log == ["job start", "job end", "turn"]
    assert ticks >= 5
    await w.close()


async def test_job_exceptions_reach_the_caller_and_the_worker_goes_on() -> None:
    w = StoreWorker()

    def bad() -> None:
        raise ValueError("refused for the test")

    with pytest.raises(ValueError, match="refused for the test"):
        await w.run(bad)
    assert await w.run(lambda: 7) == 7
    await w.close()


async def test_collector_is_off_during_a_job_and_big_jobs_are_frozen() -> None:
    assert gc.isenabled()
    w = StoreWorker()
    during: list[bool] = []
    kept: list[list[int]] = []

    def big() -> None:
        during.append(gc.isenabled())
        kept.extend([i] for i in range(FREEZE_AFTER_OBJECTS + 10))  # long-lived state

    frozen_before = gc.get_freeze_count()
    try:
        await w.run(big)
        assert during == [False]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + FREEZE_AFTER_OBJECTS
        before = gc.get_freeze_count()
        await w.run(lambda: [[i] for i in range(10)])  # small: nothing frozen
        assert gc.get_freeze_count() <= before  # (frozen objects may die meanwhile)
    finally:
        gc.unfreeze()  # give the test process its collector back as it was
        await w.close()


async def test_nothing_is_taken_after_close() -> None:
    w = StoreWorker()
    assert await w.run(lambda: 1) == 1
    await w.close()
    assert w.closed
    with pytest.raises(WorkerClosedError):
        await w.run(lambda: 2)
