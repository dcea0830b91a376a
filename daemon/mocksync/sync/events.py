"""What a session asks its caller to do: the only outputs of the sans-IO protocol.

A session never touches sockets, the store or the clock; every call returns a list of these
events and the I/O adapter carries them out in order. `link` is the caller's own handle for
the connection (whatever it passed when opening the session), so one loop can serve many
sessions.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Send:
    """Write `data` (one frame, at most a data channel's message size) to the connection."""

    link: Hashable
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Deliver:
    """A change set from the peer for the local store.

    Ingest `wire` (the author's key looked up for `space`), announce whatever it applied with
    `local_changeset` on every session, then call `delivered(event, now_ms, refused=...)`.
    """

    link: Hashable
    space: str
    env: str
    device: str
    seq: int
    wire: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Opened:
    """The handshake succeeded: `device` is the peer, `shared` the (space, env) pairs synced."""

    link: Hashable
    device: str
    shared: frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class PeerPresence:
    """The peer's user is looking at `env` (and `entity`) in `editor`; env None: elsewhere."""

    link: Hashable
    device: str
    space: str | None
    env: str | None
    entity: str | None
    editor: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over (close the connection); `reason` is the sentence for `status`."""

    link: Hashable
    reason: str


@dataclass(frozen=True, slots=True)
class Members:
    """The peer sent membership entries of `space` we may lack (its whole answer): verify them
    as a whole log with ours and store them, or refuse them all (`sync.membership`)."""

    link: Hashable
    device: str
    space: str
    wires: tuple[bytes, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class PresenceNote:
    """The peer passed on another device's signed presence note (`net.presence_gossip`
    checks it, keeps the newest per device and decides whether it travels on)."""

    link: Hashable
    device: str
    wire: bytes = field(repr=False)
    hops: int


Event = Send | Deliver | Opened | PeerPresence | Closed | Members | PresenceNote
