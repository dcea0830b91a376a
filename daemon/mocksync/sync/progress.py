"""How far each environment's catch-up has come: the `progress` of `status --json`.

Why: a first sync of a big environment or a catch-up of thousands of change sets takes a
while, and a person (or `mocksync status --wait`) needs to see that it moves and how far it
has to go. The relay says how many change sets of each device it holds for an environment
(its version vector); what this device lacks is the sum of the differences. The transport
records that count when a pull starts, adds what each page brought, and forgets the pull
when it ends; `status` shows what is in flight.

Pure bookkeeping (no sockets, no clocks: the caller passes `now`), bounded by
MAX_TRACKED_PULLS so a relay announcing countless environments cannot grow it. It lives in
`sync`, below the transports that fill it and the agent that shows it (issue 14).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Pulls tracked at once (one per environment being caught up; more are not shown).
MAX_TRACKED_PULLS = 1024


def missing_count(have: Mapping[str, int], relay: Mapping[str, int]) -> int:
    """Change sets the relay holds that `have` (a version vector) lacks."""
    return sum(max(0, int(seq) - int(have.get(device, 0))) for device, seq in relay.items())


@dataclass
class Pull:
    """One environment being caught up."""

    space: str
    key: str
    env: str | None
    total: int
    done: int
    started: float

    def to_json(self) -> dict[str, Any]:
        total = max(self.total, self.done)
        return {"space": self.space, "env": self.env, "done": self.done, "total": total,
                "percent": 100 if total == 0 else min(100, (100 * self.done) // total),
                "started": self.started}


class SyncProgress:
    """Pulls in flight, by (space, key): `key` is what the transport names an environment by
    before it knows its uuid (the relay's opaque tag)."""

    def __init__(self, max_pulls: int = MAX_TRACKED_PULLS) -> None:
        self.max_pulls = max_pulls
        self._pulls: dict[tuple[str, str], Pull] = {}

    def begin(self, space: str, key: str, env: str | None, total: int, now: float) -> None:
        """A pull of `total` change sets starts (again: restarts the count)."""
        if total < 0:
            raise ValueError("a pull cannot lack a negative number of change sets")
        if (space, key) not in self._pulls and len(self._pulls) >= self.max_pulls:
            return  # shown for the first max_pulls only; the pull itself goes on
        self._pulls[(space, key)] = Pull(space, key, env, total, 0, now)

    def advance(self, space: str, key: str, n: int, env: str | None = None) -> None:
        """`n` more change sets arrived (`env`: learned from them)."""
        pull = self._pulls.get((space, key))
        if pull is None or n <= 0:
            return
        pull.done += n
        if env is not None:
            pull.env = env

    def end(self, space: str, key: str) -> None:
        self._pulls.pop((space, key), None)

    def view(self) -> list[dict[str, Any]]:
        """Every pull in flight, oldest first."""
        return [p.to_json() for p in sorted(self._pulls.values(), key=lambda p: p.started)]

    def for_env(self, env: str) -> dict[str, Any] | None:
        """The pull of `env`, if one is in flight."""
        for p in self._pulls.values():
            if p.env == env:
                return p.to_json()
        return None


__all__ = ["MAX_TRACKED_PULLS", "Pull", "SyncProgress", "missing_count"]
