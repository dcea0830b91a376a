"""The daemon's LAN signaling endpoint: where two devices swap a signed WebRTC offer/answer.

One small aiohttp app, bound only to the daemon's bind addresses (ephemeral port unless one is
configured; mDNS tells peers which). It does no deciding: the body (at most
`handshake.MAX_SIGNAL_BYTES`) goes to the transport's handler, which verifies the signature,
membership, fingerprint and freshness (`handshake.verify`) and returns the signed answer.
Refusals map to HTTP statuses with a short JSON reason; a device that shares no space with us
learns only that (never which spaces exist). At most `MAX_CONCURRENT_OFFERS` offers are worked
on at once (`MAX_OFFERS_PER_ADDRESS` from one address), a body is bounded as it arrives (a
declared Content-Length over the limit is refused before reading; aiohttp stops reading at
`client_max_size`) and must arrive within `OFFER_READ_TIMEOUT_S`, and the body is decoded by
the canonical decoding gate (no CBOR tags, bounded depth and items), so a flood or a slow
sender costs bounded memory and CPU and never holds the daemon's event loop (issue 12).

The same server takes `mocksync join` over the LAN (`JOIN_PATH`, a WebSocket carrying the
invite handshake, see `lan_join`): at most `MAX_CONCURRENT_JOINS` at once, each message at most
`invite.MAX_MESSAGE_BYTES`, `MAX_JOIN_MESSAGES` messages and `JOIN_TIMEOUT_S` in all.

The client side (`send_offer`) posts an offer to one address of a peer, from one of our bind
addresses, ignoring proxy settings: this traffic must stay on the LAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, WSMsgType, web

from ..errors import MocksyncError
from .errors import PeerRefused, PeerUnreachable, SignalError
from .handshake import MAX_SIGNAL_BYTES

log = logging.getLogger("mocksync.signaling")

OFFER_PATH = "/mocksync/lan/v1/offer"
JOIN_PATH = "/mocksync/lan/v1/join"
#: Join handshakes answered at the same time; more are refused with 503 (the joiner retries).
MAX_CONCURRENT_JOINS = 4
#: Messages a joiner may send in one handshake (hello, proof).
MAX_JOIN_MESSAGES = 4
#: Longest one join handshake may take, start to end.
JOIN_TIMEOUT_S = 20.0
CONTENT_TYPE = "application/cbor"
#: Offers handled at the same time; more get 503 and retry with backoff.
MAX_CONCURRENT_OFFERS = 16
#: Offers handled at the same time from one address (a peer needs one per dial).
MAX_OFFERS_PER_ADDRESS = 4
#: Seconds a peer has to deliver an offer's body once its headers arrived (slow senders must
#: not hold one of the MAX_CONCURRENT_OFFERS places).
OFFER_READ_TIMEOUT_S = 5.0
#: Time a peer has to answer our offer (it sets up its side of WebRTC first: ~50 ms).
OFFER_TIMEOUT_S = 6.0
#: TCP connect timeout for an offer (an unreachable LAN host fails fast).
CONNECT_TIMEOUT_S = 3.0

_STATUS = {"forbidden": 403, "incompatible": 409, "glare": 409, "limit": 413, "busy": 503}


Handler = Callable[[bytes, str | None], Awaitable[bytes]]


class JoinResponder(Protocol):
    """The inviter's side of one join handshake (`lan_join.InviterResponder`)."""

    done: bool

    def receive(self, data: bytes) -> list[bytes]: ...


JoinFactory = Callable[[], JoinResponder | None]


def _host(address: str) -> str:
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


