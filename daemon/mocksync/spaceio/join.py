"""How `mocksync join` reaches an admin device: a transport protocol and the loop that drives
the joiner's state machine over it.

Why a protocol and a registry: the handshake itself is pure (`invite.JoinerSession`); reaching
the inviting device is the network layer's job (LAN via mDNS, or relay signaling), which lives
in `mocksync.net` and registers a factory here. With no transport registered, or none that can
reach an admin, join fails with a sentence saying so; it never pretends to have joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..space.errors import InviteError, NoAdminReachableError
from ..space.invite import InviteToken, JoinerSession, JoinResult

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


def split_transports(transports: list[JoinTransport], token: InviteToken) -> list[JoinTransport]:
    """One transport per way of reaching the inviter: a transport with a `split(token)` method
    (the relay transport: one per relay the token lists, issue 17) is replaced by what that
    returns, so every relay is tried at once and a relay that is down costs nothing."""
    out: list[JoinTransport] = []
    for transport in transports:
        split = getattr(transport, "split", None)
        out.extend(split(token) if split is not None else [transport])
    return out


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
            shown = f"{waited:.1f}" if waited < 10 else f"{waited:.0f}"
            parts.append(f"{name}: {reason or 'no answer'} within {shown} s")
    why = "; ".join(parts) or "no transport was tried"
    return (f"no admin device of space {space_name!r} is reachable ({why}); make sure the "
            f"inviting device {inviter} is online with its daemon running, then run join again")


#: Called with a short sentence while `join_space` waits ("looking on the LAN...").
Progress = Callable[[str], None]


def _describe(transport: JoinTransport, token: InviteToken) -> str:
    describe = getattr(transport, "describe", None)
    return describe(token) if describe is not None else f"trying {transport.name}..."


async def join_space(session: JoinerSession, transports: list[JoinTransport], *,
                     timeout: float, clock: Callable[[], float] = time.time,
                     progress: Progress | None = None) -> JoinResult:
    """Try every transport at once within `timeout` seconds; the first admission wins.

    Each transport runs its own handshake (a fresh `JoinerSession` beside `session`); the
    inviting device admits the device once, so a second handshake that reaches it too is
    refused as "already used" and dropped here. A refusal or expiry said by the inviting device
    is final and raised at once; "cannot reach it this way" waits for the other transports."""
    token = session.token
    say = progress or (lambda _text: None)
    if not transports:
        raise NoAdminReachableError(
            f"no admin device of space {token.name!r} is reachable: this installation has no "
            f"way to reach device {token.inviter} yet (no LAN or relay transport is available)"
        )
    transports = split_transports(transports, token)
    loop = asyncio.get_running_loop()
    began = loop.time()
    sessions = [session] + [JoinerSession(token, session.identity, member_name=session.member_name)
                            for _ in transports[1:]]

    async def attempt(transport: JoinTransport, sess: JoinerSession) -> JoinResult:
        say(_describe(transport, token))
        channel = await transport.connect(token)
        try:
            return await run_join(sess, channel, clock=clock)
        finally:
            await channel.close()

    tasks = {asyncio.ensure_future(attempt(t, s)): t for t, s in zip(transports, sessions,
                                                                      strict=True)}
    attempts: list[tuple[str, str, float | None]] = []
    try:
        pending = set(tasks)
        while pending:
            left = timeout - (loop.time() - began)
            if left <= 0:
                break
            done, pending = await asyncio.wait(pending, timeout=left,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is None:
                    say("admitted")
                    return task.result()
                if isinstance(exc, NoAdminReachableError):
                    attempts.append((tasks[task].name, str(exc), None))
                    continue
                raise exc
        waited = loop.time() - began
        for task in pending:
            attempts.append((tasks[task].name, getattr(tasks[task], "silence", ""), waited))
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
    raise NoAdminReachableError(unreachable_sentence(token.name, token.inviter, attempts))


__all__ = [
    "JoinChannel",
    "JoinTransport",
    "find_join_transports",
    "join_space",
    "register_join_transport",
    "run_join",
    "split_transports",
    "unreachable_sentence",
    "unregister_join_transport",
]
