"""One WebRTC data channel on loopback: framing, compression, flow control, timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import zlib

import pytest

from mocksync.net import ice
from mocksync.net.errors import FrameError, LinkError
from mocksync.net.webrtc import (
    COMPRESS_MIN_BYTES,
    DEFLATED,
    HIGH_WATER_BYTES,
    MAX_FRAME_BYTES,
    RAW,
    PeerLink,
    decode_frame,
    encode_frame,
)

LOOP = ("127.0.0.1",)


def test_frames_are_compressed_only_when_it_pays() -> None:
    text = json.dumps([{"route": i, "body": "hello world " * 20} for i in range(100)]).encode()
    packed = encode_frame(text)
    assert packed[0] == DEFLATED and len(packed) < len(text) // 4
    assert decode_frame(packed) == text
    noise = os.urandom(50_000)
    assert encode_frame(noise)[0] == RAW and decode_frame(encode_frame(noise)) == noise
    small = b"x" * (COMPRESS_MIN_BYTES - 1)
    assert encode_frame(small) == bytes([RAW]) + small
    assert encode_frame(text, compress=False)[0] == RAW


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"\x07abc", "unknown flag"),
    (bytes([DEFLATED]) + b"not zlib", "corrupt"),
    (bytes([DEFLATED]) + zlib.compress(b"\x00" * (MAX_FRAME_BYTES + 10)), "inflating past"),
    (bytes([DEFLATED]) + zlib.compress(b"abc")[:-3], "truncated"),
    (bytes([DEFLATED]) + zlib.compress(b"abc") + b"junk", "truncated or padded"),
])
def test_bad_frames_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        decode_frame(data)


async def connect_pair(**kw) -> tuple[PeerLink, PeerLink, list[bytes], list[str]]:
    got: list[bytes] = []
    closed: list[str] = []
    a = PeerLink("B", bind=LOOP, ice_servers=(), outgoing=True,
                 on_frame=lambda _l, f: None, on_closed=lambda _l, r: closed.append(r), **kw)
    b = PeerLink("A", bind=LOOP, ice_servers=(), outgoing=False,
                 on_frame=lambda _l, f: got.append(f), on_closed=lambda _l, r: closed.append(r),
                 **kw)
    offer, _ = ice.filter_remote_sdp(await a.offer(), ice.bind_networks(LOOP))
    answer, n = ice.filter_remote_sdp(await b.answer(offer), ice.bind_networks(LOOP))
    assert n >= 1
    await a.accept_answer(answer)
    await asyncio.gather(a.wait_open(), b.wait_open())
    return a, b, got, closed


async def test_a_large_stream_arrives_whole_in_order_with_bounded_buffering() -> None:
    a, b, got, closed = await connect_pair()
    try:
        # Only loopback candidates were offered.
        assert all(" 127.0.0.1 " in ln for ln in a.pc.localDescription.sdp.splitlines()
                   if ln.startswith("a=candidate:"))
        frames = [os.urandom(60_000) if i % 2 else
                  json.dumps({"i": i, "pad": "abc" * 20_000}).encode() for i in range(100)]
        peak_buffered = peak_queue = 0
        for f in frames:
            a.send(f)
            peak_buffered = max(peak_buffered, a.channel.bufferedAmount)
            peak_queue = max(peak_queue, len(a._queue))
        deadline = asyncio.get_running_loop().time() + 30
        while len(got) < len(frames) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert got == frames
        # Flow control: aiortc never held much more than the high-water mark; the rest
        # waited in our queue and went out as the buffer drained.
        assert peak_queue > 0
        assert peak_buffered <= HIGH_WATER_BYTES + 70_000
        assert a.payload_out < sum(len(f) for f in frames)  # the JSON frames were deflated
        assert a.wire.bytes_out >= a.payload_out and b.wire.bytes_in >= a.payload_out
        assert closed == []
    finally:
        await a.close()
        await b.close()


async def test_a_connection_that_never_opens_times_out_with_a_reason() -> None:
    a = PeerLink("B", bind=LOOP, ice_servers=(), outgoing=True,
                 on_frame=lambda *_: None, on_closed=lambda *_: None)
    try:
        await a.offer()  # no answer ever comes
        with pytest.raises(LinkError, match="did not open within 0.3 s"):
            await a.wait_open(0.3)
    finally:
        await a.close()


async def test_garbage_on_the_channel_closes_the_link() -> None:
    a, b, got, closed = await connect_pair()
    try:
        a.channel.send(b"\x05nonsense")
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.02)
        assert closed and "framing" in closed[0] and got == []
    finally:
        await a.close()
        await b.close()
