"""Which relay carries which space (issue 11/17): the pure routing rule, relay key pins per
(space, relay address) with the old per-space pin still read, and the fleet of connections
that carries the routing out (with stand-in connections: no sockets)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mocksync.net.relay_fleet import RelayFleet
from mocksync.paths import Home
from mocksync.space.relayroutes import (
    MAX_ROUTES,
    pin_for,
    plan_routes,
    primary_route,
    route_of,
)
from mocksync.spaceio.actions import create_space, init_device
from mocksync.spaceio.store import (
    MAX_PINS_PER_SPACE,
    SpacePins,
    relay_pin,
    relay_pins,
    set_relay_pin,
)

from helpers.fleet import FakeAgent, FakeDirectory, FakeSpace, FakeState

X, Y, Z = "https://x.example:8765", "https://y.example:8765", "https://z.example:8765"
K1, K2 = b"\x01" * 32, b"\x02" * 32


# ---------------------------------------------------------------- the rule (pure)


def test_a_space_naming_no_relay_uses_the_configured_ones() -> None:
    assert route_of((), (X, Y)) == (X, Y)
    assert route_of((), ()) == ()  # no relay at all: LAN peers only


def test_a_space_naming_relays_uses_only_its_own_when_none_is_configured_like_them() -> None:
    assert route_of((X,), ()) == (X,)
    assert route_of((X, Y), ()) == (X, Y)
    assert route_of((Y, Z), (X,)) == (Y, Z)  # never offered to the configured relay X


def test_configured_addresses_of_the_same_relay_come_first() -> None:
    """A cluster configured on this device (`--relay X --relay Y`) for a space naming X: the
    device's order, the cluster's other instance as fallback (the only meaning repeated
    --relay had before spaces named relays)."""
    assert route_of((X,), (X, Y)) == (X, Y)
    assert route_of((X,), (Y, X)) == (Y, X)
    assert route_of((X, Z), (Y, X)) == (Y, X, Z)  # the space's own fallback kept, last


def test_plan_groups_spaces_by_route_in_first_seen_order() -> None:
    routes = plan_routes({"personal": (), "team": (X,), "ops": (Y, Z), "web": (X,),
                          "lan": ()}, (X,))
    assert routes.routes == {(X,): ("personal", "team", "web", "lan"), (Y, Z): ("ops",)}
    assert routes.route("ops") == (Y, Z) and routes.route("nope") is None
    assert routes.unrouted == {}
    bare = plan_routes({"personal": (), "team": (X,)}, ())
    assert bare.routes == {(X,): ("team",)}  # the personal space syncs over the LAN only


def test_routes_past_the_limit_are_left_unrouted_with_a_reason() -> None:
    spaces = {f"s{i}": (f"https://r{i}.example:8765",) for i in range(MAX_ROUTES + 2)}
    spaces["again"] = ("https://r0.example:8765",)  # an existing route still takes spaces
    routes = plan_routes(spaces, ())
    assert len(routes.routes) == MAX_ROUTES
    assert set(routes.unrouted) == {f"s{MAX_ROUTES}", f"s{MAX_ROUTES + 1}"}
    assert f"{MAX_ROUTES} relay connections" in routes.unrouted[f"s{MAX_ROUTES}"]
    assert routes.route("again") == ("https://r0.example:8765",)


def test_primary_route_is_the_configured_one_when_it_carries_a_space() -> None:
    routes = plan_routes({"team": (Y,), "personal": ()}, (X,))
    assert primary_route(routes, (X,)) == (X,)
    assert primary_route(plan_routes({"team": (Y,)}, (X,)), (X,)) == (Y,)
    assert primary_route(plan_routes({}, ()), ()) is None


def test_pin_for_reads_the_legacy_pin_until_an_address_is_pinned() -> None:
    assert pin_for({}, None, X) is None
    assert pin_for({}, K1, X) == K1 and pin_for({}, K1, Y) == K1  # the old pin: every address
    assert pin_for({X: K1}, None, X) == K1
    assert pin_for({X: K1}, None, Y) is None  # another relay of the space: trust on first use
    assert pin_for({X: K1}, K2, Y) is None  # a stale legacy pin no longer applies


# ---------------------------------------------------------------- pins on disk


@pytest.fixture
def home(tmp_path: Path) -> tuple[Home, str]:
    h = Home(tmp_path / "h")
    ident, _ = init_device(h, name="laptop", member_name="alice")
    return h, create_space(h, ident, "team", relay=[X, Y]).space_id


def test_pins_are_per_address_and_a_changed_key_at_one_address_is_still_seen(
        home: tuple[Home, str]) -> None:
    h, sp = home
    pins = SpacePins(h)
    assert pins.pinned_many([sp], X) == {sp: None}
    pins.admitted([sp], X, K1)
    pins.admitted([sp], Y, K2)  # an independent relay with its own key: no conflict
    assert pins.pinned_many([sp], X) == {sp: K1}
    assert pins.pinned_many([sp], Y) == {sp: K2}
    pins.admitted([sp], X, K2)  # never re-pins an address (the client refused before this)
    assert relay_pin(h, sp, X) == K1
    assert relay_pins(h, sp) == ({X: K1, Y: K2}, None)


def test_a_legacy_pin_is_read_and_moved_to_the_first_address_admitted(
        home: tuple[Home, str]) -> None:
    h, sp = home
    set_relay_pin(h, sp, K1)  # what a home pinned before pins were per address
    pins = SpacePins(h)
    assert pins.pinned_many([sp], X) == {sp: K1} and pins.pinned_many([sp], Y) == {sp: K1}
    pins.admitted([sp], X, K1)
    assert relay_pins(h, sp) == ({X: K1}, None)
    assert pins.pinned_many([sp], Y) == {sp: None}  # the space's second relay: first use


def test_unpin_forgets_every_address_and_pins_are_bounded(home: tuple[Home, str]) -> None:
    h, sp = home
    pins = SpacePins(h)
    for i in range(MAX_PINS_PER_SPACE + 3):
        pins.admitted([sp], f"https://r{i}.example:8765", os.urandom(32))
    per_url, _ = relay_pins(h, sp)
    assert len(per_url) == MAX_PINS_PER_SPACE
    assert "https://r0.example:8765" not in per_url  # the oldest gave way
    set_relay_pin(h, sp, None)
    assert relay_pins(h, sp) == ({}, None) and relay_pin(h, sp) is None


def test_a_broken_pin_entry_is_skipped_not_fatal(home: tuple[Home, str]) -> None:
    from mocksync.spaceio.store import RELAY_PINS_FIELD, locked

    h, sp = home
    with locked(h) as db:
        db.table("spaces").update({RELAY_PINS_FIELD: {X: "not base64!", Y: 5}})
    assert relay_pins(h, sp) == ({}, None)


# ---------------------------------------------------------------- the fleet


class FakeConnection:
    """Stands in for a `RelayTransport`: records what the fleet asks of it."""

    def __init__(self, route: tuple[str, ...], only: set[str]) -> None:
        self.route, self.only = route, only
        self.started = self.stopped = False
        self.sent: list[tuple[str, str, bytes]] = []
        self.reconnects = self.pushes = 0

    async def start(self, agent: Any) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def broadcast(self, space: str, env: str, wire: bytes) -> None:
        self.sent.append((space, env, wire))

    async def reconnect(self) -> None:
        self.reconnects += 1

    async def push_logs(self) -> None:
        self.pushes += 1

    def set_presence(self, **kw: Any) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"relay": {"url": self.route[0], "urls": list(self.route), "state": "connected",
                          "spaces": sorted(self.only)},
                "peers": [{"device": f"peer-of-{self.route[0]}"}], "progress": []}


async def test_fleet_opens_one_connection_per_route_and_routes_each_change_set() -> None:
    made: dict[tuple[str, ...], FakeConnection] = {}

    def make(route: tuple[str, ...], only: set[str]) -> Any:
        made[route] = FakeConnection(route, only)
        return made[route]

    directory = FakeDirectory([FakeSpace("personal", FakeState(())),
                               FakeSpace("team", FakeState((X,))),
                               FakeSpace("ops", FakeState((Y, Z)))])
    fleet = RelayFleet((X,), make=make, plan_check_s=3600)
    await fleet.start(FakeAgent(directory))  # type: ignore[arg-type]
    try:
        assert set(made) == {(X,), (Y, Z)}
        assert made[(X,)].only == {"personal", "team"} and made[(Y, Z)].only == {"ops"}
        fleet.broadcast("ops", "env1", b"w1")
        fleet.broadcast("team", "env2", b"w2")
        fleet.broadcast("unknown", "env3", b"w3")  # no route: dropped, never to another relay
        assert made[(Y, Z)].sent == [("ops", "env1", b"w1")]
        assert made[(X,)].sent == [("team", "env2", b"w2")]

        st = fleet.status()
        assert st["relay"]["url"] == X  # the configured relay stays `relay`
        assert [(r["url"], r["serves"], r["source"]) for r in st["relays"]] == [
            (X, ["personal", "team"], "config"), (Y, ["ops"], "space")]
        assert len(st["peers"]) == 2

        # Joined while running: a space on an existing route widens it, a new route opens.
        directory.held += [FakeSpace("web", FakeState((X,))), FakeSpace("db", FakeState((Z,)))]
        await fleet.reconnect()
        assert made[(X,)].only == {"personal", "team", "web"}
        assert made[(Z,)].started and made[(Z,)].only == {"db"}
        # Left: a route nobody needs closes; a narrowed one reconnects without the space.
        directory.held = [s for s in directory.held if s.space_id not in ("ops", "web")]
        before = made[(X,)].reconnects
        await fleet.push_logs()
        assert made[(Y, Z)].stopped and (Y, Z) not in fleet.transports
        assert made[(X,)].only == {"personal", "team"} and made[(X,)].reconnects > before
    finally:
        await fleet.stop()
    assert all(c.stopped for c in made.values())


async def test_fleet_without_relays_keeps_no_connection() -> None:
    made: list[Any] = []
    directory = FakeDirectory([FakeSpace("personal", FakeState(()))])
    fleet = RelayFleet((), make=lambda r, o: made.append(r), plan_check_s=3600)  # type: ignore[arg-type,func-returns-value]
    await fleet.start(FakeAgent(directory))  # type: ignore[arg-type]
    try:
        assert made == [] and fleet.status() == {"relays": [], "peers": [], "progress": []}
    finally:
        await fleet.stop()


# ---------------------------------------------------------------- what the CLI reads


def test_an_invite_to_a_space_naming_no_relay_offers_only_the_configured_relay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`invite` for a space naming no relay names the daemon's configured relays: never the
    relay another space picked (that would hand this space to a relay its team never chose)."""
    import mocksync.cli.spaces as cli

    h = Home(tmp_path / "h")
    rows = [{"url": Y, "urls": [Y], "state": "connected", "source": "space", "spaces": ["t"]},
            {"url": X, "urls": [X, Z], "state": "connected", "source": "config", "spaces": []}]
    status: dict[str, Any] = {"relay": rows[0], "relays": rows}
    monkeypatch.setattr(cli, "_daemon_status", lambda home: status)
    assert cli._daemon_relays(h) == (X, Z)
    status["relays"] = rows[:1]  # no configured relay: nothing from the running daemon
    assert cli._daemon_relays(h) == ()
    del status["relays"]  # a daemon from before several connections: its one relay
    assert cli._daemon_relays(h) == (Y,)
    # `_surely_member` asks every connection, not only the one `relay` shows.
    status["relays"] = [rows[0], {**rows[1], "spaces": ["other"]}]
    held: Any = type("Held", (), {"space_id": "other", "state": type(
        "S", (), {"is_member": staticmethod(lambda device: True)})()})()
    assert cli._surely_member(h, held, "dev")
    held.space_id = "absent"
    assert not cli._surely_member(h, held, "dev")
