"""The relay catch-up reports its progress (`status --json` `progress`) while it pulls.

Driven through RelayTransport's own catch-up with a stand-in relay client and store (no
sockets): what is checked is the wiring, that a pull announces how many change sets it lacks,
counts each page as it is applied, and disappears once done, even when the pull fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from mocksync.net.relay_transport import RelayTransport

from helpers.fakeagent import FakeAgent


@dataclass
class Env:
    device: str
    seq: int


class Client:
    def __init__(self, pages: list[list[Env]], fail_at: int | None = None) -> None:
        self.pages, self.fail_at, self.calls = pages, fail_at, 0

    async def index(self, space: str) -> dict[str, dict[str, int]]:
        return {"tag1": {"devA": 6, "devB": 2}}

    async def fetch(self, space: str, tag: str, have: dict[str, int]) -> tuple[list[Env], bool]:
        self.calls += 1
        if self.fail_at == self.calls:
            raise ConnectionError("relay went away")
        page = self.pages[self.calls - 1]
        return page, self.calls < len(self.pages)


class Store:
    def version_vector(self, env: str) -> dict[str, int]:
        return {}

    def count(self, env: str, state: Any) -> int:
        return 0


def transport(seen: list[list[dict[str, Any]]]) -> RelayTransport:
    t = RelayTransport("http://127.0.0.1:9")
    t.agent = FakeAgent(store=Store())
    t._tagger = lambda space: (lambda env: "tag1")  # type: ignore[method-assign]
    t._local_envs = lambda space: []  # type: ignore[method-assign]

    async def ingest(space: str, tag: str, items: list[Any], touched: set[str]) -> None:
        t._tag_env.setdefault(space, {})[tag] = "ENV1"  # the pages name the environment
        seen.append(t.progress.view())

    t._ingest_off_loop = ingest  # type: ignore[method-assign]
    return t


async def test_a_pull_reports_progress_page_by_page() -> None:
    seen: list[list[dict[str, Any]]] = []
    t = transport(seen)
    pages = [[Env("devA", 1), Env("devA", 2), Env("devA", 3)],
             [Env("devA", 4), Env("devA", 5), Env("devA", 6)],
             [Env("devB", 1), Env("devB", 2)]]
    await t._catch_up(Client(pages), "S1", reconnect=False)  # type: ignore[arg-type]
    # Seen while each page was applied: the total announced up front, done counting up.
    assert [(v[0]["done"], v[0]["total"]) for v in seen] == [(0, 8), (3, 8), (6, 8)]
    assert t.progress.view() == []  # done: gone
    assert t.status()["progress"] == []


async def test_a_failed_pull_leaves_no_progress_behind() -> None:
    seen: list[list[dict[str, Any]]] = []
    t = transport(seen)
    with pytest.raises(ConnectionError):
        await t._catch_up(Client([[Env("devA", 1)]] * 3, fail_at=2), "S1",  # type: ignore[arg-type]
                          reconnect=False)
    assert seen and seen[0][0]["total"] == 8
    assert t.progress.view() == []
