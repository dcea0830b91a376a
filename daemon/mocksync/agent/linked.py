"""Linked files on disk (issue #7): read them, commit them, write the team's versions back.

The decisions are `model.files` (which paths may be synced, what to do with each file given
the team's, the disk's and the last-synced hash); this module is the thin, careful I/O around
them, owned by the Agent:

- after a local edit of an environment, a share, `adopt`, a start-up scan, or a change of a
  linked file itself, each synced linked file is read and, when its sha256 differs from the
  state's, committed as an ordinary change set (several small files per change set, a big one
  alone); nothing is re-sent while the hash is unchanged;
- after a remote change (and `resolve`), the team's versions are written atomically, with
  their mode (0600 for TLS private keys), creating subfolders as needed. A remote change
  never commits anything, so a device catching up never pushes a stale copy over the team's;
- per file, the hash this device last had in sync (`seen`, kept in the docs file) tells a
  local edit from a remote one, and a local edit made while a teammate's version was on its
  way wins and records the teammate's version as a conflict;
- docs/design/security.md §8: a linked path that leaves the folder, or a symlink pointing outside it, is
  never read and never written; a file from a peer is checked (size, base64, sha256) before
  it is written; file contents and key bytes are never logged or shown (`summary`);
- issue #12, files from peers are written only where the environment model says
  (`judge_peer_file`: a path this environment links, no part starting with `.`, never an
  exec bit), never through a symlink (`writer.write_beneath`, openat-style, re-checked right
  before the rename) and never over a local file this device never synced (a conflict);
  every refused one is named in `status` with its reason (`peer_file_refusals`).

Watching: environment-named files (`*.json`) directly in the folder come from the folder
watcher; everything else is polled by `stat` every `poll_s` seconds. Why not
`FolderWatcher.add_file` for fixtures in subfolders: it rebuilds the OS watch, and a rebuild
with a watched file's folder gone (a deleted `fixtures/`) stops the whole folder watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import shlex
import shutil
import stat
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..agentevents import AgentEvent, Held, LinkedRemoved, LinkedWritten
from ..errors import MocksyncError, ValidationError
from ..model import Op, diff, render
from ..model.envsize import size_refusal
from ..model.files import (
    CONFLICT,
    CONTENT_REG,
    FILE,
    HELD,
    INVALID,
    LINKED_BATCH_BYTES,
    MAX_LINKED_FILE_BYTES,
    MISSING,
    OUTSIDE,
    PENDING,
    REFUSED,
    SYNCED,
    TOO_LARGE,
    UNCONFIRMED,
    UNREAD,
    Action,
    Link,
    content_value,
    create_op,
    decide,
    decode_content,
    file_entities,
    file_mode,
    judge_local_file,
    judge_peer_file,
    link_watch,
    linked_by,
    linked_here,
    linked_paths_memo,
    linked_paths_of_state,
    links_touched,
    peer_file_refusals,
    plan_links,
    private_rels,
    quota_reason,
    relink_ops,
    set_op,
    shown_path,
    summary,
    team_marker,
    tls_registers,
)
from ..model.state import State
from .errors import QuotaRefusal, SkippedFile, UnsafePathError
from .folderread import open_regular, read_regular
from .watcher import is_environment_name
from .writer import check_beneath, content_hash, write_beneath

if TYPE_CHECKING:
    import random

    from tinydb import TinyDB

    from ..store import Store
    from .envfiles import EnvRuntime
    from .watcher import FolderWatcher

log = logging.getLogger("mocksync.linked")

#: How often linked files that the folder watcher does not report are checked (stat only).
LINKED_POLL_S = 0.5
#: TinyDB table (in the docs file) of the hash each linked file last had in sync, per env.
SEEN_TABLE = "linked_seen"

FileSig = tuple[int, int, int]


class LinkedHost(Protocol):
    """What linked files need from the daemon (the Agent satisfies it): the folder and its
    watcher, the log, the synced environments by path or uuid, and the few actions a
    linked file's sync takes (commit, quota check, a write of its environment, an event).
    Narrow on purpose: linked files never touch the agent's other parts or private state."""

    folder: Path
    watcher: FolderWatcher | None
    device: str  # this device's id: whose edit linked a path (`model.files.linked_by`)
    store: Store
    rng: random.Random

    @property
    def trash(self) -> Path: ...
    def clock(self) -> float: ...
    def env_at(self, path: Path) -> EnvRuntime | None: ...
    def env(self, uuid: str) -> EnvRuntime | None: ...
    def is_held(self, uuid: str) -> bool: ...
    def find(self, text: str) -> EnvRuntime: ...
    def forget_local(self, path: Path) -> None: ...
    def commit(self, rt: EnvRuntime, ops: Sequence[Op],
               seen: dict[str, int] | None = None) -> Any: ...
    def size_problem(self, space: str, doc: dict[str, Any]) -> str | None: ...
    def check_size(self, space: str, env_bytes: int) -> str | None: ...
    def schedule_write(self, rt: EnvRuntime) -> None: ...
    def publish(self, event: AgentEvent) -> None: ...
    def spawn(self, task: asyncio.Task[Any]) -> None: ...
    def to_loop(self, fn: Callable[..., Any], *args: Any) -> bool: ...
    def spawn_on_worker(self, fn: Callable[..., Any], *args: Any) -> bool: ...
    def store_turn(self) -> contextlib.AbstractAsyncContextManager[None]: ...


@dataclass
class Disk:
    """What is on disk at a linked path (never holds the bytes unless asked)."""

    sha: str | None = None  # None: no file
    size: int = 0
    mode: int = 0
    data: bytes | None = None
    problem: tuple[str, str] | None = None  # (link state, reason): never read nor written


