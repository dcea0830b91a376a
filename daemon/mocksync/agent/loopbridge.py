"""Where agent code runs: the event loop, the store worker thread, and the tasks to cancel.

Why a part of its own: the store worker (issue 12) runs heavy store work off the loop, so
every other part must know, before it touches a timer, a transport or a listener, whether it
is on the loop, and must be able to hand work to the worker in order. This is that one
place; it decides nothing about environments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .storeworker import StoreWorker

log = logging.getLogger("mocksync.agent")


def _log_failure(fut: Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("spare-thread job failed", exc_info=fut.exception())


class LoopBridge:
    """The loop, the store worker and the agent's background tasks (owned by `Agent`)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        #: The thread that does heavy store work (remote ingest, big renders and writes) in
        #: arrival order, off the loop (issue 12); loop code that changes the store takes a
        #: turn on it. None until `start` (an Agent used without a loop works as before).
        self.worker: StoreWorker | None = None
        #: Background tasks (watch loop, store jobs, linked-file poll, refetch): cancelled
        #: and awaited by `cancel_all` when the daemon stops.
        self.tasks: list[asyncio.Task[Any]] = []
        #: One thread for pure CPU work that touches no store and no loop object (a big
        #: file's span index, issue 15): neither the loop nor the store worker's queue waits
        #: for it. Made on first use, ended by `cancel_all`.
        self._spare: ThreadPoolExecutor | None = None
        self._spare_closed = False

    def attach(self) -> None:
        """Bind to the running loop and start the store worker (`Agent.start`)."""
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.worker = StoreWorker()

    def spawn(self, task: asyncio.Task[Any]) -> None:
        """Keep `task` so that `cancel_all` ends it (finished ones are dropped)."""
        self.tasks = [t for t in self.tasks if not t.done()] + [task]

    async def cancel_all(self) -> None:
        """Cancel every background task and wait for each to end (failures are swallowed:
        the daemon is stopping); spare work not started is dropped."""
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        spare, self._spare = self._spare, None
        self._spare_closed = True  # (a later `on_spare`, from a last job, starts no thread)
        if spare is not None:
            spare.shutdown(wait=False, cancel_futures=True)

    def on_spare(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run `fn(*args)` on the spare thread, from any thread (a failure is logged). Only
        for work that reads what it is handed and publishes its result with one atomic
        step (a dict item set); False when there is no loop (the caller may skip the work,
        or do it itself)."""
        if self.loop is None or self.loop.is_closed() or self._spare_closed:
            return False
        if self._spare is None:
            self._spare = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mocksync-spare")
        try:
            fut = self._spare.submit(fn, *args)
        except RuntimeError:  # shut down meanwhile: the daemon is stopping
            return False
        fut.add_done_callback(_log_failure)
        return True

    def off_loop(self) -> bool:
        """Is this code running on another thread than the loop's (the store worker)?"""
        return self.loop_thread is not None and threading.get_ident() != self.loop_thread

    def to_loop(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Off the loop: queue `fn(*args)` to run on the loop (in call order) and return
        True; on the loop: False, and the caller goes on. For what is loop-bound: timers,
        transports, event listeners."""
        if not self.off_loop() or self.loop is None or self.loop.is_closed():
            return False
        self.loop.call_soon_threadsafe(fn, *args)
        return True

    def store_turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Exclusive use of the store for loop code (waits for the job on the store worker,
        never blocking the loop); a no-op without a worker."""
        if self.worker is None:
            return contextlib.nullcontext()
        return self.worker.turn()

    def spawn_on_worker(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run `fn(*args)` as a store-worker job, in order after those queued (a failure is
        logged); False when there is no worker to run it on, or we already are on it (the
        caller then runs it itself)."""
        worker = self.worker
        if worker is None or self.loop is None or self.off_loop() or worker.closed:
            return False

        async def job() -> None:
            try:
                await worker.run(fn, *args)
            except Exception:
                log.exception("store job %s failed", getattr(fn, "__name__", fn))

        task = self.loop.create_task(job(), name=f"store:{getattr(fn, '__name__', 'job')}")
        self.spawn(task)
        return True
