"""The daemon's control API: JSON over HTTP on a Unix socket, for the CLI and editor plugins.

Why a Unix socket (docs/design/security.md §7): file permissions are the access control. The socket is
bound under umask 0o077 and chmod'ed 0600 right after bind, so only its owner (and root) can
connect; as a second fence each connection's peer uid (SO_PEERCRED) must be ours or root's.
The socket's folder must be private (`paths.ensure_private_dir`: ours, not a symlink, 0700),
so no other user can plant or swap a socket there; the CLI checks the other way round
(`client`: the peer must be its own uid). Nothing here listens on TCP.

Shape:
- `server.route("status")(handler)` exposes `async handler(params: dict) -> dict` as
  `POST /v1/status`. The body is a JSON object (empty body = `{}`), at most
  `MAX_REQUEST_BYTES`. Errors are `{"error": {"code", "message"}}` with an HTTP status:
  400 bad request / refused, 404 unknown method, 413 too large, 422 invalid input, 500 bug.
  A handler refuses by raising a `MocksyncError` (or `ControlError(code, message, status)`).
- `GET /v1/events` is the event stream, chosen as newline-delimited JSON over a chunked
  response rather than a websocket: the stdlib client reads it with `readline()`, and
  `curl --unix-socket ... -N` shows it as is. The first line is `{"type": "stream.open"}`;
  blank lines are keepalives every `KEEPALIVE_S` (they also reveal a vanished reader);
  `server.publish(event)` sends one line to every subscriber. Each subscriber has a bounded
  queue; one that falls `SUBSCRIBER_QUEUE_MAX` events behind is dropped with a final
  `{"type": "stream.error", "error": {"code": "slow_subscriber", ...}}` line, so a stuck
  reader never slows the daemon or grows its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..aiotime import within
from ..errors import LimitError, MocksyncError, PrivateDirError, ValidationError
from ..paths import ensure_private_dir
from .client import STREAM_ERROR, STREAM_OPEN
from .errors import ControlError, ControlSocketError, DaemonAlreadyRunning

log = logging.getLogger(__name__)

#: Largest request body accepted by `POST /v1/<name>`.
MAX_REQUEST_BYTES = 1024 * 1024
#: Largest single event `publish` accepts (encoded JSON).
MAX_EVENT_BYTES = 1024 * 1024
#: Event-stream readers at once.
MAX_SUBSCRIBERS = 32
#: Events waiting per subscriber before it is dropped as too slow.
SUBSCRIBER_QUEUE_MAX = 256
#: Seconds between keepalive lines on an idle event stream.
KEEPALIVE_S = 15.0
#: Seconds `stop()` gives running requests to finish.
STOP_TIMEOUT_S = 2.0
#: Seconds to wait for an answer when probing whether an existing socket is alive.
PROBE_TIMEOUT_S = 1.0
#: Longest path an AF_UNIX socket can bind on Linux (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH_BYTES = 107
#: Control method names: lowercase, short.
ROUTE_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

_CLOSE = object()


def _status_for(exc: MocksyncError) -> int:
    if isinstance(exc, ControlError):
        return exc.status or 400
    if isinstance(exc, LimitError):
        return 413
    if isinstance(exc, ValidationError):
        return 422
    return 400


def _error_response(status: int, code: str, message: str) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False)
    return web.Response(status=status, text=body, content_type="application/json")


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _peer_uid(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    opt = getattr(socket, "SO_PEERCRED", None)
    if sock is None or opt is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return uid


def _log_orphan_failure(task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()  # always retrieve it, so asyncio does not warn
    if exc is not None and not isinstance(exc, MocksyncError):
        log.debug("control handler failed: %r", exc)


def socket_answers(path: str | os.PathLike[str], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does some process accept connections on the Unix socket at `path`?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:
        return True  # something is there, just busy: don't steal its path
    finally:
        probe.close()
    return True


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[Any]
    dropped: bool = False


class ControlServer:
    """Registry of control methods plus the event stream, served on `socket_path`."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        subscriber_queue: int = SUBSCRIBER_QUEUE_MAX,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        if subscriber_queue < 2:
            raise ValueError("subscriber_queue must hold at least 2 events")
        self.socket_path = Path(socket_path)
        self.max_request_bytes = max_request_bytes
        self._subscriber_queue = subscriber_queue
        self._keepalive_s = keepalive_s
        self._routes: dict[str, Handler] = {}
        self._subs: set[_Subscriber] = set()
        self._runner: web.AppRunner | None = None
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we made

    # ---- registry -----------------------------------------------------------------------

    def route(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: expose `async handler(params) -> dict` as `POST /v1/<name>`."""
        if not ROUTE_NAME_RE.fullmatch(name) or name == "events":
            raise ValueError(f"bad control method name {name!r}")
        if name in self._routes:
            raise ValueError(f"control method {name!r} is already registered")

        def register(handler: Handler) -> Handler:
            self._routes[name] = handler
            return handler

        return register

    async def call(self, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run control method `name` in this process, exactly as a socket call would: the
        local web page (mocksync.ui) acts through the very handlers the CLI calls, so the two
        can never disagree. Shielded like `_call`: a closed browser tab never cuts a change
        short. Raises what the handler raises (a `MocksyncError` is a refusal)."""
        handler = self._routes.get(name)
        if handler is None:
            raise ControlError("unknown_method", f"no control method {name!r}", 404)
        work = asyncio.ensure_future(handler(dict(params or {})))
        work.add_done_callback(_log_orphan_failure)
        result = await asyncio.shield(work)
        if not isinstance(result, dict):
            raise ControlError("internal", f"internal error in {name!r}", 500)
        return result

    @property
    def methods(self) -> list[str]:
        return sorted(self._routes)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    # ---- events -------------------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> None:
        """Send `event` to every subscriber. Never blocks; drops subscribers that lag."""
        if not isinstance(event, dict):
            raise TypeError("an event is a dict")
        kind = event.get("type")
        if isinstance(kind, str) and kind.startswith("stream."):
            raise ValueError("event types starting with 'stream.' belong to the stream itself")
        line = _line(event)
        if len(line) > MAX_EVENT_BYTES:
            raise LimitError(f"event of {len(line)} bytes exceeds {MAX_EVENT_BYTES} bytes")
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(line)
            except asyncio.QueueFull:
                self._drop(sub)

    def _drop(self, sub: _Subscriber) -> None:
        sub.dropped = True
        self._subs.discard(sub)
        self._end(
            sub,
            _line(
                {
                    "type": STREAM_ERROR,
                    "error": {
                        "code": "slow_subscriber",
                        "message": f"dropped: fell more than {self._subscriber_queue} events "
                        "behind; reconnect and re-read the state with `status`",
                    },
                }
            ),
        )

    @staticmethod
    def _end(sub: _Subscriber, last: bytes | None = None) -> None:
        # Make room, then queue the final line (if any) and the close marker.
        while not sub.queue.empty():
            sub.queue.get_nowait()
        if last is not None:
            sub.queue.put_nowait(last)
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(_CLOSE)

    # ---- HTTP ---------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        uid = _peer_uid(request)
        if uid is not None and uid not in (os.getuid(), 0):
            return _error_response(403, "forbidden", "this daemon belongs to another user")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
                exc.status, "http_error"
            )
            message = exc.reason
            if exc.status == 413:
                message = f"request body exceeds {self.max_request_bytes} bytes"
            return _error_response(exc.status, code, message)

    async def _call(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        length = request.content_length
        if length is not None and length > self.max_request_bytes:
            return _error_response(
                413, "too_large", f"request body exceeds {self.max_request_bytes} bytes"
            )
        raw = await request.read()  # aiohttp enforces client_max_size while reading
        handler = self._routes.get(name)
        if handler is None:
            return _error_response(404, "unknown_method", f"no control method {name!r}")
        try:
            params = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            return _error_response(400, "bad_request", f"request body is not JSON: {exc}")
        if not isinstance(params, dict):
            return _error_response(400, "bad_request", "request body must be a JSON object")
        # A CLI that hangs up (Ctrl-C) cancels this request, but never the daemon's work:
        # the handler runs to its end in its own task.
        work = asyncio.ensure_future(handler(params))
        work.add_done_callback(_log_orphan_failure)
        try:
            result = await asyncio.shield(work)
        except MocksyncError as exc:
            code = exc.code if isinstance(exc.code, str) else "error"
            return _error_response(_status_for(exc), code, str(exc))
        except Exception:
            log.exception("control method %s failed", name)
            return _error_response(
                500, "internal", f"internal error in {name!r}; see the daemon's log"
            )
        if not isinstance(result, dict):
            log.error("control method %s returned %s, not a dict", name, type(result).__name__)
            return _error_response(500, "internal", f"internal error in {name!r}")
        body = json.dumps(result, ensure_ascii=False)
        return web.Response(text=body, content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if len(self._subs) >= MAX_SUBSCRIBERS:
            return _error_response(
                503, "too_many_subscribers", f"at most {MAX_SUBSCRIBERS} event streams at once"
            )
        sub = _Subscriber(asyncio.Queue(self._subscriber_queue))
        resp = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"}
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self._subs.add(sub)
        try:
            await resp.write(_line({"type": STREAM_OPEN}))
            while True:
                try:
                    item = await within(self._keepalive_s, sub.queue.get())
                except TimeoutError:
                    await resp.write(b"\n")
                    continue
                if item is _CLOSE:
                    break
                await resp.write(item)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the reader went away
        finally:
            self._subs.discard(sub)
        return resp

    # ---- lifecycle ----------------------------------------------------------------------

    def _make_socket(self) -> socket.socket:
        path = self.socket_path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise ControlSocketError(
                f"control socket path {path} is longer than {MAX_SOCKET_PATH_BYTES} bytes; "
                "use a shorter --home or set XDG_RUNTIME_DIR"
            )
        try:
            # Only ever in a private directory (issue 13): ours, a real directory, 0700.
            ensure_private_dir(path.parent, what="control socket folder")
        except PrivateDirError as exc:
            raise ControlSocketError(str(exc)) from None
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise ControlSocketError(
                    f"{path} exists and is not a socket; move it away and start again"
                )
            if st.st_uid != os.getuid():
                raise ControlSocketError(f"{path} belongs to another user; refusing to use it")
            if socket_answers(path):
                raise DaemonAlreadyRunning(
                    f"another process is serving the control socket {path}; "
                    "a mocksync daemon is probably already running for this home"
                )
            os.unlink(path)  # stale: left by a daemon that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o077)
            try:
                sock.bind(os.fspath(path))
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
            st = os.stat(path)
            self._bound = (st.st_dev, st.st_ino)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ControlSocketError(
                f"cannot create the control socket {path}: {exc.strerror or exc}"
            ) from exc
        return sock

    async def start(self) -> None:
        """Bind the socket (mode 0600) and serve. Raises `DaemonAlreadyRunning` when another
        process answers on the path; a stale socket file nobody answers on is replaced."""
        if self._runner is not None:
            raise RuntimeError("control server already started")
        app = web.Application(client_max_size=self.max_request_bytes, middlewares=[self._guard])
        app.router.add_get("/v1/events", self._events)
        app.router.add_post("/v1/{name}", self._call)
        sock = self._make_socket()
        # handler_cancellation: a reader that hangs up ends its event stream at once.
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=STOP_TIMEOUT_S,
            handler_cancellation=True,
        )
        try:
            await runner.setup()
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            self._unlink_ours()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """End every event stream, stop serving and remove the socket file."""
        runner, self._runner = self._runner, None
        for sub in list(self._subs):
            self._end(sub)
        self._subs.clear()
        if runner is not None:
            await runner.cleanup()
        self._unlink_ours()

    def _unlink_ours(self) -> None:
        if self._bound is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self.socket_path)
            if (st.st_dev, st.st_ino) == self._bound:
                os.unlink(self.socket_path)
        self._bound = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