class SignalingServer:
    """POST OFFER_PATH with a signed offer; answer 200 with a signed answer."""

    def __init__(self, bind: Sequence[str], port: int, handler: Handler,
                 join: JoinFactory | None = None) -> None:
        self.bind = tuple(bind) or ("0.0.0.0",)
        self.requested_port = port
        self.handler = handler
        self.join = join
        self._joins = 0
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._busy = 0
        self._busy_by_address: dict[str, int] = {}

    async def start(self) -> int:
        app = web.Application(client_max_size=MAX_SIGNAL_BYTES)
        app.router.add_post(OFFER_PATH, self._offer)
        app.router.add_get(JOIN_PATH, self._join)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        port = self.requested_port
        for address in self.bind:
            site = web.TCPSite(self._runner, address, port, reuse_address=True)
            await site.start()
            if port == 0:
                server = site._server
                sockets = getattr(server, "sockets", None) or []
                port = sockets[0].getsockname()[1]
        self.port = port
        return port

    async def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None

    async def _offer(self, request: web.Request) -> web.Response:
        if request.content_type != CONTENT_TYPE:
            return _error(415, "unsupported", f"send the offer as {CONTENT_TYPE}")
        if request.content_length is not None and request.content_length > MAX_SIGNAL_BYTES:
            return _error(413, "limit", f"offers are limited to {MAX_SIGNAL_BYTES} bytes")
        address = request.remote or "?"
        mine = self._busy_by_address.get(address, 0)
        if self._busy >= MAX_CONCURRENT_OFFERS or mine >= MAX_OFFERS_PER_ADDRESS:
            return _error(503, "busy", "too many connections being set up; retry shortly")
        self._busy += 1
        self._busy_by_address[address] = mine + 1
        try:
            try:
                async with asyncio.timeout(OFFER_READ_TIMEOUT_S):
                    body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return _error(413, "limit", f"offers are limited to {MAX_SIGNAL_BYTES} bytes")
            except TimeoutError:
                return _error(408, "timeout", f"the offer did not arrive within "
                              f"{OFFER_READ_TIMEOUT_S:g} s")
            try:
                answer = await self.handler(body, request.remote)
            except MocksyncError as exc:
                code = getattr(exc, "code", "error")
                status = _STATUS.get(code, 400)
                log.info("refused an offer from %s: %s", request.remote, exc)
                return _error(status, code, str(exc))
            return web.Response(body=answer, content_type=CONTENT_TYPE)
        finally:
            self._busy -= 1
            left = self._busy_by_address.get(address, 1) - 1
            if left > 0:
                self._busy_by_address[address] = left
            else:
                self._busy_by_address.pop(address, None)


    async def _join(self, request: web.Request) -> web.StreamResponse:
        """A joiner runs the invite handshake with this device (bounded, see module doc)."""
        responder = self.join() if self.join is not None else None
        if responder is None:
            return _error(404, "unknown", "this device takes no joins")
        if self._joins >= MAX_CONCURRENT_JOINS:
            return _error(503, "busy", "too many joins at once; retry shortly")
        from ..space.invite import MAX_MESSAGE_BYTES

        self._joins += 1
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=None)
        try:
            await ws.prepare(request)
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                for _ in range(MAX_JOIN_MESSAGES):
                    msg = await ws.receive()
                    if msg.type != WSMsgType.BINARY:
                        break
                    for reply in responder.receive(bytes(msg.data)):
                        await ws.send_bytes(reply)
                    if responder.done:
                        break
        except (TimeoutError, ConnectionError) as exc:
            log.info("a join from %s ended: %s", request.remote, type(exc).__name__)
        finally:
            self._joins -= 1
            with contextlib.suppress(Exception):
                await ws.close()
        return ws


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": code, "message": message}),
                        content_type="application/json")


async def send_offer(address: str, port: int, wire: bytes, *, bind: Sequence[str] = (),
                     timeout: float = OFFER_TIMEOUT_S) -> bytes:
    """Post a signed offer to `address:port`; the signed answer's bytes, or an error."""
    family = ipaddress.ip_address(address).version
    local = next((b for b in bind if ipaddress.ip_address(b).version == family), None)
    connector = TCPConnector(local_addr=(local, 0) if local else None, force_close=True)
    url = f"http://{_host(address)}:{port}{OFFER_PATH}"
    try:
        timeouts = ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT_S)
        async with (
            ClientSession(connector=connector, trust_env=False, timeout=timeouts) as http,
            http.post(url, data=wire, headers={"Content-Type": CONTENT_TYPE}) as resp,
        ):
            body = await resp.content.read(MAX_SIGNAL_BYTES + 1)
            if resp.status == 200:
                if len(body) > MAX_SIGNAL_BYTES:
                    raise SignalError("the peer's answer is over the size limit")
                return body
            code, message = "error", f"HTTP {resp.status}"
            with contextlib.suppress(ValueError, AttributeError):
                doc: Any = json.loads(body.decode("utf-8", "replace"))
                code, message = str(doc.get("error", code)), str(doc.get("message", message))
            raise PeerRefused(code, message[:500], resp.status)
    except (TimeoutError, ClientError, OSError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise PeerUnreachable(f"could not reach {address}:{port} ({detail})") from None
