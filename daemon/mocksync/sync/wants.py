"""The device-wide book of change sets this device has asked for, and of whom.

Why a device-level book and not per-session state: a device with several peers hears about
the same change set from each of them. If every session fetched what its peer announced, a
mesh of n devices would move every change n-1 times to each device. Instead every session
claims what it wants here first, so each change set is asked of one peer only; a request that
goes unanswered (lost message, dead peer) expires and becomes claimable again, through any
peer. The book also knows which authors this device is connected to directly: an author pushes
its own new change sets to each of its peers, so those are never fetched from a third party
while the author's own session is open (that would race the author's push and duplicate it).

Pure bookkeeping: no I/O, time passed in. Entries are per `(space, env, device, seq)`; there
are at most a window's worth per peer plus those received but not yet applied, and they are
dropped as the local log applies them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass

#: A request not answered for this long is given up and may be asked of another peer. The
#: clock restarts while a large message from that peer is still arriving frame by frame (a
#: slow transfer is not a lost one), but not for small messages: a peer busy answering other
#: requests must not keep a lost one alive forever.
REQUEST_TIMEOUT_MS = 15_000
#: A change set received but not yet applied (waiting for a predecessor) counts as held for
#: this long; after that it may be fetched again (the store may have dropped it).
RECEIVED_HOLD_MS = 60_000
#: After a peer or the store refuses a change set, it is not asked for again for this long.
REFUSED_BACKOFF_MS = 60_000
#: How often, at most, the whole book is scanned for expired entries.
SCAN_EVERY_MS = 500

_REQUESTED = 0
_RECEIVED = 1

Key = tuple[str, str, str]  # (space, env, device)


@dataclass(slots=True)
class _Entry:
    state: int
    peer: Hashable | None
    at: int


class Wants:
    """What this device has requested or received but not yet applied, across all sessions."""

    def __init__(
        self,
        *,
        request_timeout_ms: int = REQUEST_TIMEOUT_MS,
        received_hold_ms: int = RECEIVED_HOLD_MS,
        refused_backoff_ms: int = REFUSED_BACKOFF_MS,
    ) -> None:
        self.request_timeout_ms = request_timeout_ms
        self.received_hold_ms = received_hold_ms
        self.refused_backoff_ms = refused_backoff_ms
        self._entries: dict[Key, dict[int, _Entry]] = {}
        self._outstanding: Counter[Hashable] = Counter()
        self._progress: dict[Hashable, int] = {}
        self._refused: dict[tuple[Key, int], int] = {}
        # Highest seq with an entry, and whether entries below it were dropped (holes): with
        # no holes a claim can start above the highest entry instead of rescanning the window.
        self._top: dict[Key, int] = {}
        self._holes: set[Key] = set()
        self._connected: dict[tuple[str, str], Counter[str]] = {}
        self._next_scan = 0
        #: Bumped whenever requests are given up, so sessions know to look for work again.
        self.generation = 0

    # ---------------------------------------------------------------- direct connections

    def connect(self, device: str, pairs: set[tuple[str, str]]) -> None:
        """A session with `device` is open and shares `pairs`: it will push its own changes."""
        for pair in pairs:
            self._connected.setdefault(pair, Counter())[device] += 1

    def disconnect(self, device: str, pairs: set[tuple[str, str]]) -> None:
        for pair in pairs:
            c = self._connected.get(pair)
            if c is None:
                continue
            c[device] -= 1
            if c[device] <= 0:
                del c[device]
            if not c:
                del self._connected[pair]
        self.generation += 1

    def is_connected(self, space: str, env: str, device: str) -> bool:
        c = self._connected.get((space, env))
        return bool(c and c.get(device))

    # ---------------------------------------------------------------- requests

    def _live(self, entry: _Entry, now: int) -> bool:
        if entry.state == _RECEIVED:
            return now < entry.at + self.received_hold_ms
        since = max(entry.at, self._progress.get(entry.peer, entry.at))
        return now < since + self.request_timeout_ms

    def _add(self, key: Key, seq: int, entry: _Entry) -> None:
        self._entries.setdefault(key, {})[seq] = entry
        if seq > self._top.get(key, 0):
            self._top[key] = seq

    def _drop(self, key: Key, seq: int, *, hole: bool = False) -> _Entry | None:
        ents = self._entries.get(key)
        if not ents:
            return None
        entry = ents.pop(seq, None)
        if entry is not None and hole:
            self._holes.add(key)
        if entry is not None and entry.state == _REQUESTED:
            self._outstanding[entry.peer] -= 1
            if self._outstanding[entry.peer] <= 0:
                del self._outstanding[entry.peer]
        if not ents:
            del self._entries[key]
        return entry

    def outstanding(self, peer: Hashable) -> int:
        """Change sets requested of `peer` and not received yet."""
        return self._outstanding.get(peer, 0)

    def claim(
        self,
        space: str,
        env: str,
        device: str,
        have: int,
        top: int,
        peer: Hashable,
        now: int,
        budget: int,
    ) -> list[tuple[int, int]]:
        """Claim up to `budget` of `device`'s seqs `have+1..top` that nobody holds or is
        fetching, for `peer`; return them as inclusive `(first, last)` runs.

        Stops at a seq refused recently: nothing after it could be applied anyway.
        """
        key = (space, env, device)
        ents = self._entries.get(key, {})
        runs: list[tuple[int, int]] = []
        seq = have + 1
        if key not in self._holes:
            seq = max(seq, self._top.get(key, 0) + 1)
        while seq <= top and budget > 0:
            until = self._refused.get((key, seq))
            if until is not None:
                if now < until:
                    break
                del self._refused[(key, seq)]
            entry = ents.get(seq)
            if entry is not None and self._live(entry, now):
                seq += 1
                continue
            if entry is not None:
                self._drop(key, seq)
            self._add(key, seq, _Entry(_REQUESTED, peer, now))
            ents = self._entries[key]
            self._outstanding[peer] += 1
            self._next_scan = min(self._next_scan, now + self.request_timeout_ms)
            budget -= 1
            if runs and runs[-1][1] == seq - 1:
                runs[-1] = (runs[-1][0], seq)
            else:
                runs.append((seq, seq))
            seq += 1
        if seq > self._top.get(key, 0):
            self._holes.discard(key)  # everything below seq is taken: no holes left
        return runs

    def held(self, space: str, env: str, device: str, seq: int, now: int) -> bool:
        """True when `seq` was received already and is still waiting to be applied."""
        entry = self._entries.get((space, env, device), {}).get(seq)
        return entry is not None and entry.state == _RECEIVED and self._live(entry, now)

    def received(self, space: str, env: str, device: str, seq: int, now: int) -> None:
        """A change set arrived (requested or pushed): it is held until applied."""
        key = (space, env, device)
        self._drop(key, seq)
        if seq > self._top.get(key, 0) + 1:
            self._holes.add(key)  # arrived ahead of seqs nobody asked for yet (a push)
        self._add(key, seq, _Entry(_RECEIVED, None, now))
        self._next_scan = min(self._next_scan, now + self.received_hold_ms)

    def progress(self, peer: Hashable, now: int) -> None:
        """A frame of a large message from `peer` arrived: its requests are not lost yet."""
        self._progress[peer] = now

    def applied(self, space: str, env: str, device: str, seq: int) -> None:
        """The local log applied `device#seq`: forget it."""
        self._drop((space, env, device), seq)

    def refused(self, space: str, env: str, device: str, seq: int, now: int) -> None:
        """`device#seq` was refused (by the store or a peer): do not ask for it for a while."""
        key = (space, env, device)
        self._drop(key, seq, hole=True)
        self._refused[(key, seq)] = now + self.refused_backoff_ms
        if len(self._refused) > 10_000:  # bounded: forget the oldest backoffs first
            for k in sorted(self._refused, key=self._refused.__getitem__)[:1000]:
                del self._refused[k]

    def release(self, peer: Hashable) -> None:
        """`peer`'s session is gone: everything asked of it may be asked of someone else."""
        for key in list(self._entries):
            for seq, entry in list(self._entries.get(key, {}).items()):
                if entry.state == _REQUESTED and entry.peer == peer:
                    self._drop(key, seq, hole=True)
        self._progress.pop(peer, None)
        self.generation += 1

    def expire(self, now: int) -> bool:
        """Drop entries that timed out (at most every SCAN_EVERY_MS); True if any did."""
        if now < self._next_scan:
            return False
        dropped = False
        earliest: int | None = None
        for key in list(self._entries):
            for seq, entry in list(self._entries.get(key, {}).items()):
                if not self._live(entry, now):
                    self._drop(key, seq, hole=True)
                    dropped = True
                    continue
                if entry.state == _RECEIVED:
                    due = entry.at + self.received_hold_ms
                else:
                    since = max(entry.at, self._progress.get(entry.peer, entry.at))
                    due = since + self.request_timeout_ms
                earliest = due if earliest is None else min(earliest, due)
        self._next_scan = max(now + SCAN_EVERY_MS, earliest or 0)
        if dropped:
            self.generation += 1
        return dropped

    def next_deadline(self) -> int | None:
        """When `expire` should next run, or None when there is nothing to expire."""
        return self._next_scan if self._entries else None

    def __len__(self) -> int:
        return sum(len(e) for e in self._entries.values())
