"""The daemon's connection to a relay (asyncio, aiohttp WebSocket client).

Why a client separate from the transport: this module knows the relay protocol (handshake,
request ids, pushes, reconnecting) and nothing about change sets or the agent, so it can be
driven by tests, benchmarks and other tools directly; `relay_transport` puts the agent's
change sets through it.

One long-lived task keeps a connection up: connect, `hello`, answer the challenge by signing
the nonce with the device key and uploading the membership entries the relay lacks, `welcome`;
then a reader loop routes replies to the requests waiting for them (by request id) and pushes
(`env`, `presence`, `signal`) to a `RelayEvents` object. When the connection ends it waits
(exponential backoff with jitter; much longer after a refusal that needs a person, like
`revoked`) and tries again; `reconnect()` cuts the wait short.

States (docs/design/cli.md "`status --json`"): connecting, connected, offline (with why and when the next attempt
is), refused (with the relay's sentence).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from .. import MODEL_VERSION, PROTOCOL_VERSION, __version__
from ..aiotime import within
from ..backoff import backoff_delay
from ..errors import MocksyncError
from ..ports import PinBook
from ..relay.auth import (
    MAX_NAMED_SPACES,
    check_relay_proof,
    fingerprint,
    pin_refusal,
    relay_origin,
    seal_signal,
    sign_challenge,
)
from ..relay.envelope import Envelope
from ..relay.errors import RelayProtocolError
from ..relay.frames import OFFLOAD_DECODE_BYTES
from ..relay.policy import PERSISTENT_CODES
from ..relay.protocol import (
    CLIENT,
    CODECS,
    MAX_FRAME_BYTES,
    Ack,
    Auth,
    Batch,
    Bye,
    Challenge,
    Entries,
    EnvPush,
    Fetch,
    Hello,
    HighWater,
    IndexReply,
    IndexRequest,
    JoinReply,
    JoinRequest,
    LogUpload,
    Nack,
    Ok,
    Ping,
    PlanInfo,
    Pong,
    Presence,
    Put,
    Refused,
    RelayMessage,
    Signal,
    SignalPush,
    SnapshotGet,
    SnapshotPut,
    SnapshotReply,
    Welcome,
    Who,
    from_map,
)
from .errors import RelayError, RelayRefused, RelayUnavailable, sentence
from .relay_gate import decode_relay_frame

log = logging.getLogger("mocksync.relay.client")

CONNECTING, CONNECTED, OFFLINE, REFUSED = "connecting", "connected", "offline", "refused"
WS_PATH = "/v1/ws"
#: Reconnect backoff: first wait, cap, and the +-fraction of jitter.
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
BACKOFF_JITTER = 0.2
#: Wait after a refusal a person must fix (auth_refused, revoked, incompatible_version).
REFUSED_RETRY_S = 300.0
#: Seconds to open the connection and to finish each handshake step.
CONNECT_TIMEOUT_S = 10.0
#: Seconds a request waits for its reply before the connection is considered dead.
REQUEST_TIMEOUT_S = 30.0
#: WebSocket ping interval (aiohttp closes a connection whose pong does not come back).
HEARTBEAT_S = 20.0
#: Requests in flight at once on one connection.
MAX_INFLIGHT_REQUESTS = 64

#: Relay addresses one client knows (instances of one relay cluster, tried in order).
MAX_RELAY_URLS = 16


def relay_urls(url: str | Sequence[str]) -> tuple[str, ...]:
    """The relay addresses to try, in order (one address or several), without repeats."""
    urls = tuple(dict.fromkeys([url] if isinstance(url, str) else list(url)))
    if not urls:
        raise RelayError("no relay address given")
    if len(urls) > MAX_RELAY_URLS:
        raise RelayError(f"{len(urls)} relay addresses given; at most {MAX_RELAY_URLS} are used")
    return urls


def failover(count: int, current: int, failures: int, *, persistent: bool = False
             ) -> tuple[int, bool]:
    """After a connection to relay `current` (of `count`) ended or failed: the relay to try
    next, and whether to wait the backoff first (pure).

    `failures`: attempts in a row that reached no session, this one included (0 when this
    one had a session that then ended). With several relays (instances of one cluster) the
    next is tried at once, so a device whose instance died is back within a connect; the
    backoff applies only once every relay failed in a row. A refusal a person must fix
    (`persistent`) is the cluster's answer: same relay, and wait."""
    if count <= 1 or persistent:
        return current, True
    return (current + 1) % count, failures >= count


