"""What the attack tests (tests/test_attack_*.py) throw at real processes: hostile CBOR, a raw
WebSocket client that sends frames byte by byte the way an attacker would (no library limits
on our side), and a process's memory as the kernel reports it. Loopback only."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from pathlib import Path


def cbor_head(major: int, n: int) -> bytes:
    """A CBOR head in shortest form."""
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


def shared_bomb(levels: int = 14, width: int = 3) -> bytes:
    """Each level a shareable (tag 28) list of `width` shared references (tag 29) to the level
    below: `width ** (levels - 1)` leaves once expanded, in about 160 bytes."""
    out = bytearray(cbor_head(4, levels))
    out += b"\xd8\x1c" + b"\x61x"
    for k in range(1, levels):
        out += b"\xd8\x1c" + cbor_head(4, width) + (b"\xd8\x1d" + cbor_head(0, k - 1)) * width
    return bytes(out)


def rational_bomb(size: int = 400_000) -> bytes:
    """Tag 30 (rational) over two bignums (tag 2) of `size` bytes each."""
    digits = (bytes(range(1, 256)) * (size // 255 + 1))[:size]
    big = b"\xc2" + cbor_head(2, size) + digits
    return b"\xd8\x1e\x82" + big + big


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of process `pid`, in MB (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class RawWebSocket:
    """A hand-rolled WebSocket client: it sends what it is told, however large or early."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str) -> RawWebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await writer.drain()
        status = await reader.readline()
        if b" 101 " not in status:
            raise AssertionError(f"no WebSocket upgrade: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return cls(reader, writer)

    @staticmethod
    def header(length: int, opcode: int = 2) -> bytes:
        """A masked, final frame header declaring `length` payload bytes (mask = zeros, so the
        payload goes as is)."""
        if length < 126:
            head = bytes([0x80 | opcode, 0x80 | length])
        elif length < 1 << 16:
            head = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
        return head + b"\x00\x00\x00\x00"

    async def send(self, payload: bytes) -> None:
        self.writer.write(self.header(len(payload)) + payload)
        await self.writer.drain()

    async def send_huge(self, length: int, chunk: int = 1 << 20,
                        timeout: float = 10.0) -> tuple[int, float]:
        """Declare a `length`-byte frame and stream zeros until done or the peer closes:
        (payload bytes the kernel took, seconds until the peer closed or we finished)."""
        start = time.monotonic()
        sent = 0
        block = bytes(chunk)
        try:
            self.writer.write(self.header(length))
            async with asyncio.timeout(timeout):
                while sent < length:
                    n = min(chunk, length - sent)
                    self.writer.write(block[:n])
                    await self.writer.drain()
                    sent += n
        except (ConnectionError, TimeoutError, OSError):
            pass
        return sent, time.monotonic() - start

    async def recv(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next frame from the server: (opcode, payload); None if the connection ended."""
        try:
            async with asyncio.timeout(timeout):
                b0, b1 = await self.reader.readexactly(2)
                length = b1 & 0x7F
                if length == 126:
                    length = int.from_bytes(await self.reader.readexactly(2), "big")
                elif length == 127:
                    length = int.from_bytes(await self.reader.readexactly(8), "big")
                return b0 & 0x0F, await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def listening_ports(pid: int) -> list[int]:
    """TCP ports process `pid` listens on (IPv4 and IPv6), read from /proc like `ss -ltnp`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports))


async def http_post(port: int, path: str, body: bytes, *, content_type: str = "application/cbor",
                    declared: int | None = None, send: int | None = None,
                    timeout: float = 10.0) -> tuple[int | None, float]:
    """A raw HTTP/1.1 POST to 127.0.0.1:`port`: `declared` overrides Content-Length, `send`
    stops after that many body bytes (then waits). (status or None, seconds to the answer)."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    length = len(body) if declared is None else declared
    try:
        writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
                      "Connection: close\r\n\r\n").encode())
        writer.write(body if send is None else body[:send])
        await writer.drain()
        async with asyncio.timeout(timeout):
            status = await reader.readline()
        code = int(status.split()[1]) if status.startswith(b"HTTP/") else None
    except (TimeoutError, ConnectionError, OSError, ValueError, IndexError):
        code = None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return code, time.monotonic() - start
