"""The web page server's fences and plumbing (mocksync.ui.app), over a stand-in agent.

Why here and not only in the browser journeys: every refusal must leave the daemon untouched
(the control method is never called), which only a stand-in control API can observe, and
each fence is checked on its own (Host, session, Origin, CSRF, body size, live-stream cap),
fast and on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from mocksync.agent.control import ControlServer
from mocksync.ui.app import MAX_BODY_BYTES, MAX_EVENT_CLIENTS, UiServer
from mocksync.ui.errors import UiOff
from mocksync.ui.openroute import OFF_BY_SETTING, register_open

from helpers.uipage import ENV, ME, cookie_client, serving, standin_agent, standin_control

ANSWERS: dict[str, dict[str, Any]] = {
    "status": {
        "device": {"id": ME, "name": "laptop"},
        "daemon": {"version": "0", "folder": "/tmp/f"},
        "relay": {"url": "http://127.0.0.1:9", "state": "offline", "reason": "refused"},
        "peers": [], "environments": [
            {"uuid": ENV, "name": "Petstore", "file": "/nonexistent/petstore.json",
             "space": "S1", "space_name": "team", "state": "synced", "reason": None,
             "conflicts": 0, "linked": []}]},
    "who": {"who": [{"device": ME, "you": True}]},
    "reconnect": {"ok": True},
    "log": {"changesets": []},
    "conflicts": {"conflicts": []},
    "resolve": {"id": "c1", "took": "theirs", "changed": True},
    "resolve_env": {"kept": True},
}


def make_control(calls: list[tuple[str, dict[str, Any]]]) -> ControlServer:
    return standin_control(ANSWERS, calls)


@pytest.fixture
async def ui() -> AsyncIterator[UiServer]:
    async with serving(standin_agent(), ANSWERS) as server:
        yield server


async def signed_in(ui: UiServer, http: aiohttp.ClientSession) -> str:
    """Sign `http` in; the page's CSRF token."""
    url = ui.open_url()["url"]
    async with http.get(url, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == ui.base
    session = next(iter(ui.auth._sessions.values()))  # type: ignore[union-attr]
    return session.csrf


def origin(ui: UiServer) -> str:
    return f"http://127.0.0.1:{ui.port}"


async def test_nothing_is_served_without_a_session(ui: UiServer) -> None:
    async with cookie_client() as http:
        for path in ("/", "/static/ui.js", "/events", f"/env/{ENV}"):
            async with http.get(ui.url.rstrip("/") + path) as r:
                assert r.status == 401, path
                assert "mocksync open" in await r.text()
        async with http.post(ui.url + "reconnect", data={"csrf": "x"},
                             headers={"Origin": origin(ui)}) as r:
            assert r.status == 401
    assert ui.calls == []


async def test_sign_in_sets_a_strict_httponly_cookie_and_works_once(ui: UiServer) -> None:
    url = ui.open_url()["url"]
    async with cookie_client() as http:
        async with http.get(url, allow_redirects=False) as r:
            assert r.status == 303 and "token" not in r.headers["Location"]
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert f"Path={ui.base}" in cookie  # only the page's secret path, no other
        async with http.get(ui.url) as r:
            assert r.status == 200 and "Petstore" in await r.text()
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY"
    async with cookie_client() as other:
        async with other.get(url, allow_redirects=False) as r:
            assert r.status == 403 and "already used" in await r.text()
        async with other.get(ui.url) as r:
            assert r.status == 401


async def test_a_foreign_host_is_refused_even_signed_in(ui: UiServer) -> None:
    async with cookie_client() as http:
        await signed_in(ui, http)
        async with http.get(ui.url, headers={"Host": f"evil.example:{ui.port}"}) as r:
            assert r.status == 403 and "DNS rebinding" in await r.text()
        token_url = ui.open_url()["url"]
        async with http.get(token_url, headers={"Host": "evil.example"},
                            allow_redirects=False) as r:
            assert r.status == 403  # no session handed to a rebound name either
    assert [c for c, _ in ui.calls] == []


async def test_changes_need_our_origin_and_the_csrf_token(ui: UiServer) -> None:
    async with cookie_client() as http:
        csrf = await signed_in(ui, http)
        cases = [
            ({"csrf": csrf}, {"Origin": "http://evil.example"}),  # forged Origin
            ({"csrf": csrf}, {}),  # no Origin
            ({}, {"Origin": origin(ui)}),  # no CSRF token
            ({"csrf": "not-it"}, {"Origin": origin(ui)}),  # wrong CSRF token
        ]
        for data, headers in cases:
            async with http.post(ui.url + "reconnect", data=data, headers=headers,
                                 allow_redirects=False) as r:
                assert r.status == 403, (data, headers)
        assert ui.calls == []
        async with http.post(ui.url + "reconnect", data={"csrf": csrf},
                             headers={"Origin": origin(ui)}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == ui.base
        assert [c for c, _ in ui.calls] == ["reconnect"]
        async with http.get(ui.url) as r:  # the result is shown once
            assert "reconnecting" in await r.text()


async def test_resolve_goes_to_the_control_method_and_bad_input_changes_nothing(ui) -> None:
    async with cookie_client() as http:
        csrf = await signed_in(ui, http)
        post = {"headers": {"Origin": origin(ui)}, "allow_redirects": False}
        async with http.post(f"{ui.url}env/{ENV}/resolve",
                             data={"csrf": csrf, "id": "c1", "take": "both"}, **post) as r:
            assert r.status == 400
        async with http.post(f"{ui.url}env/{ENV}/resolve",
                             data={"csrf": csrf, "id": "c1\n", "take": "ours"}, **post) as r:
            assert r.status == 400 and "short line of text" in await r.text()
        async with http.post(f"{ui.url}env/bad%20id/resolve",
                             data={"csrf": csrf, "id": "c1", "take": "ours"}, **post) as r:
            assert r.status == 404
        assert ui.calls == []
        async with http.post(f"{ui.url}env/{ENV}/resolve",
                             data={"csrf": csrf, "id": "c1", "take": "theirs"}, **post) as r:
            assert r.status == 303 and r.headers["Location"] == f"{ui.base}env/{ENV}"
        assert ui.calls == [("resolve", {"id": "c1", "take": "theirs"})]


async def test_held_decisions_go_to_resolve_env(ui: UiServer) -> None:
    async with cookie_client() as http:
        csrf = await signed_in(ui, http)
        post = {"headers": {"Origin": origin(ui)}, "allow_redirects": False}
        async with http.post(f"{ui.url}env/{ENV}/held", data={"csrf": csrf, "choice": "maybe"},
                             **post) as r:
            assert r.status == 400
        assert ui.calls == []
        for choice in ("keep", "discard"):
            async with http.post(f"{ui.url}env/{ENV}/held", data={"csrf": csrf, "choice": choice},
                                 **post) as r:
                assert r.status == 303
        assert ui.calls == [("resolve_env", {"env": ENV, "keep_local": True}),
                            ("resolve_env", {"env": ENV, "keep_local": False})]


async def test_sign_out_ends_the_session_and_its_live_stream(ui: UiServer) -> None:
    async with cookie_client() as http:
        csrf = await signed_in(ui, http)
        stream = await http.get(ui.url + "events")
        await asyncio.wait_for(read_event(stream, "hello"), 5)
        async with http.post(ui.url + "signout", data={"csrf": csrf},
                             headers={"Origin": origin(ui)}) as r:
            assert r.status == 200
        for fn in list(ui.agent.listeners):
            fn({"event": "change"})
        rest = await asyncio.wait_for(stream.content.read(), 5)  # the stream ends
        assert b"event: change" not in rest
        stream.close()
        async with http.get(ui.url) as r:
            assert r.status == 401


async def test_a_body_over_the_limit_is_refused(ui: UiServer) -> None:
    async with cookie_client() as http:
        csrf = await signed_in(ui, http)
        async with http.post(ui.url + "reconnect", headers={"Origin": origin(ui)},
                             data={"csrf": csrf, "pad": "x" * (MAX_BODY_BYTES + 1)},
                             allow_redirects=False) as r:
            assert r.status == 413
    assert ui.calls == []


async def read_event(resp: aiohttp.ClientResponse, name: str) -> str:
    while True:
        line = (await resp.content.readline()).decode()
        if line == "":
            raise AssertionError("stream ended")
        if line.strip() == f"event: {name}":
            return (await resp.content.readline()).decode()


async def test_live_stream_tells_of_each_change_and_is_capped(ui: UiServer) -> None:
    async with cookie_client() as http:
        await signed_in(ui, http)
        streams = []
        try:
            for _ in range(MAX_EVENT_CLIENTS):
                r = await http.get(ui.url + "events")
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/event-stream")
                streams.append(r)
                await asyncio.wait_for(read_event(r, "hello"), 5)
            async with http.get(ui.url + "events") as extra:
                assert extra.status == 503
            for fn in list(ui.agent.listeners):
                fn({"event": "change", "env": ENV})
            for r in streams:
                data = await asyncio.wait_for(read_event(r, "change"), 5)
                assert '"change"' in data
        finally:
            for r in streams:
                r.close()


async def test_port_in_use_leaves_the_page_off_with_the_reason() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        control = make_control([])
        server = UiServer(standin_agent(), control, port=port)
        await server.start()
        try:
            register_open(control, server)
            with pytest.raises(UiOff, match=f"port {port}.*in use.*ui_port"):
                await control.call("ui_open")
        finally:
            await server.stop()


async def test_open_says_why_when_the_page_is_turned_off() -> None:
    control = make_control([])
    register_open(control, None)
    with pytest.raises(UiOff) as info:
        await control.call("ui_open")
    assert str(info.value) == OFF_BY_SETTING and "--no-ui" in OFF_BY_SETTING


async def test_stop_ends_live_streams(ui: UiServer) -> None:
    async with cookie_client() as http:
        await signed_in(ui, http)
        r = await http.get(ui.url + "events")
        await asyncio.wait_for(read_event(r, "hello"), 5)
        await ui.stop()
        with contextlib.suppress(aiohttp.ClientError):
            rest = await asyncio.wait_for(r.content.read(), 5)
            assert b"event: change" not in rest
        r.close()
