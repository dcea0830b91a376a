"""Atomic file replacement: the only way the daemon writes an environment file.

Why this shape (docs/design/merge.md "Editors and the file", docs/design/security.md §9): an editor, the Mockoon CLI's
`--watch` or a `kill -9` may look at the file at any instant, so it must always hold either the
old bytes or the new bytes, never a prefix. We write a temp file in the *same* folder (a rename
is only atomic within one filesystem), fsync it, give it the old file's mode, rename it over the
target and fsync the folder so the rename itself survives a power cut. The recipe itself is
`mocksync.fsatomic`, shared with every other file the project writes; this module adds what
environment files and teammates' files need on top (mode keeping, compare-before-replace,
no symlinks on the way).

The temp name starts with `.mocksync-` and ends with `.tmp`; the watcher ignores such names, so
the temp file never shows up as an environment.

The caller that wants the watcher to swallow this write registers the hash *before* calling
(`watcher.expect_write(path, content_hash(data))`): the rename can be seen by the watcher's
thread at once.

Compare-before-replace (issue 13): a caller that read the file before rendering what it
writes passes `expect` (the version it read). Rendering, writing and fsyncing the temp file
take milliseconds to hundreds of milliseconds; an editor save landing in that stretch used to
be renamed over unseen. So right before the rename the target is checked again (inode,
mtime_ns, size; its content hash too when its timestamp is too recent to tell two writes
apart) and, if it is not the version the caller read, nothing is replaced and
`FileChangedError` tells the caller to take the save in first. The window left between
that last `lstat` and the `rename` is microseconds, but a preempted thread (a loaded machine;
another thread holding the GIL) stretches it to milliseconds, time enough for an editor's
whole save. So where the system has one (Linux `renameat2`), the rename is an atomic exchange
and the version it displaced is checked the same way: if it is not the one read, it goes back
in place and `FileChangedError` follows (`fsatomic.put_in_dir`). No window is left there;
elsewhere, the microseconds one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import fsatomic
from .errors import FileChangedError, FileWriteError, UnsafePathError

#: Prefix and suffix of our temp files (the watcher ignores these names): `fsatomic`'s.
TEMP_PREFIX = fsatomic.TEMP_PREFIX
TEMP_SUFFIX = fsatomic.TEMP_SUFFIX

#: Mode of a new file when none is given and none exists: what `open()` would give, i.e.
#: 0o666 minus the process umask.
DEFAULT_NEW_MODE = 0o666


def content_hash(data: bytes) -> str:
    """sha256 hex of `data`: the hash `atomic_write` returns and the watcher compares."""
    return hashlib.sha256(data).hexdigest()


#: Files at least this big are hashed beside their write (`hash_beside`); smaller ones at
#: once (a thread hand-off costs more than hashing them).
HASH_BESIDE_BYTES = 1 << 20

_hasher: ThreadPoolExecutor | None = None
_hasher_lock = threading.Lock()


def hash_beside(data: bytes) -> Future[str]:
    """`content_hash(data)`, computed on a thread of its own while the caller writes and
    flushes the same bytes (hashlib and the write let the GIL go: on two cores they overlap;
    issue 15: ~3 ms of a 5 MB remote edit's way to the file)."""
    global _hasher
    if len(data) < HASH_BESIDE_BYTES:
        done: Future[str] = Future()
        done.set_result(content_hash(data))
        return done
    with _hasher_lock:
        if _hasher is None:
            _hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mocksync-hash")
    return _hasher.submit(content_hash, data)


#: Which version of a file is there: (inode, mtime in ns, size).
FileSig = tuple[int, int, int]

#: A file whose mtime is less than this before the check may have been written again within
#: the same timestamp tick (kernels stamp files from a coarse clock, some filesystems to the
#: second or two): inode, size and mtime cannot tell such writes apart, its content can.
TIMESTAMP_DOUBT_NS = 2_500_000_000

#: Verdicts of `replace_verdict`.
SAME = "same"
CHANGED = "changed"
DOUBT = "doubt"


@dataclass(frozen=True)
class Expected:
    """The version of a file a writer read before rendering what replaces it: its signature
    and content hash, or both None when the file was absent."""

    sig: FileSig | None
    sha256: str | None
    #: The bytes read, when the writer still holds them: a doubtful version is then compared
    #: byte for byte (a read and a memcmp) instead of hashed (issue 15: a 5 MB write hashed
    #: the file twice here).
    data: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def absent(cls) -> Expected:
        return cls(None, None)


def sig_of(st: os.stat_result) -> FileSig:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def replace_verdict(expected: Expected, now: FileSig | None, now_ns: int) -> str:
    """May a file whose signature is now `now` be replaced by a writer that read `expected`?

    CHANGED: another version is there (created, deleted, saved over, resized); SAME: the very
    version read; DOUBT: the signature matches but the file was modified so recently (within
    `TIMESTAMP_DOUBT_NS` of `now_ns`) that a second write in the same timestamp tick would
    look the same: compare the content hash before deciding.
    """
    if expected.sig is None or now is None:
        return SAME if expected.sig is None and now is None else CHANGED
    if now != expected.sig:
        return CHANGED
    if abs(now_ns - now[1]) < TIMESTAMP_DOUBT_NS:
        return DOUBT
    return SAME


def _stat_sig(path: Path) -> FileSig | None:
    try:
        return sig_of(os.lstat(path))
    except FileNotFoundError:
        return None


def _hash_if_same(path: Path, sig: FileSig) -> str | None:
    """The content hash of `path` if it still has signature `sig` (else None). Opened without
    blocking and only if it is a regular file: a FIFO put there must not hang the daemon."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or sig_of(st) != sig:
            return None
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


#: Bytes read per step when comparing a file with the bytes a writer expects.
COMPARE_CHUNK = 1 << 20


def _content_is(path: Path, sig: FileSig, data: bytes) -> bool:
    """Does `path`, still with signature `sig`, hold exactly `data`? Read in slices into one
    reused buffer and compared (no hash, no file-sized copy); opened as `_hash_if_same`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or sig_of(st) != sig or st.st_size != len(data):
            return False
        view = memoryview(bytearray(min(COMPARE_CHUNK, max(len(data), 1))))
        at = 0
        while True:
            n = os.readv(fd, [view])
            if n == 0:
                return at == len(data)
            # (`startswith` at an offset is one memcmp; comparing memoryviews is per byte)
            if at + n > len(data) or not data.startswith(view[:n], at):
                return False
            at += n
    finally:
        os.close(fd)


def _check_unchanged(target: Path, expected: Expected) -> None:
    """Raise FileChangedError unless `target` is still the version `expected` (see
    `replace_verdict`). The caller renames right after: keep nothing slow after this."""
    now = _stat_sig(target)
    verdict = replace_verdict(expected, now, time.time_ns())
    if verdict == DOUBT:
        assert now is not None
        if expected.data is not None:
            same = _content_is(target, now, expected.data)
        else:
            same = _hash_if_same(target, now) == expected.sha256
        verdict = SAME if same else CHANGED
        if verdict == SAME and _stat_sig(target) != now:  # changed while it was hashed
            verdict = CHANGED
    if verdict == CHANGED:
        raise FileChangedError(f"{target.name} changed since it was read; not replaced")


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


@dataclass(frozen=True)
class Written:
    """What `replace_file` put in place: its content hash and its signature (taken from the
    temp file before the rename, so an editor save right after it cannot be mistaken for
    ours)."""

    sha256: str
    sig: FileSig


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None,
                 expect: Expected | None = None) -> str:
    """Replace `path` with `data` atomically; return the sha256 hex of what was written.

    The file's existing permission bits are kept (or `mode` when given; a new file gets
    0o666 minus the umask). A symlink is followed: its target is replaced, the link stays.
    On any error before the rename the target is untouched, the temp file is removed and
    `FileWriteError` (naming the file and the reason) is raised; if only the final folder
    fsync fails, the new content is in place and `FileWriteError` says so. With `expect`,
    the target is replaced only if it is still that version (else `FileChangedError`).
    """
    return replace_file(path, data, mode=mode, expect=expect).sha256


