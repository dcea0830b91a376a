"""The one way mocksync puts a file's bytes on disk: temp file, fsync, rename, folder fsync.

Why one implementation: environment files (`agent.writer`), the home's documents
(`store.docs`), device keys (`space.identity`) and the relay's key (`relay.auth`) must all
survive a `kill -9` or a power cut at any instant holding either the old bytes or the new ones,
never a prefix (docs/design/security.md §9). Each of the four used to carry its own copy of
the recipe, and one forgot the folder fsync (without it, the rename itself may not survive a
power cut). This module sits beside `errors` and `paths`, below every package that writes, so
the layers (docs/design/architecture.md "Layers") let all of them use it.

The recipe, in a folder opened once (so every step happens in that very folder, even if a
path component is swapped meanwhile):
1. create a temp file there (`TEMP_PREFIX`...`TEMP_SUFFIX`, O_EXCL, O_NOFOLLOW, mode 0600
   until the final mode is set: no other user ever sees partial content);
2. write everything, set the final mode, fsync;
3. let the caller check the target one last time (`before_swap`), then rename the temp file
   over the target, or link it to a name that must not exist yet (`exclusive`: key files are
   never replaced); a caller that must not lose a save landing after that check has the
   rename be an atomic exchange and checks what it displaced (`check_displaced`);
4. fsync the folder, so the rename is durable. A failure of only this step leaves the new
   content in place and raises `FolderSyncError`; the caller decides whether that matters.

Errors are plain `OSError`s (each caller words its own sentence); the temp file is removed on
every failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable

from .errors import FolderSyncError

#: Prefix and suffix of every temp file (the folder watcher ignores such names).
TEMP_PREFIX = ".mocksync-"
TEMP_SUFFIX = ".tmp"
#: Random bytes in a temp file's name (hex-encoded): collisions are not a concern.
TEMP_TOKEN_BYTES = 8
#: Mode of the temp file until its final mode is set.
TEMP_MODE = 0o600

_DIR_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_TEMP_OPEN_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                    | getattr(os, "O_CLOEXEC", 0))


def temp_name() -> str:
    """A fresh temp file name (never shown as an environment: the watcher skips it)."""
    return f"{TEMP_PREFIX}{secrets.token_hex(TEMP_TOKEN_BYTES)}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """Is `name` one of our temp files (a leftover of a crash, or a write in progress)?"""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def fsync_dir(dir_fd: int) -> None:
    """Flush a folder (by its open fd) so renames and links in it survive a power cut."""
    os.fsync(dir_fd)


#: `renameat2` flag: swap two names atomically (Linux 3.15+, glibc 2.28+).
RENAME_EXCHANGE = 2


def _libc_renameat2() -> Callable[..., int] | None:
    """libc's `renameat2`, or None where there is none (other systems, old glibc)."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _libc_renameat2()


def exchange(dir_fd: int, a: str, b: str) -> bool:
    """Swap the files named `a` and `b` in the folder `dir_fd` in one atomic step. False
    (nothing changed) when the system or the filesystem cannot, or either name is missing;
    OSError for other failures."""
    import ctypes

    if _renameat2 is None:
        return False
    if _renameat2(dir_fd, os.fsencode(a), dir_fd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err))


def _put_back(dir_fd: int, tmp: str, name: str, ours: os.stat_result) -> None:
    """Undo an exchange whose displaced version (now at `tmp`) was not the one expected: an
    editor saved between the last check and the swap. Its save goes back in place and ours
    is dropped. If yet another save replaced ours meanwhile, that newest one ends in place
    (it superseded the one before, as that editor's own rename meant it to). Never unlinks
    anything but our own file."""
    if exchange(dir_fd, tmp, name):
        now = os.lstat(tmp, dir_fd=dir_fd)
        if (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino):
            os.unlink(tmp, dir_fd=dir_fd)
            return
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def put_in_dir(dir_fd: int, name: str, data: bytes, mode: int, *, exclusive: bool = False,
               before_swap: Callable[[], None] | None = None,
               check_displaced: Callable[[str], None] | None = None) -> os.stat_result:
    """Atomically make `name` in the folder `dir_fd` hold `data` with permission bits `mode`.

    Returns the fstat of the written file (taken before the rename, which keeps inode, mtime
    and size). `exclusive`: link instead of rename, so an existing `name` is never replaced
    (FileExistsError). `before_swap` runs after the temp file is durable and right before the
    rename; whatever it raises aborts the write with the target untouched. OSError on failure
    (nothing changed), FolderSyncError when only the final folder fsync failed.

    `check_displaced` closes the window left between `before_swap` and the rename (a thread
    preempted there, an editor's save landing meanwhile): where the system can, the temp file
    is exchanged with the target atomically and the version it displaced (now under a temp
    name in `dir_fd`) is handed to `check_displaced`. If that raises, the displaced version
    is put back (`_put_back`) and the error propagates: nothing a save put there is lost.
    Where there is no exchange (or no target yet), a plain rename, as without it.
    """
    data = bytes(data)
    tmp = temp_name()
    leftover = True  # the temp file still exists under its own name
    fd = os.open(tmp, _TEMP_OPEN_FLAGS, TEMP_MODE, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode & 0o7777)
            os.fsync(fd)
            written = os.fstat(fd)
        finally:
            os.close(fd)
        if before_swap is not None:
            before_swap()
        if exclusive:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        elif check_displaced is not None and exchange(dir_fd, tmp, name):
            # `tmp` now names the version displaced; the finally clause removes it once
            # it is known to be the one expected.
            try:
                check_displaced(tmp)
            except BaseException:
                leftover = False  # `tmp` holds someone's save: only `_put_back` touches it
                _put_back(dir_fd, tmp, name, written)
                raise
        else:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            leftover = False
    finally:
        if leftover:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
    try:
        fsync_dir(dir_fd)
    except OSError as exc:
        err = FolderSyncError(exc.errno, exc.strerror or "folder fsync failed")
        err.written = written  # (in place: a caller may still take it as written)
        raise err from exc
    return written


def put_file(path: str | os.PathLike[str], data: bytes, mode: int, *, exclusive: bool = False,
             before_swap: Callable[[], None] | None = None,
             check_displaced: Callable[[str], None] | None = None) -> os.stat_result:
    """`put_in_dir` for a path: the folder holding `path` is opened once and used throughout.

    `path` itself is not resolved: a symlink at `path` is replaced by the file (callers that
    must write through a link resolve it first, as `agent.writer.replace_file` does).
    """
    folder, name = os.path.split(os.fspath(path))
    dir_fd = os.open(folder or ".", _DIR_OPEN_FLAGS)
    try:
        return put_in_dir(dir_fd, name, data, mode, exclusive=exclusive, before_swap=before_swap,
                          check_displaced=check_displaced)
    finally:
        os.close(dir_fd)