def unreachable_reason(url: str, exc: BaseException) -> str:
    """Why the relay at `url` could not be reached, as a sentence a person can act on, from
    the error the connection attempt raised (pure: it only looks at the exception).

    Why not the exception's own text: aiohttp's reads "Cannot connect to host 127.0.0.1:8765
    ssl:default [Connect call failed ('127.0.0.1', 8765)]", which says neither what is wrong
    nor what to do. What happens meanwhile is the same in every case and said once by the
    caller's status line: edits stay on this device and the daemon retries by itself."""
    where = f"the relay at {url}"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return (f"{where} answered HTTP {exc.status} instead of a mocksync relay connection; "
                "check the --relay URL")
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return f"{where} failed the TLS check; check its certificate and the https:// URL"
    if isinstance(exc, RelayUnavailable | aiohttp.ServerDisconnectedError):
        return f"{where} closed the connection; it may be restarting"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"{where} did not answer in time; it or the network may be overloaded"
    os_error = exc if isinstance(exc, OSError) else None
    if os_error is not None and os_error.errno == errno.ECONNREFUSED:
        return f"{where} is not running (connection refused); it may be stopped or restarting"
    if isinstance(exc, socket.gaierror) or (
            isinstance(exc, aiohttp.ClientConnectorError)
            and isinstance(exc.os_error, socket.gaierror)):
        return f"{where} cannot be found (its host name does not resolve); check the URL"
    if os_error is not None and os_error.errno in _NETWORK_DOWN:
        return f"{where} is out of reach: this device has no network route to it"
    if os_error is not None and os_error.errno == errno.ECONNRESET:
        return f"{where} reset the connection; it may be restarting"
    detail = (os_error.strerror if os_error is not None and os_error.strerror else None) \
        or exc.__class__.__name__
    return f"{where} cannot be reached ({detail})"


#: errno values that mean "no network path", not "nothing listening".
_NETWORK_DOWN = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN,
                           errno.EHOSTDOWN})


def ws_url(url: str) -> str:
    """`http://host:port` -> `ws://host:port/v1/ws` (https -> wss); ws/wss URLs kept."""
    u = url.rstrip("/")
    for src, dst in (("http://", "ws://"), ("https://", "wss://")):
        if u.startswith(src):
            return dst + u[len(src):] + WS_PATH
    if u.startswith(("ws://", "wss://")):
        return u if u.endswith(WS_PATH) else u + WS_PATH
    raise RelayError(f"relay must be http://host:port or https://host:port, not {url!r}")


class RelayPins:
    """Where a client keeps the relay key each space pinned on first use (TOFU), per (space,
    relay address). The default pins nothing (tools and tests); the daemon stores pins with
    its spaces (`spaceio.store.SpacePins`)."""

    def pinned_many(self, spaces: Sequence[str], url: str) -> dict[str, bytes | None]:
        """Every space's pin at relay address `url` at once (a store reads them in one go)."""
        return dict.fromkeys(spaces)

    def admitted(self, spaces: Sequence[str], url: str, relay_key: bytes) -> None:
        """Called once the relay at `url` presenting `relay_key` admitted this device to
        `spaces`: pin it where a space has none for `url` yet."""

    def name(self, space: str) -> str | None:
        return None


class RelayEvents:
    """What a client tells its owner. Override what you need; defaults do nothing."""

    async def on_session(self, client: RelayClient, welcome: Welcome) -> None:
        """Connected and admitted (runs as its own task; cancelled when the connection ends).
        `welcome` is the relay's typed `welcome` (`welcome.ok`: the plan of each admitted
        space)."""

    def on_envelopes(self, space: str, tag: str, items: Sequence[Envelope]) -> None:
        """Live push: envelopes another device just put."""

    def on_presence(self, space: str, device: str, tag: str | None, entity: str | None,
                    online: bool) -> None: ...

    def on_signal(self, space: str, sender: str, payload: bytes) -> None: ...

    def on_state(self, client: RelayClient) -> None:
        """The connection state changed."""


