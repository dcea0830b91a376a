"""The relay server's one narrow, async view of its storage engine (SQLite or PostgreSQL).

Why async: PostgreSQL is a network round trip (asyncpg), and a relay serving thousands of
devices cannot block its event loop on one. SQLite stays exactly as it was: `OnLoop` runs each
call of the synchronous `SQLiteStorage` directly on the loop (microseconds, and nothing can
interleave inside a call, so a quota check and the put it guards stay atomic in one process).

Why the engine also speaks for "the other instances": with PostgreSQL any number of relay
processes share one database, so what one instance does must reach devices connected to the
others (a put, a membership change, presence, a signal, a join message). The engine delivers
those as `ClusterEvent`s to the server's handler; the single-process SQLite engine has no
other instances and never emits one. Cross-instance decisions that must be atomic (a quota
with its put, a device limit with the admission) are made by a pure callback run inside the
engine's transaction (`check`, `decide`).

`PresenceBook` (pure) merges this instance's own sessions with what the other instances
announced, so that a device failing over from one instance to another is never reported
offline while it is online somewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .compaction import Verdict
from .envelope import Envelope
from .policy import Refusal
from .storage import EnvUsage, RelayStorage, SnapshotJudge, StoredSnapshot

#: Presence of a device in a space: (env tag, entity) it is looking at; None means offline.
PresenceValue = tuple[str | None, str | None] | None


@dataclass(frozen=True)
class RemotePut:
    """Envelopes another instance stored (fetched from the database by id)."""

    space: str
    tag: str
    uploader: str
    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True)
class RemoteLog:
    """Another instance appended membership entries to `space`: reload it."""

    space: str


@dataclass(frozen=True)
class RemotePresence:
    """A device's presence as seen by another instance (`value` None: it left there)."""

    instance: str
    space: str
    device: str
    value: PresenceValue


@dataclass(frozen=True)
class InstanceGone:
    """Another instance stopped heartbeating (killed): everything it announced is void."""

    instance: str


@dataclass(frozen=True)
class RemoteMail:
    """A message for a device (or a join) held by this instance: `kind` is `signal`,
    `joinreq` (to the inviting device) or `joinrep` (to the joiner's connection `jid`)."""

    kind: str
    space: str
    to: str
    sender: str
    jid: bytes
    payload: bytes


@dataclass(frozen=True)
class Resynced:
    """This instance stopped hearing the others for a while (its LISTEN connection was lost)
    and hears them again. What was put meanwhile came first as `RemotePut`s; here is who is
    online at the other instances now (instance, space, device, presence), to replace what
    was announced before; membership logs may have grown meanwhile. `complete` False: more
    was missed than could be replayed, so the devices here must reconnect to catch up."""

    presence: tuple[tuple[str, str, str, PresenceValue], ...]
    complete: bool


ClusterEvent = RemotePut | RemoteLog | RemotePresence | InstanceGone | RemoteMail | Resynced
EventHandler = Callable[[ClusterEvent], Awaitable[None]]
#: A quota check run inside the put's transaction: (usage of the env, live env count) -> refusal.
PutCheck = Callable[[EnvUsage | None, int], Refusal | None]
#: A device-limit decision run inside the admission's transaction: online devices -> refusal.
AdmitDecision = Callable[[set[str]], Refusal | None]


