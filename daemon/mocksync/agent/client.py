"""The CLI's side of the control API: blocking calls over the daemon's Unix socket.

Why the standard library (`http.client` over an AF_UNIX socket) and not aiohttp: every
`mocksync status` pays the import cost, and aiohttp plus an event loop is tens of milliseconds
the user waits for on every command. This module imports nothing heavy.

Wire format (served by `control.ControlServer`): `POST /v1/<name>` with a JSON object body,
answered by a JSON object; an error is `{"error": {"code", "message"}}` with an HTTP status
>= 400. `GET /v1/events` is a stream of newline-delimited JSON objects (blank lines are
keepalives; lines typed `stream.*` belong to the stream itself).

Who answers (issue 13): another local user must not be able to stand in for the daemon (plant
a socket where the CLI looks and answer `status` with fake JSON, or read what the CLI sends).
Before a single byte is sent, the connected socket's peer uid (`SO_PEERCRED`, the kernel's
word, not a file's owner that could be staged) must be the CLI's own uid; where the platform
has no `SO_PEERCRED`, the socket file's owner is checked instead. Otherwise the CLI refuses
with `ForeignSocketError`, naming the uid and the fix.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ControlError, DaemonNotRunning, ForeignSocketError

#: Seconds a call may take before the CLI gives up on the daemon.
CALL_TIMEOUT_S = 30.0
#: Seconds of silence on the event stream (the daemon sends keepalives) before giving up.
EVENT_READ_TIMEOUT_S = 60.0
#: Largest answer the client accepts from `call`.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: Largest single event line the client accepts from the stream.
MAX_EVENT_LINE_BYTES = 1024 * 1024

#: Event `type`s the stream itself uses (not the daemon's events).
STREAM_OPEN = "stream.open"
STREAM_ERROR = "stream.error"


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a connected Unix socket (Linux
    `SO_PEERCRED`), None where the platform cannot tell."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return uid


def foreign_owner(peer: int | None, file_uid: int | None, me: int) -> int | None:
    """Whose socket this is when it is not ours (the uid to name), None when it is ours.
    The peer's uid decides when known; else the socket file's owner. Pure."""
    owner = peer if peer is not None else file_uid
    return None if owner is None or owner == me else owner


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        me = os.getuid()
        try:
            st = os.lstat(self._socket_path)
        except FileNotFoundError:
            st = None  # connect() below says "not running"
        if st is not None and stat.S_ISSOCK(st.st_mode) and st.st_uid != me:
            raise ForeignSocketError(self._socket_path, st.st_uid, me)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self._socket_path))
            other = foreign_owner(peer_uid(sock), st.st_uid if st is not None else None, me)
            if other is not None:
                raise ForeignSocketError(self._socket_path, other, me)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _error_from_body(status: int, body: bytes) -> ControlError:
    try:
        doc = json.loads(body)
        err = doc["error"]
        return ControlError(str(err["code"]), str(err["message"]), status)
    except (ValueError, KeyError, TypeError):
        text = body[:200].decode("utf-8", "replace").strip() or http.client.responses.get(status, "")
        return ControlError(f"http_{status}", f"the daemon answered HTTP {status}: {text}", status)


class ControlClient:
    """Talk to the daemon serving `socket_path` (`home.socket`)."""

    def __init__(self, socket_path: str | os.PathLike[str], *, timeout: float = CALL_TIMEOUT_S):
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def _not_running(self, exc: BaseException | None = None) -> DaemonNotRunning:
        why = "no control socket" if isinstance(exc, FileNotFoundError) else "nothing listening"
        return DaemonNotRunning(
            f"the mocksync daemon is not running ({why} at {self.socket_path}); "
            "start it with `mocksync daemon` or `systemctl --user start mocksync`"
        )

    def _open(self, method: str, path: str, body: bytes | None, timeout: float | None):
        conn = _UnixHTTPConnection(self.socket_path, timeout)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=headers)
            return conn, conn.getresponse()
        except ForeignSocketError:
            conn.close()
            raise
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            conn.close()
            raise self._not_running(exc) from None
        except PermissionError as exc:
            conn.close()
            raise ControlError(
                "forbidden",
                f"no permission to use the control socket {self.socket_path}: it belongs to "
                "another user's daemon",
            ) from exc
        except TimeoutError as exc:
            conn.close()
            raise ControlError(
                "timeout", f"the daemon did not answer within {timeout:g} s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ControlError(
                "disconnected", f"lost the connection to the daemon: {exc}"
            ) from exc

    def call(self, name: str, /, **params: Any) -> dict[str, Any]:
        """Call control method `name` with `params`; return the daemon's JSON answer."""
        body = json.dumps(params, ensure_ascii=False).encode("utf-8")
        conn, resp = self._open("POST", f"/v1/{name}", body, self.timeout)
        try:
            data = resp.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise ControlError("disconnected", f"lost the connection to the daemon: {exc}") from exc
        finally:
            conn.close()
        if len(data) > MAX_RESPONSE_BYTES:
            raise ControlError(
                "too_large", f"the daemon's answer exceeds {MAX_RESPONSE_BYTES} bytes"
            )
        if resp.status >= 400:
            raise _error_from_body(resp.status, data)
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise ControlError("bad_response", "the daemon's answer is not a JSON object")
        return doc

    def iter_events(self, *, timeout: float | None = EVENT_READ_TIMEOUT_S) -> Iterator[dict]:
        """Yield the daemon's events as they come. Ends when the daemon closes the stream;
        raises `ControlError` if the daemon drops this subscriber (code `slow_subscriber`)."""
        conn, resp = self._open("GET", "/v1/events", None, timeout)
        try:
            if resp.status >= 400:
                raise _error_from_body(resp.status, resp.read(MAX_EVENT_LINE_BYTES))
            while True:
                try:
                    line = resp.readline(MAX_EVENT_LINE_BYTES + 1)
                except TimeoutError as exc:
                    raise ControlError(
                        "timeout", f"no word from the daemon for {timeout:g} s"
                    ) from exc
                except (OSError, http.client.HTTPException):
                    return  # the daemon went away: the stream is over
                if not line:
                    return
                if len(line) > MAX_EVENT_LINE_BYTES:
                    raise ControlError(
                        "too_large", f"an event exceeds {MAX_EVENT_LINE_BYTES} bytes"
                    )
                line = line.strip()
                if not line:
                    continue  # keepalive
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    raise ControlError("bad_response", "the event stream sent a non-object")
                kind = event.get("type")
                if kind == STREAM_OPEN:
                    continue
                if kind == STREAM_ERROR:
                    err = event.get("error") or {}
                    raise ControlError(
                        str(err.get("code", "stream_error")),
                        str(err.get("message", "the daemon ended the event stream")),
                    )
                yield event
        finally:
            conn.close()
