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
    # Bob is a member: his daemon syncs the team's environments.
    bob.start()
    name = alice.add_example("petstore")
    pet = alice.share(name)["uuid"]
    team.synced(pet, alice, bob)
    # The relay told the handshakes it dropped why (or simply closed them): none hangs open
    # holding a slot, and none of them was admitted.
    members = alice.ms("members", "team", "--json", check=False)
    if members.code == 0:
        assert "mallory" not in members.out
    for a in answers:
        if a is not None and a[0] == 2:
            msg = decode_message(a[1], sender=RELAY)
            assert msg["t"] in ("jp", "refused"), msg
