"""Write and commit failures as states a person can read, and when to try again (issue 13).

Why: a full disk, a permission flipped, an I/O error or a filesystem remounted read-only used
to leave an environment saying `synced` while nothing was written or committed, with the log
showing SQLite's "cannot rollback" instead of the cause, and writing resumed only after
`mocksync reconnect`. Now each such failure becomes the environment state `error` with a
sentence (`disk full writing petstore.json`), the log names the real cause, and the daemon
retries by itself with backoff; nothing acknowledged is dropped meanwhile (a remote edit
stays in the log until its file can be written; a save stays in the file until it can be
committed).

Everything here is pure: the caller passes the exception and the clock's `now`.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass

from ..backoff import Backoff

#: The environment state for a write or commit that keeps failing.
ERROR = "error"

#: First retry after this many seconds, doubling per failure up to `RETRY_MAX_S`.
RETRY_FIRST_S = 0.5
RETRY_FACTOR = 2.0
RETRY_MAX_S = 30.0
#: Each delay is spread by up to this fraction (both ways) so many environments failing
#: together do not retry in lockstep.
RETRY_JITTER = 0.2

#: What a failure is, in words, by errno.
DISK_FULL = "disk full"
READ_ONLY = "read-only file system"
NO_PERMISSION = "permission denied"
IO_ERROR = "I/O error"
OTHER = "failure"

_BY_ERRNO = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EFBIG: DISK_FULL,
    errno.EROFS: READ_ONLY,
    errno.EACCES: NO_PERMISSION,
    errno.EPERM: NO_PERMISSION,
    errno.EIO: IO_ERROR,
}

#: SQLite's messages for the same causes (it reports result codes, not errno).
_SQLITE_TEXT = (
    ("database or disk is full", DISK_FULL),
    ("disk is full", DISK_FULL),
    ("readonly database", READ_ONLY),
    ("read-only", READ_ONLY),
    ("disk i/o error", IO_ERROR),
    ("unable to open database file", NO_PERMISSION),
)

#: What the daemon was doing, as the sentence says it (`{what} {file}`).
WRITING = "writing"
COMMITTING = "committing an edit of"
RECEIVING = "storing a teammate's edit of"


@dataclass(frozen=True)
class Fault:
    """One failure: its kind (a sentence fragment), where it happened (`folder`: the synced
    folder, `home`: the daemon's own state) and the cause as the system said it."""

    kind: str
    where: str
    cause: str


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception it was raised from or during, nearest first (bounded)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 8:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def classify(exc: BaseException, where: str) -> Fault | None:
    """The fault behind `exc` (an OSError, a sqlite3 error, or a MocksyncError raised from
    one), or None when it is not a write or commit failure of the machine (a bug)."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno is not None:
            kind = _BY_ERRNO.get(e.errno, OTHER)
            name = errno.errorcode.get(e.errno, str(e.errno))
            return Fault(kind, where, f"{e.strerror or e} ({name})")
        if isinstance(e, sqlite3.Error):
            text = str(e).lower()
            if "cannot rollback" in text:
                continue  # SQLite's echo of an earlier failure: look further down the chain
            found = next((k for needle, k in _SQLITE_TEXT if needle in text), None)
            if found is not None:
                return Fault(found, where, f"{e} (sqlite)")
            if isinstance(e, sqlite3.OperationalError):
                return Fault(OTHER, where, f"{e} (sqlite)")
    return None


def sentence(fault: Fault, what: str, file: str, home: str, retry_in_s: float | None) -> str:
    """The `status` reason: `disk full writing petstore.json; ...` with what happens next."""
    text = f"{fault.kind} {what} {file}"
    if fault.where == "home":
        text += f" (the daemon's own state in {home}: {fault.cause})"
    else:
        text += f" ({fault.cause})"
    if what == COMMITTING:
        text += "; the saved file is kept and taken in once it can be committed"
    elif what == RECEIVING:
        text += "; it stays with the team and is fetched again once it can be stored"
    else:
        text += "; the team's version is kept in the log and written once it can be"
    if retry_in_s is not None:
        text += f"; retrying by itself in {retry_in_s:.1f} s"
    if fault.kind == DISK_FULL:
        text += " (free some space)"
    elif fault.kind in (NO_PERMISSION, READ_ONLY):
        text += " (give the daemon write access)"
    return text


def retry_backoff() -> Backoff:
    """Backoff for one failing write or commit: `RETRY_FIRST_S` doubling to `RETRY_MAX_S`,
    spread by up to `RETRY_JITTER` (the caller draws the jitter, in [-1, 1])."""
    return Backoff(RETRY_FIRST_S, RETRY_MAX_S, RETRY_FACTOR, RETRY_JITTER)


def retry_delay(failures: int, jitter: float = 0.0) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1 = the first)."""
    return retry_backoff().delay(failures, jitter)


@dataclass
class Failing:
    """One operation that keeps failing: the last fault and its backoff."""

    what: str
    fault: Fault
    retry: Backoff


class FaultBook:
    """Per environment and operation (`WRITING`, `COMMITTING`, `RECEIVING`): what is failing.

    `failed` records a failure and returns the delay until the next try; `cleared` forgets
    it once the operation succeeds; `view` is the `status` overlay. No clock, no I/O.
    """

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], Failing] = {}

    def failed(self, env: str, what: str, fault: Fault, now: float, jitter: float = 0.0) -> float:
        entry = self._by.get((env, what))
        if entry is None:
            entry = self._by[(env, what)] = Failing(what, fault, retry_backoff())
        entry.fault = fault
        return entry.retry.failed(now, jitter)

    def cleared(self, env: str, what: str) -> Failing | None:
        """Forget a failing operation that succeeded; what it was, or None if it was not."""
        return self._by.pop((env, what), None)

    def forget(self, env: str) -> None:
        for key in [k for k in self._by if k[0] == env]:
            del self._by[key]

    def failing(self, env: str) -> list[Failing]:
        return [f for (e, _), f in self._by.items() if e == env]

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._by

    def view(self, env: str, file: str, home: str, now: float) -> dict[str, object]:
        """`{"state": "error", "reason": ...}` while something of `env` fails, else `{}`.
        The reason is the first failing operation's sentence (writing before committing)."""
        entries = sorted(self.failing(env), key=lambda f: _ORDER.get(f.what, 9))
        if not entries:
            return {}
        first = entries[0]
        left = max(0.0, first.retry.next_at - now)
        return {"state": ERROR, "reason": sentence(first.fault, first.what, file, home, left)}


_ORDER = {WRITING: 0, COMMITTING: 1, RECEIVING: 2}