def _inside(path: str | Path, folder: Path) -> bool:
    p = str(path)
    f = str(folder)
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


def _realpath(path: Path, dirs: dict[Path, str]) -> str:
    """`os.path.realpath(path)`, with the real path of its folder memoised in `dirs`: only
    the last component is looked at (followed the usual way when it is a symlink)."""
    if path.name in ("", ".", ".."):
        return os.path.realpath(path)
    real_parent = dirs.get(path.parent)
    if real_parent is None:
        real_parent = dirs[path.parent] = os.path.realpath(path.parent)
    joined = os.path.join(real_parent, path.name)
    try:
        if stat.S_ISLNK(os.lstat(joined).st_mode):
            return os.path.realpath(joined)
    except OSError:
        pass  # absent (or unreadable): realpath would give the same joined path
    return joined


def _stat_inside(path: Path, dirs: dict[Path, str], folder: Path) -> os.stat_result | None:
    """`os.stat` of `path` when its real path is inside `folder` (else, or when it is not
    there, None): `_realpath` and the stat in one `lstat` for the usual case, a plain file
    (a save of an environment linking a thousand files checks them all, issue 15)."""
    if path.name in ("", ".", ".."):
        real = os.path.realpath(path)
        st = None
    else:
        real_parent = dirs.get(path.parent)
        if real_parent is None:
            real_parent = dirs[path.parent] = os.path.realpath(path.parent)
        real = os.path.join(real_parent, path.name)
        try:
            st = os.lstat(real)
        except OSError:
            return None  # absent or unreadable: nothing to count
        if stat.S_ISLNK(st.st_mode):
            real, st = os.path.realpath(real), None
    if not _inside(real, folder):
        return None
    if st is None:
        try:
            st = os.stat(real)
        except OSError:
            return None
    return st


#: Environments whose last sized document's route references `quota_bytes` keeps.
MAX_DOC_REF_MEMOS = 64
#: `status` answers on the event loop: it walks an environment's State for its linked
#: files there only up to this many entities (a few milliseconds), or, for a State not in
#: memory, a file up to this size; bigger ones are walked on the store worker (issue 15).
MAX_LOOP_WALK_ENTITIES = 3_000
MAX_LOOP_WALK_BYTES = 1_000_000


@dataclass
class _LinkView:
    """What one State says about linked files (its references and file entities), made at
    its touch number `mark`, kept while the State's later touches cannot change it
    (`files.links_touched`); `seq` names this view (a new one each time it is made)."""

    state: weakref.ReferenceType[State]
    mark: int
    refs: list[Any]
    files: dict[str, Any]
    watched: frozenset[str]
    tls: tuple[Any, ...]
    seq: int
    #: Every live file entity (valid or not: `status` names a teammate's refused ones).
    live_files: list[Any] = dataclass_field(default_factory=list)
    #: `plan_links(refs, label)` by label (a plan normalises every path: ~50 us a link).
    plans: dict[str, list[Link]] = dataclass_field(default_factory=dict)

    def planned(self, label: str = "ENV") -> list[Link]:
        links = self.plans.get(label)
        if links is None:
            links = self.plans[label] = plan_links(self.refs, label)
        return links


