"""Attacks on the routes of spaces naming relays (issue 17: space relays, moves, the fleet).

What must hold:
- a relay that answers the farewell upload of a moved space slowly, never, or with a reply of
  the wrong kind costs the fleet at most `FAREWELL_TIMEOUT_S`; the old connection is stopped
  all the same (the old relay hears nothing more of the space) and the new route opens;
- a relay list naming one relay in several spellings (`HTTP://R:08765/`, `http://r:8765`)
  is one address, and spaces naming one relay in different spellings share one connection
  (a device opens no more connections to one relay than it would with one spelling: the
  relay refuses a fourth, `too_many_connections`);
- 17+ spaces each naming different relays open at most `MAX_ROUTES` connections; the rest
  are listed unrouted with a reason;
- a `relays` entry signed by an admin concurrently with that admin's removal is void: the
  space stays where the team keeps it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mocksync.net import relay_fleet
from mocksync.net.relay_fleet import RelayFleet
from mocksync.relay.errors import RelayProtocolError
from mocksync.space import membership as M
from mocksync.space.errors import MembershipError
from mocksync.space.identity import Identity
from mocksync.space.relayroutes import MAX_ROUTES, address_key, plan_routes, route_of

from helpers.fleet import FakeAgent, FakeDirectory, FakeSpace, FakeState

OLD, NEW = "https://old.example:8765", "https://new.example:8765"
T = 1_000


class HostileOldRelay:
    """A route's connection whose relay answers the farewell upload as `how` says: `hang`
    (never), `garbage` (a reply of the wrong kind: what `RelayClient._request` raises)."""

    def __init__(self, route: tuple[str, ...], only: set[str], how: str) -> None:
        self.route, self.only, self.how = route, only, how
        self.started = self.stopped = False
        self.farewells = 0

    async def start(self, agent: Any) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def farewell(self, spaces: set[str]) -> None:
        self.farewells += 1
        if self.route[0] != OLD:
            return
        if self.how == "hang":
            await asyncio.Event().wait()
        raise RelayProtocolError("expected ok in reply to log, got index")

    async def reconnect(self) -> None:
        pass

    async def push_logs(self) -> None:
        if self.route[0] == OLD and self.how == "garbage":
            raise RelayProtocolError("expected ok in reply to log, got index")

    def broadcast(self, space: str, env: str, wire: bytes) -> None:
        pass

    def set_presence(self, **kw: Any) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"relay": {"url": self.route[0], "urls": list(self.route), "state": "connected",
                          "spaces": sorted(self.only)}, "peers": [], "progress": []}


@pytest.mark.parametrize("how", ["garbage", "hang"])
async def test_a_hostile_old_relay_cannot_keep_a_moved_space_or_hold_the_fleet(
        how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_fleet, "FAREWELL_TIMEOUT_S", 0.3)
    made: dict[tuple[str, ...], HostileOldRelay] = {}

    def make(route: tuple[str, ...], only: set[str]) -> Any:
        made[route] = HostileOldRelay(route, only, how)
        return made[route]

    team = FakeSpace("team", FakeState((OLD,)))
    fleet = RelayFleet((), make=make, plan_check_s=3600)
    await fleet.start(FakeAgent(FakeDirectory([team])))  # type: ignore[arg-type]
    try:
        team.state = FakeState((NEW,))  # an admin moved the space
        # Before: a wrong-kind reply escaped the plan (the CLI's `space relays --set` failed)
        # and the old connection, already forgotten by the fleet, was never stopped: it kept
        # offering the space to the old relay. A silent relay held the plan (and the fleet's
        # lock, so the daemon's stop) for the request timeout, 30 s per moved space.
        await asyncio.wait_for(fleet.push_logs(), 5.0)
        old = made[(OLD,)]
        assert old.farewells == 1 and old.stopped
        assert (OLD,) not in fleet.transports
        assert made[(NEW,)].started and fleet.transports[(NEW,)].only == {"team"}
        assert fleet.routes.route("team") == (NEW,)
        await asyncio.wait_for(fleet.push_logs(), 5.0)  # planned: nothing is retried
        assert old.farewells == 1
    finally:
        await asyncio.wait_for(fleet.stop(), 5.0)


async def test_a_relay_answering_garbage_does_not_keep_entries_from_the_others() -> None:
    made: dict[tuple[str, ...], HostileOldRelay] = {}
    pushed: list[tuple[str, ...]] = []

    def make(route: tuple[str, ...], only: set[str]) -> Any:
        t = HostileOldRelay(route, only, "garbage")
        inner = t.push_logs

        async def push_logs() -> None:
            pushed.append(route)
            await inner()

        t.push_logs = push_logs  # type: ignore[method-assign]
        made[route] = t
        return t

    spaces = [FakeSpace("a", FakeState((OLD,))), FakeSpace("b", FakeState((NEW,)))]
    fleet = RelayFleet((), make=make, plan_check_s=3600)
    await fleet.start(FakeAgent(FakeDirectory(spaces)))  # type: ignore[arg-type]
    try:
        await fleet.push_logs()  # `invite` telling the daemon: no error escapes
        assert pushed == [(OLD,), (NEW,)]  # the second relay got its entries all the same
    finally:
        await fleet.stop()


SPELLINGS = ["http://127.0.0.1:8765", "HTTP://127.0.0.1:8765/", "http://127.0.0.1:08765",
             "http://127.0.0.1:8765//"]


def test_one_relay_spelled_four_ways_is_one_address() -> None:
    assert len({address_key(u) for u in SPELLINGS}) == 1
    assert route_of(SPELLINGS, ()) == (SPELLINGS[0],)
    # A path is part of an address (a relay behind a proxy); another host is another relay.
    assert address_key("https://h.example:443/relay/") != address_key("https://h.example:443")
    assert address_key("http://localhost:8765") != address_key(SPELLINGS[0])
    # The configured spelling is the one dialled when a space names the same relay.
    assert route_of(["http://127.0.0.1:8765/", NEW], ["HTTP://127.0.0.1:8765"]) == (
        "HTTP://127.0.0.1:8765", NEW)


def test_spaces_naming_one_relay_in_different_spellings_share_one_connection() -> None:
    # Before: four routes, so four connections from one device to one relay, which takes
    # three per device (relay.server.MAX_CONNECTIONS_PER_DEVICE): the team space, planned
    # last (by name), was the one refused `too_many_connections`.
    spaces = {f"attacker{i}": [u] for i, u in enumerate(SPELLINGS[1:])}
    spaces["team"] = [SPELLINGS[0]]
    routes = plan_routes(spaces, ())
    assert list(routes.routes) == [(SPELLINGS[1],)]
    assert routes.route("team") == (SPELLINGS[1],) and not routes.unrouted


async def test_seventeen_spaces_on_seventeen_relays_open_sixteen_connections() -> None:
    made: list[tuple[str, ...]] = []

    def make(route: tuple[str, ...], only: set[str]) -> Any:
        made.append(route)
        return HostileOldRelay(route, only, "none")

    urls = [f"http://127.0.0.1:{20000 + i}" for i in range(MAX_ROUTES + 4)]
    # Each also names its relay a second way: still one route per space.
    spaces = [FakeSpace(f"s{i:02d}", FakeState((u, u.upper() + "/")))
              for i, u in enumerate(urls)]
    fleet = RelayFleet((), make=make, plan_check_s=3600)
    await fleet.start(FakeAgent(FakeDirectory(spaces)))  # type: ignore[arg-type]
    try:
        assert len(made) == len(fleet.transports) == MAX_ROUTES
        assert all(len(r) == 1 for r in made)
        st = fleet.status()
        unrouted = [r for r in st["relays"] if r["state"] == "none"]
        assert [r["serves"] for r in unrouted] == [[f"s{i:02d}"] for i in range(MAX_ROUTES,
                                                                                 len(urls))]
        assert all(f"{MAX_ROUTES} relay connections" in r["reason"] for r in unrouted)
        fleet.broadcast(f"s{MAX_ROUTES:02d}", "env", b"w")  # no route: sent nowhere
    finally:
        await fleet.stop()


def ident(n: int) -> Identity:
    return Identity.from_seeds(f"dev{n}", bytes([n]) * 32, bytes([n + 100]) * 32,
                               member_name=f"person{n}")


def test_a_removed_admin_cannot_move_the_space() -> None:
    a, b = ident(1), ident(2)
    log = [M.new_genesis(a, name="team", member_name="Alice", relay=OLD, now_ms=T)]
    mid = M.new_member_id()
    log.append(M.add_member(a, M.verify_log(log), member_id=mid, name="Bob", role="admin",
                            now_ms=T))
    log.append(M.add_device(a, M.verify_log(log), member_id=mid, device=b.public,
                            sealed_key=None, now_ms=T))
    before = M.verify_log(log)
    # Bob's move and his removal are concurrent (he had not seen it), and one he signs after.
    move = M.set_relays(b, before, relays=["http://127.0.0.1:6379"], now_ms=T)
    removal = M.remove_member(a, before, member_id=mid, covers={}, now_ms=T)
    state = M.verify_log([*log, removal, move])
    assert state.relays == (OLD,)
    assert move.hash_hex in state.void  # kept, without effect, with its reason
    with pytest.raises(MembershipError):
        M.extend_log([*log, removal], [move])  # a device or relay refuses to store it


async def test_an_admin_flipping_the_space_between_relays_causes_no_reconnect_storm(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_fleet, "MOVE_REPLAN_GAP_S", 0.5)
    made: list[tuple[str, ...]] = []

    def make(route: tuple[str, ...], only: set[str]) -> Any:
        made.append(route)
        return HostileOldRelay(route, only, "none")

    team = FakeSpace("team", FakeState((OLD,)))
    fleet = RelayFleet((), make=make, plan_check_s=3600)
    await fleet.start(FakeAgent(FakeDirectory([team])))  # type: ignore[arg-type]
    try:
        # 200 `relays` entries flipping the space, each arriving in a push of its own, about
        # 5 ms apart (the relay takes 200 messages a second from one device): each push
        # tells the fleet the space moved.
        for i in range(200):
            team.state = FakeState((NEW,) if i % 2 == 0 else (OLD,))
            fleet.replan_soon()
            await asyncio.sleep(0.005)
        await asyncio.sleep(1.2)  # the last gap passes: the final list is followed
        # Before: about one new connection per entry (~200).
        assert len(made) <= 1 + 2 + 1 + 4  # start, ~1 s of flood at 2 plans/s, the last
        assert fleet.routes.route("team") == (OLD,) and list(fleet.transports) == [(OLD,)]
    finally:
        await fleet.stop()
