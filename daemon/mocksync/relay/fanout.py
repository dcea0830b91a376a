"""One relay frame for many sessions: its payload and its WebSocket frame, each built once.

Why: a put in a space of N online devices becomes N identical pushes. The relay used to hand
each subscriber's writer task the payload, and each task then woke up, framed it and wrote
it: N task wake-ups and N framings per put, most of a fan-out's CPU on a loaded relay. A
server's WebSocket frames are not masked (RFC 6455 §5.1) and the relay never compresses
(`compress=False`), so the frame bytes are the same for every subscriber: `Outgoing` builds
them once (on first use) and a session that has nothing queued writes them straight to its
transport (`relay.server.Session.push`); one that has frames waiting queues the payload
behind them, so the order of frames on a connection never changes.

`ws_frame` is pure (bytes in, bytes out); the module holds no sockets.
"""

from __future__ import annotations

import struct

#: First byte of an unfragmented binary frame: FIN + opcode 2 (no RSV bits: no compression).
BINARY_FIN = 0x82
#: Payload lengths up to this use the 7-bit length; up to MAX_LEN16 the 16-bit one.
MAX_LEN7 = 125
MAX_LEN16 = 0xFFFF
#: The largest payload a frame may carry (RFC 6455: the 64-bit length's top bit is 0).
MAX_PAYLOAD = (1 << 63) - 1

_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def ws_frame(payload: bytes) -> bytes:
    """The unmasked, unfragmented binary WebSocket frame (server to client) of `payload`."""
    n = len(payload)
    if n <= MAX_LEN7:
        return bytes((BINARY_FIN, n)) + payload
    if n <= MAX_LEN16:
        return _LEN16.pack(BINARY_FIN, 126, n) + payload
    if n > MAX_PAYLOAD:
        raise ValueError(f"a WebSocket frame carries at most {MAX_PAYLOAD} bytes, not {n}")
    return _LEN64.pack(BINARY_FIN, 127, n) + payload


class Outgoing:
    """A relay frame's payload (canonical CBOR) and, built on first use and then shared by
    every session it is written to, its WebSocket frame."""

    __slots__ = ("_frame", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = ws_frame(self.data)
        return self._frame

    def __len__(self) -> int:
        return len(self.data)


__all__ = ["BINARY_FIN", "MAX_LEN16", "MAX_LEN7", "MAX_PAYLOAD", "Outgoing", "ws_frame"]
