"""`mocksync daemon`: lock the home, wire the Agent to the control socket, run until a signal.

A clean stop on SIGTERM/SIGINT flushes held writes, says goodbye to peers, removes the socket
and releases the lock; a second daemon on the same home is refused by the lock with a message
naming the first one's pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol

from ..paths import Home
from ..spaceio.identityfiles import load_identity
from . import api
from .control import ControlServer
from .daemon import Agent
from .lock import DaemonLock
from .multi import MultiTransport
from .settings import Settings
from .spacedir import SpaceDirectory

log = logging.getLogger("mocksync.daemon")


def build_transport(settings: Settings) -> Any:
    """The transports of a daemon, side by side: LAN peers (mDNS + WebRTC, when `mdns` is on
    or bind addresses are given) and the relays (`net.relay_fleet`: one connection per relay
    route of its spaces: the relays each space names, the settings' relays for spaces that
    name none; docs/design/relay.md "Which relay carries which space")."""
    from ..net.lan_transport import build_lan_transport
    from ..net.relay_fleet import RelayFleet

    transports: list[Any] = [build_lan_transport(settings),
                             RelayFleet(settings.relays,
                                        snapshot_every=settings.snapshot_changesets)]
    transports = [t for t in transports if t is not None]
    if not transports:
        return None
    return transports[0] if len(transports) == 1 else MultiTransport(*transports)


class Mounted(Protocol):
    """Something served beside the control socket (the local web page, `ui.mount`):
    started after the agent, stopped before it. A failed start must leave it off, never
    stop the daemon."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


#: Builds what is served beside the control socket from the agent, its control server and
#: the settings (None: nothing); the CLI passes `ui.mount.mount_ui` (the agent may not
#: import the UI above it).
Mount = Callable[[Agent, ControlServer, Settings], Mounted | None]


#: The daemon keeps whole environments (up to ~1.5 million objects for 15 MB) in memory; with
#: the default thresholds the cyclic GC re-scans all of them every few thousand allocations,
#: adding hundreds of milliseconds to a save. Fewer young collections, rarer full ones.
GC_THRESHOLDS = (50_000, 20, 50)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


async def run_daemon(home: Home, settings: Settings, *, transport: Any = None,
                     ready: asyncio.Event | None = None,
                     stop: asyncio.Event | None = None, mount: Mount | None = None) -> None:
    tune_gc()
    lock = DaemonLock(home.lock, home=home.root).acquire()
    try:
        identity = load_identity(home)
        if transport is None:
            transport = build_transport(settings)
        agent = Agent(home, settings, identity, SpaceDirectory(home), transport=transport)
        server = ControlServer(home.socket)
        api.register(server, agent)
        agent.listeners.append(server.publish)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not possible outside the main thread (tests run the daemon in a task).
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        ui = mount(agent, server, settings) if mount is not None else None
        await agent.start()
        try:
            await server.start()
            if ui is not None:
                await ui.start()  # a port in use leaves the page off, never the daemon
            log.info("mocksync daemon %s watching %s", identity.device_id, agent.folder)
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            if ui is not None:
                await ui.stop()
            await server.stop()
            await agent.stop()
    finally:
        lock.release()
