"""One thread that does the daemon's heavy store work, so no peer can stall the event loop.

Why (issue 12 "no single peer can stall a process", issue 15 "a 15 MB first sync never blocks
the loop more than 50 ms"): verifying, ingesting and materialising a change set from a peer
is pure Python that scales with what the peer sent (a first sync of a 15 MB environment takes
seconds). Run on the event loop, it delays everything else the daemon does, `mocksync status`
included, for as long as a peer wants.

How: every such job (remote ingest, the render and write of an environment's file) runs on
ONE dedicated thread, one job at a time, in the order the loop submitted them (so change sets
apply in arrival order and a file write follows the ingest that caused it). That thread uses
its own SQLite connection (the store opens one per thread; WAL lets the loop read committed
data meanwhile). Code on the loop that changes the store or its in-memory state (an editor's
save, a CLI command) takes a *turn*: it waits, without blocking the loop, until the job on the
thread is done, and no job starts until the turn is over. Reads that only need committed
rows (`status`) take no turn and answer at once.

The turn is an `asyncio.Lock`, which is FIFO-fair: a save waits for at most the jobs queued
before it, so a flood of change sets cannot starve local edits, nor the reverse.

The garbage collector: a thread does not free the loop from a collection, which stops every
thread while it walks the young objects. A 15 MB first sync makes millions of them, and a
collection in the middle of it held the loop for 0.5-1.2 s (measured). So the collector is
off while a job runs; after a job that left more than FREEZE_AFTER_OBJECTS new objects (an
environment's State, long-lived by nature) they are moved out of its sight (`gc.freeze`)
instead of being walked, and it is switched back on. Small jobs leave the collector as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import WorkerClosedError

T = TypeVar("T")

#: Name of the worker thread (seen in `py-spy`, thread dumps and the daemon's log).
THREAD_NAME = "mocksync-store"
#: A job that left at least this many new container objects (the collector's count) has
#: built long-lived state: they are frozen rather than walked by the next collection.
FREEZE_AFTER_OBJECTS = 200_000


class StoreWorker:
    """A single-threaded, FIFO job runner for store work, with loop-side exclusive turns.

    Create it on the running loop. `run(fn, ...)` runs `fn` on the worker thread and returns
    its result (or raises its exception) on the loop; `turn()` is an async context manager
    for loop-side code that touches the store exclusively."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        self._turn = asyncio.Lock()
        self._thread: int | None = None
        self._closed = False
        #: Jobs submitted and not finished (the turn waiters included): for `status`/tests.
        self.pending = 0
        self.done = 0

    # ------------------------------------------------------------------ jobs
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the worker thread after every job submitted before it."""
        if self._closed:
            raise WorkerClosedError("the daemon is stopping; no more store work is taken")
        self.pending += 1
        try:
            async with self._turn:
                return await self._loop.run_in_executor(self._pool, self._call, fn, args)
        finally:
            self.pending -= 1
            self.done += 1

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._thread = threading.get_ident()
        collecting = gc.isenabled()
        if collecting:
            gc.disable()  # no stop-the-world collection in the middle of a big job
        try:
            return fn(*args)
        finally:
            if collecting:
                if gc.get_count()[0] >= FREEZE_AFTER_OBJECTS:
                    gc.freeze()
                gc.enable()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Exclusive use of the store on the loop: no job runs until the block ends."""
        self.pending += 1
        try:
            async with self._turn:
                yield
        finally:
            self.pending -= 1

    @property
    def busy(self) -> bool:
        """A job (or a loop-side turn) holds the store right now."""
        return self._turn.locked()

    @property
    def closed(self) -> bool:
        """`close()` was called: no job is taken any more."""
        return self._closed

    def on_worker(self) -> bool:
        """Is the calling code running on the worker thread?"""
        return self._thread is not None and threading.get_ident() == self._thread

    # ------------------------------------------------------------------ lifecycle
    async def drain(self) -> None:
        """Wait until every job submitted so far is done."""
        async with self._turn:
            pass

    async def close(self) -> None:
        """Finish the jobs already submitted, refuse new ones, and end the thread."""
        if self._closed:
            return
        await self.drain()
        self._closed = True
        await self._loop.run_in_executor(None, self._pool.shutdown, True)


__all__ = ["FREEZE_AFTER_OBJECTS", "THREAD_NAME", "StoreWorker", "WorkerClosedError"]
