"""Reading files out of the synced folder without hanging, leaving the folder, or hiding why.

Why this exists (issue 13): the folder is the user's, and anything can appear in it under an
environment-like name. A FIFO called `y.json` blocked the daemon for good on a plain `open()`
(a FIFO's open waits for a writer), a symlink `x.json -> /etc/passwd` was read and listed from
outside the folder, and a file the daemon may not read was silently taken for "absent" until
a rescan. So every read of a folder file (environment files, linked files, the watcher's hash)
goes through `open_regular` here:

- the decision is pure (`judge_stat`, `judge_link`): from a stat result, or a symlink's
  resolved target, to "read it" or a `Skip` with a kind and a sentence a person can act on;
- a symlink is followed only when its resolved target stays beneath the folder;
- the file is stat'ed before it is opened, so a device node or FIFO is never opened at all;
  the open itself is `O_NONBLOCK | O_NOFOLLOW`, so a FIFO or a symlink swapped in between the
  stat and the open can neither block us nor lead us out, and the opened descriptor is
  fstat'ed again: only a regular file is ever read;
- a permission error is a `Skip` too (kind `unreadable`), raised at the first look, so the
  watcher reports it on the event and `status` names it at once.

A skipped file is never parsed, committed or written over by a read path; callers turn the
`SkippedFile` error into the `skipped` state in `status` with its sentence.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import SkippedFile

#: Bytes read per `os.read` call.
READ_CHUNK_BYTES = 1 << 20

# Kinds of skipped files (the `kind` of a `Skip`).
FIFO = "fifo"
DEVICE = "device"
SOCKET = "socket"
DIRECTORY = "directory"
SPECIAL = "special"
OUTSIDE = "outside"
UNREADABLE = "unreadable"
TOO_LARGE = "too_large"
CHANGED = "changed"

#: Open flags for every folder read: never block on a FIFO, never follow a last-component
#: symlink (a symlink is resolved and judged before, and its target opened by real path).
OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
              | getattr(os, "O_CLOEXEC", 0))


@dataclass(frozen=True)
class Skip:
    """Why a file in the folder is not read: `kind` (one of the constants above) and a
    sentence naming the file, what it is and what to do."""

    kind: str
    reason: str


FileSig = tuple[int, int, int]


@dataclass(frozen=True)
class FileRead:
    """A regular file's bytes and the identity of the version read."""

    data: bytes
    sig: FileSig  # (inode, mtime ns, size) from fstat of the descriptor read
    mode: int


# ---------------------------------------------------------------------------- decisions


def judge_stat(name: str, mode: int, size: int, max_bytes: int | None) -> Skip | None:
    """Read a file with this `st_mode`/`st_size`? None when yes, else why not. Pure."""
    if stat.S_ISREG(mode):
        if max_bytes is not None and size > max_bytes:
            return Skip(TOO_LARGE, f"skipped: {name} is {size} bytes, over the {max_bytes} byte "
                                   "limit of a file mocksync reads")
        return None
    if stat.S_ISFIFO(mode):
        return Skip(FIFO, f"skipped: {name} is a named pipe (FIFO), not a file; mocksync never "
                          "opens it. Remove it or give it a name not ending in .json")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return Skip(DEVICE, f"skipped: {name} is a device node, not a file; mocksync never "
                            "opens it. Remove it from the folder")
    if stat.S_ISSOCK(mode):
        return Skip(SOCKET, f"skipped: {name} is a socket, not a file; mocksync never opens "
                            "it. Remove it or give it a name not ending in .json")
    if stat.S_ISDIR(mode):
        return Skip(DIRECTORY, f"skipped: {name} is a folder, not a file")
    return Skip(SPECIAL, f"skipped: {name} is not a regular file; mocksync never opens it")


