"""The daemon on one machine: folder <-> log, safely, beside an editor that watches the file.

Data flow (docs/design/architecture.md): a save arrives from the watcher -> parse and validate (an invalid
file is never propagated) -> diff against the version that editor last had -> one signed change
set committed to the log -> handed to the transport. A change set from a peer -> verified and
applied by the store -> the file rewritten atomically, but only once the editor can see it
(docs/design/merge.md: Mockoon is blind for 3 s after its own save; we hold writes 3.5 s).

The Agent decides nothing that a pure module can decide: merge and diff are `mocksync.model`,
signatures and chains `mocksync.changes` and `mocksync.store`, quotas `mocksync.space.quotas`,
editor timing `editorsync`. It sequences them and owns the file system side effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shlex
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from .. import MODEL_VERSION, PROTOCOL_VERSION, __version__
from ..errors import MocksyncError, ValidationError
from ..model import ParsedEnv, diff, dumps, parse_env, render, snapshot_ops
from ..model.files import quota_reason
from ..model.jsfmt import MOCKOON_LAYOUT
from ..model.lifecycle import reshare_refusal
from ..model.ops import DELETED, FILE_NAME, LIFECYCLE, SHARED, UNSHARED
from ..model.resolution import recreated, resolution_ops
from ..model.sharedname import choose_file_name
from ..model.spans import text_to_write
from ..paths import Home
from ..space.writers import NOT_A_DEVICE, Verdict, overreach
from ..store import Store
from .editorsync import BlindWindow, SeenVersions, VersionHistory, meet, tied_bases
from .envfiles import HELD, INVALID, MISSING, SYNCED, EnvRuntime, LocalFile
from .faults import COMMITTING, RECEIVING, WRITING, FaultBook, classify
from .folderread import SkippedFile, folder_path, read_regular
from .linked import LinkedFiles
from .offline import (
    Hold,
    HoldBook,
    decide,
    held_reason,
    settled_by_decision,
    should_hold,
    team_state,
)
from .presence import Looking, PresenceBook
from .registry import EnvRecord, Registry
from .settings import Settings
from .storeworker import StoreWorker
from .watcher import FileEvent, FolderWatcher
from .writer import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    Expected,
    FileChangedError,
    FileWriteError,
    atomic_write,
    content_hash,
    replace_file,
)

log = logging.getLogger("mocksync.agent")

#: Largest environment file the daemon reads (also the model's limit).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: A forced write (stop, unshare, delete) that keeps meeting fresh editor saves gives up
#: after this many (each save is taken in; the file then holds the editor's last one).
MAX_FORCED_RACES = 5


class Transport(Protocol):
    """What carries change sets to other devices (in-process bus, LAN WebRTC, relay)."""

    async def start(self, agent: Agent) -> None: ...
    def _remove_stale_temps(self) -> None:
        """Temp files of ours left by a daemon killed mid-write (before its rename): never a
        version of anything (the target still holds the old or the new bytes), only litter
        in the user's folder. The home lock makes this daemon their only possible writer."""
        for p in self.folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    log.info("removed %s, left by an interrupted write", p.name)

    async def stop(self) -> None: ...
    def broadcast(self, space: str, env: str, wire: bytes) -> None: ...
    def status(self) -> dict[str, Any]: ...


class SpaceDirectory(Protocol):
    """The spaces this device belongs to, as the agent needs them."""

    def default_space(self) -> str: ...
    def resolve(self, text: str) -> str: ...
    def name(self, space: str) -> str: ...
    def public_key(self, space: str, device: str, env: str, seq: int) -> bytes | None: ...
    def judge(self, space: str, device: str, env: str, seq: int) -> Verdict: ...
    def tag(self, space: str, env: str) -> str: ...
    def check_share(self, space: str, env_count: int, env_bytes: int) -> str | None: ...
    def check_size(self, space: str, env_bytes: int) -> str | None: ...
    def member_name(self, space: str, device: str) -> str | None: ...


FileSig = tuple[int, int, int]


def file_sig(path: Path) -> FileSig | None:
    """Which version of a file is there: (inode, mtime ns, size); None when absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class QuotaError(MocksyncError):
    code = "quota"


def compact_size(doc: dict[str, Any]) -> int:
    """Size used by quotas: bytes of the environment as compact JSON (docs/design/cli.md "Plans")."""
    from ..model.jsfmt import COMPACT_LAYOUT

    return len(dumps(doc, COMPACT_LAYOUT).encode("utf-8"))


#: JavaScript's compact JSON of a document is at most this many times the size of the
#: standard library's C-encoded one: they differ only in number formats (worst: Python's
#: `1e+20` is JavaScript's `100000000000000000000`, 4.2x) and in lone surrogates (escaped,
#: 2x). So a document whose C size times this fits a limit fits it exactly too.
JS_SIZE_BOUND = 5


def quick_compact_size(doc: dict[str, Any]) -> int:
    """A fast stand-in for `compact_size` (C encoder, ~5x faster on a 200 KB environment);
    `compact_size(doc) <= JS_SIZE_BOUND * quick_compact_size(doc)`."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