class Engine(Protocol):
    """What the server calls. Implementations: `OnLoop(SQLiteStorage)`, `PgStorage`."""

    instance: str
    #: Other instances may exist (and events may arrive).
    clustered: bool

    async def open(self, on_event: EventHandler) -> None: ...
    async def close(self) -> None: ...
    async def relay_key(self) -> bytes | None:
        """The cluster's shared relay key (raw), or None when the key lives in a file."""
    async def log_entries(self, space: str) -> list[bytes]: ...
    async def append_log(self, space: str, wires: Sequence[bytes], hashes: Sequence[bytes],
                         *, base: int | None = None) -> list[bytes] | None:
        """Store verified entries, unless the log no longer holds `base` entries (it grew
        since they were verified, at this instance or another): then nothing is stored and
        the stored log is returned. The engine's transaction decides, so two instances can
        never both store a merge checked against the same old log."""
    async def index(self, space: str) -> dict[str, dict[str, int]]: ...
    async def fetch(self, space: str, tag: str, have: Mapping[str, int], *, max_items: int,
                    max_bytes: int) -> tuple[list[Envelope], bool]: ...
    async def put(self, space: str, tag: str, envelopes: Sequence[Envelope], *,
                  declared_bytes: int, uploader: str, now_ms: int,
                  check: PutCheck) -> list[Envelope] | Refusal: ...
    async def purge_after(self, space: str, device: str, cuts: Mapping[str, int]) -> int: ...
    async def admit(self, space: str, member: str, device: str, local_online: Collection[str],
                    decide: AdmitDecision) -> Refusal | None: ...
    async def left(self, space: str, device: str) -> None: ...
    async def presence(self, space: str, device: str, value: PresenceValue) -> None: ...
    async def mail(self, msg: RemoteMail) -> None: ...
    # Compaction (relay.compaction, relay.snapshots); `fetch` raises `storage.Compacted`.
    async def snapshot(self, space: str, tag: str) -> StoredSnapshot | None: ...
    async def put_snapshot(self, space: str, tag: str, snap: StoredSnapshot,
                           judge: SnapshotJudge) -> Verdict: ...
    async def note_acks(self, space: str, tag: str, holder: str,
                        vv: Mapping[str, int]) -> None: ...
    async def compact(self, space: str, tag: str, members: Collection[str],
                      cutoff_ms: int) -> int: ...
    async def floors(self, space: str, tag: str) -> dict[str, int]: ...
    async def snapshot_slots(self, after: tuple[str, str] | None, limit: int
                             ) -> list[tuple[str, str]]:
        """Up to `limit` (space, env tag) holding a snapshot, in order, after `after`."""


class OnLoop:
    """A synchronous `RelayStorage` (SQLite) as an `Engine` of one instance: every call runs
    on the loop, as before; there are no other instances, so the cluster calls do nothing."""

    clustered = False

    def __init__(self, storage: RelayStorage, instance: str = "local") -> None:
        self.storage = storage
        self.instance = instance

    async def open(self, on_event: EventHandler) -> None:
        return None

    async def close(self) -> None:
        self.storage.close()

    async def relay_key(self) -> bytes | None:
        return None

    async def log_entries(self, space: str) -> list[bytes]:
        return self.storage.log_entries(space)

    async def append_log(self, space: str, wires: Sequence[bytes], hashes: Sequence[bytes],
                         *, base: int | None = None) -> list[bytes] | None:
        return self.storage.append_log(space, wires, hashes, base=base)

    async def index(self, space: str) -> dict[str, dict[str, int]]:
        return self.storage.index(space)

    async def fetch(self, space: str, tag: str, have: Mapping[str, int], *, max_items: int,
                    max_bytes: int) -> tuple[list[Envelope], bool]:
        return self.storage.fetch(space, tag, have, max_items=max_items, max_bytes=max_bytes)

    async def put(self, space: str, tag: str, envelopes: Sequence[Envelope], *,
                  declared_bytes: int, uploader: str, now_ms: int,
                  check: PutCheck) -> list[Envelope] | Refusal:
        r = check(self.storage.env_usage(space, tag), self.storage.env_count(space))
        if r is not None:
            return r
        return self.storage.put(space, tag, envelopes, declared_bytes=declared_bytes,
                                uploader=uploader, now_ms=now_ms)

    async def purge_after(self, space: str, device: str, cuts: Mapping[str, int]) -> int:
        return self.storage.purge_after(space, device, cuts)

    async def admit(self, space: str, member: str, device: str, local_online: Collection[str],
                    decide: AdmitDecision) -> Refusal | None:
        return decide(set(local_online))

    async def left(self, space: str, device: str) -> None:
        return None

    async def presence(self, space: str, device: str, value: PresenceValue) -> None:
        return None

    async def mail(self, msg: RemoteMail) -> None:
        return None

    async def snapshot(self, space: str, tag: str) -> StoredSnapshot | None:
        return self.storage.snapshot(space, tag)

    async def put_snapshot(self, space: str, tag: str, snap: StoredSnapshot,
                           judge: SnapshotJudge) -> Verdict:
        return self.storage.put_snapshot(space, tag, snap, judge)

    async def note_acks(self, space: str, tag: str, holder: str,
                        vv: Mapping[str, int]) -> None:
        self.storage.note_acks(space, tag, holder, vv)

    async def compact(self, space: str, tag: str, members: Collection[str],
                      cutoff_ms: int) -> int:
        return self.storage.compact(space, tag, members, cutoff_ms)

    async def floors(self, space: str, tag: str) -> dict[str, int]:
        return self.storage.floors(space, tag)

    async def snapshot_slots(self, after: tuple[str, str] | None, limit: int
                             ) -> list[tuple[str, str]]:
        return self.storage.snapshot_slots(after, limit)


