"""`RelayClient.stop()` ends the client even when it lands the moment a connection opens.

Why this test: on Python 3.11 `asyncio.wait_for` drops a cancellation that arrives just as
the awaited call completes (it returns the result instead), and the client opened its
WebSocket through it. A `stop()` landing then was lost: the client went on with the
handshake, waited for the relay's answer, and `stop()` (awaiting the task it had cancelled)
never returned. Found by the relay fan-out benchmark, whose 1,000 clients were stopped while
some were still connecting to a relay slowed by a loaded machine: the run hung for good. A
daemon told to stop mid-handshake would hang the same way.

The relay here is a stand-in (no socket at all): its `ws_connect` asks the client to stop
while it is connecting, then hands back a WebSocket that never answers, the worst case.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mocksync.net.relay_client import OFFLINE, RelayClient
from mocksync.space.identity import Identity

#: Seconds `stop()` may take here (it needs milliseconds; a lost cancellation is forever).
STOP_BOUND_S = 5.0
SPACE = "ab" * 16


class _SilentWebSocket:
    """A connection that accepts frames and never answers (a relay gone quiet)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self._never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def receive(self, timeout: float | None = None) -> Any:
        return await self._never

    async def close(self) -> None:
        self.closed = True


class _StopWhileConnecting:
    """Stands in for the client's aiohttp session: `stop()` is called during ws_connect."""

    def __init__(self, client: RelayClient) -> None:
        self.client = client
        self.stopping: asyncio.Task[None] | None = None
        self.ws: _SilentWebSocket | None = None

    async def ws_connect(self, url: str, **_kw: Any) -> _SilentWebSocket:
        self.stopping = asyncio.ensure_future(self.client.stop())
        await asyncio.sleep(0)  # stop() runs now: it cancels the client's task ...
        self.ws = _SilentWebSocket()
        return self.ws  # ... just as the connection opens

    async def close(self) -> None:
        pass


async def test_stop_during_the_connection_opening_ends_the_client() -> None:
    ident = Identity.generate("stopper", now=0)
    client = RelayClient("http://127.0.0.1:9", ident, lambda: {SPACE: [b"entry"]},
                         connect_timeout_s=60.0)
    await client.start()
    real = client._http
    assert real is not None
    fake = _StopWhileConnecting(client)
    client._http = fake  # type: ignore[assignment]  # before the task's first step runs
    await real.close()
    for _ in range(100):
        if fake.stopping is not None:
            break
        await asyncio.sleep(0.01)
    assert fake.stopping is not None, "the client never tried to connect"
    await asyncio.wait_for(asyncio.shield(fake.stopping), STOP_BOUND_S)
    assert client.state == OFFLINE and client.reason == "stopped"
    assert client._task is None
    # Stopped before a word was said: no hello went out on the connection.
    assert fake.ws is None or fake.ws.sent == []


class _NeverOpens:
    """A session whose connection attempt never completes (a relay that accepts TCP and
    never upgrades it)."""

    def __init__(self) -> None:
        self.attempts = 0

    async def ws_connect(self, url: str, **_kw: Any) -> Any:
        self.attempts += 1
        await asyncio.get_running_loop().create_future()

    async def close(self) -> None:
        pass


async def test_a_connection_that_never_opens_still_times_out() -> None:
    ident = Identity.generate("waiter", now=0)
    client = RelayClient("http://127.0.0.1:9", ident, lambda: {SPACE: [b"entry"]},
                         connect_timeout_s=0.2, backoff_min_s=30.0)
    await client.start()
    real = client._http
    assert real is not None
    fake = _NeverOpens()
    client._http = fake  # type: ignore[assignment]
    await real.close()
    try:
        for _ in range(int(STOP_BOUND_S / 0.02)):
            if client.state == OFFLINE and fake.attempts:
                break
            await asyncio.sleep(0.02)
        assert fake.attempts == 1 and client.state == OFFLINE
        assert client.reason is not None and "did not answer in time" in client.reason
    finally:
        await asyncio.wait_for(client.stop(), STOP_BOUND_S)
