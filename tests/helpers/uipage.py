"""The local web page (`mocksync.ui.app.UiServer`) served over a stand-in agent and control API.

Why a stand-in: every refusal of the page must leave the daemon untouched (the control method
is never called), which only a control API that records its calls can show, and the page's
fences and escaping are checked fast, on 127.0.0.1, without a daemon. The page tests and the
red-team tests of the page share this one stand-in; each gives its own answers (a calm
petstore, or every string a hostile teammate controls).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp

from mocksync.agent.control import ControlServer
from mocksync.ui.app import UiServer

#: The stand-in device's id.
ME = "AAAAA-AAAAA-AAAAA-AAAAA"
#: The one environment the stand-in's answers list.
ENV = "0b5c3a52-1111-4222-8333-944455556666"
#: The stand-in space's plan (what the page shows of quotas).
PLAN = SimpleNamespace(name="team", max_envs=10, max_env_bytes=10_000_000,
                       max_devices_per_member=2)


class StandinSpaces:
    """A directory of no spaces whose every device is called `member` (None: unnamed)."""

    def __init__(self, member: str | None = None) -> None:
        self.member = member

    def spaces(self) -> list[Any]:
        return []

    def get(self, space: str) -> Any:
        return None

    def plan(self, space: str) -> Any:
        return PLAN

    def member_name(self, space: str, device: str) -> str | None:
        return self.member


def standin_agent(device_name: str = "laptop", member: str = "alice",
                  peer_member: str | None = None) -> Any:
    """What the page reads of the agent: device, identity, listeners, holds, spaces."""
    return SimpleNamespace(device=ME, identity=SimpleNamespace(name=device_name,
                                                               member_name=member),
                           listeners=[], holds=set(), transport=None,
                           spaces=StandinSpaces(peer_member),
                           settings=SimpleNamespace(relay=None))


def standin_control(answers: Mapping[str, dict[str, Any]],
                    calls: list[tuple[str, dict[str, Any]]]) -> ControlServer:
    """A control API (never bound to a socket) answering each method of `answers` with its
    answer, recording every call as (method, params) in `calls`."""
    control = ControlServer("/nonexistent/never-bound.sock")
    for name, answer in answers.items():
        def bind(name: str = name, answer: dict[str, Any] = answer) -> None:
            @control.route(name)
            async def handler(params: dict[str, Any]) -> dict[str, Any]:
                calls.append((name, params))
                return answer
        bind()
    return control


@contextlib.asynccontextmanager
async def serving(agent: Any, answers: Mapping[str, dict[str, Any]]
                  ) -> AsyncIterator[UiServer]:
    """The page on 127.0.0.1 (ephemeral port) over `agent` and a `standin_control` of
    `answers`; its recorded calls are the server's `calls` attribute. Stopped on exit."""
    calls: list[tuple[str, dict[str, Any]]] = []
    server = UiServer(agent, standin_control(answers, calls), port=0)
    await server.start()
    assert server.port and server.auth is not None
    server.calls = calls  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        await server.stop()


def cookie_client() -> aiohttp.ClientSession:
    """An HTTP client keeping cookies for 127.0.0.1 (aiohttp drops IP cookies by default)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
