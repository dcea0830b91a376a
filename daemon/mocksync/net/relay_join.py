"""`mocksync join` through the relay: the joiner's side of the invite handshake.

The joiner is not a member yet, so it cannot authenticate to the relay; it opens the relay's
`/v1/join` endpoint, which only forwards handshake messages to the inviting device (named in
the token) while that device's daemon is connected. The inviting daemon answers from its own
state machine (`RelayTransport.on_join_request`). The relay sees opaque handshake bytes only:
the secret never leaves the token, and the admission comes back as signed log entries.

A token may list several relays (issue 17): `split` makes one transport per relay and
`spaceio.join.join_space` tries them all at once, so a relay that is down, or one the inviting
daemon is not connected to right now, costs no more than its own failed attempt.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..relay.errors import RelayProtocolError
from ..relay.protocol import JOINER, MAX_SIGNAL_BYTES, encode_message, to_legacy
from ..space.errors import InviteError, NoAdminReachableError
from ..space.invite import InviteToken
from ..spaceio.join import register_join_transport
from .relay_gate import decode_relay_frame

JOIN_PATH = "/v1/join"


def _ws_url(relay: str) -> str:
    base = relay.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + JOIN_PATH
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + JOIN_PATH
    raise NoAdminReachableError(f"the invite's relay {relay!r} is not an http(s) URL")


class RelayJoinChannel:
    def __init__(self, session: aiohttp.ClientSession, ws: Any, token: InviteToken) -> None:
        self.session = session
        self.ws = ws
        self.token = token

    async def send(self, message: bytes) -> None:
        await self.ws.send_bytes(encode_message(
            {"t": "join", "s": self.token.space_id, "to": self.token.inviter, "p": message},
            sender=JOINER))

    async def receive(self) -> bytes:
        msg = await self.ws.receive()
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise NoAdminReachableError("the relay closed the join handshake")
        try:
            # per-kind caps, held in the decoding gate's one pass (net.relay_gate)
            m = to_legacy(decode_relay_frame(msg.data))
        except RelayProtocolError as exc:
            raise InviteError(f"the relay sent something unexpected: {exc}") from None
        if m["t"] == "jp":
            return m["p"]
        if m["t"] == "refused":
            raise NoAdminReachableError(m["r"])
        raise InviteError(f"the relay sent an unexpected {m['t']} message during the join")

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


class RelayJoinTransport:
    #: What `join` says when the relay never answered in time.
    silence = "the relay did not answer"

    def __init__(self, url: str | None = None) -> None:
        """`url`: the one relay this transport asks; None: the token's first relay."""
        self.url = url
        self.name = "relay" if url is None else f"relay {url}"

    def split(self, token: InviteToken) -> list[RelayJoinTransport]:
        """One transport per relay the token lists (itself when it lists at most one)."""
        if self.url is not None or len(token.relays) <= 1:
            return [self]
        return [RelayJoinTransport(url) for url in token.relays]

    def _relay(self, token: InviteToken) -> str | None:
        return self.url or token.relay

    def describe(self, token: InviteToken) -> str:
        relay = self._relay(token)
        return f"asking the relay {relay}..." if relay else "the invite names no relay"

    async def connect(self, token: InviteToken) -> RelayJoinChannel:
        relay = self._relay(token)
        if not relay:
            raise NoAdminReachableError(f"the invite for space {token.name!r} names no relay")
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(_ws_url(relay), max_msg_size=MAX_SIGNAL_BYTES + 1024,
                                          autoping=True)
        except (aiohttp.ClientError, OSError) as exc:
            await session.close()
            raise NoAdminReachableError(
                f"the relay {relay} is unreachable ({exc.__class__.__name__}: {exc})") from None
        return RelayJoinChannel(session, ws, token)


def _factory(home: Any) -> RelayJoinTransport:
    return RelayJoinTransport()


register_join_transport(_factory)
