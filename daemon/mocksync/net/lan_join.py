"""`mocksync join` over the LAN: finding the inviting device by mDNS and running the join
handshake with it directly, so a team can form with no relay anywhere (issue 16).

How the joiner finds its inviter without the space being named to strangers: the inviting
daemon announces, for each unused invite it issued, a join tag = keyed hash of its
announcement's fresh nonce under a key derived from the invite's secret (`join_tag`). Only
the holder of the token knows the secret, so only it can recognise the tag; anyone else sees
an opaque 8-byte value that changes with every announcement. The joiner also checks that the
announcing device is the one the token names.

The channel: a WebSocket on the daemon's LAN signaling endpoint (`lan_signaling.JOIN_PATH`).
It needs no encryption of its own: the handshake (`space.invite`) already MACs every step with
the invite secret and seals the content keys to the joiner's X25519 key, exactly as it does
through the relay, which sees only opaque bytes too. Every message from the joiner goes
through the canonical decoding gate with `invite.MAX_MESSAGE_BYTES`, the welcome is bounded
by `invite.MAX_WELCOME_BYTES`, and the inviter's side is bounded in concurrency and time by
`lan_signaling`.

Pure parts: `join_tag`, `tag_matches_invite`, `announces_invite`. Adapters: `LanJoinTransport`
(the joiner's side, registered with `spaceio.join`), `InviterResponder` (the daemon's side).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..changes.canonical import decode
from ..errors import ChangeSetError, MocksyncError
from ..space.errors import InviteError, NoAdminReachableError
from ..space.invite import MAX_MESSAGE_BYTES, MAX_WELCOME_BYTES, InviteToken, refused
from ..space.keys import space_tag, tag_matches

log = logging.getLogger("mocksync.lanjoin")

_JOIN_TAG_INFO = b"mocksync/lan-join-tag/v1\x00"
#: Seconds a joiner waits for an answer from one address of the inviter before trying the next.
CONNECT_TIMEOUT_S = 3.0


# ---------------------------------------------------------------- pure: tags


def _join_key(secret: bytes) -> bytes:
    return hmac.new(secret, _JOIN_TAG_INFO, hashlib.sha256).digest()


def join_tag(secret: bytes, nonce: bytes) -> str:
    """The tag announcing an invite with this secret, for one announcement nonce."""
    return space_tag(_join_key(secret), nonce)


def tag_matches_invite(secret: bytes, nonce: bytes, tag: str) -> bool:
    return tag_matches(_join_key(secret), nonce, tag)


def announces_invite(ann: Any, token: InviteToken) -> bool:
    """Does this mDNS announcement come from the token's inviter and carry its invite?"""
    return ann.device == token.inviter and any(
        tag_matches_invite(token.secret, ann.nonce, t) for t in ann.joins)


# ---------------------------------------------------------------- the joiner's side


class LanJoinChannel:
    """One WebSocket to the inviter's LAN endpoint (a `spaceio.join.JoinChannel`)."""

    def __init__(self, http: Any, ws: Any) -> None:
        self.http = http
        self.ws = ws

    async def send(self, message: bytes) -> None:
        await self.ws.send_bytes(message)

    async def receive(self) -> bytes:
        import aiohttp

        msg = await self.ws.receive()
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise NoAdminReachableError("the inviting device closed the join handshake")
        return bytes(msg.data)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self.http.close()


