"""Stand-ins for the daemon that implement the whole typed seam a transport sees
(`mocksync.ports.AgentPort`, `SpaceDirectory`), for tests that drive one transport alone.

Why complete fakes, not ad-hoc objects with the two methods a test happens to reach: the
transports call the port without probing (issue 14), so a partial stand-in breaks on the first
call it lacks, and a fake that drifts from the Protocol hides a seam that changed. The
`_checked` assignments at the bottom make mypy compare these classes with the Protocols
(`.venv/bin/mypy tests/helpers/fakeagent.py`). Every call is recorded in `calls`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

from mocksync.agentevents import AgentEvent
from mocksync.space import quotas
from mocksync.space.writers import NOT_A_DEVICE, Verdict
from mocksync.spaceio.store import StoredSpace

if TYPE_CHECKING:
    from mocksync.ports import AgentPort, SpaceDirectory, SyncedEnv, Transport


T = TypeVar("T")

class FakeSpaces:
    """A `SpaceDirectory` over a fixed list of stored spaces (no files read)."""

    def __init__(self, spaces: list[StoredSpace] | None = None) -> None:
        self._spaces = {s.space_id: s for s in spaces or []}
        self.plans: dict[str, quotas.Plan] = {}

    def spaces(self) -> list[StoredSpace]:
        return list(self._spaces.values())

    def get(self, space: str) -> StoredSpace | None:
        return self._spaces.get(space)

    def default_space(self) -> str:
        return next(iter(self._spaces))

    def resolve(self, text: str) -> str:
        return text

    def name(self, space: str) -> str:
        s = self._spaces.get(space)
        return s.name if s is not None else space[:12]

    def public_key(self, space: str, device: str, env: str, seq: int) -> bytes | None:
        return self.judge(space, device, env, seq).sign_key

    def judge(self, space: str, device: str, env: str, seq: int) -> Verdict:
        s = self._spaces.get(space)
        dev = s.state.devices.get(device) if s is not None else None
        if dev is None:
            return Verdict(False, NOT_A_DEVICE, f"{device} is not a device of {space[:12]}")
        return Verdict(True, "", "", dev.sign_key)

    def judge_all(self, space: str, slots: list[tuple[str, str, int]]) -> list[Verdict]:
        return [self.judge(space, device, env, seq) for device, env, seq in slots]

    def tag(self, space: str, env: str) -> str:
        return ""

    def member_name(self, space: str, device: str) -> str | None:
        s = self._spaces.get(space)
        m = s.state.member_of(device) if s is not None else None
        return m.name if m is not None else None

    def plan(self, space: str) -> quotas.Plan:
        return self.plans.get(space, quotas.PLANS["team"])

    def learn_plan(self, space: str, plan: quotas.Plan) -> bool:
        changed = self.plans.get(space) != plan
        self.plans[space] = plan
        return changed

    def check_share(self, space: str, env_count: int, env_bytes: int) -> str | None:
        return None

    def check_size(self, space: str, env_bytes: int) -> str | None:
        return None


class FakeAgent:
    """An `AgentPort` that takes every change set without applying it and records each call.

    Subclass and override what a test needs (e.g. `receive_async` applying slowly)."""

    def __init__(self, *, device: str = "dev", identity: Any = None, home: Any = None,
                 spaces: FakeSpaces | None = None, store: Any = None) -> None:
        self.device = device
        self.identity = identity
        self.home = home
        self.spaces: SpaceDirectory = spaces if spaces is not None else FakeSpaces()
        self.store = store
        self.transport: Transport | None = None
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.synced: dict[str, SimpleNamespace] = {}
        self.cuts: dict[str, int] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.clock: Callable[[], float] = time.time

    @property
    def envs(self) -> Mapping[str, SyncedEnv]:
        return self.synced

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def called(self, name: str) -> list[tuple[Any, ...]]:
        """The arguments of each call of `name`, in order."""
        return [args for n, args in self.calls if n == name]

    def publish(self, event: AgentEvent) -> None:
        data = event.to_json()  # what the agent's listeners get (it adds "time")
        self._call("publish", data)
        for fn in list(self.listeners):
            fn(data)

    def store_turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def store_call(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)  # no store worker here

    def receive(self, space: str, wire: bytes) -> Any:
        self._call("receive", space, wire)
        return None

    async def receive_async(self, space: str, wire: bytes) -> Any:
        return self.receive(space, wire)

    def receive_batch(self, space: str, wires: list[bytes], *, settle: bool = True,
                      ) -> tuple[Any, list[tuple[Any, Exception]]]:
        self._call("receive_batch", space, wires, settle)
        return SimpleNamespace(applied=[]), []

    async def receive_batch_async(self, space: str, wires: list[bytes], *, settle: bool = True,
                                  ) -> tuple[Any, list[tuple[Any, Exception]]]:
        return self.receive_batch(space, wires, settle=settle)

    def settle_remote(self, space: str, envs: set[str]) -> None:
        self._call("settle_remote", space, set(envs))

    async def settle_remote_async(self, space: str, envs: set[str]) -> None:
        self.settle_remote(space, envs)

    async def note_undecodable_async(self, rows: list[tuple[str, str, int, str]]) -> None:
        self._call("note_undecodable", list(rows))

    def offline_cut(self, env: str) -> int | None:
        return self.cuts.get(env)

    def offline_catch_up(self, env: str, relay_vv: dict[str, int]) -> str:
        self._call("offline_catch_up", env, dict(relay_vv))
        return "none"

    def upload_refused(self, env: str, reason: str) -> None:
        self._call("upload_refused", env, reason)

    def upload_accepted(self, env: str) -> None:
        self._call("upload_accepted", env)

    def enforce_membership(self) -> int:
        self._call("enforce_membership")
        return 0

    def enforce_membership_soon(self) -> None:
        self._call("enforce_membership_soon")


if TYPE_CHECKING:  # mypy compares the fakes with the Protocols here
    _checked_agent: AgentPort = FakeAgent()
    _checked_spaces: SpaceDirectory = FakeSpaces()


__all__ = ["FakeAgent", "FakeSpaces"]
