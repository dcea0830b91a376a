"""Machine faults of writes, commits and ingests: record, back off, retry, recover (issue 13).

The decisions (what counts as a machine fault, how long to wait, what `status` says) are
`faults.FaultBook` and `faults.classify`; this part owns the timers that retry, on the loop,
and runs each retry as a store-worker job in order with the rest.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import TYPE_CHECKING, Any

from ..agentevents import Failed, Recovered
from ..ports import Reconnecting
from .envfiles import EnvRuntime
from .faults import COMMITTING, RECEIVING, WRITING, classify

if TYPE_CHECKING:
    from .daemon import Agent

log = logging.getLogger("mocksync.agent")


class FaultRetries:
    """The pending retries of failing operations, per (environment, what)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.handles: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def flush_on_stop(self) -> None:
        """Stopping: a failing write gets one last try; every other retry waits for the
        restart (its file or log still holds what it needs)."""
        for (env, what), handle in list(self.handles.items()):
            handle.cancel()
            self.handles.pop((env, what), None)
            if what == WRITING and env in self.agent.envs:
                self.agent.writes.write_env(self.agent.envs[env], force=True)
        for handle in self.handles.values():
            handle.cancel()

    def forget(self, env: str) -> None:
        """`env` is no longer synced here: drop its fault and pending retries."""
        self.agent.faults.forget(env)
        for key in [k for k in self.handles if k[0] == env]:
            self.handles.pop(key).cancel()

    def failed(self, rt: EnvRuntime, what: str, exc: BaseException, where: str) -> bool:
        """A write, commit or store of `rt` failed. When the machine is the cause (disk full,
        no permission, I/O error, read-only; `faults.classify`): record it (`status` shows
        `error` with the sentence), log the real cause, retry by itself with backoff, and
        return True. Anything else (a bug) is not swallowed: False."""
        fault = classify(exc, where)
        if fault is None:
            return False
        if self.agent.bridge.to_loop(self.failed, rt, what, exc, where):
            return True  # (on the store worker: recorded and retried from the loop)
        now = self.agent.clock()
        delay = self.agent.faults.failed(rt.uuid, what, fault, now, self.agent.rng.uniform(-1.0, 1.0))
        log.warning("%s %s %s: %s; retrying in %.1f s", fault.kind, what, rt.path.name,
                    fault.cause, delay)
        key = (rt.uuid, what)
        old = self.handles.pop(key, None)
        if old is not None:
            old.cancel()
        if self.agent.bridge.loop is not None and not self.agent.bridge.loop.is_closed():
            self.handles[key] = self.agent.bridge.loop.call_later(delay, self.retry, *key)
        self.agent.publish(Failed(env=rt.uuid, what=what, kind=fault.kind, cause=fault.cause,
                                  retry_s=round(delay, 2)))
        return True

    def recovered(self, env: str, what: str) -> None:
        """`what` of `env` worked: forget its failure (if any) and its pending retry."""
        if self.agent.bridge.to_loop(self.recovered, env, what):
            return
        gone = self.agent.faults.cleared(env, what)
        handle = self.handles.pop((env, what), None)
        if handle is not None:
            handle.cancel()
        if gone is not None:
            log.info("%s %s works again after %d failures", what, env, gone.retry.failures)
            self.agent.publish(Recovered(env=env, what=what))

    def retry(self, env: str, what: str) -> None:
        """The backoff of a failing operation is over: try it again (on the store worker,
        in order with the ingests and writes queued there)."""
        if self.agent.bridge.spawn_on_worker(self.retry, env, what):
            return
        self.handles.pop((env, what), None)
        rt = self.agent.envs.get(env)
        if rt is None:
            self.agent.faults.cleared(env, what)
            return
        try:
            if what == WRITING:
                self.agent.writes.write_env(rt)
            elif what == COMMITTING:
                # Taken in as at start-up: the file holds the save the log could not take.
                self.agent.on_file(rt.path, initial=True)
            elif what == RECEIVING:
                self.refetch(rt)
        except Exception:
            log.exception("retrying %s %s failed", what, rt.path.name)

    def refetch(self, rt: EnvRuntime) -> None:
        """Change sets the log could not store were not acknowledged to anyone: once the log
        takes writes again, ask the transports for everything again (a catch-up), as
        `mocksync reconnect` would; until then, back off further."""
        try:
            self.agent.store.check_writable()
        except sqlite3.Error as exc:
            if not self.failed(rt, RECEIVING, exc, "home"):
                raise
            return
        self.recovered(rt.uuid, RECEIVING)  # a catch-up that fails again records it again
        if isinstance(self.agent.transport, Reconnecting) \
                and self.agent.bridge.loop is not None and not self.agent.bridge.to_loop(self.start_refetch):
            self.start_refetch()

    def start_refetch(self) -> None:
        """Ask the transports for a catch-up (on the loop)."""
        transport = self.agent.transport
        assert self.agent.bridge.loop is not None and isinstance(transport, Reconnecting)
        self.agent.bridge.spawn(self.agent.bridge.loop.create_task(transport.reconnect(),
                                                                   name="refetch"))

    def store_failed(self, envs: set[str], exc: sqlite3.Error) -> None:
        """The log could not store change sets from others: `error` on each environment
        (retried by a catch-up with backoff); logged with the real cause either way."""
        known = [self.agent.envs[e] for e in sorted(envs) if e in self.agent.envs]
        if not any([self.failed(rt, RECEIVING, exc, "home") for rt in known]):
            log.warning("could not store change sets of %s: %s", ", ".join(sorted(envs)), exc)

    def view(self, rt: EnvRuntime) -> dict[str, Any]:
        """`status` overlay: `error` with its sentence while a write or commit keeps failing."""
        return self.agent.faults.view(rt.uuid, rt.path.name, str(self.agent.home.root), self.agent.clock())