def beneath(target: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Is the (resolved) `target` the folder itself or inside it? Pure string test on
    absolute, resolved paths."""
    t, f = os.fspath(target), os.fspath(folder).rstrip(os.sep) or os.sep
    return t == f or t.startswith(f if f.endswith(os.sep) else f + os.sep)


def judge_link(name: str, target: str | os.PathLike[str],
               folder: str | os.PathLike[str]) -> Skip | None:
    """A symlink `name` in the folder resolves to `target`: follow it? Pure."""
    if beneath(target, folder):
        return None
    return Skip(OUTSIDE, f"skipped: {name} is a symlink to {os.fspath(target)}, outside the "
                         "synced folder; mocksync never reads or writes through it. Put the "
                         "file itself in the folder")


def judge_os_error(name: str, exc: OSError) -> Skip | None:
    """An error looking at or opening a file: a `Skip` for the lasting ones, None when the
    file is simply gone (absent). Pure."""
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOTDIR:
        return None
    if isinstance(exc, PermissionError):
        return Skip(UNREADABLE, f"skipped: {name} cannot be read by the daemon (permission "
                                "denied); give the daemon's user read access, e.g. "
                                f"`chmod u+r {name}`, or remove it")
    if exc.errno == errno.ELOOP:
        return Skip(CHANGED, f"skipped: {name} became a symlink while it was read; looked at "
                             "again on its next change")
    return Skip(UNREADABLE, f"skipped: {name} cannot be read: {exc.strerror or exc}")


# ---------------------------------------------------------------------------- I/O


def folder_path(folder: Path, path: Path) -> Path:
    """The path the daemon keys a folder file by: a symlink resolving beneath `folder` is
    keyed by its target (as before), anything else (a plain file, a symlink leading out) by
    its own name in the folder, so a link to /etc/passwd is never named by its target."""
    path = Path(os.path.abspath(path))
    try:
        real = Path(os.path.realpath(path))
    except OSError:
        return path
    return real if beneath(real, folder) and real != folder else path


def _open(path: Path, folder: Path | None,
          max_bytes: int | None) -> tuple[int, os.stat_result] | None:
    name = path.name
    target = path
    try:
        lst = os.lstat(path)
        if stat.S_ISLNK(lst.st_mode):
            real = os.path.realpath(path)
            if folder is not None:
                skip = judge_link(name, real, folder)
                if skip is not None:
                    raise SkippedFile(skip)
            target = Path(real)
            lst = os.lstat(target)
        skip = judge_stat(name, lst.st_mode, lst.st_size, max_bytes)
        if skip is not None:
            raise SkippedFile(skip)
        fd = os.open(target, OPEN_FLAGS)
    except OSError as exc:
        skip = judge_os_error(name, exc)
        if skip is None:
            return None
        raise SkippedFile(skip) from None
    try:
        st = os.fstat(fd)
        # Replaced between the stat and the open (a FIFO opened O_NONBLOCK did not block).
        skip = judge_stat(name, st.st_mode, st.st_size, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    if skip is not None:
        os.close(fd)
        raise SkippedFile(skip)
    return fd, st


@contextlib.contextmanager
def open_regular(path: Path, *, folder: Path | None,
                 max_bytes: int | None = None) -> Iterator[tuple[int, os.stat_result] | None]:
    """Open `path` for reading only if it is a regular file (and, with `folder`, only if it
    or its symlink's target stays beneath `folder`). Yields `(fd, fstat)`, or None when the
    file does not exist; raises `SkippedFile` for anything else. Never blocks, never opens
    a device or FIFO, never follows a symlink out of `folder`."""
    opened = _open(Path(path), folder, max_bytes)
    try:
        yield opened
    finally:
        if opened is not None:
            os.close(opened[0])


def read_regular(path: Path, *, folder: Path | None, max_bytes: int) -> FileRead | None:
    """The whole of a regular file at `path` (at most `max_bytes`), read as `open_regular`
    allows; None when absent. Raises `SkippedFile` (a `ValidationError`)."""
    with open_regular(path, folder=folder, max_bytes=max_bytes) as opened:
        if opened is None:
            return None
        return read_opened(path, *opened, max_bytes=max_bytes)


def read_opened(path: Path, fd: int, st: os.stat_result, *, max_bytes: int) -> FileRead:
    """The whole of the file `open_regular` opened as `fd` (with fstat `st`), at most
    `max_bytes` (else `SkippedFile`)."""
    chunks: list[bytes] = []
    left = max_bytes + 1
    while left > 0:
        # The size the file had when opened, plus one, at once: a file that kept its size is
        # then one read and one buffer, not slices joined into a copy (issue 15).
        want = READ_CHUNK_BYTES if chunks else max(READ_CHUNK_BYTES, st.st_size + 1)
        chunk = os.read(fd, min(left, want))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise SkippedFile(Skip(TOO_LARGE, f"skipped: {path.name} grew over the {max_bytes} "
                                          "byte limit while it was read"))
    return FileRead(data, (st.st_ino, st.st_mtime_ns, st.st_size), st.st_mode)
