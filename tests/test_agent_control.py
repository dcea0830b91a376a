"""Control API on a real Unix socket: calls, errors, limits, event stream, socket hygiene."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mocksync.agent.client import ControlClient
from mocksync.agent.control import ControlServer
from mocksync.agent.errors import (
    ControlError,
    ControlSocketError,
    DaemonAlreadyRunning,
    DaemonNotRunning,
)
from mocksync.errors import LimitError, MocksyncError, ValidationError


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte AF_UNIX limit; use a short one.
    d = Path(tempfile.mkdtemp(prefix="ms-ctl-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_server(path: Path, **kwargs) -> ControlServer:
    server = ControlServer(path, **kwargs)

    @server.route("echo")
    async def echo(params: dict) -> dict:
        return {"you_sent": params}

    @server.route("refuse")
    async def refuse(params: dict) -> dict:
        raise ValidationError("file is not valid JSON at line 12")

    @server.route("custom")
    async def custom(params: dict) -> dict:
        raise ControlError("held", "environment is held: newer lastMigration", 409)

    @server.route("crash")
    async def crash(params: dict) -> dict:
        raise RuntimeError("secret internal detail")

    @server.route("not-a-dict")
    async def not_a_dict(params: dict) -> dict:
        return ["oops"]  # type: ignore[return-value]

    return server


@pytest.fixture
async def served(sock_dir: Path) -> AsyncIterator[tuple[ControlServer, ControlClient]]:
    path = sock_dir / "control.sock"
    server = make_server(path, max_request_bytes=4096)
    await server.start()
    try:
        yield server, ControlClient(path, timeout=10)
    finally:
        await server.stop()


def raw_request(path: Path, method: str, url: str, body=None, headers=None, chunked=False):
    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(str(path))

    conn = Conn("localhost")
    try:
        conn.request(method, url, body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_call_round_trip(served) -> None:
    server, client = served
    result = await asyncio.to_thread(client.call, "echo", name="Démo", n=3, nested={"a": [1]})
    assert result == {"you_sent": {"name": "Démo", "n": 3, "nested": {"a": [1]}}}
    assert server.methods == ["crash", "custom", "echo", "not-a-dict", "refuse"]


async def test_socket_is_private(served) -> None:
    server, _ = served
    st = os.lstat(server.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


async def test_errors_are_json_with_status(served) -> None:
    _, client = served
    cases = {
        "nope": (404, "unknown_method"),
        "refuse": (422, "invalid"),
        "custom": (409, "held"),
        "crash": (500, "internal"),
        "not-a-dict": (500, "internal"),
    }
    for name, (status, code) in cases.items():
        with pytest.raises(ControlError) as info:
            await asyncio.to_thread(client.call, name)
        assert (info.value.status, info.value.code) == (status, code), name
        assert isinstance(info.value, MocksyncError)
    with pytest.raises(ControlError) as info:
        await asyncio.to_thread(client.call, "refuse")
    assert "line 12" in info.value.message
    with pytest.raises(ControlError) as info:
        await asyncio.to_thread(client.call, "crash")
    assert "secret internal detail" not in info.value.message


async def test_bad_bodies_refused(served) -> None:
    server, _ = served
    path = server.socket_path
    status, body = await asyncio.to_thread(raw_request, path, "POST", "/v1/echo", b"{not json")
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    status, body = await asyncio.to_thread(raw_request, path, "POST", "/v1/echo", b"[1, 2]")
    assert status == 400 and "JSON object" in json.loads(body)["error"]["message"]
    status, body = await asyncio.to_thread(raw_request, path, "POST", "/v1/echo", b"")
    assert status == 200 and json.loads(body) == {"you_sent": {}}
    status, body = await asyncio.to_thread(raw_request, path, "GET", "/v1/echo")
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"
    status, body = await asyncio.to_thread(raw_request, path, "GET", "/elsewhere")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


async def test_body_limit_enforced(served) -> None:
    server, client = served
    assert server.max_request_bytes == 4096
    with pytest.raises(ControlError) as info:
        await asyncio.to_thread(client.call, "echo", blob="x" * 5000)
    assert (info.value.status, info.value.code) == (413, "too_large")
    assert "4096" in info.value.message
    # Chunked, so no Content-Length up front: still cut off while reading.
    chunks = iter([b'{"blob": "', b"y" * 3000, b"y" * 3000, b'"}'])
    status, body = await asyncio.to_thread(
        raw_request, server.socket_path, "POST", "/v1/echo", chunks,
        {"Content-Type": "application/json"}, True,
    )
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"
    # Just under the limit is fine.
    result = await asyncio.to_thread(client.call, "echo", blob="z" * 3000)
    assert len(result["you_sent"]["blob"]) == 3000


async def wait_subscribers(server: ControlServer, n: int) -> None:
    for _ in range(500):
        if server.subscriber_count == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {n} subscribers, have {server.subscriber_count}")


async def test_event_stream(served) -> None:
    server, client = served

    def read_three() -> list[dict]:
        out = []
        for event in client.iter_events():
            out.append(event)
            if len(out) == 3:
                break
        return out

    reader = asyncio.create_task(asyncio.to_thread(read_three))
    await wait_subscribers(server, 1)
    for i in range(3):
        server.publish({"type": "file.changed", "n": i, "name": "Démo"})
    events = await asyncio.wait_for(reader, 10)
    assert events == [{"type": "file.changed", "n": i, "name": "Démo"} for i in range(3)]
    await wait_subscribers(server, 0)  # the reader hung up: the server forgot it


async def test_event_stream_keepalive_and_end_on_stop(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    server = ControlServer(path, keepalive_s=0.02)
    await server.start()
    client = ControlClient(path)
    reader = asyncio.create_task(asyncio.to_thread(lambda: list(client.iter_events(timeout=5))))
    await wait_subscribers(server, 1)
    await asyncio.sleep(0.15)  # several keepalives go by; none is yielded as an event
    server.publish({"type": "hello"})
    await asyncio.sleep(0.05)
    await server.stop()
    assert await asyncio.wait_for(reader, 10) == [{"type": "hello"}]
    assert not path.exists()


async def test_slow_subscriber_dropped_without_blocking(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    server = ControlServer(path, subscriber_queue=4)
    await server.start()
    try:
        client = ControlClient(path)

        def read_all() -> tuple[list[dict], ControlError | None]:
            got: list[dict] = []
            try:
                for event in client.iter_events(timeout=5):
                    got.append(event)
            except ControlError as exc:
                return got, exc
            return got, None

        reader = asyncio.create_task(asyncio.to_thread(read_all))
        await wait_subscribers(server, 1)
        for i in range(50):  # a burst with no chance for the stream to drain
            server.publish({"type": "tick", "i": i})
        assert server.subscriber_count == 0
        got, error = await asyncio.wait_for(reader, 10)
        assert error is not None and error.code == "slow_subscriber"
        assert len(got) < 50
    finally:
        await server.stop()


async def test_publish_guards(served) -> None:
    server, _ = served
    with pytest.raises(ValueError):
        server.publish({"type": "stream.error"})
    with pytest.raises(LimitError):
        server.publish({"type": "big", "blob": "x" * (1024 * 1024 + 10)})
    server.publish({"type": "nobody listening"})  # no subscribers: fine


def test_route_names_checked(sock_dir: Path) -> None:
    server = ControlServer(sock_dir / "c.sock")
    for bad in ("", "Status", "a/b", "events", "x" * 65):
        with pytest.raises(ValueError):
            server.route(bad)
    server.route("status")(lambda p: p)
    with pytest.raises(ValueError, match="already"):
        server.route("status")


def test_daemon_not_running_when_nothing_listens(sock_dir: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="not running"):
        ControlClient(sock_dir / "missing.sock").call("status")
    stale = sock_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # the file stays, nobody listens: a daemon that died
    with pytest.raises(DaemonNotRunning):
        ControlClient(stale).call("status")
    with pytest.raises(DaemonNotRunning):
        next(ControlClient(stale).iter_events())
    assert issubclass(DaemonNotRunning, MocksyncError)


async def test_stale_socket_replaced_live_one_respected(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    first = make_server(path)
    await first.start()  # stale file nobody answered on: replaced
    try:
        assert (await asyncio.to_thread(ControlClient(path).call, "echo"))["you_sent"] == {}
        second = make_server(path)
        with pytest.raises(DaemonAlreadyRunning, match="already running"):
            await second.start()
        # The refused server did not touch the live socket.
        assert (await asyncio.to_thread(ControlClient(path).call, "echo"))["you_sent"] == {}
    finally:
        await first.stop()
    assert not path.exists()


async def test_non_socket_at_path_refused(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    path.write_bytes(b"precious")
    with pytest.raises(ControlSocketError, match="not a socket"):
        await ControlServer(path).start()
    assert path.read_bytes() == b"precious"


async def test_socket_path_too_long_refused(sock_dir: Path) -> None:
    with pytest.raises(ControlSocketError, match="longer than"):
        await ControlServer(sock_dir / ("x" * 120 + ".sock")).start()


async def test_client_hanging_up_does_not_cancel_the_work(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    server = ControlServer(path)
    release = asyncio.Event()
    finished: list[str] = []

    @server.route("slow")
    async def slow(params: dict) -> dict:
        await release.wait()
        finished.append(params["what"])
        return {}

    await server.start()
    try:
        with pytest.raises(ControlError) as info:
            await asyncio.to_thread(ControlClient(path, timeout=0.2).call, "slow", what="share")
        assert info.value.code == "timeout"
        release.set()
        for _ in range(200):
            if finished:
                break
            await asyncio.sleep(0.01)
        assert finished == ["share"]
    finally:
        await server.stop()


def _as_nobody(fn) -> int:
    """Run `fn()` in a forked child as uid/gid 65534; return its exit code."""
    pid = os.fork()
    if pid == 0:  # child: no event loop, no Python-level cleanup, just syscalls
        code = 99
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _connect_and_ask(path: str) -> int:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
    except PermissionError:
        return 10
    s.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    head = s.recv(200)
    return 11 if head.startswith(b"HTTP/1.1 403") else 12


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_other_users_cannot_connect(sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    server = make_server(path)
    await server.start()  # (the server keeps its socket folder 0700: loosen it only after)
    sock_dir.chmod(0o755)  # let the other user reach the socket file: its own mode must stop them
    try:
        code = await asyncio.to_thread(_as_nobody, lambda: _connect_and_ask(str(path)))
        assert code == 10  # mode 0600: connect() refused by the kernel
        # Second fence: even if the mode were loosened, the peer uid check answers 403.
        os.chmod(path, 0o666)
        code = await asyncio.to_thread(_as_nobody, lambda: _connect_and_ask(str(path)))
        assert code == 11
    finally:
        await server.stop()
