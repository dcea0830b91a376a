"""Hybrid logical clock: the time half of every register stamp.

Registers are last-writer-wins on `(hlc, device id)`, so stamps must (a) follow causality —
anything a device writes after seeing a remote edit must sort after that edit, whatever its
wall clock says — and (b) stay close to real time so that "last" means what people expect.
A hybrid logical clock gives both: the physical part tracks the wall clock in milliseconds, the
counter breaks ties and absorbs clocks that go backwards.

A stamp is one non-negative int, `(physical_ms << 16) | counter`, so comparing stamps is
comparing ints, they store in one SQLite INTEGER column and encode as one CBOR uint. Adding 1
to a stamp whose counter is full rolls into the next millisecond, which is exactly the HLC rule
for counter overflow.

A peer whose clock (or whose malice) puts stamps far in the future could otherwise win every
register forever and drag our clock along with it, so a remote stamp more than `MAX_DRIFT_MS`
ahead of our wall clock is refused: `Clock.observe` raises and leaves the clock unchanged, and
`too_far_in_future` lets the store quarantine such a change set instead of applying it.

Pure: nothing here reads a clock. Callers pass `now_ms`; the store persists `Clock.last`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ClockDriftError, InvalidHLC

#: Bits of a stamp that hold the logical counter.
COUNTER_BITS = 16
#: Largest counter value; one more rolls into the next millisecond.
COUNTER_MAX = (1 << COUNTER_BITS) - 1
#: Largest stamp we accept: stamps travel as unsigned 64-bit values.
MAX_HLC = (1 << 64) - 1
#: Largest physical part (milliseconds since the Unix epoch), about the year 10889.
MAX_PHYSICAL_MS = MAX_HLC >> COUNTER_BITS
#: How far ahead of our wall clock a remote stamp may be before it is refused (one minute).
MAX_DRIFT_MS = 60_000


def _check_int(value: object, name: str, upper: int) -> int:
    if type(value) is not int:
        raise InvalidHLC(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= upper:
        raise InvalidHLC(f"{name} {value} is outside the allowed range 0..{upper}")
    return value


def pack(ms: int, counter: int) -> int:
    """The stamp for physical time `ms` (milliseconds since the epoch) and `counter`."""
    _check_int(ms, "physical time (ms)", MAX_PHYSICAL_MS)
    _check_int(counter, "HLC counter", COUNTER_MAX)
    return (ms << COUNTER_BITS) | counter


def unpack(h: int) -> tuple[int, int]:
    """`(physical_ms, counter)` of stamp `h`."""
    _check_int(h, "HLC stamp", MAX_HLC)
    return h >> COUNTER_BITS, h & COUNTER_MAX


def physical_ms(h: int) -> int:
    """The wall-clock part of stamp `h`, in milliseconds since the epoch."""
    return unpack(h)[0]


def too_far_in_future(remote: int, now_ms: int, max_drift_ms: int = MAX_DRIFT_MS) -> bool:
    """True when `remote`'s physical time is more than `max_drift_ms` ahead of `now_ms`."""
    _check_int(now_ms, "now (ms)", MAX_PHYSICAL_MS)
    _check_int(max_drift_ms, "max drift (ms)", MAX_PHYSICAL_MS)
    return physical_ms(remote) - now_ms > max_drift_ms


def _next_after(h: int) -> int:
    if h >= MAX_HLC:
        raise InvalidHLC(
            "the hybrid logical clock has reached its largest value and cannot advance"
        )
    return h + 1  # a full counter carries into the next millisecond by construction


@dataclass
class Clock:
    """One device's hybrid logical clock. `last` is the greatest stamp it has issued or seen."""

    last: int = 0
    max_drift_ms: int = MAX_DRIFT_MS

    def __post_init__(self) -> None:
        _check_int(self.last, "last HLC stamp", MAX_HLC)
        _check_int(self.max_drift_ms, "max drift (ms)", MAX_PHYSICAL_MS)

    def tick(self, now_ms: int) -> int:
        """A new local stamp, strictly greater than every stamp issued or observed so far."""
        _check_int(now_ms, "now (ms)", MAX_PHYSICAL_MS)
        stamp = pack(now_ms, 0) if now_ms > physical_ms(self.last) else _next_after(self.last)
        self.last = stamp
        return stamp

    def observe(self, remote: int, now_ms: int) -> int:
        """Merge a received stamp and return a stamp greater than both it and `last`.

        Raises `ClockDriftError`, leaving the clock unchanged, if `remote` is more than
        `max_drift_ms` ahead of `now_ms`.
        """
        _check_int(remote, "remote HLC stamp", MAX_HLC)
        _check_int(now_ms, "now (ms)", MAX_PHYSICAL_MS)
        ahead = physical_ms(remote) - now_ms
        if ahead > self.max_drift_ms:
            raise ClockDriftError(
                f"remote clock stamp is {ahead} ms ahead of this device's clock, over the "
                f"{self.max_drift_ms} ms allowed drift; check the sender's system time"
            )
        # Standard HLC receive rule: take the greatest of (local, remote, wall clock); if the
        # wall clock is not ahead of both, step the counter past the greater stamp.
        top = max(self.last, remote)
        stamp = pack(now_ms, 0) if now_ms > physical_ms(top) else _next_after(top)
        self.last = stamp
        return stamp