def replace_file(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None,
                 expect: Expected | None = None, sha256: str | Future[str] | None = None,
                 before_rename: Callable[[str], None] | None = None) -> Written:
    """`atomic_write`, returning the written version's hash and signature. `sha256`: the
    caller's `content_hash(data)`, when it has it (not computed twice), or its `hash_beside`
    (waited for once the bytes are written and flushed). `before_rename(sha256)` runs right
    before the rename (the watcher is told what to expect there); what it raises aborts the
    write with the target untouched."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"atomic_write needs bytes, not {type(data).__name__}")
    data = bytes(data)
    target = Path(os.path.realpath(path))
    got: list[str] = []

    def the_hash() -> str:
        if not got:
            got.append(sha256.result() if isinstance(sha256, Future)
                       else sha256 if sha256 is not None else content_hash(data))
        return got[0]

    def still_as_read() -> None:
        if before_rename is not None:
            before_rename(the_hash())
        # Compare-before-replace: everything slow (render, write, fsync) is done; from this
        # check to the rename is the whole remaining window (microseconds).
        if expect is not None:
            _check_unchanged(target, expect)

    def displaced_as_read(tmp: str) -> None:
        # The same check on the version the exchange displaced: a save that slipped in
        # after `still_as_read` is put back, not lost (fsatomic.put_in_dir).
        if expect is not None:
            _check_unchanged(target.parent / tmp, expect)

    try:
        st = fsatomic.put_file(target, data, _target_mode(target, mode), before_swap=still_as_read,
                               check_displaced=displaced_as_read if expect is not None else None)
    except fsatomic.FolderSyncError as exc:
        # The new content is in place; only its durability across a power cut is in doubt.
        reason = exc.strerror or exc.__class__.__name__
        err = FileWriteError(
            f"wrote {target} but could not flush its folder to disk ({reason}); "
            "the new content may be lost if the machine loses power now"
        )
        if exc.written is not None:  # (the caller's watcher must still take it as ours)
            err.landed = Written(the_hash(), sig_of(exc.written))
        raise err from exc
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise FileWriteError(f"could not write {target}: {reason}") from exc
    # The temp file's signature (a rename keeps inode, mtime and size).
    return Written(the_hash(), sig_of(st))


# ---------------------------------------------------------------------------- beneath a folder
#
# Files from teammates (issue #12) are written with openat-style calls: every folder on the
# way is opened relative to the one before with O_NOFOLLOW, so no component can be a symlink
# (not even one pointing inside the folder: a link can be re-aimed between a check and a
# write); the temp file is created in that opened folder and renamed within it, and the whole
# way is checked again right before the rename.

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _rel_parts(rel: str) -> list[str]:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise UnsafePathError(f"not written: {rel!r} is not a plain relative path")
    return parts


def _refusal(rel: str, where: str, st: os.stat_result | None) -> UnsafePathError:
    if st is not None and stat.S_ISLNK(st.st_mode):
        return UnsafePathError(f"not written: {rel} goes through a symlink ({where}); files "
                               "from teammates are never written through symlinks")
    return UnsafePathError(f"not written: {where} is in the way of {rel} and is not a folder")


def _open_parent(folder: Path, rel: str, *, create: bool) -> tuple[int, str]:
    """An fd of the folder that holds `rel` (reached without following any symlink; missing
    folders made when `create`) and the last part's name. The caller closes the fd."""
    parts = _rel_parts(rel)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                try:
                    st: os.stat_result | None = os.lstat(part, dir_fd=fd)
                except OSError:
                    st = None
                raise _refusal(rel, "/".join(parts[: i + 1]), st) from None
            os.close(fd)
            fd = nfd
        return fd, parts[-1]
    except BaseException:
        os.close(fd)
        raise