class Agent:
    def __init__(
        self,
        home: Home,
        settings: Settings,
        identity: Any,
        spaces: SpaceDirectory,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home.ensure()
        self.settings = settings
        self.identity = identity
        self.device = identity.device_id
        self.spaces = spaces
        self.transport = transport
        self.clock = clock
        self.folder = Path(settings.folder).expanduser().resolve()
        self.store = Store(home.log_db)
        self.registry = Registry(home.docs)
        #: Environments the `prompt` offline policy holds for keep-local/discard-local.
        self.holds = HoldBook(self.registry.db)
        self.blind = BlindWindow(settings.blind_window_s)
        self.history = VersionHistory()
        #: Per file: (sha256, entity views) of the version the editor last had, so a save's
        #: diff against it need not flatten that version again.
        self._views: dict[Path, tuple[str, Any]] = {}
        #: Per file: its last version parsed, so the next save is parsed as what it changed
        #: (`model.reparse`: a one-property save of 15 MB costs a text compare, issue 15).
        self._parsed: dict[Path, ParsedEnv] = {}
        #: Per environment: the version vector each recent version of its file reflects (by
        #: content hash), so a save is stamped with what its editor had seen (issue 11 item 8).
        self._seen = SeenVersions()
        #: What this device's user is editing, as `who` shows it everywhere (issue 11 item 6).
        self.presence = PresenceBook()
        self._presence_handle: asyncio.TimerHandle | None = None
        self.envs: dict[str, EnvRuntime] = {}
        self.local: dict[Path, LocalFile] = {}
        self.watcher: FolderWatcher | None = None
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.started_at = clock()
        self._rng = random.Random()
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The thread that does heavy store work (remote ingest, big renders and writes) in
        #: arrival order, off the loop (issue 12); loop code that changes the store takes a
        #: turn on it. None until `start` (an Agent used without a loop works as before).
        self.worker: StoreWorker | None = None
        self._loop_thread: int | None = None
        #: Files the environments link to (FILE bodies, TLS files): issue #7.
        self.linked = LinkedFiles(self)
        #: Environments whose last upload the relay refused (a quota), with its sentence:
        #: shown as held, never as synced, until an upload of theirs is accepted again.
        self.relay_refusals: dict[str, str] = {}
        #: Writes, commits and stores that fail for reasons of the machine (disk full, no
        #: permission, I/O error, read-only): shown as `error` and retried with backoff by
        #: themselves (issue 13), each with its pending retry.
        self.faults = FaultBook()
        self._fault_handles: dict[tuple[str, str], asyncio.TimerHandle] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.worker = StoreWorker()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()
        self.watcher = FolderWatcher(
            self.folder, step_ms=self.settings.watch_step_ms,
            debounce_ms=self.settings.watch_debounce_ms,
        )
        await self.watcher.start()
        for rec in self.registry.all():
            self.envs[rec.uuid] = EnvRuntime(rec.uuid, rec.space, Path(rec.file), name=rec.name)
        self.enforce_membership()  # removals learned while this daemon was not running
        self.scan()
        self._tasks.append(asyncio.create_task(self._watch_loop(), name="watch"))
        if self.transport is not None:
            await self.transport.start(self)

    def _remove_stale_temps(self) -> None:
        """Temp files of ours left by a daemon killed mid-write (before its rename): never a
        version of anything (the target still holds the old or the new bytes), only litter
        in the user's folder. The home lock makes this daemon their only possible writer."""
        for p in self.folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    log.info("removed %s, left by an interrupted write", p.name)

    async def stop(self) -> None:
        if self.transport is not None:
            await self.transport.stop()
        if self.worker is not None:
            await self.worker.close()  # jobs taken are finished; what follows runs here
        for rt in self.envs.values():
            if rt.write_handle is not None:
                rt.write_handle.cancel()
                rt.write_handle = None
                self._write_env(rt, force=True)  # flush held writes: nothing acknowledged is lost
        for (env, what), handle in list(self._fault_handles.items()):
            handle.cancel()  # a failing write gets one last try; the rest waits for the restart
            self._fault_handles.pop((env, what), None)
            if what == WRITING and env in self.envs:
                self._write_env(self.envs[env], force=True)
        for handle in self._fault_handles.values():
            handle.cancel()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.watcher is not None:
            await self.watcher.stop()
        self.store.close()

    def publish(self, event: dict[str, Any]) -> None:
        event.setdefault("time", self.clock())
        if self._to_loop(self.publish, event):
            return  # listeners (control streams, transports) live on the loop
        for fn in list(self.listeners):
            try:
                fn(event)
            except Exception:  # a broken listener must not break the daemon
                log.exception("event listener failed")

    # ------------------------------------------------------------------ folder -> log
    def scan(self) -> None:
        """Look at every environment file (start-up, `reconnect`): catch edits made while down."""
        seen: set[Path] = set()
        for p in sorted(self.folder.glob("*.json")):
            # A symlink is keyed by its target only when that stays in the folder (issue 13).
            p = folder_path(self.folder, p)
            if p.name.startswith(".") or self.linked.tracks(p):
                continue  # (a fixture named *.json is a linked file, not an environment)
            seen.add(p)
            self.on_file(p, initial=True)
        for rt in list(self.envs.values()):
            if rt.path not in seen and rt.state != MISSING:
                if self.store.get_base(rt.uuid) is None and self.store.has_env(rt.uuid):
                    # Never written on this device (held by the migration gate, or the daemon
                    # stopped before its first write): no file was deleted, so it is not
                    # `missing`; write it now, or hold it again if it still may not be.
                    self.schedule_write(rt)
                else:
                    self._mark_missing(rt)
            elif rt.path in seen and self.store.has_env(rt.uuid):
                self._ensure_written(rt)

    async def _watch_loop(self) -> None:
        assert self.watcher is not None
        async for ev in self.watcher.events():
            try:
                async with self.store_turn():
                    self.handle_event(ev)
            except Exception:
                log.exception("handling %s failed", ev)

    # ------------------------------------------------------------------ threads
    def _off_loop(self) -> bool:
        """Is this code running on another thread than the loop's (the store worker)?"""
        return self._loop_thread is not None and threading.get_ident() != self._loop_thread

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Off the loop: queue `fn(*args)` to run on the loop (in call order) and return
        True; on the loop: False, and the caller goes on. For what is loop-bound: timers,
        transports, event listeners."""
        if not self._off_loop() or self._loop is None or self._loop.is_closed():
            return False
        self._loop.call_soon_threadsafe(fn, *args)
        return True

    def store_turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Exclusive use of the store for loop code (waits for the job on the store worker,
        never blocking the loop); a no-op without a worker."""
        if self.worker is None:
            return contextlib.nullcontext()
        return self.worker.turn()

    def _spawn_on_worker(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run `fn(*args)` as a store-worker job, in order after those queued (a failure is
        logged); False when there is no worker to run it on, or we already are on it (the
        caller then runs it itself)."""
        worker = self.worker
        if worker is None or self._loop is None or self._off_loop() or worker.closed:
            return False

        async def job() -> None:
            try:
                await worker.run(fn, *args)
            except Exception:
                log.exception("store job %s failed", getattr(fn, "__name__", fn))

        task = self._loop.create_task(job(), name=f"store:{getattr(fn, '__name__', 'job')}")
        self._tasks = [t for t in self._tasks if not t.done()] + [task]
        return True

    def handle_event(self, ev: FileEvent) -> None:
        if self.linked.on_event(ev):
            return
        path = folder_path(self.folder, Path(ev.path))
        if ev.kind == "deleted":
            self.local.pop(path, None)
            rt = self._by_path(path)
            if rt is not None:
                self._mark_missing(rt)
            return
        if ev.kind == "renamed" and ev.old_path is not None:
            old = folder_path(self.folder, Path(ev.old_path))
            self.local.pop(old, None)
            rt = self._by_path(old)
            if rt is not None:
                rt.path = path
                self.history.forget(old)
                self._views.pop(old, None)
                self._parsed.pop(old, None)
                self.registry.put(EnvRecord(rt.uuid, rt.space, str(path), rt.name))
                self.publish({"event": "renamed", "env": rt.uuid, "file": str(path)})
        self.on_file(path)

    def _by_path(self, path: Path) -> EnvRuntime | None:
        for rt in self.envs.values():
            if rt.path == path:
                return rt
        return None

    def _mark_missing(self, rt: EnvRuntime) -> None:
        copy = next((lf for lf in self.local.values() if lf.uuid == rt.uuid), None)
        if copy is not None and copy.path.exists():
            # A rename seen as two steps (the new name written first, the old one removed
            # later, as `cp` + `rm` or some editors do): the environment lives on there.
            self.local.pop(copy.path, None)
            rt.state, rt.path = SYNCED, copy.path
            self.registry.put(EnvRecord(rt.uuid, rt.space, str(rt.path), rt.name))
            self.publish({"event": "renamed", "env": rt.uuid, "file": str(rt.path)})
            self.on_file(rt.path)
            return
        rt.state = MISSING
        rt.reason = (
            f"the file {rt.path.name} was deleted on this device; the team still has it. "
            f"Run `mocksync restore {rt.uuid}` to get it back, or `mocksync delete {rt.uuid}` "
            "to remove it for everyone"
        )
        self.publish({"event": "missing", "env": rt.uuid, "file": str(rt.path)})

    def _read(self, path: Path) -> bytes | None:
        return self._read_sig(path)[0]

    def _read_sig(self, path: Path) -> tuple[bytes | None, FileSig | None]:
        """The file's bytes and the identity of the version read (inode, mtime, size).

        Through `folderread.read_regular` (issue 13): only a regular file beneath the folder
        is read, never blocking; anything else raises `SkippedFile` with its sentence."""
        got = read_regular(path, folder=self.folder, max_bytes=MAX_FILE_BYTES)
        if got is None:
            return None, None
        return got.data, got.sig

    def on_file(self, path: Path, *, initial: bool = False) -> None:
        """A file in the folder appeared or changed."""
        try:
            data, sig = self._read_sig(path)
        except SkippedFile as exc:
            self._skipped(path, exc)
            return
        except (OSError, ValidationError) as exc:
            self.local[path] = LocalFile(path, valid=False, reason=str(exc))
            return
        if data is None:
            return
        rt = self._by_path(path)
        try:
            parsed = parse_env(data, self.settings.mockoon_max_migration,
                               previous=self._parsed.get(path))
            self._parsed[path] = parsed
        except ValidationError as exc:
            if rt is not None:
                rt.file_sig = sig
                rt.state, rt.reason = INVALID, f"{exc}; the last good version is kept and synced"
                self.publish({"event": "invalid", "env": rt.uuid, "reason": str(exc)})
            else:
                self.local[path] = LocalFile(path, valid=False, reason=str(exc))
            return
        if rt is None:
            rt = self.envs.get(parsed.uuid)
            if rt is not None and rt.state == MISSING:
                rt.path = path  # the file came back (or under another name)
                self.registry.put(EnvRecord(rt.uuid, rt.space, str(path), rt.name))
            elif rt is not None and rt.path != path:
                # A second file with a synced uuid (a copy): not synced, and say why.
                self.local[path] = LocalFile(path, parsed.uuid, parsed.name, valid=False, reason=(
                    f"same uuid as the synced {rt.path.name}; use `mocksync share {path.name} "
                    "--copy` to sync it as a separate environment"))
                return
        if rt is None:
            self.local[path] = LocalFile(path, parsed.uuid, parsed.name)
            return
        self.local.pop(path, None)
        rt.file_sig = sig
        if parsed.uuid != rt.uuid:
            rt.state = INVALID
            rt.reason = (f"the file now holds environment {parsed.uuid}, not the synced {rt.uuid}; "
                         "put the synced environment back or `mocksync unshare` it")
            return
        try:
            self._local_edit(rt, parsed, data, initial=initial)
        except RecursionError:  # a value nested hundreds deep that the JSON parser still took
            from ..model.limits import too_deep

            rt.state, rt.reason = INVALID, (f"the file holds {too_deep()}; the last good "
                                            "version is kept and synced")
            self.publish({"event": "invalid", "env": rt.uuid, "reason": rt.reason})
        except sqlite3.Error as exc:
            # The log could not take the save (the home's disk full, read-only, I/O error):
            # the file keeps it; retried by itself, and taken in once the log can (issue 13).
            if not self._failed(rt, COMMITTING, exc, "home"):
                raise
        else:
            self._recovered(rt.uuid, COMMITTING)

    def _skipped(self, path: Path, exc: SkippedFile) -> None:
        """A folder file that is never read (FIFO, device, socket, symlink out of the folder,
        unreadable): named in `status` at once. A synced environment's file turned into one
        keeps the last good version synced, as an invalid file does."""
        rt = self._by_path(path)
        if rt is None:
            self.local[path] = LocalFile(path, valid=False, skipped=True, reason=exc.skip.reason)
            return
        rt.state, rt.reason = INVALID, f"{exc.skip.reason}; the last good version is kept and synced"
        self.publish({"event": "invalid", "env": rt.uuid, "reason": exc.skip.reason})

    def _local_edit(self, rt: EnvRuntime, parsed: ParsedEnv, data: bytes, *, initial: bool) -> None:
        now = self.clock()
        sha = content_hash(data)
        if not initial:
            self.blind.note_editor_save(rt.path, now)
        state = self.store.state(rt.uuid)
        base = self.store.get_base(rt.uuid)
        tied: list[str] = []
        if base is not None and base[1] == sha:
            ops: list[tuple] = []
            tied = [sha]
        else:
            candidates: list[tuple[str, Any]] = []
            if initial:
                # A crash between committing a save and recording its base (or between
                # writing a file and recording it) leaves a file that the state already
                # holds: against the state it is no edit, while the old base would commit
                # the same ops a second time. First in the list, so ties go to the base.
                candidates.append(("state", render(state)))
            known = self.history.candidates(rt.path)
            if base is not None and all(label != base[1] for label, _ in known):
                # Parse the stored base only when the history does not hold that version
                # already (it does in a running daemon): one parse and one diff less a save.
                with contextlib.suppress(ValidationError):
                    candidates.append(("base", parse_env(base[2], 10**9).doc))
            candidates += known
            if not candidates:
                candidates = [("state", render(state))]
            if len(candidates) == 1:
                label, base_doc = candidates[0]
                tied = [label]
            else:
                docs = dict(candidates)
                tied = tied_bases(parsed.doc, candidates, lambda a, b: len(
                    diff(a, b, state, self._rng, new_views=parsed.views)))
                label = tied[0]
                base_doc = docs[label]
            cached = self._views.get(rt.path)
            ops = diff(base_doc, parsed.doc, state, self._rng, new_views=parsed.views,
                       base_views=cached[1] if cached and cached[0] == label else None)
        seen = self._seen_by_editor(rt.uuid, tied, base[1] if base is not None else None)
        refusal = self._peer_refusal(parsed.views, ops) if ops else None
        if refusal is not None:  # a value peers would refuse (model.limits): never sent
            rt.state, rt.reason = INVALID, f"{refusal}; the last good version is kept and synced"
            self.publish({"event": "invalid", "env": rt.uuid, "reason": refusal})
            return
        if ops:
            problem = self._size_problem(rt.space, parsed.doc)
            if problem:
                rt.state, rt.reason = HELD, problem + "; this edit is not synced until it fits"
                self.publish({"event": "held", "env": rt.uuid, "reason": rt.reason})
                return
            cs = self._commit(rt, ops, seen=seen)
            rt.last_local_edit = now
            if not initial:  # an editor's save: its user is editing this environment
                self.presence.saved(rt.space, rt.uuid, now)
                self.push_presence()
            seen = None if seen is None else {**seen, self.device: cs.seq}
        seen_now = seen if seen is not None else self.store.version_vector(rt.uuid)
        self._seen.put(rt.uuid, sha, seen_now)
        rt.layout = parsed.layout
        rt.name = parsed.name or rt.name
        rt.state, rt.reason = SYNCED, ""
        # With what it reflects: the first save after a restart is stamped with it too.
        self.store.set_base(rt.uuid, str(rt.path), sha, data, seen=seen_now)
        self.history.note_loaded(rt.path, sha, parsed.doc)
        if parsed.views is not None:
            self._views[rt.path] = (sha, parsed.views)
        if render(state) != parsed.doc:
            self.schedule_write(rt)
        self.linked.after_local_edit(rt)  # fixtures and TLS files it links (issue #7)

    def _seen_by_editor(self, env: str, labels: list[str], base_sha: str | None,
                        ) -> dict[str, int] | None:
        """The version vector a save was made against: what every base it may stem from
        holds ("state": all applied; "base": the stored base; else a version's hash). After
        a restart the stored base's is read from the store (kept with it); None when one of
        them is not known at all: the save then claims the log."""
        vvs = []
        for label in labels:
            if label == "state":
                vvs.append(self.store.version_vector(env))
                continue
            sha = base_sha if label == "base" else label
            vv = self._seen.get(env, sha)
            if vv is None and sha is not None:
                vv = self.store.base_seen(env, sha)
            if vv is None:
                return None
            vvs.append(vv)
        return meet(vvs) if vvs else None

    def tell_presence(self, looking: Looking) -> None:
        """An editor plugin said what its user is looking at (`presence` control call)."""
        self.presence.told(looking, self.clock())
        self.push_presence()

    def push_presence(self) -> None:
        """Send this device's presence to every transport when it changed, and come back
        when a save ages out of "editing" (the decision is `PresenceBook`'s)."""
        if self._loop is None:
            return  # not running: nothing to tell, nobody to tell it to
        if self._to_loop(self.push_presence):
            return
        now = self.clock()
        looking = self.presence.update(now)
        if looking is not None and self.transport is not None \
                and hasattr(self.transport, "set_presence"):
            self.transport.set_presence(space=looking.space, env=looking.env,
                                        entity=looking.entity, editor=looking.editor)
        if self._presence_handle is not None:
            self._presence_handle.cancel()
            self._presence_handle = None
        due = self.presence.next_change(now)
        if due is not None:
            self._presence_handle = self._loop.call_later(max(0.0, due - now) + 0.05,
                                                          self.push_presence)

    @staticmethod
    def _peer_refusal(views: dict[str, Any] | None, ops: list[tuple]) -> str | None:
        """Why peers would refuse the ops of this save (the very check they run on it,
        `validate_ops`), naming the place in the file; None when they would accept them."""
        from ..model import to_wire, validate_ops
        from ..model.ops import BadOpError

        try:
            validate_ops([to_wire(op) for op in ops])
        except BadOpError as exc:
            op = ops[exc.index] if 0 <= exc.index < len(ops) else None
            view = views.get(op[1]) if op is not None and views else None
            where = f"{view.path or 'the environment'}: " if view is not None else ""
            return f"{where}{exc}; peers would refuse this edit"
        return None

    def _size_problem(self, space: str, doc: dict[str, Any]) -> str | None:
        """The plan's refusal for an environment of this size, or None. Checked on every
        save, so the exact (slow) size is computed only when the fast bound is not enough.
        The synced files it links count toward the size (issue #7), and the refusal says so."""
        n_files, files_bytes = self.linked.quota_bytes(doc)
        if self.spaces.check_size(
                space, JS_SIZE_BOUND * quick_compact_size(doc) + files_bytes) is None:
            return None
        problem = self.spaces.check_size(space, compact_size(doc) + files_bytes)
        return None if problem is None else quota_reason(problem, n_files, files_bytes)

    def _commit(self, rt: EnvRuntime, ops: list[tuple],
                seen: dict[str, int] | None = None) -> Any:
        """Commit our own edit and send it. `seen`: the version vector of what the edit was
        made against, when older than the log (an editor's save); None: all of it."""
        t0 = time.perf_counter()
        cs, res = self.store.commit_local(
            self.identity.signing_key, space=rt.space, env=rt.uuid, device=self.device,
            ops=ops, now_ms=int(self.clock() * 1000), seen=seen,
        )
        wire = cs.encode()
        # (held: sent on resolve; from the store worker: the transport is the loop's)
        if self.transport is not None and rt.uuid not in self.holds \
                and not self._to_loop(self.transport.broadcast, rt.space, rt.uuid, wire):
            self.transport.broadcast(rt.space, rt.uuid, wire)
        self.publish({"event": "change", "origin": "local", "env": rt.uuid, "device": self.device,
                      "seq": cs.seq, "ops": len(ops), "bytes": len(wire),
                      "commit_ms": round((time.perf_counter() - t0) * 1000, 3),
                      "conflicts": len(res.conflicts)})
        return cs

    # ------------------------------------------------------------------ log -> folder
    async def receive_async(self, space: str, wire: bytes) -> Any:
        """`receive` on the store worker, after every change set handed over before it: the
        loop only awaits the result, so a peer's big or many change sets never hold it."""
        if self.worker is None or self.worker.closed:
            return self.receive(space, wire)
        return await self.worker.run(self.receive, space, wire)

    async def receive_batch_async(self, space: str, wires: list[bytes], *, settle: bool = True,
                                  ) -> tuple[Any, list[tuple[Any, Exception]]]:
        """`receive_batch` on the store worker, in order (see `receive_async`)."""
        if self.worker is None or self.worker.closed:
            return self.receive_batch(space, wires, settle=settle)
        return await self.worker.run(partial(self.receive_batch, settle=settle), space, wires)

    async def settle_remote_async(self, space: str, envs: set[str]) -> None:
        """`settle_remote` on the store worker (adopting a big environment renders it)."""
        if self.worker is None or self.worker.closed:
            self.settle_remote(space, envs)
            return
        await self.worker.run(self.settle_remote, space, envs)

    def receive(self, space: str, wire: bytes) -> Any:
        """A change set from another device. Raises the store's refusal on bad input."""
        cs = self._decode_for(space, wire)
        try:
            res = self.store.ingest(cs, self._author_key(space, cs), int(self.clock() * 1000))
        except MocksyncError as exc:
            self._note_refused(cs, exc)
            raise
        except sqlite3.Error as exc:
            self._store_failed({cs.env}, exc)
            raise
        self._recovered(cs.env, RECEIVING)
        for c in res.applied:
            self.publish({"event": "change", "origin": "remote", "env": c.env,
                          "device": c.device, "seq": c.seq, "ops": len(c.ops)})
        self._after_remote(space, res)
        return res

    def _note_refused(self, cs: Any, exc: Exception) -> None:
        """Keep a refused change set's reason so `status` can say why the environment cannot
        sync (`agent.health`), whether it came over the LAN or from the relay. Refusals the
        store or the membership check already recorded are not recorded twice."""
        from ..changes.changeset import SignatureError
        from ..store.log import EquivocationError, UnknownDeviceError
        from .health import FORGED

        if cs is None or isinstance(exc, EquivocationError | UnknownDeviceError):
            return
        reason = f"{FORGED}{exc}" if isinstance(exc, SignatureError) else str(exc)
        with contextlib.suppress(Exception):  # a full disk must not hide the refusal itself
            self.store.refuse(cs, reason, int(self.clock() * 1000))

    def _health(self, rt: EnvRuntime) -> dict[str, Any]:
        """`blocked` (and why) when refused or quarantined change sets stop `rt` syncing, and
        the refusals to list (`agent.health`)."""
        from .health import BLOCKED, sync_health

        st = self.spaces.get(rt.space)
        active = set(st.state.devices) if st is not None else set()
        rows = self.store.refusals(rt.uuid)
        held = self.store.quarantined(rt.uuid)
        if not rows and not held:
            return {"refused": []}
        names = {d: n for d in {r["device"] for r in rows} | {q[0] for q in held}
                 if (n := self.spaces.member_name(rt.space, d))}
        h = sync_health(self.store.version_vector(rt.uuid), rows, held,
                        now_ms=int(self.clock() * 1000), active=active, names=names)
        out: dict[str, Any] = {"refused": h.refused}
        if h.blocked is not None and rt.state in (SYNCED, "syncing"):
            out |= {"state": BLOCKED, "reason": h.blocked}
        return out

    def _author_key(self, space: str, cs: Any) -> bytes | None:
        """The key to verify `cs` with, when its author may write it (`space.writers`, the
        relay's decision too); None when not, after recording a final refusal (a removed
        device past its cut) so `status` lists it. A device we do not know may be one whose
        addition has not reached us yet: refused now (the store says so), not listed."""
        verdict = self.spaces.judge(space, cs.device, cs.env, cs.seq)
        if not verdict.accept and verdict.code != NOT_A_DEVICE:
            self.store.refuse(cs, verdict.reason, int(self.clock() * 1000))
        return verdict.sign_key if verdict.accept else None

    def enforce_membership_soon(self) -> None:
        """`enforce_membership` as a store-worker job (a rebuild can be big), in order with
        the ingests queued before it; at once when there is no worker."""
        if not self._spawn_on_worker(self.enforce_membership):
            self.enforce_membership()

    def enforce_membership(self) -> int:
        """Take back change sets that a removal now refuses and rewrite their files; returns
        how many were taken back.

        A member may have applied a removed device's change set before it learned of the
        removal (it arrived over the LAN, or from the relay before the removal did); the
        removal's cut says it is refused everywhere, so this member rebuilds the environment
        without it (`space.writers.overreach`, `Store.revoke`) and ends where every other
        member is. Run whenever membership may have changed: at start, when the CLI pokes the
        daemon after `remove`, and when entries arrive from the relay."""
        spaces_of = getattr(self.spaces, "spaces", None)
        if spaces_of is None:
            return 0
        now = int(self.clock() * 1000)
        revoked = 0
        by_space = {sp.space_id: sp for sp in spaces_of() if sp.state.removed_devices}
        if not by_space:
            return 0
        for env in self.store.envs():
            sp = by_space.get(self.store.head_space(env) or "")
            if sp is None:
                continue
            over = overreach(sp.state, self.spaces.tag(sp.space_id, env), self.store.held_seqs(env))
            taken: list[tuple[str, list[int]]] = []
            for device, (cut, reason) in over.items():
                if device == self.device:
                    continue  # removed ourselves: our own edits stay here, they just sync no more
                seqs = self.store.revoke(env, device, cut, reason, now)
                if seqs:
                    taken.append((device, seqs))
            for device, seqs in taken:
                revoked += len(seqs)
                log.warning("env %s: took back %d change set(s) of removed device %s (after "
                            "#%d)", env, len(seqs), device, seqs[0] - 1)
                self.publish({"event": "revoked", "env": env, "device": device, "seqs": seqs})
            if taken:
                self.settle_remote(sp.space_id, {env})
        return revoked

    @staticmethod
    def _decode_for(space: str, wire: bytes) -> Any:
        from ..changes import ChangeSet

        # A transport may hand over a change set it decoded off the loop already.
        cs = wire if isinstance(wire, ChangeSet) else ChangeSet.decode(wire)
        if cs.space != space:
            raise ValidationError(f"change set for space {cs.space} arrived on space {space}")
        return cs

    def _after_remote(self, space: str, res: Any, *, settle: bool = True) -> None:
        """Files to (re)write and conflicts to announce after change sets from others.
        `settle=False`: announce only; the caller settles the files with `settle_remote`."""
        if settle:
            self.settle_remote(space, {c.env for c in res.applied})
        for c in res.conflicts:
            self.publish({"event": "conflict", "env": c.env, "id": c.id,
                          "entity": c.entity, "field": list(c.field)})

    def settle_remote(self, space: str, envs: set[str]) -> None:
        """Give the files of `envs` what their logs now say: adopt an environment a teammate
        shared, apply an unshare/delete, or schedule the write of remote edits.

        A relay catch-up calls this once an environment's pull is complete, not per page: a
        device that pulls a whole log (a new member, a device that never had it) must not
        adopt an environment whose tombstone is still in a later page."""
        for env in sorted(envs):
            rt = self.envs.get(env) or self._adopt_remote(space, env)
            if rt is not None:
                rt.last_remote_edit = self.clock()
                if not self._lifecycle(rt):
                    self.schedule_write(rt)

    def receive_batch(self, space: str, wires: list[bytes], *, settle: bool = True,
                      ) -> tuple[Any, list[tuple[Any, Exception]]]:
        """Many change sets at once (relay catch-up): one store transaction, one write per env.

        Returns the store's result and the refused change sets with why, so the transport can
        report each refusal while the rest is applied. `settle=False`: one page of a longer
        pull; the caller calls `settle_remote` for the envs it touched once the pull is done.
        """
        items = []
        errors: list[tuple[Any, Exception]] = []
        for wire in wires:
            try:
                cs = self._decode_for(space, wire)
            except MocksyncError as exc:
                errors.append((None, exc))
                continue
            items.append((cs, self._author_key(space, cs)))
        try:
            res, refused = self.store.ingest_batch(items, int(self.clock() * 1000))
        except sqlite3.Error as exc:
            self._store_failed({cs.env for cs, _key in items}, exc)
            raise  # not stored, so not acknowledged: fetched again by `_refetch`
        for env in {cs.env for cs, _key in items}:
            self._recovered(env, RECEIVING)
        errors += refused
        for cs, exc in refused:
            self._note_refused(cs, exc)
        if res.applied:
            self.publish({"event": "change", "origin": "remote", "batch": len(res.applied),
                          "envs": sorted({c.env for c in res.applied})})
        self._after_remote(space, res, settle=settle)
        return res, errors

    def _adopt_remote(self, space: str, env: str) -> EnvRuntime | None:
        """An environment shared by a teammate arrives: give it a file in our folder."""
        state = self.store.state(env)
        ent = state.entity(env)
        if ent is None or not ent.live:
            return None  # not renderable yet (its first change set has not arrived)
        if ent.get(LIFECYCLE, SHARED) != SHARED:
            return None
        doc = render(state)
        # The sharer's file name when it is safe and free here (model/sharedname.py).
        path = self._free_path(str(doc.get("name") or env), wanted=ent.get(FILE_NAME, None))
        rt = EnvRuntime(env, space, path, name=str(doc.get("name", "")))
        self.envs[env] = rt
        self.registry.put(EnvRecord(env, space, str(path), rt.name))
        self.publish({"event": "shared", "env": env, "file": str(path), "origin": "remote"})
        return rt

    def _free_path(self, name: str, wanted: Any = None) -> Path:
        """A new file name directly in the folder for an environment: `wanted` (the sharer's
        file name) when it passes `shared_name_problem` and is free, else one made from `name`
        by `env_file_stem` (no separator, no hidden name). Never one that exists, not even as
        a dangling symlink (it would be written through), nor another environment's file,
        nor a name the watcher ignores."""
        from .watcher import is_environment_name

        def free(candidate: str) -> bool:
            p = self.folder / candidate
            return (is_environment_name(candidate) and not os.path.lexists(p)
                    and self._by_path(p) is None)

        return self.folder / choose_file_name(wanted, name, free)

    def _lifecycle(self, rt: EnvRuntime) -> bool:
        """Apply unshare/delete decided by a teammate. True when the env left the space."""
        ent = self.store.state(rt.uuid).entity(rt.uuid)
        value = ent.get(LIFECYCLE, SHARED) if ent is not None else SHARED
        if value == SHARED:
            return False
        if value == DELETED and rt.path.exists():
            self._write_env(rt, force=True)
            self.home.trash.mkdir(exist_ok=True)
            stamp = int(self.clock())
            dest = self.home.trash / f"{stamp}-{rt.path.name}"
            n = 2
            while dest.exists():  # two deletes of same-named files in one second: keep both
                dest = self.home.trash / f"{stamp}-{n}-{rt.path.name}"
                n += 1
            shutil.move(str(rt.path), dest)
            self.publish({"event": "deleted", "env": rt.uuid, "trash": str(dest)})
        else:
            self._write_env(rt, force=True)
            self.publish({"event": "unshared", "env": rt.uuid, "file": str(rt.path)})
        self._forget(rt)
        if rt.path.exists():
            # Now a local file: list it as one (as a local `unshare` does), not nowhere.
            self.on_file(rt.path, initial=True)
        return True

    def _forget(self, rt: EnvRuntime) -> None:
        if rt.write_handle is not None:
            rt.write_handle.cancel()
        self.envs.pop(rt.uuid, None)
        self.relay_refusals.pop(rt.uuid, None)
        self.faults.forget(rt.uuid)
        for key in [k for k in self._fault_handles if k[0] == rt.uuid]:
            self._fault_handles.pop(key).cancel()
        self.holds.remove(rt.uuid)
        self.registry.remove(rt.uuid)
        self.store.retire_env(rt.uuid)  # keeps the log: the tombstone must travel and stay
        self.history.forget(rt.path)
        self._views.pop(rt.path, None)
        self._parsed.pop(rt.path, None)
        self._seen.forget(rt.uuid)
        self.presence.forget(rt.uuid)

    def schedule_write(self, rt: EnvRuntime) -> None:
        if rt.uuid in self.holds:
            return  # the `prompt` policy: the file waits for keep-local/discard-local
        self.linked.after_remote(rt)  # linked files are written at once (no editor holds them)
        if self._to_loop(self._schedule_write_timer, rt):
            return  # (from the store worker: timers are the loop's)
        self._schedule_write_timer(rt)

    def _schedule_write_timer(self, rt: EnvRuntime) -> None:
        """Write `rt`'s file once its editor can see the change (docs/design/merge.md "Editors and the file": blind window)."""
        now = self.clock()
        due = max(now, self.blind.write_not_before(rt.path))
        if rt.write_handle is not None:
            if rt.write_due >= due:
                return
            rt.write_handle.cancel()
        rt.write_due = due
        loop = self._loop or asyncio.get_event_loop()
        rt.write_handle = loop.call_later(max(0.0, due - now), self._write_due, rt)

    def _write_due(self, rt: EnvRuntime) -> None:
        """A scheduled write: render and write on the store worker (a 15 MB environment's
        render, patch, fsync and base take far longer than a loop may be held, issue 15),
        in order after the ingest that asked for it."""
        if not self._spawn_on_worker(self._write_env, rt):
            self._write_env(rt)

    def _ensure_written(self, rt: EnvRuntime) -> None:
        if rt.state in (SYNCED,) and self.store.has_env(rt.uuid):
            doc = render(self.store.state(rt.uuid))
            try:
                on_disk = parse_env(self._read_sig(rt.path)[0] or b"", 10**9).doc
            except (OSError, ValidationError):
                return
            if on_disk != doc:
                self.schedule_write(rt)

    def _write_env(self, rt: EnvRuntime, force: bool = False, *, _raced: int = 0) -> None:
        rt.write_handle = None
        if rt.uuid not in self.envs or rt.state == MISSING:
            return
        if rt.uuid in self.holds and not force:
            return
        now = self.clock()
        if not force and not self.blind.can_write(rt.path, now):
            self.schedule_write(rt)
            return
        state = self.store.state(rt.uuid)
        doc = render(state)
        lm = doc.get("lastMigration")
        if isinstance(lm, int) and lm > self.settings.mockoon_max_migration:
            rt.state = HELD
            rt.reason = (f"held unwritten: a teammate's Mockoon saved migration {lm}, newer than "
                         f"the {self.settings.mockoon_max_migration} this device's Mockoon reads "
                         "(setting mockoon_max_migration); update Mockoon")
            return
        try:
            current, sig = self._read_sig(rt.path)
        except (OSError, ValidationError):
            current, sig = None, None
        if not force and None not in (sig, rt.file_sig) and sig != rt.file_sig:
            # The file was replaced since we last read or wrote it and the watcher has not
            # told us yet: an editor's save, maybe of the very bytes we wrote (Mockoon saves
            # again right after a reload). Take it in first: that starts the editor's blind
            # period, and the write is rescheduled after it if still needed.
            self.on_file(rt.path)
            return
        base = self.store.get_base(rt.uuid)
        if current is not None and base is not None and content_hash(current) != base[1] \
                and self.history.find(rt.path, content_hash(current)) is None:
            # An edit we have not processed yet: take it in first, never overwrite it.
            self.on_file(rt.path)
            return
        if isinstance(doc.get("name"), str):
            rt.name = doc["name"]
        layout = rt.layout if rt.layout else MOCKOON_LAYOUT
        # The file's own layout is kept: only the spans of changed values are replaced, and a
        # file that already holds the document is not rewritten (issue 15, model/spans.py).
        text = text_to_write(current, doc, layout, state.text_cache.setdefault(layout, {}))
        data = current if text is None and current is not None else (text or "").encode("utf-8")
        try:
            if current == data:
                self.store.set_base(rt.uuid, str(rt.path), content_hash(data), data)
                self._seen.put(rt.uuid, content_hash(data), self.store.version_vector(rt.uuid))
                self._recovered(rt.uuid, WRITING)
                return
            # Compare-before-replace (issue 13): the file is replaced only if it is still the
            # version read above; `replace_file` checks right before its rename, after the
            # slow part (render, temp write, fsync), so an editor save can slip in only in the
            # microseconds between that check and the rename, not in the whole write.
            expect = (Expected(sig, content_hash(current)) if current is not None
                      and sig is not None else Expected.absent())
            self._put_file(rt, data, doc, expect=expect)
        except FileChangedError:
            # The editor saved while this version was rendered and written: nothing was
            # replaced. Take its save in (a local edit, merged with the team's); the write
            # follows once the editor's blind window has passed. A forced write (stop,
            # unshare, delete) is tried again at once, with the save now merged in.
            log.info("%s was saved while the daemon wrote it; taking the save in first",
                     rt.path.name)
            self.publish({"event": "write_raced", "env": rt.uuid, "file": str(rt.path)})
            self.on_file(rt.path)
            if force and _raced < MAX_FORCED_RACES:
                if rt.write_handle is not None:
                    rt.write_handle.cancel()
                self._write_env(rt, force=True, _raced=_raced + 1)
            return
        except (FileWriteError, OSError, sqlite3.Error) as exc:
            where = "home" if isinstance(exc, sqlite3.Error) else "folder"
            if not self._failed(rt, WRITING, exc, where):
                raise
            return
        self._recovered(rt.uuid, WRITING)
        if rt.state in (HELD, INVALID) and not force:
            rt.state, rt.reason = SYNCED, ""
        self.publish({"event": "written", "env": rt.uuid, "file": str(rt.path), "bytes": len(data)})

    def _put_file(self, rt: EnvRuntime, data: bytes, doc: dict[str, Any],
                  expect: Expected | None = None) -> None:
        """Write an environment's file atomically and remember it as what the editor sees.
        With `expect`, only over that version of the file (else `FileChangedError`)."""
        sha = content_hash(data)
        if self.watcher is not None:
            self.watcher.expect_write(rt.path, sha)
        try:
            written = replace_file(rt.path, data, expect=expect)
        except BaseException:
            if self.watcher is not None:
                self.watcher.withdraw_write(rt.path, sha)  # never landed: a save may match it
            raise
        # The written version's identity from the temp file itself: a stat after the rename
        # could already see an editor's next save and take it for ours.
        rt.file_sig = written.sig
        self.history.record_write(rt.path, sha, doc)
        self.store.set_base(rt.uuid, str(rt.path), sha, data)
        self._seen.put(rt.uuid, sha, self.store.version_vector(rt.uuid))

    # ------------------------------------------------------------------ write failures
    def _failed(self, rt: EnvRuntime, what: str, exc: BaseException, where: str) -> bool:
        """A write, commit or store of `rt` failed. When the machine is the cause (disk full,
        no permission, I/O error, read-only; `faults.classify`): record it (`status` shows
        `error` with the sentence), log the real cause, retry by itself with backoff, and
        return True. Anything else (a bug) is not swallowed: False."""
        fault = classify(exc, where)
        if fault is None:
            return False
        if self._to_loop(self._failed, rt, what, exc, where):
            return True  # (on the store worker: recorded and retried from the loop)
        now = self.clock()
        delay = self.faults.failed(rt.uuid, what, fault, now, self._rng.uniform(-1.0, 1.0))
        log.warning("%s %s %s: %s; retrying in %.1f s", fault.kind, what, rt.path.name,
                    fault.cause, delay)
        key = (rt.uuid, what)
        old = self._fault_handles.pop(key, None)
        if old is not None:
            old.cancel()
        if self._loop is not None and not self._loop.is_closed():
            self._fault_handles[key] = self._loop.call_later(delay, self._retry_fault, *key)
        self.publish({"event": "error", "env": rt.uuid, "what": what, "kind": fault.kind,
                      "cause": fault.cause, "retry_s": round(delay, 2)})
        return True

    def _recovered(self, env: str, what: str) -> None:
        """`what` of `env` worked: forget its failure (if any) and its pending retry."""
        if self._to_loop(self._recovered, env, what):
            return
        gone = self.faults.cleared(env, what)
        handle = self._fault_handles.pop((env, what), None)
        if handle is not None:
            handle.cancel()
        if gone is not None:
            log.info("%s %s works again after %d failures", what, env, gone.retry.failures)
            self.publish({"event": "recovered", "env": env, "what": what})

    def _retry_fault(self, env: str, what: str) -> None:
        """The backoff of a failing operation is over: try it again (on the store worker,
        in order with the ingests and writes queued there)."""
        if self._spawn_on_worker(self._retry_fault, env, what):
            return
        self._fault_handles.pop((env, what), None)
        rt = self.envs.get(env)
        if rt is None:
            self.faults.cleared(env, what)
            return
        try:
            if what == WRITING:
                self._write_env(rt)
            elif what == COMMITTING:
                # Taken in as at start-up: the file holds the save the log could not take.
                self.on_file(rt.path, initial=True)
            elif what == RECEIVING:
                self._refetch(rt)
        except Exception:
            log.exception("retrying %s %s failed", what, rt.path.name)

    def _refetch(self, rt: EnvRuntime) -> None:
        """Change sets the log could not store were not acknowledged to anyone: once the log
        takes writes again, ask the transports for everything again (a catch-up), as
        `mocksync reconnect` would; until then, back off further."""
        try:
            self.store.check_writable()
        except sqlite3.Error as exc:
            if not self._failed(rt, RECEIVING, exc, "home"):
                raise
            return
        self._recovered(rt.uuid, RECEIVING)  # a catch-up that fails again records it again
        if self.transport is not None and hasattr(self.transport, "reconnect") \
                and self._loop is not None and not self._to_loop(self._start_refetch):
            self._start_refetch()

    def _start_refetch(self) -> None:
        assert self._loop is not None and self.transport is not None
        task = self._loop.create_task(self.transport.reconnect(), name="refetch")
        self._tasks = [t for t in self._tasks if not t.done()] + [task]

    def _store_failed(self, envs: set[str], exc: sqlite3.Error) -> None:
        """The log could not store change sets from others: `error` on each environment
        (retried by a catch-up with backoff); logged with the real cause either way."""
        known = [self.envs[e] for e in sorted(envs) if e in self.envs]
        if not any([self._failed(rt, RECEIVING, exc, "home") for rt in known]):
            log.warning("could not store change sets of %s: %s", ", ".join(sorted(envs)), exc)

    def _fault_view(self, rt: EnvRuntime) -> dict[str, Any]:
        """`status` overlay: `error` with its sentence while a write or commit keeps failing."""
        return self.faults.view(rt.uuid, rt.path.name, str(self.home.root), self.clock())

    # ------------------------------------------------------------------ commands
    def all_envs(self) -> list[dict[str, Any]]:
        out = [rt.to_json(len(self.store.conflicts(rt.uuid))) | self._hold_view(rt)
               | self.linked.status(rt) | self._health(rt) | self._fault_view(rt)
               for rt in list(self.envs.values())]  # (a snapshot: the store worker may add)
        for rt in out:
            rt["space_name"] = self.spaces.name(rt["space"])
        out += [lf.to_json() for lf in list(self.local.values())]
        return sorted(out, key=lambda d: d["file"] or "")

    def share(self, file: str, space: str | None = None, copy: bool = False) -> dict[str, Any]:
        from .sharing import fresh_copy

        path = Path(file).expanduser()
        if not path.is_absolute():
            path = self.folder / path
        path = path.resolve()
        if path.parent != self.folder:
            raise ValidationError(f"{path} is not in the synced folder {self.folder}; move it there first")
        data, sig = self._read_sig(path)
        if data is None:
            raise ValidationError(f"{path}: no such file")
        parsed = parse_env(data, self.settings.mockoon_max_migration)
        space_id = self.spaces.resolve(space) if space else self.spaces.default_space()
        doc = parsed.doc
        if copy:
            doc = fresh_copy(doc, self._rng)
            path = self._free_path(f"{path.stem}-copy")
        elif parsed.uuid in self.envs:
            raise ValidationError(f"{path.name} is already synced (space {self.spaces.name(self.envs[parsed.uuid].space)})")
        elif self.store.has_env(parsed.uuid):
            refusal = reshare_refusal(self.store.state(parsed.uuid), path.name)
            if refusal:  # unshared or deleted: the uuid is retired (model/lifecycle.py)
                raise ValidationError(refusal)
        self._check_share_quota(space_id, doc)
        # The file name travels with the first change set (encrypted like every op), so
        # teammates' devices keep it when it is free there (model/sharedname.py).
        ops = snapshot_ops(doc, self._rng) + [("s", doc["uuid"], FILE_NAME, path.name)]
        refusal = self._peer_refusal(parsed.views, ops)
        if refusal is not None:  # checked before anything is recorded: nothing changes
            raise ValidationError(f"{path.name}: {refusal}")
        rt = EnvRuntime(doc["uuid"], space_id, path, name=str(doc.get("name", "")),
                        layout=parsed.layout, file_sig=None if copy else sig)
        self.envs[rt.uuid] = rt
        self.registry.put(EnvRecord(rt.uuid, space_id, str(path), rt.name))
        self._commit(rt, ops)
        if copy:
            self._write_env(rt, force=True)
        elif text_to_write(data, render(self.store.state(rt.uuid)), parsed.layout) is not None:
            self.schedule_write(rt)  # normalisation changed it: written once the editor can see
        else:
            self.store.set_base(rt.uuid, str(path), content_hash(data), data)
        self.local.pop(path, None)
        self.linked.after_local_edit(rt)
        self.publish({"event": "shared", "env": rt.uuid, "file": str(path), "origin": "local"})
        return rt.to_json(0) | {"space_name": self.spaces.name(space_id)}

    def new(self, name: str, space: str | None = None) -> dict[str, Any]:
        from .sharing import new_environment

        ports = set()
        for d in self.all_envs():
            with contextlib.suppress(OSError, ValidationError, KeyError):
                ports.add(parse_env(self._read_sig(Path(d["file"]))[0] or b"",
                                    10**9).doc.get("port"))
        doc = new_environment(name, self._rng, used_ports=ports)
        path = self._free_path(name)
        data = dumps(doc, MOCKOON_LAYOUT).encode("utf-8")
        space_id = self.spaces.resolve(space) if space else self.spaces.default_space()
        self._check_share_quota(space_id, doc)  # before a file is written for nothing
        if self.watcher is not None:
            self.watcher.expect_write(path, content_hash(data))
        atomic_write(path, data)
        return self.share(str(path), space)

    def _check_share_quota(self, space_id: str, doc: dict[str, Any]) -> None:
        """Refuse sharing `doc` into a space over its plan (linked files count, issue #7)."""
        in_space = sum(1 for rt in self.envs.values() if rt.space == space_id)
        n_files, files_bytes = self.linked.quota_bytes(doc)
        problem = self.spaces.check_share(space_id, in_space, compact_size(doc) + files_bytes)
        if problem:
            raise QuotaError(quota_reason(problem, n_files, files_bytes))

    def find(self, text: str) -> EnvRuntime:
        from .registry import UnknownEnvironment, resolve_env

        cands = [rt.to_json(0) for rt in self.envs.values()]
        hit = resolve_env(text, cands + [lf.to_json() for lf in self.local.values() if lf.uuid])
        rt = self.envs.get(hit["uuid"])
        if rt is None:
            raise UnknownEnvironment(f"{hit['file']} is a local environment, not synced "
                                     f"(share it with `mocksync share {hit['file']}`)")
        return rt

    def _set_lifecycle(self, rt: EnvRuntime, value: str) -> None:
        self._commit(rt, [("s", rt.uuid, LIFECYCLE, value)])

    def unshare(self, text: str) -> dict[str, Any]:
        rt = self.find(text)
        self._set_lifecycle(rt, UNSHARED)
        self._write_env(rt, force=True)
        out = {"uuid": rt.uuid, "file": str(rt.path), "state": "local"}
        self._forget(rt)
        self.on_file(rt.path, initial=True)
        return out

    def delete(self, text: str) -> dict[str, Any]:
        rt = self.find(text)
        self._set_lifecycle(rt, DELETED)
        out = {"uuid": rt.uuid, "file": str(rt.path), "state": "local",
               "note": "left the space; other devices move their copy to their trash"}
        if rt.state != MISSING:
            self._write_env(rt, force=True)
        self._forget(rt)
        if rt.path.exists():
            self.on_file(rt.path, initial=True)
        return out

    def restore(self, text: str) -> dict[str, Any]:
        rt = self.find(text)
        if rt.state != MISSING and rt.path.exists():
            return {"uuid": rt.uuid, "file": str(rt.path), "restored": False}
        rt.state, rt.reason = SYNCED, ""
        doc = render(self.store.state(rt.uuid))
        self._put_file(rt, dumps(doc, rt.layout).encode("utf-8"), doc)
        return {"uuid": rt.uuid, "file": str(rt.path), "restored": True}

    def conflicts(self, text: str | None = None) -> list[dict[str, Any]]:
        from ..model.merge import describe_entity

        env = self.find(text).uuid if text else None
        out = self.store.conflicts(env)
        for c in out:
            st = self.store.state(c["env"])
            c["where"] = describe_entity(st, c["entity"])
            if c.get("parent"):  # work a delete dropped (issue 15): say what was deleted
                c["what"] = ("put in " if c["field"][0] == "#parent" else "names ") + \
                    describe_entity(st, c["parent"]) + ", deleted meanwhile"
            self.linked.present_conflict(c)  # a linked file: its path; hashes, never bytes
        return out

    def resolve_conflict(self, conflict_id: str, take: str) -> dict[str, Any]:
        hits = [c for c in self.store.conflicts() if c["id"] == conflict_id
                or c["id"].startswith(conflict_id)]
        if not hits:
            raise ValidationError(f"no open conflict {conflict_id!r} (see `mocksync conflicts`)")
        if len(hits) > 1:
            raise ValidationError(f"{conflict_id!r} matches {len(hits)} conflicts; give more of the id")
        c = hits[0]
        rt = self.envs.get(c["env"])
        if rt is None:
            raise ValidationError(f"environment {c['env']} is no longer synced")
        mine = c["loser"]["device"] == self.device
        # "ours" is the side this device wrote, or the current winner when it wrote neither.
        want_loser = (take == "ours") if mine else (take == "theirs")
        # The resolution is an ordinary change set written after seeing both sides: applied
        # anywhere, it empties the register's frontier (or brings back what a delete
        # dropped: the parent with the addition), so the conflict clears on every device.
        ops = resolution_ops(self.store.state(rt.uuid), c, want_loser, self._rng)
        changed = want_loser
        if ops:
            self._commit(rt, ops)
        if changed:
            self.schedule_write(rt)
        if any(x["id"] == c["id"] for x in self.store.conflicts(c["env"])):
            self.store.mark_resolved(c["env"], c["id"])  # (older logs: dismissed here only)
        return {"id": c["id"], "took": take, "changed": changed}

    # ------------------------------------------------------------------ offline policy
    def offline_cut(self, env: str) -> int | None:
        """While `env` is held by the `prompt` policy: the last of our own change sets the
        team has (ours after it are not sent to anyone); None when it is not held."""
        return self.holds.cut(env)

    def offline_catch_up(self, env: str, relay_vv: dict[str, int]) -> str:
        """A relay catch-up is about to take `env` in (call it before pulling): what the
        reconnect means (offline.decide); under the `prompt` policy, when both sides changed
        the environment, hold it: file unwritten, our change sets unsent."""
        decision = decide(self.device, self.store.version_vector(env), relay_vv)
        rt = self.envs.get(env)
        if (rt is not None and env not in self.holds
                and should_hold(self.settings.offline_policy, decision)):
            self.holds.put(Hold(env, int(relay_vv.get(self.device, 0)), self.clock()))
            if rt.write_handle is not None:
                rt.write_handle.cancel()
                rt.write_handle = None
            self.publish({"event": "held", "env": env, "reason": self._hold_view(rt)["reason"]})
        return decision

    def upload_refused(self, env: str, reason: str) -> None:
        """The relay refused this environment's change sets (transport hook): say so."""
        if env in self.envs and self.relay_refusals.get(env) != reason:
            self.relay_refusals[env] = reason
            self.publish({"event": "held", "env": env, "reason": reason})

    def upload_accepted(self, env: str) -> None:
        """The relay took this environment's change sets again (transport hook)."""
        self.relay_refusals.pop(env, None)

    def _hold_view(self, rt: EnvRuntime) -> dict[str, Any]:
        """What `status` shows instead of the runtime state while the env is held."""
        refused = self.relay_refusals.get(rt.uuid)
        if refused is not None and rt.uuid not in self.holds and rt.state == SYNCED:
            return {"state": HELD, "reason": (
                f"{refused}; the relay does not take it, so teammates do not get this "
                "environment's edits through it until it fits")}
        if rt.uuid not in self.holds:
            return {}
        return {"state": HELD, "reason": held_reason(rt.name or rt.path.name,
                                                     shlex.quote(rt.path.name))}

    def resolve_offline(self, text: str, keep_local: bool) -> dict[str, Any]:
        """`mocksync resolve ENV --keep-local|--discard-local` for an environment the `prompt`
        policy holds. Everything is checked before anything changes."""
        rt = self.find(text)
        hold = self.holds.get(rt.uuid)
        if hold is None:
            raise ValidationError(
                f"{rt.path.name} is not waiting for a keep-local/discard-local decision: only an "
                "environment held by the `prompt` offline policy (state `held` in `mocksync "
                "status`) is; see `mocksync conflicts` for what merged over what")
        state = self.store.state(rt.uuid)
        parsed: ParsedEnv | None = None
        local_data: bytes | None = None
        if keep_local:
            local_data = self._read(rt.path)
            if local_data is None:
                raise ValidationError(
                    f"{rt.path.name} is not on this device, so there is no local version to "
                    f"keep; `mocksync resolve {rt.uuid} --discard-local` takes the team's")
            try:
                parsed = parse_env(local_data, self.settings.mockoon_max_migration)
            except ValidationError as exc:
                raise ValidationError(f"cannot keep {rt.path.name}: {exc}; fix the file and "
                                      "retry, or use --discard-local") from None
            if parsed.uuid != rt.uuid:
                raise ValidationError(
                    f"cannot keep {rt.path.name}: it now holds environment {parsed.uuid}, not "
                    f"{rt.uuid}; put the environment back, or use --discard-local")
            problem = self._size_problem(rt.space, parsed.doc)
            if problem:
                raise QuotaError(f"cannot keep {rt.path.name}: {problem}")
            target = parsed.doc
        else:
            log_sets = (cs for cs, _received in self.store.log(rt.uuid))
            target = render(team_state(rt.uuid, log_sets, self.device, hold.cut))
        ops = diff(render(state), target, state, self._rng)
        ops += recreated(state, ops)  # what the chosen side has and the other deleted
        trash = None if keep_local else self._trash_copy(rt)
        if ops:
            self._commit(rt, ops)  # still held: sent below, in order, with the others
        # The conflicts the decision answers that its edit did not clear (the decided side
        # already held the register): the decided value written again, having seen both
        # sides, as `resolve ID` does, so they clear on every device, not only here.
        keep = [op for c in self.store.conflicts(rt.uuid)
                if settled_by_decision(c, self.device, hold.cut)
                for op in resolution_ops(state, c, False, self._rng)]
        if keep:
            self._commit(rt, keep)
        self.holds.remove(rt.uuid)
        sent = self._send_held(rt, hold.cut)
        for c in self.store.conflicts(rt.uuid):
            if settled_by_decision(c, self.device, hold.cut):
                self.store.mark_resolved(rt.uuid, c["id"])  # (none left unless refused)
        if parsed is not None and local_data is not None:
            # The file is the version the editor has: a later save is diffed against it.
            sha = content_hash(local_data)
            self.store.set_base(rt.uuid, str(rt.path), sha, local_data)
            self.history.note_loaded(rt.path, sha, parsed.doc)
            rt.layout = parsed.layout
            if rt.state == HELD:
                rt.state, rt.reason = SYNCED, ""
        self.schedule_write(rt)
        kept = "local" if keep_local else "team"
        self.publish({"event": "resolved_offline", "env": rt.uuid, "kept": kept,
                      "ops": len(ops), "sent": sent})
        return {"uuid": rt.uuid, "file": str(rt.path), "kept": kept, "changed": bool(ops),
                "ops": len(ops), "sent": sent, "trash": str(trash) if trash else None}

    def _trash_copy(self, rt: EnvRuntime) -> Path | None:
        """Keep this device's file (the version being discarded) in the recoverable trash."""
        self.home.trash.mkdir(exist_ok=True)
        stamp = int(self.clock())
        dest = self.home.trash / f"{stamp}-{rt.path.name}"
        n = 2
        while dest.exists():
            dest = self.home.trash / f"{stamp}-{n}-{rt.path.name}"
            n += 1
        if rt.path.is_file():
            shutil.copy2(rt.path, dest)
            return dest
        base = self.store.get_base(rt.uuid)  # the file is gone: keep what the editor last had
        if base is None:
            return None
        dest.write_bytes(base[2])
        return dest

    def _send_held(self, rt: EnvRuntime, cut: int) -> int:
        """Send our change sets the hold kept back (seq order, so peers apply them at once)."""
        if self.transport is None:
            return 0
        vv = self.store.version_vector(rt.uuid)
        wires = self.store.wires_missing(rt.uuid, vv | {self.device: cut})
        for wire in wires:
            self.transport.broadcast(rt.space, rt.uuid, wire)
        return len(wires)

    def change_log(self, text: str) -> list[dict[str, Any]]:
        from ..model import validate_ops

        rt = self.find(text)
        out = []
        for cs, received in self.store.log(rt.uuid):
            ops = validate_ops(list(cs.ops))
            kinds: dict[str, int] = {}
            for op in ops:
                kinds[op[0]] = kinds.get(op[0], 0) + 1
            names = {"c": "created", "s": "set", "x": "unset", "d": "deleted"}
            summary = ", ".join(f"{n} {names[k]}" for k, n in kinds.items())
            from ..changes import physical_ms

            out.append({"device": cs.device, "member": self.spaces.member_name(rt.space, cs.device),
                        "seq": cs.seq, "hlc": cs.hlc, "time": physical_ms(cs.hlc) / 1000,
                        "received": received / 1000, "ops": len(ops), "summary": summary})
        return out

    def status(self) -> dict[str, Any]:
        tstat = self.transport.status() if self.transport is not None else {}
        return {
            "device": {"id": self.device, "name": self.identity.name},
            "daemon": {"running": True, "version": __version__, "folder": str(self.folder),
                       "pid": __import__("os").getpid(), "protocol": PROTOCOL_VERSION,
                       "model": MODEL_VERSION, "uptime_s": round(self.clock() - self.started_at, 1)},
            "relay": tstat.get("relay", {"url": self.settings.relay,
                                         "state": "offline" if self.settings.relay else "none",
                                         "reason": None if self.settings.relay else
                                         "no relay configured"}),
            "peers": tstat.get("peers", []),
            "progress": tstat.get("progress", []),  # catch-ups in flight (agent/progress.py)
            "environments": self.all_envs(),
            "rejected": self.store.rejected(10),
        }
