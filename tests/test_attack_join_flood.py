"""Attack class: idle join handshakes (issue 12). They never block a real join.

What was seen: 64 join handshakes opened through the relay and left idle made every real join
fail, with a wrong reason ("no admin reachable"): the relay counted them against its pending
limit and the inviting daemon kept each one open forever (16 at most, then it silently ignored
every joiner). Black box: a real relay, a real inviting daemon, 64 raw WebSocket connections
that each start a genuine handshake with a leaked invite token and go silent (plus 64 that
never say anything), then a real `mocksync join` with a fresh invite must succeed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from attack_tools import RawWebSocket
from journeys.harness import Team
from mocksync.relay.frames import JOIN_EVICTABLE_IDLE_S, MAX_JOINS_PER_TARGET
from mocksync.relay.protocol import JOINER, RELAY, decode_message, encode_message
from mocksync.space.identity import Identity
from mocksync.space.invite import InviteToken, JoinerSession

IDLE_JOINS = 64


@pytest.fixture
def team() -> Any:
    t = Team()
    try:
        yield t
    finally:
        t.close()


async def _open_idle(port: int, token: InviteToken, n: int) -> list[RawWebSocket]:
    """`n` connections that each start a genuine handshake and then say nothing more, and `n`
    that never say anything at all."""
    attacker = Identity.generate("mallory", now=time.time())
    out = []
    for _ in range(n):
        ws = await RawWebSocket.connect(port, "/v1/join")
        first = JoinerSession(token, attacker).start(time.time())
        await ws.send(encode_message({"t": "join", "s": token.space_id, "to": token.inviter,
                                      "p": first}, sender=JOINER))
        out.append(ws)
        out.append(await RawWebSocket.connect(port, "/v1/join"))
    return out


def test_idle_join_handshakes_never_block_a_real_join(team: Team) -> None:
    alice = team.device("alice")
    bob = team.device("bob")
    team.space(alice, "team")
    alice.start()
    leaked = InviteToken.parse(team.invite(alice, "team"))

    async def attack_then_join() -> tuple[Any, list[tuple[int, bytes] | None]]:
        idle = await _open_idle(team.relay.port, leaked, IDLE_JOINS)
        # Let every idle handshake age past the point where it may be evicted.
        await asyncio.sleep(JOIN_EVICTABLE_IDLE_S + 0.5)
        try:
            result = await asyncio.to_thread(team.join, bob, "team", alice)
            answers = [await ws.recv(timeout=0.5) for ws in idle[:2 * MAX_JOINS_PER_TARGET]]
            return result, answers
        finally:
            for ws in idle:
                await ws.close()

    result, answers = asyncio.run(attack_then_join())
    assert result.code == 0, result.err
    # Bob is a member now, on both sides; none of the attacker's handshakes admitted anyone.
    members = alice.ms("members", "team", "--json").json()["members"]
    names = sorted(m["name"] for m in members)
    assert names == ["alice", "bob"], names
    assert any(d["id"] == bob.id for m in members for d in m["devices"])
    # The relay told the handshakes it dropped why (or simply closed them): none hangs open.
    for a in answers:
        if a is not None and a[0] == 2:
            msg = decode_message(a[1], sender=RELAY)
            assert msg["t"] in ("jp", "refused"), msg


# ------------------------------------------------------------------ the pure bookkeeping


def test_join_limiter_evicts_unstarted_connections_first() -> None:
    from mocksync.relay.frames import JoinLimiter

    lim = JoinLimiter(total=4, per_address=3, per_target=2, evictable_idle_s=2.0)
    assert lim.connect(b"a", "1.1.1.1", 0.0) == ([], None)
    assert lim.connect(b"b", "1.1.1.1", 0.1) == ([], None)
    assert lim.start(b"b", ("s", "d"), 0.2) == ([], None)
    assert lim.connect(b"c", "1.1.1.1", 0.3) == ([], None)
    # The address is full: its oldest connection that never spoke (a) makes room.
    assert lim.connect(b"d", "1.1.1.1", 0.4) == ([b"a"], None)
    assert lim.connect(b"e", "2.2.2.2", 0.5) == ([], None)
    # The relay is full: the oldest unstarted connection anywhere (c) makes room.
    assert lim.connect(b"f", "3.3.3.3", 0.6) == ([b"c"], None)
    assert set(lim.conns) == {b"b", b"d", b"e", b"f"}


def test_join_limiter_per_target_cap_gives_way_only_to_silence() -> None:
    from mocksync.relay.frames import JoinLimiter

    lim = JoinLimiter(total=10, per_address=10, per_target=2, evictable_idle_s=2.0)
    for cid in (b"1", b"2", b"3"):
        lim.connect(cid, "1.1.1.1", 0.0)
    assert lim.start(b"1", ("s", "d"), 0.0) == ([], None)
    assert lim.start(b"2", ("s", "d"), 0.5) == ([], None)
    # Both are fresh: the newcomer is refused with a reason naming the inviting device.
    evict, refusal = lim.start(b"3", ("s", "d"), 1.0)
    assert evict == [] and refusal is not None and "device d" in refusal
    lim.touch(b"1", 1.5)
    # Later: 2 has been silent longest (since 0.5) and long enough: it gives way.
    assert lim.start(b"3", ("s", "d"), 3.0) == ([b"2"], None)
    # Another target is not affected by this one's cap.
    lim.connect(b"4", "1.1.1.1", 3.0)
    assert lim.start(b"4", ("s", "other"), 3.0) == ([], None)
    lim.close(b"4")
    assert b"4" not in lim.conns


def test_handshake_limiter_caps_per_address_and_total() -> None:
    from mocksync.relay.frames import HandshakeLimiter

    lim = HandshakeLimiter(total=3, per_address=2)
    assert lim.admit("a") is None and lim.admit("a") is None
    assert "address a already has 2" in (lim.admit("a") or "")
    assert lim.admit("b") is None
    assert "3 connections still authenticating" in (lim.admit("c") or "")
    lim.release("a")
    assert lim.admit("c") is None
    assert lim.count == 3 and lim.by_address == {"a": 1, "b": 1, "c": 1}


async def test_auth_slots_bound_concurrency_and_survive_cancellation() -> None:
    from mocksync.relay.frames import AuthSlots

    slots = AuthSlots(total=2, per_address=1)
    await slots.acquire("a")
    # A second from the same address waits (per-address cap), one from elsewhere does not.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await slots.acquire("a")
    await slots.acquire("b")
    with pytest.raises(TimeoutError):  # the relay-wide cap
        async with asyncio.timeout(0.05):
            await slots.acquire("c")
    slots.release("a")
    await slots.acquire("c")
    slots.release("b")
    slots.release("c")
    assert slots._by_address == {}  # nothing left behind by the cancelled waits
