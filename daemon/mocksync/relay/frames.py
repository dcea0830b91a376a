"""How much an unauthenticated client may make the relay hold, and for how long (issue 12).

Why this module: the relay's WebSocket reader buffers a whole frame before we see it, so a frame
limit that is checked after `receive()` is no limit at all (eight unauthenticated 20 MB frames
took a relay from 53 to 395 MB). aiohttp refuses an oversized frame from its header, before
any payload is buffered, against the reader's `max_msg_size`; so each session's reader carries
the limit of the phase it is in, and the limit grows only as the client earns it:

| phase                        | largest frame            | sessions at once                   |
| ---------------------------- | ------------------------ | ---------------------------------- |
| connected, before `hello`    | MAX_HELLO_FRAME_BYTES    | MAX_PENDING_HANDSHAKES (per address |
|                              |                          | MAX_PENDING_HANDSHAKES_PER_ADDRESS) |
| challenged, before `auth`    | MAX_AUTH_FRAME_BYTES     | MAX_AUTHENTICATING (per address     |
|                              |                          | MAX_AUTHENTICATING_PER_ADDRESS);    |
|                              |                          | others wait for a slot             |
| authenticated                | protocol.MAX_FRAME_BYTES | the relay's session limits          |

So what unauthenticated clients can make the relay buffer is bounded by
MAX_PENDING_HANDSHAKES x MAX_HELLO_FRAME_BYTES + MAX_AUTHENTICATING x MAX_AUTH_FRAME_BYTES
(16 + 64 MiB), whoever they are. The limits are pure bookkeeping (`HandshakeLimiter`,
`AuthSlots`) plus one adapter, `set_frame_limit`, the only place that touches aiohttp's reader.

Frames larger than OFFLOAD_DECODE_BYTES are decoded on a worker thread, so one client's big
(or item-heavy) frame never holds the event loop that serves every other space.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .errors import FrameLimitUnavailable

#: Largest frame before the client's `hello` (a hello naming 1000 spaces is about 35 KB).
MAX_HELLO_FRAME_BYTES = 64 * 1024
#: Largest `auth` frame: its signature plus the membership entries the relay lacks. A relay
#: that already holds a space's log needs none; a fresh relay needs the whole log of each space
#: the device names (typically a few KB; a space with many key rotations, a few MB).
MAX_AUTH_FRAME_BYTES = 8 * 1024 * 1024
#: Sessions that have not authenticated yet, on the whole relay and from one address.
MAX_PENDING_HANDSHAKES = 256
MAX_PENDING_HANDSHAKES_PER_ADDRESS = 64
#: Sessions allowed to send an auth frame at once (each may buffer MAX_AUTH_FRAME_BYTES), on
#: the whole relay and from one address; more wait (within the handshake timeout) for a slot.
MAX_AUTHENTICATING = 8
MAX_AUTHENTICATING_PER_ADDRESS = 4
#: Frames at least this large are decoded on a worker thread, not on the event loop.
OFFLOAD_DECODE_BYTES = 16 * 1024


class HandshakeLimiter:
    """Counts unauthenticated sessions per address; pure (no I/O, no clock)."""

    def __init__(self, total: int = MAX_PENDING_HANDSHAKES,
                 per_address: int = MAX_PENDING_HANDSHAKES_PER_ADDRESS) -> None:
        self.total = total
        self.per_address = per_address
        self.by_address: dict[str, int] = {}
        self.count = 0

    def admit(self, address: str) -> str | None:
        """Take a slot for `address`; None if admitted, else the sentence of the refusal."""
        if self.count >= self.total:
            return (f"the relay has {self.total} connections still authenticating; "
                    "retrying later")
        held = self.by_address.get(address, 0)
        if held >= self.per_address:
            return (f"address {address} already has {held} connections authenticating, the "
                    f"limit ({self.per_address}); retrying later")
        self.by_address[address] = held + 1
        self.count += 1
        return None

    def release(self, address: str) -> None:
        """Give back the slot `admit` took (once per admitted session)."""
        held = self.by_address.get(address, 0)
        if held <= 1:
            self.by_address.pop(address, None)
        else:
            self.by_address[address] = held - 1
        self.count = max(0, self.count - 1)


class AuthSlots:
    """At most `total` sessions (and `per_address` per address) in the auth phase at once.

    Waiting for a slot holds nothing but the session's small hello buffer; `acquire` is
    cancellable (wrap it in a timeout) and leaves nothing held when cancelled."""

    def __init__(self, total: int = MAX_AUTHENTICATING,
                 per_address: int = MAX_AUTHENTICATING_PER_ADDRESS) -> None:
        self._total = asyncio.Semaphore(total)
        self.per_address = per_address
        self._by_address: dict[str, tuple[asyncio.Semaphore, int]] = {}

    def _join(self, address: str) -> asyncio.Semaphore:
        sem, users = self._by_address.get(address, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.per_address)
        self._by_address[address] = (sem, users + 1)
        return sem

    def _leave(self, address: str) -> None:
        sem, users = self._by_address[address]
        if users <= 1:
            del self._by_address[address]
        else:
            self._by_address[address] = (sem, users - 1)

    async def acquire(self, address: str) -> None:
        sem = self._join(address)
        try:
            await sem.acquire()
            try:
                await self._total.acquire()
            except BaseException:
                sem.release()
                raise
        except BaseException:
            self._leave(address)
            raise

    def release(self, address: str) -> None:
        """Give back a slot `acquire` returned (once)."""
        self._total.release()
        self._by_address[address][0].release()
        self._leave(address)


#: Join connections (a device that is not a member yet, on /v1/join) open at once, on the whole
#: relay and from one address; when full, the oldest connection that has not sent its first
#: message yet is closed to make room, so idle connections never block a real join.
MAX_JOIN_CONNECTIONS = 256
MAX_JOIN_CONNECTIONS_PER_ADDRESS = 32
#: Seconds a join connection has to send its first message.
JOIN_IDLE_TIMEOUT_S = 5.0
#: Join handshakes in progress (first message sent) towards one inviting device of one space:
#: an invite token names exactly that pair, so this is the per-token cap the relay can see.
MAX_JOINS_PER_TARGET = 8
#: When a target is at its cap, a handshake silent for this long gives its place to a new one
#: (an honest joiner answers within a round trip; one that idles is not joining).
JOIN_EVICTABLE_IDLE_S = 2.0


class JoinLimiter:
    """Bookkeeping of join connections; pure (the caller passes `now` and closes what is
    evicted). A connection is idle until `start` names its target (space, inviting device)."""

    def __init__(self, total: int = MAX_JOIN_CONNECTIONS,
                 per_address: int = MAX_JOIN_CONNECTIONS_PER_ADDRESS,
                 per_target: int = MAX_JOINS_PER_TARGET,
                 evictable_idle_s: float = JOIN_EVICTABLE_IDLE_S) -> None:
        self.total = total
        self.per_address = per_address
        self.per_target = per_target
        self.evictable_idle_s = evictable_idle_s
        #: connection id -> [address, target or None, last message time]; oldest first.
        self.conns: dict[bytes, list[Any]] = {}

    def _oldest_unstarted(self, address: str | None) -> bytes | None:
        for cid, (addr, target, _seen) in self.conns.items():
            if target is None and (address is None or addr == address):
                return cid
        return None

    def connect(self, cid: bytes, address: str, now: float) -> tuple[list[bytes], str | None]:
        """Admit a new connection: (ids of connections to close, refusal sentence or None)."""
        evict: list[bytes] = []
        if sum(1 for c in self.conns.values() if c[0] == address) >= self.per_address:
            victim = self._oldest_unstarted(address)
            if victim is None:
                return [], (f"address {address} already runs {self.per_address} join "
                            "handshakes; try again in a minute")
            evict.append(victim)
            del self.conns[victim]
        if len(self.conns) >= self.total:
            victim = self._oldest_unstarted(None)
            if victim is None:
                return evict, (f"the relay has {self.total} join handshakes in progress; "
                               "try again in a minute")
            evict.append(victim)
            del self.conns[victim]
        self.conns[cid] = [address, None, now]
        return evict, None

    def start(self, cid: bytes, target: tuple[str, str], now: float
              ) -> tuple[list[bytes], str | None]:
        """The connection's first message names `target`: (ids to close, refusal or None).

        At the target's cap, the handshake silent longest gives way if it has been silent for
        `evictable_idle_s`; otherwise the newcomer is refused."""
        evict: list[bytes] = []
        same = [(c[2], k) for k, c in self.conns.items() if c[1] == target]
        if len(same) >= self.per_target:
            seen, victim = min(same)
            if now - seen < self.evictable_idle_s:
                return [], (f"{len(same)} joins with an invite of device {target[1]} are in "
                            "progress through this relay; try again in a minute")
            evict.append(victim)
            del self.conns[victim]
        self.conns[cid][1] = target
        self.conns[cid][2] = now
        return evict, None

    def touch(self, cid: bytes, now: float) -> None:
        """The connection sent another message."""
        if cid in self.conns:
            self.conns[cid][2] = now

    def close(self, cid: bytes) -> None:
        self.conns.pop(cid, None)


def set_frame_limit(ws: web.WebSocketResponse, protocol: Any, limit: int) -> None:
    """Make `ws` refuse any later data frame over `limit` bytes from its header.

    aiohttp fixes `max_msg_size` when the response is prepared and offers no setter, so we
    install a fresh reader (same message queue, new limit) on the connection. Call it only
    while the client is waiting for our reply (after hello, before the challenge; after auth,
    before the welcome): an honest client has nothing in flight then, so no partial frame is
    lost. Raises FrameLimitUnavailable if aiohttp's internals moved (a test catches that)."""
    try:
        from aiohttp._websocket.reader import WebSocketReader

        queue = ws._reader
        old = ws._parser
        cb = protocol._data_received_cb
        decode_text = ws._decode_text
    except (ImportError, AttributeError) as exc:  # pragma: no cover - depends on aiohttp
        raise FrameLimitUnavailable(f"cannot set the WebSocket frame limit: {exc}") from None
    if queue is None or old is None:
        return  # closed already: nothing more will be read
    parser = WebSocketReader(queue, limit, compress=False, decode_text=decode_text)
    protocol._payload_parser = None
    protocol.set_parser(parser, data_received_cb=cb)
    ws._parser = parser


__all__ = [
    "AuthSlots",
    "JOIN_EVICTABLE_IDLE_S",
    "JOIN_IDLE_TIMEOUT_S",
    "JoinLimiter",
    "MAX_JOINS_PER_TARGET",
    "MAX_JOIN_CONNECTIONS",
    "MAX_JOIN_CONNECTIONS_PER_ADDRESS",
    "FrameLimitUnavailable",
    "HandshakeLimiter",
    "MAX_AUTHENTICATING",
    "MAX_AUTHENTICATING_PER_ADDRESS",
    "MAX_AUTH_FRAME_BYTES",
    "MAX_HELLO_FRAME_BYTES",
    "MAX_PENDING_HANDSHAKES",
    "MAX_PENDING_HANDSHAKES_PER_ADDRESS",
    "OFFLOAD_DECODE_BYTES",
    "set_frame_limit",
]
