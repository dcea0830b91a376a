"""A space moves relay (issue 17 follow-up): the signed `relays` membership entry, the local
routes of `space relays --use`, and the daemon's routes following a move.

The entry: only an admin's counts (a non-admin's is void, and refused by `extend_log`), its
list is checked like the genesis's (1..MAX_SPACE_RELAYS, http(s)://host:port, no repeats;
anything else refuses the whole log), the last one in the order wins, and a device that does
not know a kind refuses the whole log saying to update. The CLI's steps refuse before
anything is written. Local routes go first, stay this device's, and are forgotten once the
space names them. The fleet hands the old relay the move before it stops carrying the space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.changes.canonical import decode, encode
from mocksync.net.relay_fleet import RelayFleet
from mocksync.paths import Home
from mocksync.space import membership as M
from mocksync.space.errors import MembershipError
from mocksync.space.fields import MAX_SPACE_RELAYS
from mocksync.space.identity import Identity
from mocksync.space.relayroutes import plan_routes, space_relays
from mocksync.spaceio import actions
from mocksync.spaceio.learn import learn_entries
from mocksync.spaceio.store import add_space, append_entries, get_space, set_local_relays

R1, R2, R3 = "https://r1.example:8765", "https://r2.example:8765", "http://127.0.0.1:9"
URLS = [f"https://r{i}.example:87{i:02d}" for i in range(8)]
T = 1_000


def ident(n: int) -> Identity:
    return Identity.from_seeds(f"dev{n}", bytes([n]) * 32, bytes([n + 100]) * 32,
                               member_name=f"person{n}")


A, B, C = ident(1), ident(2), ident(3)


def team_log() -> list[M.Entry]:
    """A space on R1: A (admin), B (admin), C (editor)."""
    log = [M.new_genesis(A, name="team", member_name="Alice", relay=R1, now_ms=T)]
    for dev, role in ((B, "admin"), (C, "editor")):
        mid = M.new_member_id()
        log.append(M.add_member(A, M.verify_log(log), member_id=mid, name=dev.member_name,
                                role=role, now_ms=T))
        log.append(M.add_device(A, M.verify_log(log), member_id=mid, device=dev.public,
                                sealed_key=None, now_ms=T))
    return log


def raw_entry(signer: Identity, state: M.SpaceState, kind: str, data: Any) -> bytes:
    """An entry's wire bytes, signed, whatever `data` holds (what a forger or a newer build
    sends; `sign_entry` would refuse to make it)."""
    body = encode({"v": 1, "space": state.space_id_bytes, "kind": kind,
                   "author": signer.device_id, "parents": sorted(state.heads),
                   "counter": state.next_counter, "time": T, "data": data})
    return encode({"body": body, "sig": signer.sign(M._SIGN_DOMAIN + body)})


# ---------------------------------------------------------------- the entry


def test_an_admin_moves_the_space_and_the_state_names_the_new_relays() -> None:
    log = team_log()
    state = M.verify_log(log)
    assert state.relays == (R1,)
    move = M.set_relays(A, state, relays=[R2, R3], now_ms=T)
    after = M.extend_log(log, [move])
    assert after.relays == (R2, R3) and after.relay == R2 and after.relay_more == (R3,)
    assert move.data == {"relays": [R2, R3]}
    one = M.set_relays(B, after, relays=[R1], now_ms=T)
    assert one.data == {"relays": R1}  # one relay: the genesis's old text form
    assert M.extend_log([*log, move], [one]).relays == (R1,)
    # Nothing else the log proves changes.
    assert after.members == state.members and after.key_generation == state.key_generation


def test_a_non_admin_move_is_void_and_refused() -> None:
    log = team_log()
    move = M.set_relays(C, M.verify_log(log), relays=[R2], now_ms=T)
    state = M.verify_log([*log, move])
    assert state.relays == (R1,)
    assert "not an admin" in state.void[move.hash_hex]
    with pytest.raises(MembershipError, match="not an admin"):
        M.extend_log(log, [move])


def test_a_move_to_the_same_list_is_void() -> None:
    log = team_log()
    raw = raw_entry(A, M.verify_log(log), "relays", {"relays": R1})
    with pytest.raises(MembershipError, match="already names exactly these relays"):
        M.extend_log(log, [raw])


@pytest.mark.parametrize(("data", "problem"), [
    ({"relays": None}, "must name 1..4 relays, got none"),
    ({"relays": []}, "must list 2..4 relays, got 0"),
    ({"relays": URLS[:MAX_SPACE_RELAYS + 1]}, "must list 2..4 relays, got 5"),
    ({"relays": "relay.example:80"}, "must start with http:// or https://"),
    ({"relays": "https://relay.example"}, "must name a port"),
    ({"relays": [R1, R1]}, "names the same relay twice"),
    ({"relays": [R1, 7]}, "must hold relay URLs"),
    ({"relays": R1, "more": 1}, "unknown field 'more'"),
    ({}, "missing field 'relays'"),
])
def test_a_malformed_move_refuses_the_whole_log(data: Any, problem: str) -> None:
    log = team_log()
    raw = raw_entry(A, M.verify_log(log), "relays", data)
    with pytest.raises(MembershipError, match=problem):
        M.verify_log([*log, raw])


def test_set_relays_refuses_a_bad_list_before_signing() -> None:
    state = M.verify_log(team_log())
    for bad, problem in (([], "must name 1..4"), (["ftp://x:1"], "http:// or https://"),
                         (URLS[:5], "over the limit of 4"), ([R2, R2], "same relay twice")):
        with pytest.raises(MembershipError, match=problem):
            M.set_relays(A, state, relays=bad, now_ms=T)


def test_an_entry_of_an_unknown_kind_refuses_the_log_saying_update() -> None:
    log = team_log()
    raw = raw_entry(A, M.verify_log(log), "relays_v9", {"relays": R2})
    with pytest.raises(MembershipError, match="kind 'relays_v9'.*update mocksync"):
        M.verify_log([*log, raw])


def test_an_old_log_reads_as_before() -> None:
    log = team_log()
    wires = [e.wire for e in log]
    state = M.verify_log(wires)
    assert state.relays == (R1,) and decode(log[0].body_bytes)["data"]["relay"] == R1


def test_concurrent_moves_resolve_the_same_everywhere() -> None:
    log = team_log()
    state = M.verify_log(log)
    by_a = M.set_relays(A, state, relays=[R2], now_ms=T)
    by_b = M.set_relays(B, state, relays=[R3], now_ms=T)
    first = M.verify_log([*log, by_a, by_b])
    second = M.verify_log([by_b, *reversed(log), by_a])
    winner = max((by_a, by_b), key=lambda e: (e.counter, e.hash))
    assert first.relays == second.relays == M.verify_log([*log, winner]).relays


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(URLS), min_size=1, max_size=MAX_SPACE_RELAYS,
                         unique=True), max_size=6),
       st.lists(st.booleans(), min_size=6, max_size=6))
def test_the_last_valid_move_by_an_admin_is_the_list(moves: list[list[str]],
                                                     by_editor: list[bool]) -> None:
    log = team_log()
    expect: tuple[str, ...] = (R1,)
    for urls, editor in zip(moves, by_editor, strict=False):
        entry = M.set_relays(C if editor else B, M.verify_log(log), relays=urls, now_ms=T)
        log.append(entry)  # appended even when void: the log is still verified as a whole
        if not editor and tuple(urls) != expect:
            expect = tuple(urls)
    state = M.verify_log(log)
    assert state.relays == expect
    assert len(set(state.relays)) == len(state.relays) <= MAX_SPACE_RELAYS


# ---------------------------------------------------------------- the CLI's steps


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Home, Identity, Home, Identity, str]:
    """Alice's home (admin of `team` on R1) and Bob's (an editor of it)."""
    ha, hb = Home(tmp_path / "a"), Home(tmp_path / "b")
    alice, _ = actions.init_device(ha, name="alice-laptop", member_name="Alice", now=T)
    bob, _ = actions.init_device(hb, name="bob-laptop", member_name="Bob", now=T)
    sp = actions.create_space(ha, alice, "team", relay=R1, now=T)
    state = sp.state
    mid = M.new_member_id()
    add_m = M.add_member(alice, state, member_id=mid, name="Bob", role="editor", now_ms=T)
    state = M.extend_log(sp.entries, [add_m])
    add_d = M.add_device(alice, state, member_id=mid, device=bob.public, sealed_key=None,
                         now_ms=T)
    stored = append_entries(ha, sp.space_id, [add_m, add_d])
    add_space(hb, stored.entries, stored.keys, now=T)
    return ha, alice, hb, bob, sp.space_id


def test_move_relays_is_admin_only_and_bad_input_changes_nothing(
        homes: tuple[Home, Identity, Home, Identity, str]) -> None:
    ha, alice, hb, bob, space = homes
    with pytest.raises(MembershipError, match="only an admin device can change the relays"):
        actions.move_relays(hb, bob, "team", [R2])
    for bad in ([], ["relay2"], URLS[:5]):
        with pytest.raises(MembershipError):
            actions.move_relays(ha, alice, "team", bad)
    with pytest.raises(MembershipError, match="already names exactly these relays"):
        actions.move_relays(ha, alice, "team", [R1])
    for h in (ha, hb):
        assert get_space(h, space).state.relays == (R1,)
        assert len(get_space(h, space).entries) == 3
    moved = actions.move_relays(ha, alice, "team", [R2])
    assert moved.state.relays == (R2,) and get_space(ha, space).state.relays == (R2,)


def test_local_relays_are_this_devices_and_forgotten_once_the_space_names_them(
        homes: tuple[Home, Identity, Home, Identity, str]) -> None:
    ha, alice, hb, bob, space = homes
    sp = actions.use_local_relays(hb, "team", [R2, R3])
    assert sp.local_relays == (R2, R3) and get_space(hb, space).local_relays == (R2, R3)
    assert get_space(hb, space).state.relays == (R1,)  # the signed list is untouched
    assert actions.use_local_relays(hb, "team", [R1]).local_relays == ()  # named already
    with pytest.raises(MembershipError, match="over the limit of 4"):
        set_local_relays(hb, space, URLS[:5])
    with pytest.raises(MembershipError, match="http:// or https://"):
        actions.use_local_relays(hb, "team", ["relay2"])
    actions.use_local_relays(hb, "team", [R2, R3])
    assert get_space(hb, space).local_relays == (R2, R3)  # refusals changed nothing

    moved = actions.move_relays(ha, alice, "team", [R2])
    held = get_space(hb, space)
    learned = learn_entries(hb, bob, space, held, [moved.entries[-1].wire])
    assert [e.kind for e in learned.fresh] == ["relays"]
    after = get_space(hb, space)
    assert after.state.relays == (R2,) and after.local_relays == (R3,)
    assert actions.use_local_relays(hb, "team", []).local_relays == ()


# ---------------------------------------------------------------- routes


def test_local_relays_go_first_and_never_add_another_spaces_relay() -> None:
    assert space_relays((R1,), (R2,)) == (R2, R1)
    assert space_relays((R1, R2), (R2,)) == (R2, R1)
    assert space_relays((R1,)) == (R1,)
    routes = plan_routes({"team": space_relays((R1,), (R2,)), "ops": (R3,)}, ())
    assert routes.route("team") == (R2, R1) and routes.route("ops") == (R3,)


@dataclass
class FakeState:
    relays: tuple[str, ...]


@dataclass
class FakeSpace:
    space_id: str
    state: FakeState
    local_relays: tuple[str, ...] = ()


@dataclass
class FakeDirectory:
    held: dict[str, FakeSpace] = field(default_factory=dict)

    def spaces(self) -> list[FakeSpace]:
        return list(self.held.values())


@dataclass
class FakeAgent:
    spaces: FakeDirectory


class FakeConnection:
    """Stands in for a `RelayTransport`: records the farewells and what follows them."""

    def __init__(self, route: tuple[str, ...], only: set[str], events: list[str]) -> None:
        self.route, self.only, self.events = route, only, events
        self.on_relays_moved: Any = None

    async def start(self, agent: Any) -> None:
        self.events.append(f"start {self.route[0]}")

    async def stop(self) -> None:
        self.events.append(f"stop {self.route[0]}")

    async def farewell(self, spaces: set[str]) -> None:
        self.events.append(f"farewell {self.route[0]} {sorted(spaces)}")

    async def reconnect(self) -> None:
        self.events.append(f"reconnect {self.route[0]}")

    async def push_logs(self) -> None:
        self.events.append(f"push {self.route[0]}")


async def test_the_fleet_hands_the_old_relay_the_move_then_closes_it() -> None:
    events: list[str] = []
    made: dict[tuple[str, ...], FakeConnection] = {}

    def make(route: tuple[str, ...], only: set[str]) -> Any:
        made[route] = FakeConnection(route, only, events)
        return made[route]

    directory = FakeDirectory({"team": FakeSpace("team", FakeState((R1,))),
                               "gone": FakeSpace("gone", FakeState((R3,)))})
    fleet = RelayFleet((), make=make, plan_check_s=3600)
    await fleet.start(FakeAgent(directory))  # type: ignore[arg-type]
    try:
        assert made[(R1,)].on_relays_moved == fleet.replan_soon
        events.clear()
        directory.held["team"] = FakeSpace("team", FakeState((R2,)))  # moved
        del directory.held["gone"]  # left: no farewell, its relay hears nothing more
        await fleet.replan()
        assert events.index(f"farewell {R1} ['team']") < events.index(f"stop {R1}")
        assert f"start {R2}" in events and not any("farewell " + R3 in e for e in events)
        assert set(fleet.transports) == {(R2,)}
        # A local route goes first for a device that missed the move.
        directory.held["team"] = FakeSpace("team", FakeState((R1,)), local_relays=(R2,))
        await fleet.replan()
        assert set(fleet.transports) == {(R2, R1)}
    finally:
        await fleet.stop()
