"""Atomic file replacement: the only way the daemon writes an environment file.

Why this shape (MERGE.md "Editors and the file", SECURITY.md 9): an editor, the Mockoon CLI's
`--watch` or a `kill -9` may look at the file at any instant, so it must always hold either the
old bytes or the new bytes, never a prefix. We write a temp file in the *same* folder (a rename
is only atomic within one filesystem), fsync it, give it the old file's mode, rename it over the
target and fsync the folder so the rename itself survives a power cut.

The temp name starts with `.mocksync-` and ends with `.tmp`; the watcher ignores such names, so
the temp file never shows up as an environment.

The caller that wants the watcher to swallow this write registers the hash *before* calling
(`watcher.expect_write(path, content_hash(data))`): the rename can be seen by the watcher's
thread at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from ..errors import MocksyncError

#: Prefix and suffix of our temp files (the watcher ignores these names).
TEMP_PREFIX = ".mocksync-"
TEMP_SUFFIX = ".tmp"

#: Mode of a new file when none is given and none exists: what `open()` would give, i.e.
#: 0o666 minus the process umask.
DEFAULT_NEW_MODE = 0o666


class FileWriteError(MocksyncError):
    """Writing a file failed (disk full, permission, missing folder). Nothing was changed."""

    code = "write_failed"


def content_hash(data: bytes) -> str:
    """sha256 hex of `data`: the hash `atomic_write` returns and the watcher compares."""
    return hashlib.sha256(data).hexdigest()


def _current_umask() -> int:
    # There is no way to read the umask without setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path, mode: int | None) -> int:
    if mode is not None:
        return stat.S_IMODE(mode)
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return DEFAULT_NEW_MODE & ~_current_umask()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> str:
    """Replace `path` with `data` atomically; return the sha256 hex of what was written.

    The file's existing permission bits are kept (or `mode` when given; a new file gets
    0o666 minus the umask). A symlink is followed: its target is replaced, the link stays.
    On any error before the rename the target is untouched, the temp file is removed and
    `FileWriteError` (naming the file and the reason) is raised; if only the final folder
    fsync fails, the new content is in place and `FileWriteError` says so.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"atomic_write needs bytes, not {type(data).__name__}")
    data = bytes(data)
    target = Path(os.path.realpath(path))
    folder = target.parent
    tmp_name: str | None = None
    try:
        new_mode = _target_mode(target, mode)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, new_mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise FileWriteError(f"could not write {target}: {reason}") from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    try:
        _fsync_dir(folder)
    except OSError as exc:
        # The new content is in place; only its durability across a power cut is in doubt.
        reason = exc.strerror or exc.__class__.__name__
        raise FileWriteError(
            f"wrote {target} but could not flush its folder to disk ({reason}); "
            "the new content may be lost if the machine loses power now"
        ) from exc
    return content_hash(data)
