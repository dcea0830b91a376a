"""The typed seams between the daemon's layers: what the agent and the transports call on
each other, and what they need from the directory of spaces.

Why a module of its own, below both `agent` and `net`: the agent holds transports and the
transports call back into the agent, so neither may import the other's classes without a
cycle (the layer contract puts `agent` above `net`). Both sides import these Protocols
instead; the concrete classes (`agent.daemon.Agent`, `agent.spacedir.SpaceDirectory`,
`net.relay_transport.RelayTransport`, `net.lan_transport.LanTransport`, `agent.bus.BusPort`,
`agent.multi.MultiTransport`) satisfy them structurally. Nothing here may import
`mocksync.agent` or `mocksync.net`, not even for type checking.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import contextlib

    from .agentevents import AgentEvent
    from .paths import Home
    from .space import quotas
    from .space.identity import Identity
    from .space.writers import Verdict
    from .spaceio.store import StoredSpace
    from .store import Store

#: What the agent's listeners (control streams, transports, the web page) receive: one event
#: as a JSON-able mapping with at least "event" (its kind) and "time". What is published is
#: the typed record (`agentevents.AgentEvent`); the listeners get its `to_json()`.
Event = dict[str, Any]

T = TypeVar("T")


class SpaceDirectory(Protocol):
    """The spaces this device belongs to, as the agent and the transports need them."""

    def spaces(self) -> list[StoredSpace]: ...
    def get(self, space: str) -> StoredSpace | None: ...
    def default_space(self) -> str: ...
    def resolve(self, text: str) -> str: ...
    def name(self, space: str) -> str: ...
    def public_key(self, space: str, device: str, env: str, seq: int) -> bytes | None: ...
    def judge(self, space: str, device: str, env: str, seq: int) -> Verdict: ...
    def judge_all(self, space: str, slots: list[tuple[str, str, int]]) -> list[Verdict]: ...
    def tag(self, space: str, env: str) -> str: ...
    def member_name(self, space: str, device: str) -> str | None: ...
    def plan(self, space: str) -> quotas.Plan: ...
    def learn_plan(self, space: str, plan: quotas.Plan) -> bool: ...
    def check_share(self, space: str, env_count: int, env_bytes: int) -> str | None: ...
    def check_size(self, space: str, env_bytes: int) -> str | None: ...


class PinBook(Protocol):
    """Where a relay client keeps the relay key each space pinned on first use (TOFU), one
    per (space, relay address) (issue 17): `net.relay_client.RelayPins` pins nothing,
    `spaceio.store.SpacePins` keeps them with the home's spaces. `pinned_many`: the key each
    space expects at `url` (None: none yet); `admitted`: the relay at `url` presenting
    `relay_key` admitted this device to `spaces`, pin it where none is."""

    def pinned_many(self, spaces: Sequence[str], url: str) -> dict[str, bytes | None]: ...
    def admitted(self, spaces: Sequence[str], url: str, relay_key: bytes) -> None: ...
    def name(self, space: str) -> str | None: ...


class Transport(Protocol):
    """What carries change sets to other devices (in-process bus, LAN WebRTC, relay).

    `broadcast` is called, on the loop, for each change set this device commits (never for
    one an offline hold keeps back); `status` answers the transport's part of `status`."""

    async def start(self, agent: AgentPort) -> None: ...
    async def stop(self) -> None: ...
    def broadcast(self, space: str, env: str, wire: bytes) -> None: ...
    def status(self) -> dict[str, Any]: ...


@runtime_checkable
class LogPusher(Protocol):
    """A transport that uploads new membership entries when asked (`mocksync remove`, an
    admission through another transport) instead of at its next periodic check."""

    async def push_logs(self) -> None: ...


@runtime_checkable
class Reconnecting(Protocol):
    """A transport that can be asked to connect again and catch up (`mocksync reconnect`,
    and the agent's refetch once its log takes writes again)."""

    async def reconnect(self) -> None: ...


@runtime_checkable
class PresenceCarrier(Protocol):
    """A transport that tells peers what this device's user is editing (issue 11)."""

    def set_presence(self, *, space: str | None = None, env: str | None = None,
                     entity: str | None = None, editor: str | None = None) -> None: ...


class SyncedEnv(Protocol):
    """One environment this device syncs, as a transport sees it (read only)."""

    @property
    def uuid(self) -> str: ...
    @property
    def space(self) -> str: ...


class AgentPort(Protocol):
    """What a transport calls on the agent that started it.

    Change sets in: `receive`/`receive_async` (one), `receive_batch_async` then
    `settle_remote_async` (a relay catch-up, page by page); `note_undecodable_async`: rows
    `(env, device, seq, reason)` of change sets that opened but did not decode. Offline policy: `offline_cut`,
    `offline_catch_up`. Relay quota: `upload_refused`/`upload_accepted`. Membership:
    `enforce_membership_soon`. Events: `publish` and `listeners`. `envs`: the environments
    synced here (a file may be known before its first change set is in the log). `clock`:
    the agent's wall clock (seconds); `store_call`: run a store call on the agent's store
    worker, in turn with its other jobs (here when it has none)."""

    device: str
    identity: Identity
    home: Home
    spaces: SpaceDirectory
    store: Store
    transport: Transport | None
    listeners: list[Callable[[Event], None]]
    clock: Callable[[], float]

    @property
    def envs(self) -> Mapping[str, SyncedEnv]: ...
    def publish(self, event: AgentEvent) -> None: ...
    def store_turn(self) -> contextlib.AbstractAsyncContextManager[None]: ...
    def store_call(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...
    def receive(self, space: str, wire: bytes) -> Any: ...
    def receive_async(self, space: str, wire: bytes) -> Awaitable[Any]: ...
    def receive_batch(self, space: str, wires: list[bytes], *, settle: bool = True,
                      ) -> tuple[Any, list[tuple[Any, Exception]]]: ...
    def receive_batch_async(self, space: str, wires: list[bytes], *, settle: bool = True,
                            ) -> Awaitable[tuple[Any, list[tuple[Any, Exception]]]]: ...
    def settle_remote(self, space: str, envs: set[str]) -> None: ...
    def settle_remote_async(self, space: str, envs: set[str]) -> Awaitable[None]: ...
    def note_undecodable_async(self, rows: list[tuple[str, str, int, str]]) -> Awaitable[None]: ...
    def offline_cut(self, env: str) -> int | None: ...
    def offline_catch_up(self, env: str, relay_vv: dict[str, int]) -> str: ...
    def upload_refused(self, env: str, reason: str) -> None: ...
    def upload_accepted(self, env: str) -> None: ...
    def enforce_membership(self) -> int: ...
    def enforce_membership_soon(self) -> None: ...


__all__ = ["AgentPort", "Event", "LogPusher", "PinBook", "PresenceCarrier", "Reconnecting", "SpaceDirectory",
           "SyncedEnv", "Transport"]
