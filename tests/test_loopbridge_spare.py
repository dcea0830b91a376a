"""`LoopBridge.on_spare`: pure CPU work on a thread that is neither the loop's nor the store
worker's (issue 15: a big file's span index), ended with the daemon's tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mocksync.agent.loopbridge import LoopBridge


async def test_spare_work_runs_off_the_loop_and_stops_with_the_bridge(
        caplog: pytest.LogCaptureFixture) -> None:
    bridge = LoopBridge()
    assert bridge.on_spare(lambda: None) is False  # no loop yet: the caller decides
    bridge.attach()
    ran: list[str] = []
    done = threading.Event()

    def job() -> None:
        ran.append(threading.current_thread().name)
        done.set()

    assert bridge.on_spare(job) is True
    assert await asyncio.to_thread(done.wait, 10)
    assert ran and ran[0].startswith("mocksync-spare")
    failed = threading.Event()

    def boom() -> None:
        failed.set()
        raise RuntimeError("spare job broke")

    assert bridge.on_spare(boom) is True
    assert await asyncio.to_thread(failed.wait, 10)
    for _ in range(100):  # the failure is logged by the future's callback
        if "spare-thread job failed" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "spare-thread job failed" in caplog.text
    await bridge.cancel_all()
    assert bridge.on_spare(job) is False  # stopped: no new thread is started
    assert bridge.worker is not None
    await bridge.worker.close()
