"""Slowloris and slow handshakes against the relay's session (relay/session.py, the adapter in
relay/server.py), on a real relay with short timeouts.

What must hold: every connection that has not authenticated is closed within its bound,
however it keeps the line busy: silent, dribbling HTTP header lines before the WebSocket
upgrade (before: aiohttp's own idle limit, 3630 s, counted from the connection; the handshake
limits of relay.frames never saw such a connection), sending only WebSocket pings before
`hello` or after the challenge, or dribbling a frame a byte at a time. No handshake slot is
left held afterwards; an admitted device's connection outlives all of those bounds; the relay
answers its health check throughout.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time

import aiohttp

from mocksync import PROTOCOL_VERSION
from mocksync.relay.protocol import CLIENT, encode_message

from helpers.devices import logs_of
from helpers.relaylab import Lab, raw_client, settle, team_of

#: The relay's bounds in these tests (seconds): a whole HTTP request, each handshake step.
LIMIT_S = 0.5
#: How long any of those connections may live at most: its bound, the relay's close grace
#: (relay.server.SHUTDOWN_GRACE_S, 2 s) and slack for a loaded machine.
CLOSED_WITHIN_S = 8.0


def upgrade(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def masked(opcode: int, payload: bytes, declared: int | None = None) -> bytes:
    """A client frame (masked with a zero mask): `declared` may claim more than is sent."""
    n = len(payload) if declared is None else declared
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + b"\0\0\0\0" + payload


PING = masked(0x9, b"")


async def held_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    keep_busy: bytes | None, every: float = 0.1) -> float:
    """Keep the line busy with `keep_busy` (None: silent) until the relay closes it; how long
    that took."""
    t0 = time.monotonic()

    async def busy() -> None:
        while keep_busy is not None:
            writer.write(keep_busy)
            await writer.drain()
            await asyncio.sleep(every)

    task = asyncio.create_task(busy())
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()
    return time.monotonic() - t0


async def test_slowloris_before_and_during_the_handshake_is_closed_in_time(lab: Lab) -> None:
    alice, _bob, space = team_of(lab)
    relay = await lab.start_relay(http_request_timeout_s=LIMIT_S, auth_timeout_s=LIMIT_S)
    port = relay.port
    a = await raw_client(lab, alice.identity, logs_of(alice, space))
    try:
        assert await settle(a) == "connected"

        async def http_slowloris(dribble: bool) -> float:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
            return await held_open(r, w, b"X-Slow: 1\r\n" if dribble else None)

        async def ws_slowloris(step: str) -> float:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(upgrade(port))
            await r.readuntil(b"\r\n\r\n")
            if step == "ping before hello":
                return await held_open(r, w, PING)
            if step == "dribbled frame":
                w.write(masked(0x2, b"", declared=1000))  # header and mask: no payload yet
                return await held_open(r, w, b"\0")
            hello = encode_message({"t": "hello", "p": PROTOCOL_VERSION, "m": 1,
                                    "d": alice.identity.device_id, "sp": [space], "a": "x"},
                                   sender=CLIENT)
            w.write(masked(0x2, hello))
            return await held_open(r, w, PING)  # challenged, then pings only

        attacks = [http_slowloris(dribble) for dribble in (False, True) for _ in range(8)]
        attacks += [ws_slowloris(step) for step in ("ping before hello", "dribbled frame",
                                                    "pings after the challenge")
                    for _ in range(3)]
        tasks = [asyncio.create_task(c) for c in attacks]
        async with aiohttp.ClientSession() as http, \
                http.get(relay.url + "/v1/health") as resp:  # the relay answers throughout
            assert resp.status == 200
        lived = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        # Before: the 16 HTTP ones were still open when the test gave up (aiohttp keeps a
        # connection that never finishes its request for 3630 s).
        assert max(lived) < CLOSED_WITHIN_S, lived
        assert relay._handshakes.count == 0  # no handshake slot left held
        assert [s.device for s in relay.sessions] == [alice.identity.device_id]
        await asyncio.sleep(3 * LIMIT_S)
        assert a.connected  # an admitted device is bound by heartbeats, not these limits
    finally:
        await a.stop()
