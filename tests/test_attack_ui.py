"""Red team: the daemon's local web page (issue 19) against other local users and hostile pages.

What worked before the fix (each reproduced here):
- Another local user took the whole page. The page listens on 127.0.0.1, which every user of
  the machine reaches; its only fences were the one-time token and the session cookie, and
  both leak to other users: `mocksync open` hands the sign-in address to the browser on its
  command line (any user reads `/proc/PID/cmdline` and can redeem the token first), and
  browsers do not isolate cookies by port (the session cookie goes to any server on
  127.0.0.1, another user's included). With either, a second uid got the overview (200) and
  made changes (POST /reconnect: 303), Origin and CSRF token being just headers to a
  non-browser client. Fixed in `mocksync.ui.gate`: the kernel's socket table names the uid
  of each connection's client end; another uid's connection is answered 403 with a sentence
  before a byte reaches the app, so a stolen token or cookie is worth nothing to it.
- Any local user could hold the page's port open without limit (aiohttp keeps an idle
  connection an hour), up to the daemon's file-descriptor limit. Now: `MAX_CONNECTIONS`
  admitted (503 past it), refused ones closed within `REFUSAL_LINGER_S`, at most
  `MAX_LINGERING_REFUSALS` waiting, idle ones closed after `IDLE_CONNECTION_S`.

What held (also asserted here, so a regression fails): strings a teammate controls
(environment names, files, reasons, conflict values, member and device names, what a peer
edits) are escaped wherever a page shows them, and the CSP forbids inline script anyway.
DNS rebinding, forged/`null` Origins, CSRF and clickjacking are in tests/test_ui_app.py and
tests/test_ui_auth.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mocksync.ui import gate as gate_mod
from mocksync.ui.app import UiServer
from mocksync.ui.gate import (
    MAX_LINGERING_REFUSALS,
    Owner,
    peer_owner,
    refusal,
    socket_owner,
)

from helpers.localuser import CAN_ADD_USERS, WHY_NOT, as_user, other_user
from helpers.uipage import ENV, ME, cookie_client, serving, standin_agent

#: Strings a teammate controls, each trying to become markup or script in the page.
HOSTILE = [
    '<script>alert("env")</script>',
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(2)>",
    "</pre><script>alert(3)</script>",
    "javascript:alert(4)",
]


def table_line(n: int, local: tuple[str, int], remote: tuple[str, int], uid: int) -> str:
    """One line of /proc/net/tcp as the kernel prints it (address in the machine's order)."""
    def hexaddr(a: tuple[str, int]) -> str:
        (value,) = struct.unpack("=I", socket.inet_aton(a[0]))
        return f"{value:08X}:{a[1]:04X}"
    return (f"{n:4d}: {hexaddr(local)} {hexaddr(remote)} 01 00000000:00000000 00:00000000 "
            f"00000000 {uid:5d}        0 {1000 + n} 1 0000000000000000 20 4 30 10 -1")


# ------------------------------------------------------------------ pure decisions


def test_socket_owner_finds_the_client_end_in_the_kernel_table() -> None:
    page = ("127.0.0.1", 8385)
    client = ("127.0.0.1", 51000)
    lines = [
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid",
        table_line(0, page, ("0.0.0.0", 0), 1000),        # the listener (the daemon's)
        table_line(1, page, client, 1000),                 # the accepted end (the daemon's)
        table_line(2, client, page, 1002),                 # the client's end: who asked
        "garbage line",
    ]
    assert socket_owner(lines, client, page) == 1002
    assert socket_owner(lines, page, client) == 1000
    assert socket_owner(lines, ("127.0.0.1", 51001), page) is None
    assert socket_owner([], client, page) is None


def test_refusal_names_the_other_user_and_fails_closed() -> None:
    assert refusal(Owner(True, 1000), 1000) is None
    other = refusal(Owner(True, 1002), 1000)
    assert other is not None and "uid 1002" in other and "another user" in other
    unknown = refusal(Owner(True, None), 1000)
    assert unknown is not None and "could not tell" in unknown
    # No socket table on this platform (macOS): the session stays the only fence.
    assert refusal(Owner(False, None), 1000) is None


def test_peer_owner_asks_the_real_kernel() -> None:
    if not gate_mod.PROC_NET_TCP.exists():
        pytest.skip("no /proc/net/tcp on this platform")
    with socket.create_server(("127.0.0.1", 0)) as srv, \
            socket.create_connection(srv.getsockname()) as cli:
        conn, _ = srv.accept()
        with conn:
            owner = peer_owner(cli.getsockname(), srv.getsockname())
            assert owner == Owner(True, os.getuid())
    assert peer_owner(("127.0.0.1", 1), ("127.0.0.1", 2),
                      table=Path("/nonexistent/tcp")) == Owner(False, None)


# ------------------------------------------------------------------ the page, over a stand-in


def _answers() -> dict[str, dict[str, Any]]:
    """What the stand-in control API answers: every string a teammate controls is hostile."""
    peer = "BBBBB-BBBBB-BBBBB-BBBBB"
    return {
        "status": {
            "device": {"id": ME, "name": HOSTILE[0]},
            "daemon": {"version": "0", "folder": "/tmp/" + HOSTILE[3]},
            "relay": {"url": "http://127.0.0.1:9", "state": "offline",
                      "reason": HOSTILE[4]},
            "peers": [{"device": peer, "name": HOSTILE[0], "member": HOSTILE[1],
                       "via": "relay", "state": "connected", "reason": HOSTILE[2]}],
            "environments": [
                {"uuid": ENV, "name": HOSTILE[0], "file": "/nonexistent/" + HOSTILE[1],
                 "space": "S1", "space_name": HOSTILE[2], "state": "blocked",
                 "reason": HOSTILE[3], "conflicts": 1,
                 "linked": [{"rel": HOSTILE[1], "state": "refused", "reason": HOSTILE[0]}]}]},
        "who": {"who": [{"device": ME, "you": True},
                        {"device": peer, "env_name": HOSTILE[3], "entity_name": HOSTILE[0],
                         "editor": HOSTILE[2]}]},
        "log": {"changesets": [{"device": peer, "member": HOSTILE[1], "seq": 1,
                                "summary": HOSTILE[0], "ops": 1, "time": 1.0}]},
        "conflicts": {"conflicts": [{
            "id": HOSTILE[1], "where": HOSTILE[0], "field": [HOSTILE[2]],
            "winner": {"device": ME, "value": HOSTILE[3]},
            "loser": {"device": peer, "value": {HOSTILE[0]: HOSTILE[1]}}}]},
        "reconnect": {"ok": True},
    }


@pytest.fixture
async def page() -> AsyncIterator[UiServer]:
    agent = standin_agent(device_name=HOSTILE[0], member=HOSTILE[2], peer_member=HOSTILE[1])
    async with serving(agent, _answers()) as server:
        yield server


async def test_teammate_strings_are_escaped_on_every_page(page: UiServer) -> None:
    async with cookie_client() as http:
        async with http.get(page.open_url()["url"]) as r:
            assert r.status == 200
            pages = [await r.text()]
        for path in (f"env/{ENV}", f"env/{ENV}?part=live", "?part=live"):
            async with http.get(page.url + path) as r:
                assert r.status == 200, path
                pages.append(await r.text())
    for text in pages:
        for bad in ("<script>alert", "<img src=x", "<svg onload", "onerror=alert(1)>"):
            assert bad not in text
    whole = "".join(pages)
    assert "&lt;script&gt;alert(" in whole  # shown, as text
    assert "javascript:alert(4)" not in re.findall(r'href="([^"]*)"', whole)


async def test_the_cookie_is_worth_nothing_outside_the_secret_path(page: UiServer) -> None:
    """A server on another port of 127.0.0.1 that got the cookie, or a proxy forwarding the
    browser's requests, still has to name the page's secret path."""
    async with cookie_client() as http:
        async with http.get(page.open_url()["url"], allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == page.base
            cookie = r.headers["Set-Cookie"]
            assert f"Path={page.base};" in cookie or cookie.endswith(f"Path={page.base}")
        name = page.auth.cookie_name  # type: ignore[union-attr]
        value = cookie.split(";", 1)[0].split("=", 1)[1]
    page.calls.clear()  # type: ignore[attr-defined]
    root = f"http://127.0.0.1:{page.port}"
    async with aiohttp.ClientSession() as bare:
        headers = {"Cookie": f"{name}={value}", "Origin": root}
        for path in ("/", "/env/" + ENV, "/s/not-the-secret/", page.base[:-2] + "/"):
            async with bare.get(root + path, headers=headers) as r:
                assert r.status == 401, path
        async with bare.post(root + "/reconnect", headers=headers, data={"csrf": "x"}) as r:
            assert r.status == 401
        async with bare.get(page.url, headers=headers) as r:  # the right path: served
            assert r.status == 200
    assert [c for c, _ in page.calls] == ["status", "who"]  # type: ignore[attr-defined]


async def _raw_get(port: int, path: str = "/", hold: bool = False) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if not hold:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
    return reader, writer


async def test_another_users_connection_is_refused_before_the_app(page: UiServer) -> None:
    url = page.open_url()["url"]
    page.gate.owner_of = lambda peer, ours: Owner(True, os.getuid() + 4242)
    async with cookie_client() as http, http.get(url, allow_redirects=False) as r:
        assert r.status == 403
        text = await r.text()
        assert f"uid {os.getuid() + 4242}" in text and "another user" in text
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "Set-Cookie" not in r.headers
    assert page.calls == [] and page.auth.session_count == 0  # type: ignore[union-attr]
    # The refused attempt did not spend the owner's token: the owner still signs in with it.
    page.gate.owner_of = peer_owner
    async with cookie_client() as http, http.get(url, allow_redirects=False) as r:
        assert r.status == 303
    # Where the table exists but does not hold the connection: refused (fail closed).
    page.gate.owner_of = lambda peer, ours: Owner(True, None)
    async with cookie_client() as http, http.get(page.url) as r:
        assert r.status == 403 and "could not tell" in await r.text()


async def test_connections_are_capped_and_the_slot_comes_back(page: UiServer) -> None:
    page.gate.max_connections = 3
    held = [await _raw_get(page.port, hold=True) for _ in range(3)]  # idle, admitted
    try:
        await asyncio.sleep(0.05)
        assert page.gate.open == 3
        reader, writer = await _raw_get(page.port)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"close some tabs" in answer
    finally:
        for _, w in held:
            w.close()
    for _ in range(100):
        if page.gate.open == 0:
            break
        await asyncio.sleep(0.02)
    reader, writer = await _raw_get(page.port)
    answer = await asyncio.wait_for(reader.read(200), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401")  # admitted again (no session: the app says so)


async def test_refused_connections_hold_nothing_for_long(page: UiServer) -> None:
    page.gate.owner_of = lambda peer, ours: Owner(True, os.getuid() + 1)
    silent = [await _raw_get(page.port, hold=True) for _ in range(MAX_LINGERING_REFUSALS + 4)]
    try:
        await asyncio.sleep(0.1)
        assert page.gate.lingering == MAX_LINGERING_REFUSALS
        # Past the cap: closed at once, no sentence, no descriptor kept.
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(silent[-1][0].read(), 2) == b""
        # The waiting ones are told why within the linger time, then closed.
        answer = await asyncio.wait_for(silent[0][0].read(), gate_mod.REFUSAL_LINGER_S + 3)
        assert answer.startswith(b"HTTP/1.1 403")
    finally:
        for _, w in silent:
            w.close()
    for _ in range(100):
        if page.gate.lingering == 0:
            break
        await asyncio.sleep(0.02)
    assert page.gate.lingering == 0 and page.gate.open == 0


# ------------------------------------------------------------------ real processes, real users


def _daemon_with_page(root: Path) -> tuple[Any, Any]:
    """A real `mocksync daemon` (no relay) serving its page on a free port."""
    from journeys.harness import Team

    team = Team(root=root, start_relay=False)
    dev = team.device("alice")
    dev.start(relay=False, ui=True, ui_port=0)
    return team, dev


def _steal_token_from_process_list() -> bytes:
    """As the other user: look through every process's command line for a sign-in address."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                m = re.search(rb"http://127\.0\.0\.1:\d+/[A-Za-z0-9_/-]*auth\?token=[A-Za-z0-9_-]+", cmd)
                if m:
                    return m.group(0)
        time.sleep(0.02)
    return b""


def _get(port: int, path: str, headers: dict[str, str] | None = None,
         method: str = "GET", body: str | None = None) -> tuple[int, str, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheader("Set-Cookie") or "", r.read().decode(errors="replace")
    finally:
        c.close()


@pytest.mark.skipif(not CAN_ADD_USERS, reason=WHY_NOT)
def test_another_local_user_gets_nothing_from_the_page(tmp_path: Path) -> None:
    """Bob (another account on Alice's machine) reads Alice's sign-in address from the
    process list as `mocksync open` hands it to her browser, replays her session cookie
    (which her browser sends to any port on 127.0.0.1), and floods the port: he gets a 403
    sentence each time, Alice's token still signs her in, and her page keeps answering."""
    root = Path(subprocess.run(["mktemp", "-d", "/tmp/msa-XXXXXX"], capture_output=True,
                               text=True, check=True).stdout.strip())
    browser = root / "browser.sh"  # a browser that takes its time to start, as real ones do
    browser.write_text("#!/bin/sh\nsleep 3\n")
    browser.chmod(0o755)
    team, alice = _daemon_with_page(root / "t")
    try:
        with other_user() as bob:
            env = {**os.environ, "BROWSER": str(browser)}
            opener = subprocess.Popen(
                [*_mocksync(), "--home", str(alice.home), "open", "--json"], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                url = as_user(bob, _steal_token_from_process_list).decode()
            finally:
                out, err = opener.communicate(timeout=30)
            assert url, f"the token never showed in the process list: {err!r}"
            port = int(url.split(":")[2].split("/")[0])
            path = url.split(str(port), 1)[1]
            base = path.split("auth?", 1)[0]  # the page's secret path

            answer = as_user(bob, lambda: repr(_get(port, path)).encode()).decode()
            assert "403" in answer and f"uid {bob.uid}" in answer, answer
            assert "mocksync_session" not in answer

            # Alice's browser signs in with that very address: Bob did not spend it.
            status, cookie, _ = _get(port, path)
            assert status == 303 and "mocksync_session" in cookie
            cookie = cookie.split(";")[0]
            status, _, body = _get(port, base, {"Cookie": cookie})
            assert status == 200
            csrf = re.search(r'name="csrf" value="([^"]+)"', body)
            assert csrf is not None

            # Bob replays her cookie with the page's CSRF token and a forged Origin.
            def replay() -> bytes:
                got = [_get(port, base, {"Cookie": cookie})[0],
                       _get(port, base + "reconnect", {
                           "Cookie": cookie, "Origin": f"http://127.0.0.1:{port}",
                           "Content-Type": "application/x-www-form-urlencoded"},
                           "POST", f"csrf={csrf.group(1)}")[0]]
                return repr(got).encode()
            assert as_user(bob, replay) == b"[403, 403]"

            # Bob holds 200 connections open; Alice's page still answers her at once.
            def flood() -> bytes:
                socks = []
                for _ in range(200):
                    with contextlib.suppress(OSError):
                        socks.append(socket.create_connection(("127.0.0.1", port), 5))
                os.write(ready_w, b"x")
                os.read(done_r, 1)
                for s in socks:
                    s.close()
                return str(len(socks)).encode()
            ready_r, ready_w = os.pipe()
            done_r, done_w = os.pipe()
            result: list[bytes] = []
            t = threading.Thread(target=lambda: result.append(as_user(bob, flood)))
            t.start()
            try:
                assert os.read(ready_r, 1) == b"x"
                assert _get(port, base, {"Cookie": cookie})[0] == 200
            finally:
                os.write(done_w, b"x")
                t.join(30)
            assert alice.running
    finally:
        team.close()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def _mocksync() -> list[str]:
    return [sys.executable, "-m", "mocksync"]


# ------------------------------------------------------------------ a real browser


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


class _MockInProxyMode(http.server.BaseHTTPRequestHandler):
    """Stands for a teammate's Mockoon environment run on this machine: a route answers an
    HTML page of theirs, and proxy mode (`proxyHost` and `proxyReqHeaders` travel in the
    shared environment) forwards every other request to the mocksync page with the
    browser's cookies and forged headers. Records what the browser sent it."""

    target = ""  # the page's address, with its secret path (the attacker is granted it)
    seen: list[tuple[str, str]] = []
    forwarded: list[int] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append((self.path, self.headers.get("Cookie") or ""))
        if self.path == "/":
            body = (b"<html><body>petstore<script>fetch('/api/pets',{credentials:'include'})"
                    b".then(r=>r.text()).then(t=>{document.title='done:'+t})</script>"
                    b"</body></html>")
            kind = "text/html"
        else:
            port = self.target.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
            status, _, _ = _get(int(port), "/" + self.target.split("/", 3)[3], {
                "Cookie": self.headers.get("Cookie") or "",
                "Origin": f"http://127.0.0.1:{port}", "Host": f"127.0.0.1:{port}"})
            self.forwarded.append(status)
            body, kind = str(status).encode(), "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian chromium, "
                           "chromium-driver)")
def test_a_mock_server_on_another_port_never_gets_the_session(tmp_path: Path) -> None:
    """Alice signs in to her page, then opens a route of a teammate's mock (another port of
    127.0.0.1, same site to the browser). Before the fix the browser sent the page's session
    cookie along (cookies ignore ports), and the mock's proxy mode, running as Alice (so past
    the uid gate), replayed it with forged Origin and Host: 200, and a POST with the CSRF
    token read from that page would change the space. Now the cookie is scoped to the page's
    secret path: the mock never sees it, and what it forwards is refused."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    team, alice = _daemon_with_page(Path(subprocess.run(
        ["mktemp", "-d", "/tmp/msb-XXXXXX"], capture_output=True, text=True,
        check=True).stdout.strip()))
    _MockInProxyMode.seen, _MockInProxyMode.forwarded = [], []
    mock = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MockInProxyMode)
    threading.Thread(target=mock.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        doc = alice.ms("open", "--no-browser", "--json").json()
        _MockInProxyMode.target = doc["base"]
        driver.get(doc["url"])
        assert driver.current_url == doc["base"] and "Overview" in driver.title
        driver.get(f"http://127.0.0.1:{mock.server_address[1]}/")
        deadline = time.monotonic() + 20
        while not driver.title.startswith("done:") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert driver.title.startswith("done:"), driver.title
        assert _MockInProxyMode.seen and all("mocksync_session" not in c
                                              for _, c in _MockInProxyMode.seen), \
            _MockInProxyMode.seen
        assert _MockInProxyMode.forwarded and set(_MockInProxyMode.forwarded) == {401}
        driver.get(doc["base"])  # and Alice's own page still knows her
        assert "Overview" in driver.title
    finally:
        driver.quit()
        mock.shutdown()
        team.close()
