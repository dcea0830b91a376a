"""How `mocksync join` reaches an admin device: a transport protocol and the loop that drives
the joiner's state machine over it.

Why a protocol and a registry: the handshake itself is pure (`invite.JoinerSession`); reaching
the inviting device is the network layer's job (LAN via mDNS, or relay signaling), which lives
in `mocksync.net` and registers a factory here. With no transport registered, or none that can
reach an admin, join fails with a sentence saying so; it never pretends to have joined.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from .errors import InviteError, NoAdminReachableError
from .invite import InviteToken, JoinerSession, JoinResult

#: Handshake round trips a join takes (hello, proof); anything beyond is a protocol error.
MAX_JOIN_MESSAGES = 4


class JoinChannel(Protocol):
    """A bidirectional message pipe to one admin device (messages are whole byte strings)."""

    async def send(self, message: bytes) -> None: ...

    async def receive(self) -> bytes: ...

    async def close(self) -> None: ...


class JoinTransport(Protocol):
    """A way of reaching the device that issued an invite."""

    name: str

    async def connect(self, token: InviteToken) -> JoinChannel:
        """Open a channel to the token's inviter; raise NoAdminReachableError if it cannot."""
        ...


#: Factories from a `Home` to a transport (or None when it cannot be used there).
TransportFactory = Callable[[Any], JoinTransport | None]
_FACTORIES: list[TransportFactory] = []


def register_join_transport(factory: TransportFactory) -> None:
    if factory not in _FACTORIES:
        _FACTORIES.append(factory)


def unregister_join_transport(factory: TransportFactory) -> None:
    if factory in _FACTORIES:
        _FACTORIES.remove(factory)


def find_join_transports(home: Any) -> list[JoinTransport]:
    found = []
    for factory in list(_FACTORIES):
        transport = factory(home)
        if transport is not None:
            found.append(transport)
    return found


async def run_join(session: JoinerSession, channel: JoinChannel, *,
                   clock: Callable[[], float] = time.time) -> JoinResult:
    """Drive `session` over `channel` until it has joined or fails (raises InviteError)."""
    await channel.send(session.start(clock()))
    for _ in range(MAX_JOIN_MESSAGES):
        incoming = await channel.receive()
        for out in session.receive(incoming, clock()):
            await channel.send(out)
        if session.result is not None:
            return session.result
    raise InviteError("the admin device did not finish the join handshake")


def unreachable_sentence(space_name: str, inviter: str,
                         attempts: list[tuple[str, str, float | None]]) -> str:
    """Why no admin device could be reached, from what each transport said (pure).

    `attempts`: (transport name, its reason, seconds it waited for an answer or None when it
    failed at once). A duration appears only when one was really waited, so the sentence never
    claims a wait that did not happen."""
    parts = []
    for name, reason, waited in attempts:
        if waited is None:
            parts.append(f"{name}: {reason}")
        else:
            parts.append(f"{name}: no answer within {waited:.0f} s")
    why = "; ".join(parts) or "no transport was tried"
    return (f"no admin device of space {space_name!r} is reachable ({why}); make sure the "
            f"inviting device {inviter} is online with its daemon running, then run join again")


async def join_space(session: JoinerSession, transports: list[JoinTransport], *,
                     timeout: float, clock: Callable[[], float] = time.time) -> JoinResult:
    """Try each transport in turn within `timeout` seconds overall."""
    token = session.token
    if not transports:
        raise NoAdminReachableError(
            f"no admin device of space {token.name!r} is reachable: this installation has no "
            f"way to reach device {token.inviter} yet (no LAN or relay transport is available)"
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    attempts: list[tuple[str, str, float | None]] = []
    for transport in transports:
        left = deadline - loop.time()
        if left <= 0:
            break
        began = loop.time()
        try:
            async with asyncio.timeout(left):
                channel = await transport.connect(token)
                try:
                    return await run_join(session, channel, clock=clock)
                finally:
                    await channel.close()
        except NoAdminReachableError as exc:
            attempts.append((transport.name, str(exc), None))
        except TimeoutError:
            attempts.append((transport.name, "", loop.time() - began))
            if session.state != "new":
                break
    raise NoAdminReachableError(unreachable_sentence(token.name, token.inviter, attempts))


__all__ = [
    "JoinChannel",
    "JoinTransport",
    "find_join_transports",
    "join_space",
    "register_join_transport",
    "run_join",
    "unreachable_sentence",
    "unregister_join_transport",
]