def _check_last(dir_fd: int, name: str, rel: str) -> None:
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _refusal(rel, rel, st)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"not written: {rel} exists and is not a regular file")


def check_beneath(folder: str | os.PathLike[str], rel: str) -> None:
    """Raise UnsafePathError when `rel` under `folder` goes through a symlink or something
    that is not a folder, or is itself a symlink or not a regular file (absent is fine)."""
    try:
        fd, name = _open_parent(Path(folder), rel, create=False)
    except FileNotFoundError:
        return
    try:
        _check_last(fd, name, rel)
    finally:
        os.close(fd)


def write_beneath(folder: str | os.PathLike[str], rel: str, data: bytes, mode: int) -> str:
    """Atomically write `data` (permission bits `mode`) at `rel` under `folder`, making
    missing folders, never following a symlink on the way or at the end; the sha256 hex.

    Refused (UnsafePathError, nothing written) when any part of the way is a symlink or not
    a folder, or the target is a symlink or not a regular file, also when that changes
    between the first check and the rename. Other failures: FileWriteError, nothing changed.
    """
    data = bytes(data)
    folder = Path(folder)
    pfd = -1

    def way_unchanged() -> None:
        # Again, right before the rename: the way still leads, symlink-free, to this folder.
        again, _ = _open_parent(folder, rel, create=False)
        try:
            same = os.fstat(again)
        finally:
            os.close(again)
        held = os.fstat(pfd)
        if (same.st_dev, same.st_ino) != (held.st_dev, held.st_ino):
            raise UnsafePathError(f"not written: the folders on the way to {rel} changed while "
                                  "it was written")
        _check_last(pfd, name, rel)

    try:
        pfd, name = _open_parent(folder, rel, create=True)
        _check_last(pfd, name, rel)
        fsatomic.put_in_dir(pfd, name, data, stat.S_IMODE(mode), before_swap=way_unchanged)
    except fsatomic.FolderSyncError:
        pass  # the file is in place; as before, a folder that cannot be flushed is not an error
    except UnsafePathError:
        raise
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise FileWriteError(f"could not write {rel}: {reason}") from exc
    finally:
        if pfd >= 0:
            os.close(pfd)
    return content_hash(data)