def _sig(st: os.stat_result) -> FileSig:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class LinkedFiles:
    def __init__(self, host: LinkedHost, db: TinyDB, *, poll_s: float = LINKED_POLL_S) -> None:
        self.host = host
        self.poll_s = poll_s
        self.table = db.table(SEEN_TABLE)
        self._seen: dict[str, dict[str, str]] = {}
        #: Per env: linked paths whose file this device had in sync until it was deleted
        #: (here or by the team) while still linked: a file made there again may be sent
        #: (`judge_local_file`'s `had`). Only paths linked now are kept (at most
        #: MAX_LINKED_FILES per env); kept in the same docs row as `seen`.
        self._had: dict[str, set[str]] = {}
        for d in self.table.all():
            if isinstance(d.get("env"), str) and isinstance(d.get("seen"), dict):
                self._seen[d["env"]] = {k: v for k, v in d["seen"].items()
                                        if isinstance(k, str) and isinstance(v, str)}
                had = d.get("had")
                self._had[d["env"]] = {r for r in had if isinstance(r, str)} if isinstance(
                    had, list) else set()
        #: Hash cache: path -> (signature, sha256) of the last read.
        self._hashes: dict[Path, tuple[FileSig, str]] = {}
        #: Signature (None: absent) of each tracked path as the poll last saw it (and as our
        #: own writes left it); only the poll and our writes change it.
        self._sigs: dict[Path, FileSig | None] = {}
        #: Tracked absolute paths -> {env uuid: relative path}.
        self._tracked: dict[Path, dict[str, str]] = {}
        #: Problems met while syncing: (env, rel) -> (link state, reason).
        self._problems: dict[tuple[str, str], tuple[str, str]] = {}
        self._task: asyncio.Task[None] | None = None
        #: Per env: what `status` derives from the State alone (file entities, the planned
        #: links, teammates' refused files), by (store generation, label, seen hashes): a walk
        #: of a 15 MB environment is ~200 ms, far too much for every `status` (issue 12).
        self._plans: dict[str, tuple[tuple[Any, ...], Any, Any, list[dict[str, Any]],
                                     set[str]]] = {}
        #: Per env: the State's linked-file view (`_view`), and the view a whole
        #: `reconcile` last ran on: a teammate's change that cannot touch a link (nearly
        #: all of them) then costs no walk of the environment and no stat of its files.
        self._views: dict[str, _LinkView] = {}
        self._view_seq = 0
        self._reconciled: dict[tuple[str, bool], int] = {}
        #: Environments whose `status` plan is being made on the store worker.
        self._replanning: set[str] = set()
        #: Per env: the references of each route of the last document sized
        #: (`files.linked_paths_memo`): a save's quota check looks into one route; and
        #: that document's references with their plan.
        self._doc_refs: dict[str, dict[int, tuple[Any, list[Any]]]] = {}
        self._doc_plans: dict[str, tuple[list[Any], list[Link]]] = {}

    def _view(self, env: str, state: State) -> _LinkView:
        """The linked-file view of `state` (see `_LinkView`), made again only when a touch
        since the last one may have changed it."""
        v = self._kept_view(env, state)
        if v is not None:
            return v
        mark = state.touches  # (read before the walk: a touch meanwhile is seen next time)
        refs = linked_paths_of_state(state)
        self._view_seq += 1
        v = _LinkView(weakref.ref(state), mark, refs, file_entities(state),
                      link_watch(state, refs), tls_registers(state), self._view_seq,
                      live_files=list(state.live(FILE)))
        self._views[env] = v
        return v

    def _kept_view(self, env: str, state: State) -> _LinkView | None:
        """The view of `state` when the one kept is still right (steps: the entities touched
        since), else None: making it again walks the whole environment."""
        v = self._views.get(env)
        if v is None or v.state() is not state:
            return None
        touched = state.touched_since(v.mark)
        if touched and links_touched(state, touched, v.watched, v.tls):
            return None
        v.mark = state.touches
        return v

    @property
    def folder(self) -> Path:
        return self.host.folder

    # ------------------------------------------------------------------ hooks (Agent)
    def tracks(self, path: Path) -> bool:
        """Is `path` a linked file of some synced environment (not an environment itself)?"""
        return path in self._tracked and self.host.env_at(path) is None

    def on_event(self, ev: Any) -> bool:
        """A folder-watcher event; True when it was about a linked file (handled here)."""
        handled = False
        for p in (ev.path, getattr(ev, "old_path", None)):
            if p is None:
                continue
            path = Path(p)
            if self.tracks(path):
                self._changed_on_disk(path)
                handled = handled or path == Path(ev.path)
        return handled

    def after_local_edit(self, rt: EnvRuntime) -> None:
        """An environment was saved, shared or scanned here: commit changed linked files."""
        self._guarded(rt, local=True)

    def after_remote(self, rt: EnvRuntime) -> None:
        """The state changed (a teammate, or `resolve`): write the team's versions."""
        self._guarded(rt, local=False)

    def _guarded(self, rt: EnvRuntime, *, local: bool, only: set[str] | None = None) -> None:
        try:
            self.reconcile(rt, local=local, only=only)
        except Exception:  # a linked file must never break the environment's own sync
            log.exception("linked files of %s: sync failed", rt.uuid)

    # ------------------------------------------------------------------ quotas
    def quota_bytes(self, doc: dict[str, Any], *,
                    sending: frozenset[str] = frozenset()) -> tuple[int, int]:
        """(count, bytes) of the synced linked files `doc` names, as on disk now. Not those
        held back as UNCONFIRMED (never sent, so a teammate who links a big local file of
        ours cannot hold our own edits over the quota), unless named in `sending`."""
        env = doc.get("uuid") if isinstance(doc, dict) else None
        skip = {rel for (e, rel), (state, _why) in self._problems.items()
                if e == env and state == UNCONFIRMED} - sending
        n = total = 0
        dirs: dict[Path, str] = {}  # folders' real paths, for this pass (issue 15)
        memo = None
        if isinstance(env, str):
            memo = self._doc_refs.pop(env, None) or {}
            self._doc_refs[env] = memo  # (re-inserted last: the oldest is dropped first)
            while len(self._doc_refs) > MAX_DOC_REF_MEMOS:
                del self._doc_refs[next(iter(self._doc_refs))]
        refs = linked_paths_memo(doc, memo)
        hit = self._doc_plans.get(env) if isinstance(env, str) else None
        if hit is not None and hit[0] == refs:
            links = hit[1]
        else:
            links = plan_links(refs)
            if isinstance(env, str):
                self._doc_plans[env] = (refs, links)
                while len(self._doc_plans) > MAX_DOC_REF_MEMOS:
                    del self._doc_plans[next(iter(self._doc_plans))]
        for lk in links:
            if lk.state != SYNCED or lk.rel is None or lk.rel in skip:
                continue
            st = _stat_inside(self.folder / lk.rel, dirs, self.folder)
            if st is not None and stat.S_ISREG(st.st_mode) and st.st_size <= MAX_LINKED_FILE_BYTES:
                n += 1
                total += st.st_size
        return n, total

    # ------------------------------------------------------------------ disk
    def _probe(self, rel: str, *, want_bytes: bool = False, read: bool = True,
               dirs: dict[Path, str] | None = None) -> Disk:
        """What is on disk at `rel`. `dirs`: a memo of folders' real paths for one pass over
        many links (the links of an environment share a few folders); the last component
        is always looked at itself, so a symlink there is still followed and judged.
        `read=False`: only stat it (sha UNREAD when a file is there), never open it."""
        p = self.folder / rel
        real = Path(_realpath(p, dirs) if dirs is not None else os.path.realpath(p))
        if not _inside(real, self.folder):
            return Disk(problem=(OUTSIDE, (
                f"not synced: {rel} is a symlink pointing outside the synced folder, so it is "
                "never read or written; put the file itself there")))
        if self.host.env_at(real) is not None:
            return Disk(problem=(INVALID, f"not synced: {rel} is a synced environment file"))
        try:
            st = os.stat(real)
        except FileNotFoundError:
            return Disk()
        except OSError as exc:
            return Disk(problem=(INVALID, f"cannot read {rel}: {exc.strerror or exc}"))
        if not stat.S_ISREG(st.st_mode):
            return Disk(problem=(INVALID, f"not synced: {rel} is not a regular file"))
        if st.st_size > MAX_LINKED_FILE_BYTES:
            from ..units import human_bytes

            return Disk(problem=(TOO_LARGE, (
                f"not synced: {rel} is {human_bytes(st.st_size)}; linked files are synced up "
                f"to {human_bytes(MAX_LINKED_FILE_BYTES)}")))
        if not read:  # `judge_local_file` said no: the file is there, never opened (#12)
            return Disk(UNREAD, st.st_size, st.st_mode)
        cached = self._hashes.get(p)
        if cached is not None and cached[0] == _sig(st) and not want_bytes:
            return Disk(cached[1], st.st_size, st.st_mode)
        try:
            # folderread: the one way folder files are read (regular only, never blocking).
            with open_regular(real, folder=self.folder) as opened:
                if opened is None:
                    return Disk()
                fd, fst = opened
                if fst.st_size > MAX_LINKED_FILE_BYTES:
                    return Disk(problem=(INVALID, f"{rel} changed while it was read; retrying"))
                chunks: list[bytes] = []
                left = MAX_LINKED_FILE_BYTES + 1
                while left > 0:
                    chunk = os.read(fd, min(left, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
        except SkippedFile as exc:
            return Disk(problem=(INVALID, exc.skip.reason))
        except OSError as exc:
            return Disk(problem=(INVALID, f"cannot read {rel}: {exc.strerror or exc}"))
        data = b"".join(chunks)
        if len(data) > MAX_LINKED_FILE_BYTES:
            return Disk(problem=(TOO_LARGE, f"not synced: {rel} grew over the limit while read"))
        sha = content_hash(data)
        self._hashes[p] = (_sig(fst), sha)
        return Disk(sha, len(data), fst.st_mode, data if want_bytes else None)

    def _write(self, rel: str, data: bytes, mode: int) -> None:
        """Write `rel` under the folder, never through a symlink (UnsafePathError otherwise)."""
        dest = self.folder / rel
        sha = content_hash(data)
        w = self.host.watcher
        if w is not None and dest.parent == self.folder and is_environment_name(dest.name):
            w.expect_write(dest, sha)
        write_beneath(self.folder, rel, data, mode)
        with contextlib.suppress(OSError):
            st = os.lstat(dest)
            self._hashes[dest] = (_sig(st), sha)
            self._sigs[dest] = _sig(st)

    def _to_trash(self, rel: str, why: str) -> Path | None:
        """Move (or, `copy`) the local copy of `rel` to the recoverable trash."""
        check_beneath(self.folder, rel)  # never move a file reached through a symlink
        src = self.folder / rel
        trash = self.host.trash
        trash.mkdir(exist_ok=True, mode=0o700)
        dest = trash / f"{int(self.host.clock())}-{why}-{rel.replace('/', '_')}"
        n = 2
        while dest.exists():
            dest = dest.with_name(f"{dest.name}-{n}")
            n += 1
        w = self.host.watcher
        if w is not None and src.parent == self.folder and is_environment_name(src.name):
            w.expect_delete(src)
        try:
            shutil.move(str(src), dest)
        except FileNotFoundError:
            return None
        self._hashes.pop(src, None)
        self._sigs[src] = None
        return dest

    # ------------------------------------------------------------------ the sync
    def reconcile(self, rt: EnvRuntime, *, local: bool, only: set[str] | None = None) -> None:
        """Bring the linked files of one environment and the team's state together."""
        host = self.host
        if host.env(rt.uuid) is None or host.is_held(rt.uuid):
            return
        state = host.store.state(rt.uuid)
        env_ent = state.entity(rt.uuid)
        if env_ent is None or not env_ent.live:
            return
        view = self._view(rt.uuid, state)
        if only is None and self._reconciled.get((rt.uuid, local)) == view.seq and not any(
                key[0] == rt.uuid for key in self._problems):
            # A change (a teammate's, or a save here) that touched no link, every link was
            # looked at since the last one that did, and none has a problem to retry:
            # nothing to write or send. Changes of the files on disk are the watcher's and
            # the poll's (`only`), so no file is statted again for an edit of a label.
            self._ensure_poll()
            return
        links = view.planned()
        synced = {lk.rel for lk in links if lk.state == SYNCED and lk.rel is not None}
        private = private_rels(links)
        mine = linked_here(links, host.device, state.deps_of)  # paths this device linked
        label = shlex.quote(rt.path.name)
        ents = view.files
        seen = self._seen.setdefault(rt.uuid, {})
        had = self._had.setdefault(rt.uuid, set())
        had_before = set(had)
        had &= synced  # (a path unlinked meanwhile: a new link of it starts afresh)
        # Linked paths, and files no longer linked that this device had in sync (so a
        # teammate's rename or delete reaches them). Never a teammate's file that is not
        # linked: it is never written, and tracking it would let it hide a local file.
        rels = synced | {r for r in ents if r in seen}
        self._track(rt.uuid, rels)
        for key in [k for k in self._problems if k[0] == rt.uuid and k[1] not in rels]:
            del self._problems[key]
        if only is not None:
            rels &= only
        before = dict(seen)
        commits: list[tuple[str, Any, Any]] = []  # (rel, value, conflict loser or None)
        dirs: dict[Path, str] = {}  # folders' real paths, for this pass (issue 15)
        for rel in sorted(rels):
            key = (rt.uuid, rel)
            ent = ents.get(rel)
            team = team_marker(ent)
            # Issue #12: a local file at a path a teammate linked is opened only when this
            # device linked it, already synced it, or has the team's bytes to compare it with.
            opens = judge_local_file(rel, team, seen.get(rel), mine=rel in mine,
                                     had=rel in had, env_label=label)
            disk = self._probe(rel, read=opens.readable, dirs=dirs)
            if disk.problem is not None:
                self._problems[key] = disk.problem
                continue
            action = decide(team, disk.sha, seen.get(rel), local=local, referenced=rel in synced,
                            confirmed=rel in mine or rel in had)
            if action in (Action.NOTHING, Action.ADOPT, Action.FORGET):
                held = self._problems.get(key, ("",))[0] == HELD
                if not held or action != Action.NOTHING or disk.sha == team:
                    self._problems.pop(key, None)  # (a held local edit stays held)
                if action == Action.ADOPT:
                    seen[rel] = disk.sha  # type: ignore[assignment]
                elif action == Action.FORGET:
                    seen.pop(rel, None)
                continue
            try:
                if action in (Action.COMMIT, Action.COMMIT_OVER):
                    value = None
                    if disk.sha is not None:
                        full = self._probe(rel, want_bytes=True)
                        if full.problem is not None or full.data is None:
                            if full.problem is not None:
                                self._problems[key] = full.problem
                            continue
                        value = content_value(full.data, full.mode, rel in private)
                    loser = None
                    if action == Action.COMMIT_OVER and ent is not None:
                        r = ent.regs.get(CONTENT_REG)
                        loser = None if r is None else (r.value, r.stamp, r.origin)
                    commits.append((rel, value, loser))
                elif action == Action.UNCONFIRMED:  # never read, never sent
                    self._problems[key] = (UNCONFIRMED, opens.reason)
                elif action == Action.CLASH:
                    self._problems[key] = (CONFLICT, (
                        f"the team's version of {rel} is not written here: a local file that "
                        "this device never synced is in its place. Move or rename it to "
                        "receive the team's version (then copy your changes over it to send "
                        "them)"))
                elif action == Action.WRITE:
                    assert ent is not None
                    data, mode = decode_content(ent.get(CONTENT_REG), rel)
                    verdict = judge_peer_file(rt.uuid, ent.uuid, rel, mode, synced, private)
                    if not verdict.allowed:
                        self._problems[key] = (REFUSED, verdict.reason)
                        continue
                    self._write(rel, data, verdict.mode)
                    seen[rel] = content_hash(data)
                    self._problems.pop(key, None)
                    host.publish(LinkedWritten(env=rt.uuid, path=rel, bytes=len(data)))
                elif action == Action.REMOVE:
                    kept = self._to_trash(rel, "linked-deleted")
                    seen.pop(rel, None)
                    self._problems.pop(key, None)
                    host.publish(LinkedRemoved(env=rt.uuid, path=rel,
                                               trash=str(kept) if kept else None))
            except (MocksyncError, OSError) as exc:
                reason = str(exc) if isinstance(exc, MocksyncError) else (
                    f"cannot write {rel}: {exc.strerror or exc}")
                self._problems[key] = (REFUSED if isinstance(exc, UnsafePathError)
                                       else INVALID, reason)
                log.warning("linked file %s of %s: %s", rel, rt.uuid, reason)
        if commits:
            self._commit(rt, state, commits, seen)
        if only is None:  # (per kind of pass: only a local one sends local files)
            self._reconciled[(rt.uuid, local)] = view.seq
        had |= {r for r in before if r not in seen and r in synced}  # deleted, still linked
        if seen != before or had != had_before:
            self._save_seen(rt.uuid)
        for p in self._tracked:
            host.forget_local(p)  # a fixture named *.json is no local environment
        self._ensure_poll()

    def _commit(self, rt: EnvRuntime, state: Any, commits: list[tuple[str, Any, Any]],
                seen: dict[str, str]) -> None:
        host = self.host
        if any(v is not None for _r, v, _l in commits):
            # The files are on disk as they will be committed: the size counts them.
            problem = host.size_problem(rt.space, render(state))
            if problem:
                for rel, v, _l in commits:
                    if v is not None:
                        self._problems[(rt.uuid, rel)] = (
                            HELD, f"{problem}; this file is not synced until it fits")
                commits = [c for c in commits if c[1] is None]
                host.publish(Held(env=rt.uuid, reason=problem))
        ents = file_entities(state)
        batch: list[tuple[str, Any, Any]] = []
        size = 0
        for item in commits:
            n = 0 if item[1] is None else item[1]["size"]
            if batch and size + n > LINKED_BATCH_BYTES:
                self._commit_batch(rt, ents, batch, seen)
                batch, size = [], 0
            batch.append(item)
            size += n
        if batch:
            self._commit_batch(rt, ents, batch, seen)

    def _commit_batch(self, rt: EnvRuntime, ents: dict[str, Any],
                      batch: list[tuple[str, Any, Any]], seen: dict[str, str]) -> None:
        host = self.host
        ops = [set_op(rt.uuid, rel, v) if rel in ents else create_op(rt.uuid, rel, v)
               for rel, v, _l in batch]
        saw = None
        losers = [loser for _r, _v, loser in batch if loser is not None and loser[2]]
        if losers:
            # The teammate's version this edit overwrites was never on disk here: the change
            # set says it was not seen, so every device lists the overwrite as a conflict.
            saw = host.store.version_vector(rt.uuid)
            for _value, _stamp, (device, seq) in losers:
                saw[device] = min(saw.get(device, 0), seq - 1)
        try:
            host.commit(rt, ops, seen=saw)
        except MocksyncError as exc:
            for rel, _v, _l in batch:
                self._problems[(rt.uuid, rel)] = (INVALID, f"not synced: {exc}")
            log.warning("linked files of %s not committed: %s", rt.uuid, exc)
            return
        for rel, v, _loser in batch:
            if v is None:
                seen.pop(rel, None)
            else:
                seen[rel] = v["sha256"]
            self._problems.pop((rt.uuid, rel), None)

    def _save_seen(self, env: str) -> None:
        from tinydb import Query

        self.table.upsert({"env": env, "seen": dict(self._seen.get(env, {})),
                           "had": sorted(self._had.get(env, ()))}, Query().env == env)

    # ------------------------------------------------------------------ tracking, polling
    def _track(self, env: str, rels: set[str]) -> None:
        for p in [p for p, envs in self._tracked.items() if env in envs]:
            self._tracked[p].pop(env, None)
            if not self._tracked[p]:
                del self._tracked[p]
        for rel in rels:
            self._tracked.setdefault(self.folder / rel, {})[env] = rel

    def _changed_on_disk(self, path: Path) -> None:
        for env, rel in list(self._tracked.get(path, {}).items()):
            rt = self.host.env(env)
            if rt is not None:
                self._guarded(rt, local=True, only={rel})

    def _ensure_poll(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Off the loop (the store worker applied a teammate's change): start it on the
            # loop, else a device that only ever receives would never notice its files.
            self.host.to_loop(self._ensure_poll)
            return
        self._task = loop.create_task(self._poll_loop(), name="linked-poll")
        self.host.spawn(self._task)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll()
            except Exception:
                log.exception("polling linked files failed")

    async def poll(self) -> None:
        """One poll step on the loop, in a store turn: it commits and writes, so never
        beside a job on the store worker (an ingest or a write of the same environment:
        two threads changing one State and one log, tests/test_linked_poll_turn.py)."""
        async with self.host.store_turn():
            self.poll_once()

    def poll_once(self) -> None:
        """Look at every tracked file's signature; reconcile those that changed."""
        for env in [e for e in self._seen if self.host.env(e) is None]:
            self._seen.pop(env, None)  # no longer synced here
            self._had.pop(env, None)
            self._views.pop(env, None)
            self._reconciled.pop((env, True), None)
            self._reconciled.pop((env, False), None)
            self._doc_refs.pop(env, None)
            self._doc_plans.pop(env, None)
            self._track(env, set())
        changed: dict[str, set[str]] = {}  # env -> its changed paths
        for path in list(self._tracked):
            try:
                now: FileSig | None = _sig(os.stat(path))
            except OSError:
                now = None
            if self._sigs.get(path, "unknown") != now:
                self._sigs[path] = now
                for env, rel in self._tracked[path].items():
                    changed.setdefault(env, set()).add(rel)
        # One pass per environment for all its changed files (issue 15): a pass walks the
        # whole environment, and the first poll after a big environment arrives finds every
        # one of its linked files new; one pass per file held the loop for seconds.
        for env, rels in changed.items():
            rt = self.host.env(env)
            if rt is not None:
                self._guarded(rt, local=True, only=rels)

    # ------------------------------------------------------------------ status
    def status(self, rt: EnvRuntime) -> dict[str, Any]:
        """`linked: [{path, rel, state, reason}]` for `status` (empty list: links nothing)."""
        try:
            return {"linked": self._status(rt)}
        except Exception:  # status must always answer
            log.exception("linked status of %s failed", rt.uuid)
            return {"linked": []}

    def _plan_at_hand(self, rt: EnvRuntime,
                      ) -> tuple[Any, Any, list[dict[str, Any]], set[str]] | None:
        """`_plan` for `status`, which answers on the event loop: made here when the State is
        in memory and its view is still right (a few steps), else on the store worker (a
        walk of a 15 MB environment is far longer than a loop may be held, issue 15) while
        this answer uses the plan made last (None: none yet, no links shown this time)."""
        state = self.host.store.loaded_state(rt.uuid)
        if state is not None:
            try:
                kept = self._kept_view(rt.uuid, state)
            except RuntimeError:  # the store worker is applying to it this very moment
                kept = None
            if kept is not None:
                return self._plan(rt)  # (the view is kept: no walk)
        if self._small(rt, state):
            return self._plan(rt)  # a short walk: here, and the answer is exact
        if rt.uuid in self._replanning:
            hit = self._plans.get(rt.uuid)
            return None if hit is None else (hit[1], hit[2], hit[3], hit[4])
        if not self.host.spawn_on_worker(self._replan, rt):
            return self._plan(rt)  # no worker (or this is it): here
        self._replanning.add(rt.uuid)
        hit = self._plans.get(rt.uuid)
        return None if hit is None else (hit[1], hit[2], hit[3], hit[4])

    def _small(self, rt: EnvRuntime, state: State | None) -> bool:
        """Is walking `rt`'s State short enough for the loop (`MAX_LOOP_WALK_*`)?"""
        if state is not None:
            return len(state.entities) <= MAX_LOOP_WALK_ENTITIES
        try:
            return os.stat(rt.path).st_size <= MAX_LOOP_WALK_BYTES
        except OSError:
            return True

    def _replan(self, rt: EnvRuntime) -> None:
        try:
            if self.host.env(rt.uuid) is not None:
                self._plan(rt)
        finally:
            self._replanning.discard(rt.uuid)

    def _plan(self, rt: EnvRuntime) -> tuple[Any, Any, list[dict[str, Any]], set[str]]:
        """(file entities, planned links, teammates' refused files, paths this device linked)
        of `rt`'s State, cached while its linked-file view is kept (`_view`: a change that
        cannot touch a link keeps it) and this device's hashes are the same."""
        store = self.host.store
        label = shlex.quote(rt.path.name)
        seen = self._seen.get(rt.uuid, {})
        state = store.state(rt.uuid)
        view = self._view(rt.uuid, state)
        key = (view.seq, label, tuple(sorted(seen.items())))
        hit = self._plans.get(rt.uuid)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2], hit[3], hit[4]
        ents = view.files
        links = view.planned(label)
        synced = {lk.rel for lk in links if lk.state == SYNCED and lk.rel is not None}
        refused = peer_file_refusals(state, synced, private_rels(links), dict(seen),
                                     files=view.live_files)
        mine = linked_here(links, self.host.device, state.deps_of)
        self._plans[rt.uuid] = (key, ents, links, refused, mine)
        return ents, links, refused, mine

    def _status(self, rt: EnvRuntime) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        plan = self._plan_at_hand(rt)
        if plan is None:
            return out
        ents, links, refused, mine = plan
        seen, had = self._seen.get(rt.uuid, {}), self._had.get(rt.uuid, set())
        label = shlex.quote(rt.path.name)
        dirs: dict[Path, str] = {}
        for lk in links:
            row: dict[str, Any] = {"path": lk.path, "rel": lk.rel, "state": lk.state,
                                   "reason": lk.reason or None}
            out.append(row)
            if lk.state != SYNCED or lk.rel is None:
                continue
            team = team_marker(ents.get(lk.rel))
            verdict = judge_local_file(lk.rel, team, seen.get(lk.rel), mine=lk.rel in mine,
                                       had=lk.rel in had, env_label=label)
            disk = self._probe(lk.rel, read=verdict.readable, dirs=dirs)
            stored = self._problems.get((rt.uuid, lk.rel))
            problem = disk.problem or (
                stored if stored and stored[0] in (HELD, INVALID, REFUSED, CONFLICT) else None)
            if problem is not None:
                row["state"], row["reason"] = problem
                continue
            if disk.sha == UNREAD:  # a teammate linked a local file: never read (#12)
                row["state"], row["reason"] = UNCONFIRMED, verdict.reason
            elif disk.sha is None:
                row["state"] = MISSING
                row["reason"] = (
                    f"{lk.rel} was deleted" if team == "deleted" else
                    f"{lk.rel} is not on this device yet; add it here (or on a device that has "
                    "it) and it syncs")
            elif disk.sha == team:
                row["state"], row["reason"] = SYNCED, None
            else:
                row["state"] = PENDING
                row["reason"] = f"{lk.rel} differs from the team's version; syncing"
        out += [dict(row) for row in refused]  # (copies: the cached rows stay as they are)
        return out

    # ------------------------------------------------------------------ conflicts
    def present_conflict(self, c: dict[str, Any]) -> dict[str, Any]:
        """A conflict as `mocksync conflicts` shows it: a linked file by its path, its
        versions by hash, size and mode, never by content."""
        if c.get("kind") != FILE:
            return c
        st = self.host.store.state(c["env"])
        rel = next((r for r, e in file_entities(st).items() if e.uuid == c["entity"]), None)
        c["where"] = f"linked file {rel}" if rel else "linked file"
        for side in ("winner", "loser"):
            if isinstance(c.get(side), dict):
                c[side]["value"] = summary(c[side].get("value"))
        return c

    # ------------------------------------------------------------------ adopt
    def adopt(self, text: str, paths: list[str] | None = None) -> dict[str, Any]:
        """`mocksync adopt ENV [PATH]...`: copy the files the environment names by absolute or
        escaping paths into a folder beside it, point the environment at the copies (one
        ordinary edit), and sync them; and share the local files at paths a teammate linked
        (UNCONFIRMED): this device links them itself (`relink_ops`), then they are sent.
        PATHs (as `status` names them) limit it to those files. Without PATHs only the files
        this device linked itself are adopted: a path a teammate wrote (say `~/.ssh/id_rsa`)
        is read only when the user names it (issue #12), the rest are listed as skipped.
        Everything is checked before anything changes."""
        host = self.host
        rt = host.find(text)
        if host.is_held(rt.uuid):
            raise ValidationError(f"{rt.path.name} is held for a keep-local/discard-local "
                                  "decision; resolve that first")
        state = host.store.state(rt.uuid)
        doc = copy.deepcopy(render(state))
        # (The State's references are the rendered document's, with who wrote each.)
        todo = [lk for lk in plan_links(linked_paths_of_state(state)) if lk.adoptable]
        confirm = self._unconfirmed(rt.uuid, state)
        skipped: list[dict[str, Any]] = []
        if paths:
            todo, confirm = _only(paths, todo, confirm, rt.path.name)
        else:
            theirs = [lk for lk in todo
                      if not any(linked_by(r, host.device, state.deps_of) for r in lk.refs)]
            todo = [lk for lk in todo if lk not in theirs]
            label = shlex.quote(rt.path.name)
            skipped = [{"path": lk.path, "reason": (
                f"a teammate linked it; name it to share it: `mocksync adopt {label} "
                f"{shlex.quote(lk.rel or lk.path)}`")} for lk in theirs + confirm]
            confirm = []
        if not todo and not confirm:
            return {"uuid": rt.uuid, "file": str(rt.path), "adopted": [], "shared": [],
                    "skipped": skipped,
                    "note": "every linked file already has a relative path in the folder, "
                            "and none that a teammate linked was named"}
        sub = "".join(c if c.isalnum() or c in "-_." else "-"
                      for c in rt.path.stem).lstrip(".") or "files"
        taken: dict[str, str] = {}  # rel -> sha of what goes there
        plan: list[tuple[Any, bytes, int, str]] = []
        for lk in todo:
            src = Path(os.path.expanduser(lk.path))
            if not src.is_absolute():
                src = rt.path.parent / lk.path.replace("\\", "/")
            try:
                # Anywhere the environment points (the user asked to adopt it), but only a
                # regular file, opened without blocking (folderread, issue 13).
                got = read_regular(src, folder=None, max_bytes=MAX_LINKED_FILE_BYTES)
            except SkippedFile as exc:
                raise ValidationError(f"cannot adopt {lk.path}: {exc.skip.reason}") from None
            except OSError as exc:
                raise ValidationError(f"cannot adopt {lk.path}: {exc.strerror or exc}; fix the "
                                      "path in the environment or create the file") from None
            if got is None:
                raise ValidationError(f"cannot adopt {lk.path}: no such file; fix the path in "
                                      "the environment or create the file")
            data, mode = got.data, got.mode
            sha = content_hash(data)
            rel = self._free_rel(sub, src.name.lstrip(".") or "file", sha, taken)
            taken[rel] = sha
            plan.append((lk, data, mode, rel))
        new_doc = copy.deepcopy(doc)
        for lk, _data, _mode, rel in plan:
            _set_paths(new_doc, lk.refs, rel)
        # Quota: the environment as it will be, with every synced file it will link.
        n_old, old_bytes = self.quota_bytes(doc, sending=frozenset(
            lk.rel for lk in confirm if lk.rel is not None))
        copies = {rel: len(data) for _lk, data, _mode, rel in plan}
        n_new, new_bytes = n_old + len(copies), old_bytes + sum(copies.values())
        problem = size_refusal(partial(host.check_size, rt.space), new_doc, new_bytes)
        if problem:
            raise QuotaRefusal(f"cannot adopt: {quota_reason(problem, n_new, new_bytes)}")
        for rel in taken:
            check_beneath(self.folder, rel)  # refuse before writing anything
        adopted = []
        for lk, data, mode, rel in plan:
            private = lk.private
            self._write(rel, data, file_mode(mode, private))
            adopted.append({"from": lk.path, "to": rel, "bytes": len(data),
                            "private": private})
        ops = diff(render(state), new_doc, state, host.rng)
        relink = relink_ops(rt.uuid, [ref for lk in confirm for ref in lk.refs])
        if ops or relink:
            host.commit(rt, ops + relink)
        if ops:
            host.schedule_write(rt)
        self.reconcile(rt, local=True)
        return {"uuid": rt.uuid, "file": str(rt.path), "adopted": adopted,
                "shared": [lk.rel for lk in confirm], "skipped": skipped,
                "ops": len(ops) + len(relink)}

    def _unconfirmed(self, env: str, state: Any) -> list[Link]:
        """The linked files of `env` held back as UNCONFIRMED: a file is there (stat only,
        never opened), at a path a teammate linked, that the team never had from here."""
        links = plan_links(linked_paths_of_state(state))
        mine = linked_here(links, self.host.device, state.deps_of)
        ents, seen = file_entities(state), self._seen.get(env, {})
        had = self._had.get(env, set())
        out = []
        for lk in links:
            if lk.state != SYNCED or lk.rel is None:
                continue
            verdict = judge_local_file(lk.rel, team_marker(ents.get(lk.rel)), seen.get(lk.rel),
                                       mine=lk.rel in mine, had=lk.rel in had)
            if not verdict.readable and self._probe(lk.rel, read=False).sha == UNREAD:
                out.append(lk)
        return out

    def _free_rel(self, sub: str, name: str, sha: str, taken: dict[str, str]) -> str:
        stem, dot, ext = name.partition(".")
        n = 1
        while True:
            cand = f"{sub}/{name}" if n == 1 else f"{sub}/{stem}-{n}{dot}{ext}"
            if taken.get(cand) == sha:
                return cand
            if cand not in taken:
                disk = self._probe(cand)
                if disk.problem is None and disk.sha in (None, sha):
                    return cand
            n += 1


def _only(paths: list[str], todo: list[Link], confirm: list[Link],
          name: str) -> tuple[list[Link], list[Link]]:
    """`adopt ENV PATH...`: keep only the files named (by the path as the environment writes
    it, or as `status` shows it); a name matching none is refused, so nothing changes."""
    wanted = set(paths)
    todo = [lk for lk in todo if lk.path in wanted]
    confirm = [lk for lk in confirm if lk.path in wanted or lk.rel in wanted]
    found = {lk.path for lk in todo + confirm} | {lk.rel for lk in confirm}
    unknown = [p for p in paths if p not in found]
    if unknown:
        raise ValidationError(
            f"nothing to adopt at {', '.join(shown_path(p) for p in unknown[:5])} in {name}: "
            "name a file `mocksync status` shows as outside or unconfirmed")
    return todo, confirm


def _set_paths(doc: dict[str, Any], refs: list[Any], rel: str) -> None:
    """Point every reference in `refs` at `rel` in the environment document."""
    for ref in refs:
        if ref.kind == "tls":
            tls = doc.get("tlsOptions")
            if isinstance(tls, dict):
                tls[ref.field] = rel
            continue
        objs = (doc.get("callbacks") or []) if ref.kind == "callback" else [
            r for route in doc.get("routes") or [] for r in route.get("responses") or []]
        for obj in objs:
            if isinstance(obj, dict) and obj.get("uuid") == ref.entity:
                obj[ref.field] = rel


__all__ = ["LINKED_POLL_S", "LinkedFiles", "LinkedHost", "QuotaRefusal", "SEEN_TABLE"]
