"""The daemon's relay connections: one `RelayTransport` per relay route of its spaces.

Why: a space names the relays its team picked (issue 17), and a daemon must sync each space
through those and no other (offering a space to a relay tells it the space exists, who is in
it and when they are online). Before this, a daemon dialled only the relays of its settings
(`--relay`, config.toml) and offered every space to them, so the README's own setup (a space
made with `space create --relay URL`, a daemon started without `--relay`) synced nothing
through the relay. The routing is decided by `space.relayroutes.plan_routes` (pure); this
module only carries it out: it opens a transport per route, limited to that route's spaces,
and hands each broadcast to the transport of its space.

Spaces created, joined or left while the daemon runs are picked up without a restart: the
routes are planned again when the CLI pokes the daemon (`reconnect` after `join`,
`membership` after `invite`/`remove`) and every `PLAN_CHECK_S` (the space directory re-reads
the home only when its documents changed). A new route gets its own connection; a space
added to an existing route makes that connection reconnect to be admitted to it; a route no
space needs any more is closed.

A space that moves relay (a signed `relays` entry, `space relays --set`) changes route like
any other: planned again when the CLI pokes (`membership`), or at once when a connection
learns such an entry from its relay (`RelayTransport.on_relays_moved`). Before a connection
stops carrying a space that still exists, it hands that relay the space's log entries it
lacks (`farewell`): the move entry reaches the members still connected to the old relay, who
follow it; after that the old relay hears nothing more of the space.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import MocksyncError
from ..ports import AgentPort
from ..space.relayroutes import Route, Routes, plan_routes, primary_route, space_relays
from .relay_transport import LOG_CHECK_S, RelayTransport

log = logging.getLogger("mocksync.relay.fleet")

#: Seconds between checks for spaces whose relays this daemon does not dial yet (a space
#: created or joined while it runs, when no CLI command told it).
PLAN_CHECK_S = LOG_CHECK_S

#: Seconds a farewell (the old relay's upload of a moved space's entries) may take in all.
#: It runs under the fleet's lock, so a relay that answers slowly, or never, would otherwise
#: hold every plan, the CLI command that asked for it and the daemon's stop for the request
#: timeout once per moved space; it is best effort anyway (the LAN and `--use` also carry
#: a move).
FAREWELL_TIMEOUT_S = 5.0

#: Seconds between two plans a move learnt from a relay causes (`replan_soon`). Each such
#: plan may close a connection and open another, and a space's admin can sign `relays`
#: entries as fast as the relay takes uploads: flipping a space between two relays made
#: every member reconnect once per entry (a reconnect storm on members and relays). Moves
#: within the gap are planned together; the CLI's pokes and `PLAN_CHECK_S` are not delayed.
MOVE_REPLAN_GAP_S = 2.0

#: Where a route's relay connection comes from (tests pass their own).
MakeTransport = Callable[[Route, set[str]], RelayTransport]


class RelayFleet:
    """`Transport` (mocksync/ports.py): the relay connections of every route of this device's
    spaces. `configured`: the relays of the settings (`--relay`, config.toml), which carry
    the spaces that name none (and, as one cluster, the spaces naming one of them)."""

    def __init__(self, configured: Sequence[str] = (), *, plan_check_s: float = PLAN_CHECK_S,
                 make: MakeTransport | None = None, **transport_kw: Any) -> None:
        self.configured: Route = tuple(dict.fromkeys(configured))
        self.plan_check_s = plan_check_s
        self._kw = transport_kw
        self._make: MakeTransport = make or self._new_transport
        #: The open connections, by route.
        self.transports: dict[Route, RelayTransport] = {}
        self.routes = Routes()
        self._route_of: dict[str, Route] = {}
        self._agent: AgentPort | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._soon: asyncio.Task[Any] | None = None
        #: When the last plan caused by a move started (loop time; MOVE_REPLAN_GAP_S).
        self._moved_at = float("-inf")

    def _new_transport(self, route: Route, spaces: set[str]) -> RelayTransport:
        return RelayTransport(list(route), spaces=spaces, **self._kw)

    # ---------------------------------------------------------------- Transport protocol
    async def start(self, agent: AgentPort) -> None:
        self._agent = agent
        await self.replan()
        self._task = asyncio.create_task(self._plan_loop(), name="relay routes")

    async def stop(self) -> None:
        for task in (self._task, self._soon):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._soon = None
        async with self._lock:
            for t in reversed(list(self.transports.values())):
                await t.stop()
            self.transports.clear()

    def broadcast(self, space: str, env: str, wire: bytes) -> None:
        route = self._route_of.get(space)
        t = self.transports.get(route) if route is not None else None
        if t is not None:
            t.broadcast(space, env, wire)

    async def reconnect(self) -> None:
        """`mocksync reconnect`, and `join` telling the daemon: plan again (a new space may
        name a relay not dialled yet), then every connection tries now (once each: two
        reconnects of one connection in a row would race)."""
        await self.replan(act=False)
        for t in list(self.transports.values()):
            await t.reconnect()

    async def push_logs(self) -> None:
        """`invite`/`remove` telling the daemon: plan again, then each connection uploads new
        membership entries (reconnecting by itself to be admitted to a new space)."""
        narrowed = await self.replan(act=False)
        for t in list(self.transports.values()):
            # One relay answering garbage (`RelayProtocolError`) must not keep the entries
            # from the others.
            with contextlib.suppress(MocksyncError):
                await (t.reconnect() if t in narrowed else t.push_logs())

    def set_presence(self, *, space: str | None = None, env: str | None = None,
                     entity: str | None = None, editor: str | None = None) -> None:
        for t in self.transports.values():
            t.set_presence(space=space, env=env, entity=entity, editor=editor)

    def status(self) -> dict[str, Any]:
        """`relay`: the connection scripts written before several connections saw (the
        configured relays' route, else the first); `relays`: every connection, each with the
        spaces it carries (`serves`) and whether it is the configured relay (`source`), then
        a row per space left without one (`unrouted`); peers and progress of all."""
        rows: list[dict[str, Any]] = []
        peers: list[dict[str, Any]] = []
        progress: list[dict[str, Any]] = []
        primary = primary_route(self.routes, self.configured)
        relay: dict[str, Any] | None = None
        for route, t in self.transports.items():
            st = t.status()
            row = st["relay"]
            row["serves"] = list(self.routes.routes.get(route, ()))
            row["source"] = "config" if route == self.configured else "space"
            rows.append(row)
            if route == primary:
                relay = row
            peers += st.get("peers", [])
            progress += st.get("progress", [])
        for space, reason in self.routes.unrouted.items():
            rows.append({"url": None, "urls": [], "state": "none", "reason": reason,
                         "serves": [space], "source": "space", "spaces": []})
        out: dict[str, Any] = {"relays": rows, "peers": peers, "progress": progress}
        if relay is not None:
            out["relay"] = relay
        return out

    # ---------------------------------------------------------------- routes
    def _plan(self) -> Routes:
        agent = self._agent
        if agent is None:
            return Routes()
        spaces = {s.space_id: space_relays(s.state.relays, getattr(s, "local_relays", ()))
                  for s in agent.spaces.spaces()}
        return plan_routes(spaces, self.configured)

    def replan_soon(self) -> None:
        """Plan again in a task of its own (a connection that learnt its space moved relay
        calls this from its own callback, and the plan may close that very connection)."""
        if self._agent is None or (self._soon is not None and not self._soon.done()):
            return  # the plan waiting (or running) reads the spaces as they are then
        self._soon = asyncio.create_task(self._replan_moved(), name="relay routes (moved)")

    async def _replan_moved(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._moved_at + MOVE_REPLAN_GAP_S - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._moved_at = loop.time()
        await self.replan()

    async def _farewell(self, t: RelayTransport, gone: set[str], routes: Routes) -> None:
        """`t` stops carrying `gone`: hand its relay the log entries it lacks of those another
        route of `routes` now carries (they moved relay, not left), so that a move entry
        reaches the members still on that relay. Best effort, within `FAREWELL_TIMEOUT_S`: a
        relay down, slow or answering garbage (a reply of the wrong kind raises
        `RelayProtocolError`, not a `RelayError`) learns nothing, and the plan goes on."""
        moved = {s for s in gone if routes.route(s) is not None}
        if moved:
            try:
                async with asyncio.timeout(FAREWELL_TIMEOUT_S):
                    await t.farewell(moved)
            except (MocksyncError, OSError, TimeoutError) as exc:
                log.info("farewell for space(s) %s failed (%s); the move reaches their members "
                         "by the LAN or their own --use", ", ".join(sorted(moved)), exc)

    async def replan(self, *, act: bool = True) -> list[RelayTransport]:
        """Open, narrow, widen or close connections to match the spaces' routes now; the
        connections narrowed (they must reconnect, so as no longer to be offered a space).
        `act`: reconnect those, and ask a widened one to be admitted to its new spaces now
        (callers that reconnect or push every connection themselves pass False)."""
        if self._agent is None:
            return []
        widened: list[RelayTransport] = []
        narrowed: list[RelayTransport] = []
        async with self._lock:
            routes = self._plan()
            if routes == self.routes and all(r in self.transports for r in routes.routes):
                return []
            for space, reason in routes.unrouted.items():
                if space not in self.routes.unrouted:
                    log.warning("space %s has no relay connection: %s", space[:12], reason)
            for route in [r for r in self.transports if r not in routes.routes]:
                log.info("relay route %s carries no space any more: closing it", ", ".join(route))
                old = self.transports.pop(route)
                try:
                    await self._farewell(old, set(old.only or ()), routes)
                finally:  # popped: nothing else would ever stop it
                    await old.stop()
            for route, spaces in routes.routes.items():
                t = self.transports.get(route)
                if t is None:
                    log.info("relay route %s for %d space(s)", ", ".join(route), len(spaces))
                    t = self._make(route, set(spaces))
                    t.on_relays_moved = self.replan_soon
                    self.transports[route] = t
                    await t.start(self._agent)
                elif t.only != set(spaces):
                    gone = (t.only or set()) - set(spaces)
                    await self._farewell(t, gone, routes)
                    t.only = set(spaces)
                    (narrowed if gone else widened).append(t)
            self.routes = routes
            self._route_of = {s: r for r, spaces in routes.routes.items() for s in spaces}
        if act:  # outside the lock: these may reconnect
            for t in narrowed + widened:
                with contextlib.suppress(MocksyncError):
                    await (t.reconnect() if t in narrowed else t.push_logs())
        return narrowed

    async def _plan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.plan_check_s)
            try:
                await self.replan()
            except Exception:  # a bad documents file must not end relay syncing for good
                log.exception("planning relay routes failed; trying again later")


__all__ = ["FAREWELL_TIMEOUT_S", "MOVE_REPLAN_GAP_S", "PLAN_CHECK_S", "RelayFleet"]