class PresenceBook:
    """Who is online where, per space, as the other instances announced it (pure).

    The server asks `remote(space, device)` before telling members a device left (it may be
    online at another instance: a failover) and `online(space)` for a newcomer's `who`."""

    def __init__(self) -> None:
        self._by_space: dict[str, dict[str, dict[str, tuple[str | None, str | None]]]] = {}

    def remote(self, space: str, device: str) -> tuple[str | None, str | None] | None:
        """The device's presence at some other instance, or None when it is at none."""
        where = self._by_space.get(space, {}).get(device)
        if not where:
            return None
        return where[min(where)]  # any instance; the lowest id, so the answer is stable

    def online(self, space: str) -> dict[str, tuple[str | None, str | None]]:
        return {d: where[min(where)] for d, where in self._by_space.get(space, {}).items()
                if where}

    def devices(self, space: str) -> set[str]:
        return set(self.online(space))

    def apply(self, instance: str, space: str, device: str, value: PresenceValue
              ) -> tuple[bool, PresenceValue]:
        """Record an announcement; returns (whether the device's remote presence changed,
        its remote presence now)."""
        before = self.remote(space, device)
        devices = self._by_space.setdefault(space, {})
        where = devices.setdefault(device, {})
        if value is None:
            where.pop(instance, None)
            if not where:
                del devices[device]
            if not devices:
                del self._by_space[space]
        else:
            where[instance] = value
        after = self.remote(space, device)
        return before != after, after

    def resync(self, rows: Collection[tuple[str, str, str, PresenceValue]]
               ) -> list[tuple[str, str, PresenceValue]]:
        """Replace everything announced with `rows` (instance, space, device, presence), as
        the database holds it after a gap in the announcements; returns (space, device,
        remote presence now) per device whose remote presence changed."""
        before = {(sp, d): self.remote(sp, d) for sp, ds in self._by_space.items() for d in ds}
        self._by_space = {}
        for instance, space, device, value in rows:
            if value is not None:
                self.apply(instance, space, device, value)
        keys = set(before) | {(sp, d) for sp, ds in self._by_space.items() for d in ds}
        return [(sp, d, self.remote(sp, d)) for sp, d in sorted(keys)
                if before.get((sp, d)) != self.remote(sp, d)]

    def drop_instance(self, instance: str) -> list[tuple[str, str, PresenceValue]]:
        """Forget a dead instance; returns (space, device, remote presence now) per device
        whose remote presence changed."""
        changed = []
        for space in list(self._by_space):
            for device in list(self._by_space[space]):
                if instance in self._by_space[space][device]:
                    moved, now = self.apply(instance, space, device, None)
                    if moved:
                        changed.append((space, device, now))
        return changed


__all__ = [
    "AdmitDecision",
    "ClusterEvent",
    "Engine",
    "EventHandler",
    "InstanceGone",
    "OnLoop",
    "PresenceBook",
    "PresenceValue",
    "PutCheck",
    "RemoteLog",
    "RemoteMail",
    "RemotePresence",
    "RemotePut",
    "Resynced",
]
