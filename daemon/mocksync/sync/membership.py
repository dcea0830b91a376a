"""Membership gossip inside a sync session: which log entries a peer lacks (pure).

Why this exists: membership entries (new members and devices, removals with their rotated
keys, role changes, model migrations) used to travel only through the relay, so two devices
that meet only on the LAN never learned of a device added or removed elsewhere. Every sync
session now carries them: each side puts the heads of its log (entries no other entry names
as a parent) for every space both are in into its `hello`; a side that sees heads it does not
know answers with its own (`mheads`), and each side sends the entries the other's heads do not
cover (`mlog`). The receiver verifies the whole log with the new entries before storing any
(`space.membership.extend_log`, done by the transport), exactly as for entries from the relay.

The log is a DAG of signed entries; what a peer has is, at least, every ancestor of the heads
it named that we know and of the entries either side sent the other in this session.
Everything else we hold is sent: it may repeat an entry the peer has (its heads named one we
do not know yet), which the receiver drops by hash. The session sees
entries only as (hash, parents, wire) triples, so this module depends on no key material and
the protocol stays testable with made-up hashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

#: Length of an entry hash (sha-256).
HASH_BYTES = 32
#: Most heads a side names per space (a longer list is cut: the peer then sends a few entries
#: more than needed, never fewer).
MAX_HEADS = 32
#: Most spaces whose heads one hello carries.
MAX_MEMBERSHIP_SPACES = 256
#: Most entries in one `mlog` message.
MAX_MLOG_ENTRIES = 4096
#: Largest one log entry on the wire (space.membership.MAX_ENTRY_BYTES).
MAX_MLOG_ENTRY_BYTES = 96 * 1024
#: Entry bytes packed into one `mlog` message before the next starts (control messages are
#: limited to 1 MiB).
MLOG_BATCH_BYTES = 512 * 1024
#: Entries of one space a session holds until the peer's last `mlog` arrives.
MAX_PENDING_ENTRIES = 10_000
#: Entry bytes of one space a session holds until the peer's last `mlog` arrives.
MAX_PENDING_BYTES = 32 * 1024 * 1024
#: Hashes per space a session remembers the peer holds (beyond it the memory starts over:
#: the peer then gets a few entries twice, never too few).
MAX_PEER_KNOWN = 20_000


@dataclass(frozen=True, slots=True)
class LogItem:
    """One membership entry as the session sees it."""

    hash: bytes
    parents: tuple[bytes, ...]
    wire: bytes


class MembershipSource(Protocol):
    """The device's membership logs, read-only (the transport adapts the space store)."""

    def log(self, space: str) -> Sequence[LogItem]:
        """Entries of `space` in the order stored (parents before children); empty if none."""
        ...

    def hash_of(self, wire: bytes) -> bytes | None:
        """The hash of an entry's wire bytes, None when they are no entry."""
        ...


def heads_of(log: Sequence[LogItem]) -> tuple[bytes, ...]:
    """Hashes of the entries no other entry names as a parent, newest last, at most MAX_HEADS."""
    named = {p for item in log for p in item.parents}
    heads = [item.hash for item in log if item.hash not in named]
    return tuple(heads[-MAX_HEADS:])


def unknown_heads(log: Sequence[LogItem], heads: Iterable[bytes]) -> list[bytes]:
    """The peer's heads we do not hold: the peer has entries we lack."""
    have = {item.hash for item in log}
    return [h for h in heads if h not in have]


def missing_for(log: Sequence[LogItem], peer_heads: Iterable[bytes]) -> list[LogItem]:
    """Our entries that are not ancestors (or equal) of any hash in `peer_heads` we know, in log
    order: what the peer lacks, give or take entries its unknown heads already cover."""
    by_hash = {item.hash: item for item in log}
    covered: set[bytes] = set()
    stack = [h for h in peer_heads if h in by_hash]
    while stack:
        h = stack.pop()
        if h in covered:
            continue
        covered.add(h)
        stack.extend(p for p in by_hash[h].parents if p in by_hash and p not in covered)
    return [item for item in log if item.hash not in covered]


def batches(wires: Sequence[bytes]) -> list[list[bytes]]:
    """`wires` cut into `mlog` payloads of at most MLOG_BATCH_BYTES / MAX_MLOG_ENTRIES each
    (an entry is never split; one entry alone always fits)."""
    out: list[list[bytes]] = []
    cur: list[bytes] = []
    size = 0
    for w in wires:
        if cur and (size + len(w) > MLOG_BATCH_BYTES or len(cur) >= MAX_MLOG_ENTRIES):
            out.append(cur)
            cur, size = [], 0
        cur.append(w)
        size += len(w)
    if cur:
        out.append(cur)
    return out


__all__ = [
    "HASH_BYTES",
    "LogItem",
    "MAX_HEADS",
    "MAX_MEMBERSHIP_SPACES",
    "MAX_MLOG_ENTRIES",
    "MAX_PENDING_BYTES",
    "MAX_PENDING_ENTRIES",
    "MembershipSource",
    "batches",
    "heads_of",
    "missing_for",
    "unknown_heads",
]
