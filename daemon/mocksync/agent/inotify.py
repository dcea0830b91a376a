"""Linux inotify, read on the event loop: which names in the watched folders were touched.

Why (issue 16, idle CPU): watchfiles' `watch()` learns of changes by polling its own buffer
every `step` ms from a worker thread, taking the GIL each time (it checks signals and our
stop flag). The folder watcher needs step = 5 ms for a quick save-to-sync, so every idle
daemon woke 200 times a second: 0.75 % of a core with nothing happening (measured, one
daemon alone), more than all its LAN links together, and on a shared 2-core machine those
wake-ups also delay every other daemon's work. An inotify descriptor registered with the
event loop costs nothing while nothing changes: the loop wakes only when the kernel has an
event. `FolderWatcher` uses this where it exists (Linux) and keeps watchfiles elsewhere.

This module only reads events; debouncing and deciding what changed stay in the watcher
(it compares each touched file with what it saw last), so a lost or merged event costs at
most a rescan (`Touched.overflow`), never a wrong answer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

#: What a folder watch asks for: every way a file in it can change, appear or go.
DIR_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
            | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#: Bytes read per `read` call (the kernel hands out whole events only).
READ_BYTES = 64 * 1024
#: Most reads drained per `read_touched` call, so a flood cannot hold the loop.
MAX_READS_PER_CALL = 16

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)


@dataclass
class Touched:
    """What one drain of the descriptor said: the paths named, how many events there were,
    whether the kernel dropped events (`overflow`: rescan everything) and whether a watched
    folder itself went away (`lost`)."""

    paths: set[Path] = field(default_factory=set)
    events: int = 0
    overflow: bool = False
    lost: set[Path] = field(default_factory=set)
    #: Paths whose last event in this drain renamed a file onto them: an atomic save,
    #: complete the moment it is seen (no later event of that save is to wait for).
    moved_in: set[Path] = field(default_factory=set)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    if not all(hasattr(libc, n) for n in ("inotify_init1", "inotify_add_watch")):
        return None
    return libc


class Inotify:
    """One non-blocking inotify descriptor watching a few folders (not recursively)."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self.fd = fd
        self._dirs: dict[int, Path] = {}

    @classmethod
    def open(cls) -> Inotify | None:
        """A new descriptor, or None where inotify is not available (not Linux, or the
        per-user instance limit is reached): the caller then watches another way."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return None
        return cls(libc, fd)

    def fileno(self) -> int:
        return self.fd

    def add_dir(self, path: Path) -> None:
        """Watch the entries of folder `path`. Raises OSError (e.g. it does not exist, or the
        per-user watch limit is reached)."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(str(path)), DIR_MASK)
        if wd < 0:
            err = ctypes.get_errno() or errno.EIO
            raise OSError(err, f"cannot watch {path}: {os.strerror(err)}")
        self._dirs[wd] = path

    def read_touched(self) -> Touched:
        """Drain the events waiting now (never blocks)."""
        out = Touched()
        for _ in range(MAX_READS_PER_CALL):
            try:
                data = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not data:
                break
            self._parse(data, out)
        return out

    def _parse(self, data: bytes, out: Touched) -> None:
        pos = 0
        while pos + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
            raw = data[pos + _HEADER.size:pos + _HEADER.size + length]
            pos += _HEADER.size + length
            out.events += 1
            if mask & IN_Q_OVERFLOW:
                out.overflow = True
                continue
            folder = self._dirs.get(wd)
            if folder is None:
                continue
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                out.lost.add(folder)
                continue
            name = raw.split(b"\0", 1)[0]
            if name:
                path = folder / os.fsdecode(name)
                out.paths.add(path)
                if mask & IN_MOVED_TO:
                    out.moved_in.add(path)
                else:
                    out.moved_in.discard(path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


__all__ = ["DIR_MASK", "Inotify", "Touched"]
