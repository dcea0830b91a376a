"""Watch the environments folder and say, in high-level terms, what happened to which file.

Why not hand `watchfiles` events straight to the daemon: an editor's save is a burst of raw
events on temp files (`env.json.1a2b`, `.#env.json`, `4913`, `*.swp`...), a rename shows up as a
delete plus an add, and the daemon's own atomic writes come back as changes it must not mistake
for a user's edit (or every remote edit would bounce back as a new local one). So this module:

- debounces bursts (watchfiles' `step`/`debounce`; docs/design/testing.md measured step=5 ms delivering a
  rename in 7-9 ms) and looks only at `*.json` names that are not editor or mocksync temp files;
- classifies each touched file by comparing what is on disk now with what it saw last
  (content hash plus inode and mtime), not by the raw event kind: an editor's
  temp-file-then-rename save arrives as "added" for a file we already know, which is a change;
- swallows the daemon's own writes: `expect_write(path, sha256)` before writing, and the next
  change of that file to exactly that content produces no event (once; stale expectations
  expire after `EXPECT_TTL_S`);
- pairs a vanished file with a new file of the same content in one batch into `renamed`.

A file whose bytes did not change but whose inode or mtime did (an editor re-saving identical
content, `touch`) is still reported as `changed`: Mockoon stops watching a file for 3 s after
each of its saves, and the daemon must know that such a save happened (editorsync.BlindWindow).

Whenever the OS watch is (re)built (start, `add_file`, `remove_file`) the watched files are
rescanned, so a change that happened while no watch was in place is still reported.

Files are looked at through `folderread.open_regular` (issue 13): a FIFO, device node, socket,
symlink pointing outside the folder (docs/design/security.md §8) or unreadable file is never read, but it
is reported (an event with no hash), so the daemon names it in `status` on the event itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import watchfiles

from ..aiotime import within
from ..errors import LimitError
from .errors import SkippedFile, WatchError
from .folderread import FileRead, open_regular, read_opened
from .inotify import Inotify

log = logging.getLogger(__name__)

#: watchfiles: a batch is delivered once this many ms pass with no new event...
DEFAULT_STEP_MS = 5
#: ...or at the latest after this many ms of continuous events.
DEFAULT_DEBOUNCE_MS = 50
#: An `expect_write` not matched within this many seconds is forgotten.
EXPECT_TTL_S = 30.0
#: At most this many pending own-write expectations per file (oldest dropped first).
MAX_EXPECTED_PER_FILE = 16
#: At most this many bytes of file content ride on events not yet taken by the daemon
#: (`FileEvent.content`); past it events carry none (the daemon reads the file itself), so a
#: checkout that changes fifty 15 MB files at once does not hold them all in memory.
CARRY_MAX_BYTES = 64 * 1024 * 1024
#: A written version's note (`note_written`) names its hash for this many seconds: the probe
#: that follows the write comes within milliseconds; the note must not outlive it by much.
WRITTEN_NOTE_TTL_S = 5.0
#: At most this many extra files (outside the folder) can be watched.
MAX_EXTRA_FILES = 256
#: Events waiting for the consumer; when full the watcher waits (the OS keeps buffering).
EVENT_QUEUE_MAX = 1024
#: How long `stop()` waits for the watch thread before cancelling it.
STOP_TIMEOUT_S = 5.0
#: With inotify (Linux), a `stop_event` handed in is looked at this often (the watcher's own
#: stop wakes it at once; nothing else wakes an idle watcher, see `agent.inotify`).
USER_STOP_POLL_S = 1.0
#: While the watched folder is gone (moved away or removed), it is looked for this often; once
#: a folder is at its path again it is watched afresh (with a rescan).
FOLDER_RETRY_S = 1.0

_HASH_CHUNK = 1 << 20
_IGNORED_SUFFIXES = (".tmp", "~", ".swp", ".swx", ".crswap")
_IGNORED_NAMES = frozenset({"4913"})  # vim's "can I write here?" probe file

EventKind = Literal["added", "changed", "deleted", "renamed"]


@dataclass(frozen=True)
class FileEvent:
    """What happened to one file. `sha256` is the content hash now (None when deleted, or
    when the file is one that is never read: a FIFO, device, socket, outside symlink or
    unreadable file, reported so the daemon can name it)."""

    kind: EventKind
    path: Path
    old_path: Path | None = None
    sha256: str | None = None
    #: The bytes the watcher read and hashed, for an environment file added or changed in
    #: the folder (`CARRY_MAX_BYTES`): the daemon takes this very version in without
    #: reading and hashing it a second time (issue 15). None: read it yourself.
    content: FileRead | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class FileState:
    """What the watcher last saw of a file."""

    sha256: str
    ino: int
    mtime_ns: int
    size: int
    #: Set (a `folderread` kind) when the file is not read: a FIFO, device, socket, a symlink
    #: leading out of the folder, an unreadable file. `sha256` is then "".
    skip: str | None = None


def is_ignored_name(name: str) -> bool:
    """Temp, lock and backup names editors (and mocksync) create next to real files."""
    return name.startswith(".") or name in _IGNORED_NAMES or name.endswith(_IGNORED_SUFFIXES)


def is_environment_name(name: str) -> bool:
    """A name the folder watcher reports: `*.json`, not a temp/lock/backup name."""
    return name.lower().endswith(".json") and not is_ignored_name(name)


def _norm(path: str | os.PathLike[str]) -> Path:
    """Absolute path with the folder part resolved (the last component is kept as is)."""
    p = Path(os.path.abspath(path))
    return Path(os.path.realpath(p.parent)) / p.name


def _hash_file(fd: int) -> str:
    h = hashlib.sha256()
    while True:
        chunk = os.read(fd, _HASH_CHUNK)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)


class _StopFlag:
    """What awatch polls from its thread: set by stop(), by a restart, or by the user's event."""

    def __init__(self, user_event: Any | None) -> None:
        self._user_event = user_event
        self._set = False
        #: Set with the flag (an inotify watch waits on it rather than polling the flag).
        self.wake: asyncio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self.wake is not None:
            self.wake.set()

    def is_set(self) -> bool:
        return self._set or bool(self._user_event is not None and self._user_event.is_set())


