"""The daemon's event stream, typed: one frozen record per kind of thing that happened.

Why records: about thirty places (the agent's parts, the LAN and relay transports, linked
files) used to publish hand-built dicts, so a misspelt key or a missing one only showed up
in whoever read the stream: `mocksync events`, the web page, the LAN transport's own
listener, the tests. Each kind is now a class with its fields, mypy checks every place that
makes one, and `to_json()` gives the very dict those readers always got (same keys, same
order: "event" first); the agent adds "time" when it publishes (`Agent.publish`).

Why a leaf module beside `ports.py` and not in `agent/`: the transports (`net`, below
`agent`) publish too (`Relay`, `Peer`, `Presence`), so the records must sit below both.
Nothing here imports the rest of mocksync.

A field whose value is `OMIT` is left out of the JSON: a closed peer says why, a connected
one has no "reason" key at all (as before).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Final, TypeVar, dataclass_transform


class _Omit:
    """The value of a field that is not part of this event's JSON."""

    _instance: ClassVar[_Omit | None] = None

    def __new__(cls) -> _Omit:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AgentEvent:
    """One event of the stream. `KIND` is its "event" value; `FIXED` are keys every event
    of the class carries with the same value, written right after "event"."""

    KIND: ClassVar[str] = ""
    FIXED: ClassVar[tuple[tuple[str, Any], ...]] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object readers of the stream get (without "time", added on publish)."""
        out: dict[str, Any] = {"event": self.KIND}
        for key, value in self.FIXED:
            out[key] = value
        for name in _names(type(self)):
            value = getattr(self, name)
            if value is not OMIT:
                out[name] = value
        return out


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


_E = TypeVar("_E", bound="AgentEvent")


@dataclass_transform(kw_only_default=True, frozen_default=True)
def _record(cls: type[_E]) -> type[_E]:
    """Class decorator: a frozen, slotted, keyword-only record (mypy reads it as one)."""
    return dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)


# ------------------------------------------------------------------------- edits and files

@_record
class LocalChange(AgentEvent):
    """This device committed an edit (and sent it, unless the environment is held)."""

    KIND = "change"
    FIXED = (("origin", "local"),)

    env: str
    device: str
    seq: int
    ops: int
    bytes: int
    commit_ms: float
    conflicts: int


@_record
class RemoteChange(AgentEvent):
    """One change set from a peer was applied."""

    KIND = "change"
    FIXED = (("origin", "remote"),)

    env: str
    device: str
    seq: int
    ops: int


@_record
class RemoteBatch(AgentEvent):
    """A batch of change sets from peers was applied (catch-up)."""

    KIND = "change"
    FIXED = (("origin", "remote"),)

    batch: int
    envs: list[str]


@_record
class Written(AgentEvent):
    """The daemon wrote an environment's file."""

    KIND = "written"

    env: str
    file: str
    bytes: int


@_record
class WriteRaced(AgentEvent):
    """The editor saved the file while the daemon wrote it: the save is taken in first."""

    KIND = "write_raced"

    env: str
    file: str


@_record
class Renamed(AgentEvent):
    """A synced environment's file moved to another name in the folder."""

    KIND = "renamed"

    env: str
    file: str


@_record
class Missing(AgentEvent):
    """A synced environment's file is gone from the folder."""

    KIND = "missing"

    env: str
    file: str


@_record
class Invalid(AgentEvent):
    """A save that cannot be synced (does not parse, or peers would refuse it)."""

    KIND = "invalid"

    env: str
    reason: str


@_record
class Held(AgentEvent):
    """An environment is not written or not sent for now, and why."""

    KIND = "held"

    env: str
    reason: str


@_record
class LinkedWritten(AgentEvent):
    """A file an environment links to was written from a teammate's version."""

    KIND = "linked_written"

    env: str
    path: str
    bytes: int


@_record
class LinkedRemoved(AgentEvent):
    """A linked file a teammate removed went to the trash (`trash`: where, or None)."""

    KIND = "linked_removed"

    env: str
    path: str
    trash: str | None


# ------------------------------------------------------------------ sharing and lifecycle

@_record
class Shared(AgentEvent):
    """An environment joined the sync: shared here (`origin` "local") or by a teammate."""

    KIND = "shared"

    env: str
    file: str
    origin: str


@_record
class Unshared(AgentEvent):
    """A teammate unshared the environment: the file stays, no longer synced."""

    KIND = "unshared"

    env: str
    file: str


@_record
class Deleted(AgentEvent):
    """A teammate deleted the environment: its file went to the trash."""

    KIND = "deleted"

    env: str
    trash: str


@_record
class ConflictSeen(AgentEvent):
    """Concurrent writes to one register: the winner applies, the conflict is listed."""

    KIND = "conflict"

    env: str
    id: str
    entity: str
    field: list[str]


@_record
class Revoked(AgentEvent):
    """Change sets of a removed device were taken back."""

    KIND = "revoked"

    env: str
    device: str
    seqs: list[int]


@_record
class ResolvedOffline(AgentEvent):
    """`resolve ENV --keep-local/--discard-local` settled a held environment."""

    KIND = "resolved_offline"

    env: str
    kept: str
    ops: int
    sent: int


# ------------------------------------------------------------------------------- faults

@_record
class Failed(AgentEvent):
    """A machine fault (disk, database) on one environment; retried after `retry_s`."""

    KIND = "error"

    env: str
    what: str
    kind: str
    cause: str
    retry_s: float


@_record
class Recovered(AgentEvent):
    """What failed works again."""

    KIND = "recovered"

    env: str
    what: str


# --------------------------------------------------------------------------- transports

@_record
class Relay(AgentEvent):
    """The relay connection went up or down."""

    KIND = "relay"

    state: str
    reason: str | None


@_record
class Peer(AgentEvent):
    """A LAN peer connected or its session closed (`reason` only when closed)."""

    KIND = "peer"

    device: str
    via: str
    state: str
    reason: Any = OMIT


@_record
class Presence(AgentEvent):
    """What a teammate is editing now."""

    KIND = "presence"

    device: str
    env: Any
    entity: Any
    editor: Any


#: Every kind of event, for the tests that check each one's JSON.
ALL_EVENTS: tuple[type[AgentEvent], ...] = (
    LocalChange, RemoteChange, RemoteBatch, Written, WriteRaced, Renamed, Missing, Invalid,
    Held, LinkedWritten, LinkedRemoved, Shared, Unshared, Deleted, ConflictSeen, Revoked,
    ResolvedOffline, Failed, Recovered, Relay, Peer, Presence,
)

__all__ = ["ALL_EVENTS", "OMIT", "AgentEvent"] + [c.__name__ for c in ALL_EVENTS]
