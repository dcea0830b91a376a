"""One daemon per home.

Two daemons on one home would both write the same log and race each other's file writes, so
the second one must refuse to start, saying which process holds the home. `flock` is the tool:
the kernel drops the lock when the holder dies, even by `kill -9`, so a crash never leaves a
stale lock that needs cleaning by hand. The holder's pid is written into the lock file only
to name it in the refusal; the pid is never trusted to decide anything.

The lock file is never deleted: unlinking a flock'ed file lets a third process lock a fresh
inode while the second still holds the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..errors import MocksyncError
from .errors import DaemonAlreadyRunning

#: The pid text in the lock file is at most this long (anything longer is not ours).
MAX_PID_TEXT = 32


def read_lock_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid recorded in a lock file, or None when absent or unreadable."""
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_PID_TEXT + 1)
    except OSError:
        return None
    try:
        pid = int(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return pid if pid > 0 else None


class DaemonLock:
    """An exclusive, non-blocking lock on `path` (`home.lock`) for this process's lifetime.

    `acquire()` raises `DaemonAlreadyRunning` naming the holder's pid and the home; `release()`
    (or leaving the `with` block, or the process dying) frees it.
    """

    def __init__(self, path: str | os.PathLike[str], *, home: str | os.PathLike[str] | None = None):
        self.path = Path(path)
        self.home = Path(home) if home is not None else self.path.parent
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DaemonLock:
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise MocksyncError(
                f"cannot open the daemon lock {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_lock_pid(self.path)
            holder = f"pid {pid}" if pid is not None else "another process"
            raise DaemonAlreadyRunning(
                f"a mocksync daemon ({holder}) is already running for home {self.home}; "
                "stop it first, or use another --home"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise MocksyncError(
                f"cannot lock {self.path}: {exc.strerror or exc}"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> DaemonLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