_END = object()


class FolderWatcher:
    """Watch `folder` (not recursively) plus optional extra files; yield `FileEvent`s.

    Use as `async with FolderWatcher(folder) as w: async for ev in w: ...`, or call
    `start()`/`stop()` yourself. Setting `stop_event` (an asyncio or threading Event) also
    stops it. Iteration ends when the watcher stops.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        extra_files: Iterable[str | os.PathLike[str]] = (),
        step_ms: int = DEFAULT_STEP_MS,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        stop_event: Any | None = None,
        force_polling: bool | None = None,
        poll_delay_ms: int = 50,
    ) -> None:
        if step_ms <= 0 or debounce_ms < step_ms:
            raise ValueError("need 0 < step_ms <= debounce_ms")
        self.folder = Path(os.path.realpath(folder))
        self._extra: set[Path] = set()
        for f in extra_files:
            self._add_extra(f)
        self._step_ms = step_ms
        self._debounce_ms = debounce_ms
        self._user_stop = stop_event
        self._force_polling = force_polling
        self._poll_delay_ms = poll_delay_ms
        #: Linux: inotify on the loop, no polling thread (`agent.inotify`); polling asked
        #: for, or inotify missing: watchfiles.
        self._use_inotify = not force_polling
        self._known: dict[Path, FileState] = {}
        #: Bytes the last probe read (`_probe(carry=True)`), until `_classify` hands them on;
        #: and how many bytes ride on events not yet taken (`CARRY_MAX_BYTES`).
        self._read: dict[Path, FileRead] = {}
        self._carried = 0
        self._expected_writes: dict[Path, list[tuple[str, float]]] = {}
        self._expected_deletes: dict[Path, float] = {}
        #: Per file, the daemon's last write as it landed: (signature, sha256, deadline).
        self._written: dict[Path, tuple[tuple[int, int, int], str, float]] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue(EVENT_QUEUE_MAX)
        self._flag: _StopFlag | None = None
        self._stopping = False
        self._pump_task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._ended = False
        self.error: BaseException | None = None

    # ---- own writes -------------------------------------------------------------------

    def expect_write(self, path: str | os.PathLike[str], sha256: str) -> None:
        """The daemon is about to write `sha256` content to `path`: don't report it."""
        key = _norm(path)
        now = time.monotonic()
        pending = [(h, t) for h, t in self._expected_writes.get(key, []) if t > now]
        pending.append((sha256, now + EXPECT_TTL_S))
        self._expected_writes[key] = pending[-MAX_EXPECTED_PER_FILE:]

    def note_written(self, path: str | os.PathLike[str], sha256: str,
                     sig: tuple[int, int, int]) -> None:
        """The daemon's write of `sha256` landed at `path` as the version `sig` (inode,
        mtime_ns, size: the writer's stat of its own temp file). The next probe that finds
        exactly that version takes its hash from here instead of reading and hashing the
        file again (5-15 MB for a big environment, issue 15); once, and for at most
        `WRITTEN_NOTE_TTL_S`. (An editor rewriting the file in place, to the same size,
        within the same timestamp tick and before the probe would be taken for the write:
        the same doubt `writer.replace_verdict` has, in a window of milliseconds.)"""
        self._written[_norm(path)] = (sig, sha256, time.monotonic() + WRITTEN_NOTE_TTL_S)

    def _written_hash(self, path: Path, st: os.stat_result) -> str | None:
        """The hash `note_written` gave for the version `st` of `path`, if it is that one."""
        note = self._written.get(path)
        if note is None:
            return None
        sig, sha, deadline = note
        if deadline < time.monotonic():
            self._written.pop(path, None)
            return None
        if sig != (st.st_ino, st.st_mtime_ns, st.st_size):
            return None
        self._written.pop(path, None)
        return sha

    def withdraw_write(self, path: str | os.PathLike[str], sha256: str) -> None:
        """The write announced by `expect_write` did not happen (compare-before-replace found
        an editor's save, or the disk was full): forget it, so no later change is swallowed
        for it."""
        key = _norm(path)
        pending = self._expected_writes.get(key, [])
        for i in range(len(pending) - 1, -1, -1):
            if pending[i][0] == sha256:
                del pending[i]
                break
        if not pending:
            self._expected_writes.pop(key, None)

    def expect_delete(self, path: str | os.PathLike[str]) -> None:
        """The daemon is about to delete (or move away) `path`: don't report it."""
        self._expected_deletes[_norm(path)] = time.monotonic() + EXPECT_TTL_S

    def _take_expected_write(self, path: Path, sha256: str, now: float) -> bool:
        pending = [(h, t) for h, t in self._expected_writes.get(path, []) if t > now]
        hit = next((i for i, (h, _) in enumerate(pending) if h == sha256), None)
        if hit is not None:
            # This write and every one the daemon made before it are now on disk or replaced.
            pending = pending[hit + 1 :]
        if pending:
            self._expected_writes[path] = pending
        else:
            self._expected_writes.pop(path, None)
        return hit is not None

    def _take_expected_delete(self, path: Path, now: float) -> bool:
        deadline = self._expected_deletes.pop(path, None)
        return deadline is not None and deadline > now

    # ---- what is watched ----------------------------------------------------------------

    def _add_extra(self, path: str | os.PathLike[str]) -> Path:
        key = _norm(path)
        if key not in self._extra and len(self._extra) >= MAX_EXTRA_FILES:
            raise LimitError(
                f"cannot watch more than {MAX_EXTRA_FILES} files outside the folder; "
                "move environments into the synced folder"
            )
        self._extra.add(key)
        return key

    async def add_file(self, path: str | os.PathLike[str]) -> None:
        """Also watch `path` (any folder). Its current state is recorded without an event."""
        key = self._add_extra(path)
        if key not in self._known:
            state = (await asyncio.to_thread(self._probe, [key]))[key]
            if state is not None:
                self._known[key] = state
        self._restart()

    async def remove_file(self, path: str | os.PathLike[str]) -> None:
        """Stop watching an extra file added with `add_file` / `extra_files`."""
        key = _norm(path)
        self._extra.discard(key)
        if not self._in_folder(key):
            self._known.pop(key, None)
        self._restart()

    def _restart(self) -> None:
        if self._flag is not None:
            self._flag.set()

    def _in_folder(self, path: Path) -> bool:
        return path.parent == self.folder and is_environment_name(path.name)

    def _wanted(self, path: Path) -> bool:
        return path in self._extra or self._in_folder(path)

    def _roots(self) -> list[str]:
        roots = {self.folder} | {p.parent for p in self._extra}
        return sorted(str(r) for r in roots)

    def _filter(self, _change: watchfiles.Change, path: str) -> bool:
        return self._wanted(Path(path))

    def last_hash(self, path: str | os.PathLike[str]) -> str | None:
        state = self._known.get(_norm(path))
        return state.sha256 if state and state.skip is None else None

    def known(self) -> dict[Path, str]:
        """Every watched file that exists, with the content hash last seen."""
        return {p: s.sha256 for p, s in self._known.items() if s.skip is None}

    # ---- disk probing (runs in a worker thread) -------------------------------------------

    def _probe(self, paths: Iterable[Path], carry: bool = False) -> dict[Path, FileState | None]:
        """What each of `paths` is now; with `carry`, also the bytes read of folder files
        (in `_read`, for `_classify` to hand on with their events)."""
        return {p: self._probe_one(p, carry) for p in paths}

    def _probe_one(self, path: Path, carry: bool = False) -> FileState | None:
        # folderread.open_regular: never blocks on a FIFO, never opens a device, never reads
        # through a symlink leading out of the folder (extra files are the caller's choice).
        try:
            with open_regular(path, folder=None if path in self._extra else self.folder) as opened:
                if opened is None:
                    return None
                fd, st = opened
                sha = self._written_hash(path, st)
                room = CARRY_MAX_BYTES - self._carried
                if sha is None and carry and path not in self._extra and st.st_size <= room:
                    # Read whole and kept for the event: the daemon takes this version in
                    # without reading and hashing it again. At most the budget left: a
                    # file growing while read is hashed instead (its size when opened is
                    # no bound), never carried past `CARRY_MAX_BYTES` nor taken for too big.
                    try:
                        got = read_opened(path, fd, st, max_bytes=room)
                    except SkippedFile:
                        os.lseek(fd, 0, os.SEEK_SET)
                    else:
                        sha = hashlib.sha256(got.data).hexdigest()
                        self._read[path] = got
                        self._carried += len(got.data)
                return FileState(sha or _hash_file(fd), st.st_ino, st.st_mtime_ns, st.st_size)
        except SkippedFile as exc:
            # Reported (without a hash) so the daemon names it in `status` at once.
            try:
                lst = os.lstat(path)
            except OSError:
                return None
            return FileState("", lst.st_ino, lst.st_mtime_ns, lst.st_size, skip=exc.skip.kind)
        except OSError:
            return None

    def _scan_paths(self) -> set[Path]:
        found: set[Path] = set(self._known) | set(self._extra)
        try:
            with os.scandir(self.folder) as it:
                for entry in it:
                    if is_environment_name(entry.name):
                        found.add(self.folder / entry.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", self.folder, exc)
        return {p for p in found if self._wanted(p)}

    # ---- classification -------------------------------------------------------------------

    def _classify(self, probed: dict[Path, FileState | None]) -> list[FileEvent]:
        now = time.monotonic()
        deleted: list[Path] = []
        gone_hash: dict[Path, str] = {}
        added: list[tuple[Path, FileState]] = []
        changed: list[tuple[Path, FileState]] = []
        for path in sorted(probed):
            new = probed[path]
            old = self._known.get(path)
            if new is None:
                if old is None:
                    continue
                del self._known[path]
                if old.skip is None:
                    gone_hash[path] = old.sha256
                if self._take_expected_delete(path, now):
                    continue
                deleted.append(path)
                continue
            if old == new:
                continue
            self._known[path] = new
            if new.skip is None and self._take_expected_write(path, new.sha256, now):
                continue
            (changed if old is not None else added).append((path, new))

        # Rename: a vanished file's last content reappears under a new name in this batch.
        renamed: list[FileEvent] = []
        gone_by_hash: dict[str, list[Path]] = {}
        for path in deleted:
            if path in gone_hash:
                gone_by_hash.setdefault(gone_hash[path], []).append(path)
        still_added: list[tuple[Path, FileState]] = []
        for path, state in added:
            sources = gone_by_hash.get(state.sha256) if state.skip is None else None
            if sources:
                old_path = sources.pop(0)
                deleted.remove(old_path)
                renamed.append(FileEvent("renamed", path, old_path, state.sha256))
            else:
                still_added.append((path, state))

        events = renamed
        events += [FileEvent("deleted", p) for p in deleted]
        events += [FileEvent("added", p, None, s.sha256 or None, self._carry(p, s))
                   for p, s in still_added]
        events += [FileEvent("changed", p, None, s.sha256 or None, self._carry(p, s))
                   for p, s in changed]
        return events

    def _carry(self, path: Path, state: FileState) -> FileRead | None:
        """The bytes the probe read of `path`, when they are the version `state` names."""
        got = self._read.pop(path, None)
        if got is None or got.sig != (state.ino, state.mtime_ns, state.size):
            if got is not None:
                self._carried -= len(got.data)
            return None
        return got

    async def _process(self, paths: Iterable[Path]) -> None:
        paths = [p for p in paths if self._wanted(p)]
        if not paths:
            return
        probed = await asyncio.to_thread(self._probe, paths, True)
        try:
            events = self._classify(probed)
        finally:
            for got in self._read.values():  # read but not carried (unchanged, expected)
                self._carried -= len(got.data)
            self._read.clear()
        for event in events:
            await self._queue.put(event)

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Record the folder's current files (no events for them) and start watching.

        Returns once the OS watch is in place: any later change is reported.
        """
        if self._pump_task is not None:
            raise RuntimeError("watcher already started")
        if not self.folder.is_dir():
            raise WatchError(f"cannot watch {self.folder}: not an existing folder")
        initial = await asyncio.to_thread(lambda: self._probe(self._scan_paths()))
        self._known = {p: s for p, s in initial.items() if s is not None}
        self._pump_task = asyncio.create_task(self._pump(), name=f"watch {self.folder}")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._pump_task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            exc = self.error or RuntimeError("watcher stopped before it started")
            raise WatchError(f"cannot watch {self.folder}: {exc}") from exc

    async def _pump(self) -> None:
        try:
            while not self._should_stop():
                flag = _StopFlag(self._user_stop)
                self._flag = flag
                if self._use_inotify and await self._watch_inotify(flag):
                    continue
                changes_iter = watchfiles.awatch(
                    *self._roots(),
                    watch_filter=self._filter,
                    step=self._step_ms,
                    debounce=self._debounce_ms,
                    # awatch only polls `is_set()`, which _StopFlag has; its hint names Event types.
                    stop_event=flag,  # type: ignore[arg-type]
                    recursive=False,
                    force_polling=self._force_polling,
                    poll_delay_ms=self._poll_delay_ms,
                )
                first = asyncio.ensure_future(changes_iter.__anext__())
                try:
                    # One loop turn lets awatch build its OS watch (that happens before its
                    # first await); anything that changed before is caught by this rescan.
                    await asyncio.sleep(0)
                    if first.done() and first.exception() is not None:
                        raise first.exception()  # type: ignore[misc]
                    await self._process(await asyncio.to_thread(self._scan_paths))
                    self._ready.set()
                    batch = await first
                    while True:
                        await self._process(_norm(p) for _, p in batch)
                        batch = await changes_iter.__anext__()
                except StopAsyncIteration:
                    pass
                finally:
                    flag.set()
                    if not first.done():
                        first.cancel()
                    await asyncio.wait({first})  # (lets our own cancellation through)
                    if not first.cancelled():
                        first.exception()  # retrieved, so asyncio does not warn
                    await changes_iter.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the folder vanished, inotify limits, ...
            self.error = exc
            log.error("watching %s stopped: %s", self.folder, exc)
        finally:
            self._flag = None
            self._ended = True
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_END)

    async def _watch_inotify(self, flag: _StopFlag) -> bool:
        """One watch with inotify until `flag` is set (a restart or stop); False when
        inotify is not available here (the caller falls back to watchfiles for good).

        Batching as watchfiles does it: after an event, the batch grows while more arrive
        within `step_ms` of each other, for at most `debounce_ms`."""
        ino = Inotify.open()
        if ino is None:
            self._use_inotify = False
            return False
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        flag.wake = wake
        loop.add_reader(ino.fileno(), wake.set)
        try:
            for root in self._roots():
                try:
                    ino.add_dir(Path(root))
                except OSError as exc:
                    if Path(root) == self.folder:
                        raise
                    log.warning("not watching %s: %s", root, exc)
            await self._process(await asyncio.to_thread(self._scan_paths))
            self._ready.set()
            while not flag.is_set():
                if self._user_stop is None:
                    await wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await within(USER_STOP_POLL_S, wake.wait())
                wake.clear()
                if flag.is_set():
                    break
                touched = ino.read_touched()
                if not touched.events:
                    continue
                wanted = {p for p in touched.paths if self._wanted(p)}
                if not wanted and not touched.overflow and not touched.lost:
                    continue  # temp files only (a save being written): nothing to look at yet
                # A batch that is only files renamed into place (an editor's atomic save: the
                # file is whole the moment it is there) is looked at at once; else the batch
                # grows while events keep coming (issue 15: a step less per save).
                deadline = loop.time() + (
                    0 if wanted <= touched.moved_in and not touched.overflow
                    else self._debounce_ms / 1000)
                while loop.time() < deadline:
                    await asyncio.sleep(self._step_ms / 1000)
                    more = ino.read_touched()
                    if not more.events:
                        break
                    touched.paths |= more.paths
                    touched.lost |= more.lost
                    touched.overflow = touched.overflow or more.overflow
                paths = touched.paths
                if touched.overflow:  # the kernel dropped events: look at every file
                    paths |= await asyncio.to_thread(self._scan_paths)
                await self._process(paths)
                if self.folder in touched.lost:
                    await self._await_folder(flag)
                    return True
                if touched.lost:  # an extra file's folder went: watch again without it
                    return True
        finally:
            flag.wake = None
            loop.remove_reader(ino.fileno())
            ino.close()
        return True

    async def _await_folder(self, flag: _StopFlag) -> None:
        """The watched folder went away (moved, removed, replaced): say so in `error` and wait
        for a folder at its path again; the caller then watches that one afresh.

        Why: an inotify watch follows the folder's inode, not its path, so after `mv envs
        envs.old` (or a tool that swaps the folder) it watches nothing the daemon writes or
        the editor saves. Before, the watch ended for good, with only a log line: the daemon
        went on answering `status` and receiving edits while no local save was seen again."""
        self.error = WatchError(f"{self.folder} was removed or moved away; local edits are not "
                                "seen until a folder is there again")
        log.warning("%s", self.error)
        while not flag.is_set() and not self._should_stop():
            if self.folder.is_dir():
                self.error = None
                log.info("%s is back: watching it again", self.folder)
                return
            await asyncio.sleep(FOLDER_RETRY_S)

    def _should_stop(self) -> bool:
        return self._stopping or bool(self._user_stop is not None and self._user_stop.is_set())

    async def stop(self) -> None:
        """Stop watching; iteration ends after the events already queued."""
        self._stopping = True
        self._restart()
        task = self._pump_task
        if task is None or task.done():
            return
        try:
            await within(STOP_TIMEOUT_S, asyncio.shield(task))
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def __aenter__(self) -> FolderWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def events(self) -> AsyncIterator[FileEvent]:
        """Yield events until the watcher stops."""
        while True:
            if self._ended and self._queue.empty():
                return
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # let any other reader end too
                return
            if item.content is not None:  # handed over: no longer ours to count
                self._carried -= len(item.content.data)
            yield item

    def __aiter__(self) -> AsyncIterator[FileEvent]:
        return self.events()