class LanJoinTransport:
    """Find the token's inviter by mDNS on the bind addresses and open a channel to it."""

    name = "LAN"
    #: What `join` says when the inviter never showed up on the LAN.
    silence = "the inviting device was not found on the LAN"

    def __init__(self, bind: Sequence[str] = (), *, mdns_factory: Callable[..., Any] | None = None
                 ) -> None:
        from . import ice

        self.bind = ice.check_bind(bind)
        self._mdns_factory = mdns_factory

    def describe(self, token: InviteToken) -> str:
        where = ", ".join(self.bind) if self.bind else "all interfaces"
        return f"looking on the LAN ({where}) for the inviting device {token.inviter}..."

    def _networks(self) -> Any:
        from . import ice

        return ice.bind_networks(self.bind) if self.bind else None

    async def connect(self, token: InviteToken) -> LanJoinChannel:
        from .mdns import MdnsService

        found: asyncio.Queue[Any] = asyncio.Queue()

        def on_peer(d: Any) -> None:
            if announces_invite(d.announcement, token):
                found.put_nowait(d)

        factory = self._mdns_factory or MdnsService
        mdns = factory(self.bind, self._networks(), on_peer=on_peer, on_gone=lambda _d: None)
        await mdns.start(None)
        try:
            while True:
                d = await found.get()  # bounded by the caller's timeout
                for address in d.addresses:
                    try:
                        return await self._open(address, d.announcement.port)
                    except (OSError, TimeoutError, NoAdminReachableError) as exc:
                        log.info("inviter at %s:%s did not answer: %s", address,
                                 d.announcement.port, exc)
        finally:
            await mdns.stop()

    async def _open(self, address: str, port: int) -> LanJoinChannel:
        import aiohttp

        from .lan_signaling import JOIN_PATH, _host

        family = ipaddress.ip_address(address).version
        local = next((b for b in self.bind if ipaddress.ip_address(b).version == family), None)
        connector = aiohttp.TCPConnector(local_addr=(local, 0) if local else None,
                                         force_close=True)
        http = aiohttp.ClientSession(connector=connector, trust_env=False)
        try:
            ws = await http.ws_connect(f"http://{_host(address)}:{port}{JOIN_PATH}",
                                       max_msg_size=MAX_WELCOME_BYTES + 1024,
                                       timeout=aiohttp.ClientWSTimeout(ws_close=CONNECT_TIMEOUT_S),
                                       autoping=True)
        except (aiohttp.ClientError, OSError) as exc:
            await http.close()
            raise NoAdminReachableError(f"{address}:{port} refused the join channel ({exc})"
                                        ) from None
        return LanJoinChannel(http, ws)


# ---------------------------------------------------------------- the inviter's side


def peek_space(message: bytes) -> str:
    """The space id a joiner's first message (join-hello) names, through the decoding gate."""
    if len(message) > MAX_MESSAGE_BYTES:
        raise InviteError(f"join message of {len(message)} bytes is over the "
                          f"{MAX_MESSAGE_BYTES} byte limit")
    try:
        obj = decode(message, what="join message")
    except ChangeSetError as exc:
        raise InviteError(str(exc)) from None
    space = obj.get("space") if isinstance(obj, dict) else None
    if not isinstance(space, bytes) or len(space) != 16:
        raise InviteError("the first join message must be a join-hello naming a space")
    return space.hex()


class InviterResponder:
    """This daemon's side of one LAN join handshake: never raises for what the joiner sends;
    every problem is a `join-refused` message. `on_admitted(space)` runs after an admission
    is stored (the transport then tells its peers and the relay)."""

    def __init__(self, home: Any, identity: Any, on_admitted: Callable[[str], None]) -> None:
        self.home = home
        self.identity = identity
        self.on_admitted = on_admitted
        self.session: Any = None
        self.done = False
        self.space: str | None = None

    def receive(self, data: bytes) -> list[bytes]:
        from ..space.invite import Admission
        from ..spaceio.actions import admin_session, record_admission

        if self.done:
            return []
        try:
            if self.session is None:
                self.space = peek_space(data)
                self.session = admin_session(self.home, self.identity, self.space)
            replies = self.session.receive(data, time.time())
            outcome = self.session.outcome
            if outcome is not None:
                self.done = True
                if isinstance(outcome, Admission):
                    record_admission(self.home, self.session)
                    log.info("admitted device %s into space %s over the LAN",
                             outcome.device_id, self.space)
                    assert self.space is not None
                    self.on_admitted(self.space)
            return replies
        except MocksyncError as exc:
            self.done = True
            return [refused(str(exc))]


def newest_invite_secrets(books: Iterable[Any], now: float, limit: int) -> list[bytes]:
    """Secrets of the newest `limit` unused, unexpired invites across `books` (pure)."""
    recs = [r for book in books for r in book.outstanding(now)]
    recs.sort(key=lambda r: (r.created, r.invite_id), reverse=True)
    return [r.secret for r in recs[:limit]]


__all__ = [
    "InviterResponder",
    "LanJoinChannel",
    "LanJoinTransport",
    "announces_invite",
    "join_tag",
    "newest_invite_secrets",
    "peek_space",
    "tag_matches_invite",
]
