"""One WebRTC data channel to one peer (aiortc), with the things aiortc leaves to us.

aiortc gives a reliable, ordered, encrypted message pipe, but (measured, docs/design/testing.md) it offers
no loopback candidates, asks a public STUN server by default, refuses messages over 262,144
bytes, has no flow control beyond `bufferedAmount`, and notices a dead peer only after 31-64 s.
So a `PeerLink`:

- gathers candidates only on the bind addresses (`ice.restrict`) with the configured ICE
  servers (none by default), and takes only the remote candidates `ice.filter_remote_sdp` lets
  through (the caller filters before handing the SDP in);
- opens within `CONNECT_TIMEOUT_S` or gives up (the caller retries with backoff);
- sends frames that the sync session already cut to data-channel size (`changes.chunks`),
  queueing them locally while the channel holds more than `HIGH_WATER_BYTES` and resuming on
  `bufferedamountlow` (`LOW_WATER_BYTES`), so a 15 MB catch-up neither floods aiortc's memory
  nor stalls the heartbeat behind it for long;
- compresses frames of at least `COMPRESS_MIN_BYTES` with zlib when that saves at least
  `COMPRESS_MIN_SAVING` (change sets with large op lists are compressed already; control
  messages and batches of small change sets are not), one flag byte per frame, and inflates
  received frames with a hard output bound;
- counts the bytes that cross the network (`ice.count_wire`) for `status` and benchmarks.

Liveness (heartbeat, dead-peer detection) belongs to the sync session, which pings every 2 s
and closes after 10 s of silence; this module only reports aiortc's own failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..aiotime import within
from ..changes.chunks import DATA_CHANNEL_MAX_MESSAGE
from . import ice
from .errors import FrameError, LinkError

log = logging.getLogger("mocksync.webrtc")

#: Time allowed from offer to an open data channel.
CONNECT_TIMEOUT_S = 8.0
#: Label of the one data channel a session uses.
CHANNEL_LABEL = "mocksync/1"
#: Stop handing frames to aiortc while it buffers more than this many bytes...
HIGH_WATER_BYTES = 1024 * 1024
#: ...and resume once its buffer drains below this (`bufferedAmountLowThreshold`).
LOW_WATER_BYTES = 256 * 1024
#: Frames at least this long are tried with zlib.
COMPRESS_MIN_BYTES = 1024
#: A compressed frame is sent only if it is at most this fraction of the original.
COMPRESS_MIN_SAVING = 0.9
#: Bytes sampled to decide whether a frame is worth compressing at all.
COMPRESS_PROBE_BYTES = 4096
#: zlib level: speed first, the channel runs at ~6 MB/s.
ZLIB_LEVEL = 1
#: Most frames queued locally (the session bounds bytes in flight; this is a backstop).
MAX_QUEUED_FRAMES = 8192

RAW = 0x00
DEFLATED = 0x01
#: Largest frame after inflating (what the session's reassembler accepts per frame).
MAX_FRAME_BYTES = DATA_CHANNEL_MAX_MESSAGE


def encode_frame(frame: bytes, *, compress: bool = True) -> bytes:
    """Flag byte + frame, deflated when that is worth it."""
    if compress and len(frame) >= COMPRESS_MIN_BYTES:
        probe = frame[:COMPRESS_PROBE_BYTES]
        if len(zlib.compress(probe, ZLIB_LEVEL)) <= COMPRESS_MIN_SAVING * len(probe):
            packed = zlib.compress(frame, ZLIB_LEVEL)
            if len(packed) <= COMPRESS_MIN_SAVING * len(frame):
                return bytes([DEFLATED]) + packed
    return bytes([RAW]) + frame


def decode_frame(data: bytes) -> bytes:
    """The frame inside one data-channel message; FrameError on anything else."""
    if not isinstance(data, bytes) or not data:
        raise FrameError("peer sent an empty or text data-channel message")
    flag, body = data[0], data[1:]
    if flag == RAW:
        return body
    if flag != DEFLATED:
        raise FrameError(f"peer sent a frame with unknown flag 0x{flag:02x}")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, MAX_FRAME_BYTES + 1)
    except zlib.error as exc:
        raise FrameError(f"peer sent a corrupt compressed frame ({exc})") from None
    if len(out) > MAX_FRAME_BYTES or inflater.unconsumed_tail:
        raise FrameError(f"peer sent a compressed frame inflating past {MAX_FRAME_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise FrameError("peer sent a truncated or padded compressed frame")
    return out


class PeerLink:
    """The data channel with one peer device. Also the session's `link` handle."""

    def __init__(
        self,
        device: str,
        *,
        bind: Sequence[str],
        ice_servers: Sequence[str],
        outgoing: bool,
        on_frame: Callable[[PeerLink, bytes], None],
        on_closed: Callable[[PeerLink, str], None],
        compress: bool = True,
    ) -> None:
        self.device = device
        self.bind = tuple(bind)
        self.ice_servers = tuple(ice_servers)
        self.outgoing = outgoing
        self.on_frame = on_frame
        self.on_closed = on_closed
        self.compress = compress
        self.pc: Any = None
        self.channel: Any = None
        self.wire = ice.WireCounter()
        self.address: str | None = None
        self.created = time.monotonic()
        self.opened_at: float | None = None
        self.closed = False
        self.close_reason: str | None = None
        self.frames_out = 0
        self.frames_in = 0
        self.payload_out = 0
        self.payload_in = 0
        self._open = asyncio.Event()
        self._queue: deque[bytes] = deque()

    def __repr__(self) -> str:
        return f"PeerLink({self.device}, {'out' if self.outgoing else 'in'})"

    # ------------------------------------------------------------------ setup
    def _new_pc(self) -> Any:
        from aiortc import RTCPeerConnection

        pc = RTCPeerConnection(ice.rtc_configuration(self.ice_servers))

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._lost(f"WebRTC connection {pc.connectionState}")

        return pc

    def _count(self) -> None:
        with contextlib.suppress(AttributeError):
            self.wire = ice.count_wire(self.pc.sctp.transport.transport)

    async def offer(self) -> str:
        """Offerer: our SDP (with candidates on the bind addresses only)."""
        self.pc = self._new_pc()
        self._attach(self.pc.createDataChannel(CHANNEL_LABEL, ordered=True))
        self._count()
        with ice.restrict(self.bind):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def answer(self, offer_sdp: str) -> str:
        """Answerer: take the (already filtered) offer, return our SDP."""
        from aiortc import RTCSessionDescription

        self.pc = self._new_pc()

        @self.pc.on("datachannel")
        def _channel(channel: Any) -> None:
            if self.channel is None and channel.label == CHANNEL_LABEL:
                self._attach(channel)
                if channel.readyState == "open":
                    self._opened()
            else:
                channel.close()

        with ice.restrict(self.bind):
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            self._count()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    def _attach(self, channel: Any) -> None:
        self.channel = channel
        channel.bufferedAmountLowThreshold = LOW_WATER_BYTES
        channel.on("open", self._opened)
        channel.on("message", self._message)
        channel.on("bufferedamountlow", self._drain)
        channel.on("close", lambda: self._lost("the peer closed the data channel"))

    def _opened(self) -> None:
        if self.opened_at is None:
            self.opened_at = time.monotonic()
        self._open.set()

    async def wait_open(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        try:
            await within(timeout, self._open.wait())
        except TimeoutError:
            raise LinkError(
                f"the WebRTC connection to {self.device} did not open within {timeout:g} s "
                "(no route between the bind addresses, or a firewall drops UDP)"
            ) from None
        if self.closed:
            raise LinkError(f"the connection to {self.device} closed while opening: "
                            f"{self.close_reason}")

    # ------------------------------------------------------------------ data
    def send(self, frame: bytes) -> None:
        """Queue one frame (a session `Send.data`) for the peer."""
        if self.closed or self.channel is None:
            return
        data = encode_frame(frame, compress=self.compress)
        self.frames_out += 1
        self.payload_out += len(data)
        if self._queue or self.channel.bufferedAmount > HIGH_WATER_BYTES:
            if len(self._queue) >= MAX_QUEUED_FRAMES:
                self._lost(f"more than {MAX_QUEUED_FRAMES} frames waiting for the peer")
                return
            self._queue.append(data)
            return
        self._put(data)

    def _put(self, data: bytes) -> None:
        try:
            self.channel.send(data)
        except Exception as exc:  # InvalidStateError once closing
            self._lost(f"sending failed: {exc}")

    def _drain(self) -> None:
        while self._queue and not self.closed:
            if self.channel.bufferedAmount > HIGH_WATER_BYTES:
                return
            self._put(self._queue.popleft())

    @property
    def buffered(self) -> int:
        """Bytes waiting: in aiortc's buffer plus our own queue."""
        inner = self.channel.bufferedAmount if self.channel is not None else 0
        return inner + sum(len(d) for d in self._queue)

    def _message(self, data: Any) -> None:
        if self.closed:
            return
        self.frames_in += 1
        try:
            self.payload_in += len(data)
            frame = decode_frame(data)
        except (FrameError, TypeError) as exc:
            self._lost(f"peer {self.device} broke the data-channel framing: {exc}")
            return
        self.on_frame(self, frame)

    # ------------------------------------------------------------------ end
    def _lost(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._open.set()  # wake wait_open so it fails at once
        self._queue.clear()
        self.on_closed(self, reason)

    async def close(self, reason: str = "closed") -> None:
        """Close the connection (idempotent); `on_closed` is not called for our own close."""
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._open.set()
        self._queue.clear()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()

    def stats(self) -> dict[str, Any]:
        return {
            "wire_bytes_out": self.wire.bytes_out, "wire_bytes_in": self.wire.bytes_in,
            "datagrams_out": self.wire.datagrams_out, "datagrams_in": self.wire.datagrams_in,
            "frames_out": self.frames_out, "frames_in": self.frames_in,
            "payload_bytes_out": self.payload_out, "payload_bytes_in": self.payload_in,
            "buffered_bytes": self.buffered,
        }
