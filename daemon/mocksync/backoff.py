"""Exponential backoff: how long to wait before trying again, the one rule for every retry.

Why one module: the relay client's reconnects, LAN dialling (`net.peerbook`), waiting for a
rotated key (`net.keyrecovery`) and retrying a failed write or commit (`agent.faults`) all
wait "twice as long each time, up to a cap, spread a little so devices do not retry in step".
Four hand-written copies of that formula drifted apart in small ways (which exponent cap,
where the jitter goes); one pure function, and one small record of a failing operation, keep
them the same. It sits beside `errors` (a leaf, below every layer) because both `net` and
`agent` use it.

Pure: the caller passes `now` and draws the jitter (a number in [-1, 1]) from its own random
source, so tests decide both.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest exponent ever used: the delay is at its cap long before, and 2**n stays a small float.
MAX_EXPONENT = 64


def backoff_delay(step: int, first_s: float, max_s: float, *, factor: float = 2.0,
                  spread: float = 0.0, jitter: float = 0.0) -> float:
    """Seconds to wait before try number `step + 1` after `step + 1` failures in a row
    (`step` 0 waits `first_s`): `first_s * factor**step` capped at `max_s`, then spread by
    `spread * jitter` of itself (`jitter` in [-1, 1], drawn by the caller)."""
    if step < 0:
        raise ValueError("step must be >= 0")
    if not -1.0 <= jitter <= 1.0:
        raise ValueError("jitter must be within [-1, 1]")
    base = min(max_s, first_s * factor ** min(step, MAX_EXPONENT))
    return base * (1.0 + spread * jitter)


@dataclass
class Backoff:
    """One operation that keeps failing: how many failures in a row, since when, and when the
    next try is due. `failed` counts a failure and says how long to wait; a success is the
    caller dropping (or `reset`ting) the record."""

    first_s: float
    max_s: float
    factor: float = 2.0
    spread: float = 0.0
    failures: int = 0
    since: float = 0.0
    next_at: float = 0.0

    def delay(self, failures: int, jitter: float = 0.0) -> float:
        """The wait after the `failures`-th failure in a row (1 = the first), never above
        `max_s` even once spread."""
        if failures < 1:
            raise ValueError("failures must be >= 1")
        return min(self.max_s, backoff_delay(failures - 1, self.first_s, self.max_s,
                                             factor=self.factor, spread=self.spread,
                                             jitter=jitter))

    def failed(self, now: float, jitter: float = 0.0) -> float:
        """Count a failure at `now`; the delay until the next try (also kept in `next_at`)."""
        wait = self.delay(self.failures + 1, jitter)
        if self.failures == 0:
            self.since = now
        self.failures += 1
        self.next_at = now + wait
        return wait

    def reset(self) -> None:
        """The operation succeeded: the next failure starts from `first_s` again."""
        self.failures, self.since, self.next_at = 0, 0.0, 0.0