class RelayClient:
    """A self-reconnecting relay connection for one device."""

    def __init__(
        self,
        url: str | Sequence[str],
        identity: Any,
        logs: Callable[[], Mapping[str, Sequence[bytes]]],
        events: RelayEvents | None = None,
        *,
        protocol_version: int = PROTOCOL_VERSION,
        model_version: int = MODEL_VERSION,
        ssl: Any = None,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        refused_retry_s: float = REFUSED_RETRY_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        heartbeat_s: float = HEARTBEAT_S,
        pins: PinBook | None = None,
    ) -> None:
        #: Every address of the relay (instances of one cluster); `url` is the one in use.
        self.urls = relay_urls(url)
        for u in self.urls:
            ws_url(u)  # a malformed address is refused here, before anything starts
        self._current = 0
        self._failures = 0
        self._use(0)
        self.pins: PinBook = pins or RelayPins()
        #: The key the relay proved it holds in the last challenge (None before the first).
        self.relay_key: bytes | None = None
        self.identity = identity
        self.logs = logs
        self.events = events or RelayEvents()
        self.protocol_version = protocol_version
        self.model_version = model_version
        self.ssl = ssl
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.refused_retry_s = refused_retry_s
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.heartbeat_s = heartbeat_s
        self.state = OFFLINE
        self.reason: str | None = "not started"
        self.code: str | None = None
        self.accepted: dict[str, PlanInfo] = {}  # admitted space -> the plan the relay enforces
        self.space_refusals: dict[str, tuple[str, str]] = {}
        self.uploaded: dict[str, set[bytes]] = {}
        self.presence: dict[str, dict[str, tuple[str | None, str | None]]] = {}
        self.connected_at: float | None = None
        self.rtt_ms: float | None = None
        self.my_presence: dict[str, tuple[str | None, str | None]] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[RelayMessage]] = {}
        self._next_id = 0
        self._inflight = asyncio.Semaphore(MAX_INFLIGHT_REQUESTS)
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_retry_at: float | None = None
        self._attempt = 0
        #: Sessions this client has had (a failed attempt leaves it unchanged).
        self._sessions = 0
        self._rng = random.Random()
        self._connected = asyncio.Event()
        #: `reconnect()` closed the session: connect to the same address again.
        self._again = False

    def _use(self, index: int) -> None:
        self._current = index
        self.url = self.urls[index]
        self.ws_url = ws_url(self.url)
        #: The relay's address as this device dials it: part of what the challenge answer signs.
        self.origin = relay_origin(self.url)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._http = aiohttp.ClientSession()
            self._task = asyncio.create_task(self._run(), name=f"relay {self.url}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._set_state(OFFLINE, "stopped")

    async def reconnect(self) -> None:
        """Retry now: drop the current connection (if any) and skip the backoff wait. The
        same relay address again: a connection dropped on purpose is not a dead instance."""
        self._attempt = 0
        # Two pokes in a row must not undo the first one's "same address again".
        self._again = self._again or self._ws is not None
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        self._wake.set()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await within(timeout, self._connected.wait())
        except TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED and self._ws is not None and not self._ws.closed

    @property
    def next_retry_s(self) -> float | None:
        if self._next_retry_at is None or self.state in (CONNECTED, CONNECTING):
            return None
        return round(max(0.0, self._next_retry_at - time.monotonic()), 1)

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "urls": list(self.urls),
            "state": self.state,
            "reason": self.reason,
            "code": self.code,
            "next_retry_s": self.next_retry_s,
            "rtt_ms": self.rtt_ms,
            "spaces": sorted(self.accepted),
            "refused_spaces": {s: sentence(c, r) for s, (c, r) in self.space_refusals.items()},
            "relay_key": fingerprint(self.relay_key) if self.relay_key else None,
        }

    def _set_state(self, state: str, reason: str | None, code: str | None = None) -> None:
        changed = (state, reason) != (self.state, self.reason)
        self.state, self.reason, self.code = state, reason, code
        if state == CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()
        if changed:
            log.info("relay %s: %s%s", self.url, state, f" ({reason})" if reason else "")
            with contextlib.suppress(Exception):
                self.events.on_state(self)

    def _backoff(self) -> float:
        return backoff_delay(self._attempt, self.backoff_min_s, self.backoff_max_s,
                             spread=BACKOFF_JITTER, jitter=self._rng.uniform(-1.0, 1.0))

    async def _run(self) -> None:
        while not self._stopping:
            self._set_state(CONNECTING, None)
            sessions = self._sessions
            persistent = False
            try:
                await self._connect_once()
                state, code = OFFLINE, None
                reason = "the connection to the relay closed; reconnecting"
                delay = self._backoff()
            except RelayRefused as exc:
                state, reason, code = REFUSED, str(exc), exc.code
                persistent = exc.code in PERSISTENT_CODES
                delay = self.refused_retry_s if persistent else self._backoff()
            except RelayProtocolError as exc:
                state, code = OFFLINE, "bad_message"
                reason = f"the relay at {self.url} sent something this device cannot read: {exc}"
                delay = self._backoff()
            except (aiohttp.ClientError, OSError, TimeoutError, RelayUnavailable) as exc:
                state, code = OFFLINE, None
                log.debug("relay %s unreachable: %r", self.url, exc)
                reason = unreachable_reason(self.url, exc)
                delay = self._backoff()
            except MocksyncError as exc:  # e.g. this device's own space files are damaged
                state, code = OFFLINE, getattr(exc, "code", None)
                reason = f"cannot connect to the relay: {exc}"
                delay = self._backoff()
            except Exception as exc:  # a bug must not end the reconnect loop for good
                log.exception("relay connection to %s failed", self.url)
                state, code = OFFLINE, None
                reason = f"relay connection failed unexpectedly ({exc.__class__.__name__}); retrying"
                delay = self._backoff()
            if self._stopping:
                break
            self._failures = 0 if self._sessions != sessions else self._failures + 1
            nxt, wait = failover(len(self.urls), self._current, self._failures,
                                 persistent=persistent)
            if self._again and self._sessions != sessions:  # ended by `reconnect()`
                nxt, wait = self._current, False
                self._wake.clear()  # its wake-up is used up by this immediate retry
            self._again = False
            if nxt != self._current:
                log.info("relay %s: trying the next relay address %s", self.url, self.urls[nxt])
                self._use(nxt)
            if not wait:
                self._set_state(state, reason, code)
                continue
            self._failures = 0
            self._attempt += 1
            self._next_retry_at = time.monotonic() + delay
            self._set_state(state, reason, code)
            with contextlib.suppress(TimeoutError):
                await within(delay, self._wake.wait())
            self._wake.clear()

    async def _recv(self, ws: aiohttp.ClientWebSocketResponse, timeout: float | None
                    ) -> RelayMessage:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            # Per-kind caps held in the decoding gate's one pass, before anything is built
            # (relay_gate); a big batch is walked and decoded off the loop.
            if len(msg.data) >= OFFLOAD_DECODE_BYTES:
                return await asyncio.to_thread(decode_relay_frame, msg.data)
            return decode_relay_frame(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED):
            raise RelayUnavailable("the relay closed the connection")
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise RelayUnavailable(f"connection error: {ws.exception()}")
        raise RelayProtocolError("the relay sent a text frame; it speaks binary frames only")

    async def _connect_once(self) -> None:
        assert self._http is not None
        logs = {s: list(w) for s, w in self.logs().items()}
        if not logs:
            raise RelayRefused("auth_refused", "this device belongs to no space to sync through "
                                               "the relay")
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation (stop())
        # that lands just as the connection opens, and the handshake then ran on with stop()
        # waiting for it forever.
        async with asyncio.timeout(self.connect_timeout_s):
            ws = await self._http.ws_connect(
                self.ws_url, max_msg_size=MAX_FRAME_BYTES, heartbeat=self.heartbeat_s,
                ssl=self.ssl if self.ssl is not None else True, autoping=True, compress=0)
        try:
            await ws.send_bytes(_encode(Hello(
                self.protocol_version, self.model_version, self.identity.device_id,
                sorted(logs), f"mocksync {__version__}")))
            challenge = await self._recv(ws, self.connect_timeout_s)
            if isinstance(challenge, Refused):
                raise RelayRefused(challenge.code, challenge.reason)
            if not isinstance(challenge, Challenge):
                raise RelayProtocolError(f"expected a challenge, got {challenge.KIND}")
            self._check_relay(challenge, logs)
            uploads: dict[str, list[bytes]] = {}
            for space, wires in logs.items():
                have = set(challenge.have.get(space, ()))
                uploads[space] = [w for w in wires if hashlib.sha256(w).digest() not in have]
            await ws.send_bytes(_encode(Auth(
                sign_challenge(self.identity, challenge.nonce, challenge.key, self.origin),
                self.origin, uploads)))
            welcome = await self._recv(ws, self.connect_timeout_s)
            # Before a `revoked` (in the welcome's refusals or the session's), the relay hands
            # over the signed entries that prove the removal: learned like any entries.
            # One frame per space named in the hello (a frame holds a whole log), no more.
            early = 0
            while isinstance(welcome, Entries):
                early += 1
                if early > len(logs) or welcome.space not in logs:
                    raise RelayProtocolError(
                        "the relay sent membership entries before its welcome for a space "
                        "this device did not name, or more than one frame per space")
                handler = getattr(self.events, "on_entries", None)
                if handler is not None:
                    self._dispatch(handler, welcome.space, welcome.wires)
                welcome = await self._recv(ws, self.connect_timeout_s)
            if isinstance(welcome, Refused):
                raise RelayRefused(welcome.code, welcome.reason)
            if not isinstance(welcome, Welcome):
                raise RelayProtocolError(f"expected welcome, got {welcome.KIND}")
            self.accepted = dict(welcome.ok)
            # Trust on first use, per (space, address): this address's key for the space now.
            self.pins.admitted(sorted(self.accepted), self.url, challenge.key)
            self.space_refusals = dict(welcome.no)
            self.uploaded = {s: {hashlib.sha256(w).digest() for w in logs[s]} for s in self.accepted}
            self.presence = {s: {} for s in self.accepted}
            self._ws = ws
            self._attempt = 0
            self._sessions += 1
            self.connected_at = time.monotonic()
            reason = None
            if self.space_refusals:
                reason = "; ".join(sentence(c, r) for c, r in self.space_refusals.values())
            self._set_state(CONNECTED, reason)
            for space, (tag, entity) in self.my_presence.items():
                if space in self.accepted:
                    await self._send(Presence(space, tag, entity))
            self._session_task = asyncio.create_task(self._run_session(welcome))
            await self._read_loop(ws)
        finally:
            self._ws = None
            self._forget_presence()
            if self._session_task is not None:
                self._session_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._session_task
                self._session_task = None
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(RelayUnavailable("the connection to the relay closed"))
            self._pending.clear()
            with contextlib.suppress(Exception):
                await ws.close()

    def _check_relay(self, challenge: Challenge, spaces: Mapping[str, Any]) -> None:
        """Before signing anything: the relay must hold the key it announces, and that key must
        be the one every space pinned for this address (when it pinned one)."""
        key = challenge.key
        if not check_relay_proof(key, challenge.nonce, self.identity.device_id, challenge.proof):
            raise RelayRefused("relay_key_changed", (
                f"the relay at {self.url} announced key {fingerprint(key)} but its challenge is "
                "not signed by it: it is not a genuine mocksync relay; nothing was sent"))
        self.relay_key = key
        pins = self.pins.pinned_many(sorted(spaces), self.url)
        wrong = sorted(s for s, k in pins.items() if k is not None and k != key)
        if wrong:  # names are looked up only for the sentence
            names = {s: self.pins.name(s) or s[:12] for s in wrong[:MAX_NAMED_SPACES]}
            raise RelayRefused("relay_key_changed", pin_refusal(pins, names, key, self.url)
                               or "wrong relay")

    async def _run_session(self, welcome: Welcome) -> None:
        try:
            t0 = time.perf_counter()
            await self._request(Ping(1), reply_kind="pong", keyed=False)
            self.rtt_ms = round((time.perf_counter() - t0) * 1000, 2)
        except RelayError:
            pass
        try:
            await self.events.on_session(self, welcome)
        except (RelayUnavailable, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("relay session handler failed")

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            try:
                msg = await self._recv(ws, None)
            except RelayUnavailable:
                return
            if isinstance(msg, Ok | Nack | IndexReply | Batch | Ack | SnapshotReply):
                fut = self._pending.get(msg.rid)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif isinstance(msg, Pong):
                fut = self._pending.get(-1)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif isinstance(msg, EnvPush):
                self._dispatch(self.events.on_envelopes, msg.space, msg.tag, msg.items)
            elif isinstance(msg, Who):
                space = msg.space
                book = self.presence.setdefault(space, {})
                me = self.identity.device_id
                for device, tag, entity in msg.online:
                    if device != me:
                        book[device] = (tag, entity)
                        self._dispatch(self.events.on_presence, space, device, tag, entity, True)
                for device in msg.off:
                    if device != me and book.pop(device, None) is not None:
                        self._dispatch(self.events.on_presence, space, device, None, None, False)
            elif isinstance(msg, SignalPush):
                self._dispatch(self.events.on_signal, msg.space, msg.sender, msg.payload)
            elif isinstance(msg, Entries):
                handler = getattr(self.events, "on_entries", None)
                if handler is not None:
                    self._dispatch(handler, msg.space, msg.wires)
            elif isinstance(msg, JoinRequest):
                handler = getattr(self.events, "on_join_request", None)
                if handler is not None:
                    self._dispatch(handler, msg.space, msg.join, msg.payload)
            elif isinstance(msg, Bye):
                raise RelayRefused(msg.code, msg.reason) if msg.code in PERSISTENT_CODES or \
                    msg.code == "too_many_devices" else RelayUnavailable(
                        sentence(msg.code, msg.reason))
            else:
                raise RelayProtocolError(f"unexpected {msg.KIND} message from the relay")

    def _forget_presence(self) -> None:
        """The connection ended: who was online through the relay is unknown now, so nobody
        is shown online via the relay (the next welcome sends a fresh snapshot)."""
        books, self.presence = self.presence, {s: {} for s in self.presence}
        for space, book in books.items():
            for device in sorted(book):
                self._dispatch(self.events.on_presence, space, device, None, None, False)

    @staticmethod
    def _dispatch(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # the owner's handler failing must not drop the connection
            log.exception("relay event handler failed")

    # ---------------------------------------------------------------- requests
    async def _send(self, msg: RelayMessage | dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise RelayUnavailable("not connected to the relay")
        await ws.send_bytes(_encode(msg))

    async def _request(self, msg: RelayMessage | dict[str, Any], *, reply_kind: str,
                       keyed: bool = True) -> Any:
        """Send a request and wait for its reply (typed; a `nack` raises `RelayRefused`).
        `keyed`: the request gets the next request id (its `rid`, `i` on the wire). A map
        `{"t": kind, ...}` is accepted too (tools and tests)."""
        async with self._inflight:
            if keyed:
                self._next_id = (self._next_id + 1) % (2**32)
                i = self._next_id
                msg = (from_map({**msg, "i": i}, sender=CLIENT) if isinstance(msg, dict)
                       else dataclasses.replace(msg, rid=i))  # type: ignore[type-var]
            else:
                i = -1
            kind = msg["t"] if isinstance(msg, dict) else msg.KIND
            fut: asyncio.Future[RelayMessage] = asyncio.get_running_loop().create_future()
            self._pending[i] = fut
            try:
                await self._send(msg)
                reply = await within(self.request_timeout_s, fut)
            except TimeoutError:
                raise RelayUnavailable(
                    f"the relay did not answer a {kind} within {self.request_timeout_s:g} s"
                ) from None
            finally:
                self._pending.pop(i, None)
        if isinstance(reply, Nack):
            raise RelayRefused(reply.code, reply.reason)
        if reply_kind != reply.KIND:
            raise RelayProtocolError(f"expected {reply_kind} in reply to {kind}, got {reply.KIND}")
        return reply

    async def index(self, space: str) -> dict[str, dict[str, int]]:
        """Env tags the relay holds for `space`, each with its held version vector."""
        r: IndexReply = await self._request(IndexRequest(0, space), reply_kind="index")
        return r.envs

    async def fetch(self, space: str, tag: str, have: Mapping[str, int]
                    ) -> tuple[tuple[Envelope, ...], bool]:
        """One page of envelopes the holder of `have` lacks, and whether more remain."""
        r: Batch = await self._request(Fetch(0, space, tag, dict(have)), reply_kind="batch")
        return r.items, r.more

    async def put(self, space: str, tag: str, envelopes: Sequence[Envelope],
                  declared_bytes: int) -> int:
        """Store envelopes (one batch); returns how many were new to the relay."""
        r: Ack = await self._request(Put(0, space, tag, declared_bytes, tuple(envelopes)),
                                     reply_kind="ack")
        return r.stored

    async def upload_log(self, space: str, wires: Sequence[bytes]) -> None:
        """Send membership entries the relay may lack (new members, removals, migrations)."""
        if not wires:
            return
        await self._request(LogUpload(0, space, list(wires)), reply_kind="ok")
        self.uploaded.setdefault(space, set()).update(hashlib.sha256(w).digest() for w in wires)

    async def set_presence(self, space: str, tag: str | None, entity: str | None) -> None:
        """What this device is looking at in `space` (kept and re-sent after reconnecting)."""
        self.my_presence[space] = (tag, entity)
        if self.connected and space in self.accepted:
            await self._send(Presence(space, tag, entity))

    async def join_reply(self, space: str, join_id: bytes, payload: bytes) -> None:
        """Answer a joiner's handshake message (it reaches the joiner through the relay)."""
        await self._send(JoinReply(space, join_id, payload))

    async def signal(self, space: str, to: str, body: bytes) -> None:
        """Send a signaling message (signed end to end) to device `to` through the relay."""
        payload = seal_signal(self.identity, space, to, body)
        await self._request(Signal(0, space, to, payload), reply_kind="ok")

    # ---------------------------------------------------------------- compaction (relay.snapshots)
    async def put_snapshot(self, space: str, tag: str, vv: Mapping[str, int], sealed: bytes,
                           sig: bytes) -> None:
        """Upload a sealed snapshot of one environment (`relay.compaction.seal_snapshot`);
        a refusal raises `RelayRefused` (code `bad_snapshot`) with the relay's sentence."""
        await self._request(SnapshotPut(0, space, tag, dict(vv), sealed, sig), reply_kind="ok")

    async def get_snapshot(self, space: str, tag: str) -> SnapshotReply:
        """The snapshot the relay keeps for an environment (fields None when it has none) and
        per device the highest seq it dropped (`floors`)."""
        r: SnapshotReply = await self._request(SnapshotGet(0, space, tag), reply_kind="snap")
        return r

    async def high_water(self, space: str, tag: str, vv: Mapping[str, int]) -> None:
        """Tell the relay which change sets of an environment this device holds."""
        if vv:
            await self._send(HighWater(space, tag, dict(vv)))


def _encode(msg: RelayMessage | dict[str, Any]) -> bytes:
    """A client frame of a typed message (or of a map `{"t": kind, ...}`)."""
    typed = from_map(msg, sender=CLIENT) if isinstance(msg, dict) else msg
    return CODECS[CLIENT].encode(typed)


__all__ = [
    "CONNECTED",
    "CONNECTING",
    "OFFLINE",
    "REFUSED",
    "RelayClient",
    "RelayError",
    "RelayEvents",
    "RelayPins",
    "RelayRefused",
    "RelayUnavailable",
    "sentence",
    "unreachable_reason",
    "failover",
    "relay_urls",
    "ws_url",
]
