"""The Agent split (issue 14): the parts meet only at declared seams.

- `model.envsize.size_refusal` (pure): the fast size bound first, the exact size only when
  the bound does not fit, linked files' bytes counted;
- `LinkedFiles` works against its narrow `LinkedHost` port alone (a fake host that has
  nothing else), and the Agent has every member of each port it is handed as;
- the optional transport capabilities (`Reconnecting`, `PresenceCarrier`) are recognised
  structurally, so the agent asks nothing with `hasattr`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from tinydb import TinyDB

from mocksync.agent.bus import LocalBus
from mocksync.agent.daemon import Agent
from mocksync.agent.envfiles import EnvRuntime
from mocksync.agent.linked import LinkedFiles, LinkedHost
from mocksync.agent.multi import MultiTransport
from mocksync.agent.settings import Settings
from mocksync.agent.spacedir import SpaceDirectory
from mocksync.agentevents import AgentEvent
from mocksync.model import Op
from mocksync.model.envsize import JS_SIZE_BOUND, compact_size, quick_compact_size, size_refusal
from mocksync.paths import Home
from mocksync.ports import AgentPort, PresenceCarrier, Reconnecting
from mocksync.spaceio.actions import init_device

DOC = {"uuid": "e1", "name": "Shop", "port": 3001, "routes": [], "note": 1e20}


def _members(proto: type) -> set[str]:
    """The names a Protocol declares: its annotated attributes, methods and properties."""
    names = set(getattr(proto, "__annotations__", {}))
    names |= {n for n, v in vars(proto).items()
              if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    return names


# ------------------------------------------------------------------ size_refusal (pure)
def test_size_refusal_measures_exactly_only_when_the_fast_bound_does_not_fit() -> None:
    asked: list[int] = []

    def roomy(size: int) -> str | None:
        asked.append(size)
        return None

    assert size_refusal(roomy, DOC, 7) is None
    assert asked == [JS_SIZE_BOUND * quick_compact_size(DOC) + 7]  # one cheap question

    asked.clear()
    limit = compact_size(DOC) + 7  # fits exactly, but not by the bound

    def tight(size: int) -> str | None:
        asked.append(size)
        return None if size <= limit else f"{size} bytes is over {limit}"

    assert size_refusal(tight, DOC, 7) is None
    assert asked == [JS_SIZE_BOUND * quick_compact_size(DOC) + 7, compact_size(DOC) + 7]


def test_size_refusal_counts_linked_bytes_and_says_why() -> None:
    limit = compact_size(DOC) + 10

    def check(size: int) -> str | None:
        return None if size <= limit else f"{size} bytes is over the plan's {limit}"

    assert size_refusal(check, DOC, 10) is None
    assert size_refusal(check, DOC, 11) == f"{limit + 1} bytes is over the plan's {limit}"


# ------------------------------------------------------------------ the linked-files port
class FakeHost:
    """Exactly the `LinkedHost` port and nothing more: reaching past it raises."""

    def __init__(self, folder: Path, envs: dict[str, EnvRuntime]) -> None:
        self.folder = folder
        self.device = "d-here"
        self.watcher = None
        self.store: Any = None
        self.rng: Any = None
        self._envs = envs
        self.tasks: list[asyncio.Task[Any]] = []

    @property
    def trash(self) -> Path:
        return self.folder.parent / "trash"

    def clock(self) -> float:
        return 1000.0

    def env_at(self, path: Path) -> EnvRuntime | None:
        return next((rt for rt in self._envs.values() if rt.path == path), None)

    def env(self, uuid: str) -> EnvRuntime | None:
        return self._envs.get(uuid)

    def is_held(self, uuid: str) -> bool:
        return False

    def find(self, text: str) -> EnvRuntime:
        return self._envs[text]

    def forget_local(self, path: Path) -> None:
        pass

    def commit(self, rt: EnvRuntime, ops: Sequence[Op], seen: dict[str, int] | None = None) -> Any:
        raise AssertionError("nothing here commits")

    def size_problem(self, space: str, doc: dict[str, Any]) -> str | None:
        return None

    def check_size(self, space: str, env_bytes: int) -> str | None:
        return None

    def schedule_write(self, rt: EnvRuntime) -> None:
        raise AssertionError("nothing here writes")

    def publish(self, event: AgentEvent) -> None:
        pass

    def spawn(self, task: asyncio.Task[Any]) -> None:
        self.tasks.append(task)

    def to_loop(self, fn: Any, *args: Any) -> bool:
        return False  # (always on the loop here)

    def spawn_on_worker(self, fn: Any, *args: Any) -> bool:
        return False  # (no store worker: the caller runs it)

    def store_turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()  # (no store worker: nothing to wait for)


def test_the_fake_host_is_exactly_the_port() -> None:
    declared = _members(LinkedHost)
    offered = _members(FakeHost) | {"folder", "device", "watcher", "store", "rng"}
    assert declared <= offered
    assert declared >= {"commit", "size_problem", "env_at", "env", "spawn"}


def test_linked_files_measure_and_track_through_the_narrow_port(tmp_path: Path) -> None:
    folder = tmp_path / "envs"
    (folder / "fixtures").mkdir(parents=True)
    (folder / "fixtures" / "a.json").write_bytes(b"0123456789")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"x" * 50)
    os.symlink(outside, folder / "fixtures" / "out.txt")  # leaves the folder: never counted
    env_file = folder / "shop.json"
    rt = EnvRuntime("e1", "s1", env_file, name="Shop")
    host = FakeHost(folder, {"e1": rt})
    linked = LinkedFiles(host, TinyDB(tmp_path / "docs.json"))
    doc = {"uuid": "e1", "routes": [{"uuid": "r1", "responses": [
        {"uuid": "a", "bodyType": "FILE", "filePath": "fixtures/a.json"},
        {"uuid": "b", "bodyType": "FILE", "filePath": "fixtures/out.txt"},
        {"uuid": "c", "bodyType": "FILE", "filePath": "fixtures/absent.txt"}]}]}
    assert linked.quota_bytes(doc) == (1, 10)
    assert linked.folder == folder
    assert not linked.tracks(env_file)  # an environment file is never a linked file
    linked.poll_once()  # polls through `host.env` only (a fake without `envs`)


# ------------------------------------------------------------------ the Agent's seams
@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    home = Home(tmp_path / "alice")
    ident, _ = init_device(home, name="alice-laptop", member_name="alice")
    return Agent(home, Settings(folder=tmp_path / "alice" / "envs", blind_window_s=0.0,
                                mdns=False), ident, SpaceDirectory(home))


def test_the_agent_has_every_member_of_the_ports_it_is_handed_as(agent: Agent) -> None:
    for proto in (LinkedHost, AgentPort):
        missing = sorted(n for n in _members(proto) if not hasattr(agent, n))
        assert missing == [], f"Agent lacks {proto.__name__} members {missing}"
    assert agent.linked.host is agent
    assert agent.trash == agent.home.trash


def test_the_parts_share_the_orchestrators_state(agent: Agent) -> None:
    rt = EnvRuntime("e1", "s1", agent.folder / "shop.json", name="Shop")
    agent.envs["e1"] = rt
    assert agent.env_at(agent.folder / "shop.json") is rt
    assert agent.env("e1") is rt and agent.env("e2") is None
    agent.relay_refusals["e1"] = "over the plan"
    assert agent.offline_holds.relay_refusals == {"e1": "over the plan"}
    assert agent.report.all_envs()[0]["state"] == "held"  # the refusal overlays the row
    agent.forget(rt)  # every part lets go of it
    assert agent.envs == {} and agent.relay_refusals == {} and agent.all_envs() == []


def test_optional_transport_capabilities_are_recognised_structurally() -> None:
    class BroadcastOnly:
        async def start(self, agent: Any) -> None: ...
        async def stop(self) -> None: ...
        def broadcast(self, space: str, env: str, wire: bytes) -> None: ...
        def status(self) -> dict[str, Any]:
            return {}

    multi = MultiTransport(BroadcastOnly())
    assert isinstance(multi, Reconnecting) and isinstance(multi, PresenceCarrier)
    assert isinstance(LocalBus().port(), Reconnecting)
    assert not isinstance(BroadcastOnly(), Reconnecting)
    assert not isinstance(BroadcastOnly(), PresenceCarrier)
