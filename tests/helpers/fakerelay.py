"""A stand-in relay endpoint on loopback: hostile-relay tests serve their own `/v1/ws` handler
(a relay with its own key that sends the worst frames, or forwards an auth elsewhere)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web


async def serve_ws(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> tuple[web.AppRunner, str]:
    """Serve `handler` at `/v1/ws` on 127.0.0.1 (a free port): the runner (to clean up) and
    the base URL a device is given as its relay."""
    app = web.Application()
    app.router.add_get("/v1/ws", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
