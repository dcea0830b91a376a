"""The relay's fan-out frames (relay.fanout) and how a session writes them (Session.push).

A push is framed once per fan-out and written straight to each idle subscriber's transport;
these tests pin that the bytes are exactly the frame aiohttp itself would write, that frames
never overtake queued ones, and that the per-session byte limit still holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp._websocket.writer import WebSocketWriter

from mocksync.relay.fanout import Outgoing, ws_frame
from mocksync.relay.protocol import Ok
from mocksync.relay.server import Session


class _Transport:
    """What Session and aiohttp's writer use of an asyncio transport; keeps what is written."""

    def __init__(self, buffered: int = 0) -> None:
        self.written: list[bytes] = []
        self.buffered = buffered
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


class _Ws:
    closed = False


class _Protocol:
    _paused = False


@pytest.mark.parametrize("n", [0, 1, 125, 126, 1000, 65535, 65536, 200_000])
async def test_frame_is_what_aiohttp_writes(n: int) -> None:
    payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
    t = _Transport()
    writer = WebSocketWriter(_Protocol(), t)  # type: ignore[arg-type]
    await writer.send_frame(payload, 0x2)
    assert b"".join(t.written) == ws_frame(payload)


def test_outgoing_frames_once() -> None:
    out = Outgoing(b"x" * 300)
    assert out.frame is out.frame and out.frame == ws_frame(b"x" * 300) and len(out) == 300


def _session(t: _Transport, limit: int = 10_000) -> Session:
    s = Session(_Ws(), "peer", max_queued_bytes=limit)  # type: ignore[arg-type]
    s.transport = t  # type: ignore[assignment]
    return s


async def test_idle_session_gets_the_frame_written_directly() -> None:
    t = _Transport()
    s = _session(t)
    out = Outgoing(b"hello")
    assert s.push(out) and s.push(out)
    assert t.written == [ws_frame(b"hello")] * 2 and s.queue.empty()


async def test_push_waits_behind_queued_frames() -> None:
    t = _Transport()
    s = _session(t)
    await s.send(Ok(1))  # a reply queued, its writer not run yet
    assert s.push(Outgoing(b"later"))
    assert t.written == [] and s.queue.qsize() == 2
    queued: list[Any] = [s.queue.get_nowait() for _ in range(2)]
    assert queued[1] == b"later"


async def test_byte_limit_counts_the_transport_buffer() -> None:
    s = _session(_Transport(buffered=9_990), limit=10_000)
    assert not s.push(Outgoing(b"y" * 20)), "over the limit with the transport's backlog"
    s2 = _session(_Transport(buffered=0), limit=10_000)
    assert s2.push(Outgoing(b"y" * 20))


async def test_closed_socket_is_not_written() -> None:
    t = _Transport()
    t.closing = True
    s = _session(t)
    assert s.push(Outgoing(b"z"))
    assert t.written == [] and s.queue.qsize() == 1  # left to the writer, which ends
    await asyncio.sleep(0)
