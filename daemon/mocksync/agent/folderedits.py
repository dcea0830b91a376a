"""Folder -> log: read environment files, tell editor saves from our writes, commit edits.

A save arrives from the watcher (or a scan finds a file changed while the daemon was down)
-> read through `folderread` (regular files beneath the folder only) -> parsed and validated
(an invalid file is never propagated) -> diffed against the version its editor last had
(`editorsync`: blind window, version history, the version vector it had seen) -> one signed
change set through `Agent.commit`. Also names files for new environments (`free_path`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agentevents import Held, Invalid, Missing, Renamed
from ..errors import ValidationError
from ..model import Op, ParsedEnv, diff, parse_env, render
from ..model.reparse import index_text
from ..model.samedoc import KnownEqual, same_doc
from ..model.sharedname import choose_file_name
from .editorsync import meet, tied_bases
from .envfiles import HELD, INVALID, MISSING, SYNCED, EnvRuntime, LocalFile
from .errors import SkippedFile
from .faults import COMMITTING
from .folderread import FileRead, FileSig, folder_path, read_regular
from .registry import EnvRecord
from .watcher import FileEvent
from .writer import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    content_hash,
)

if TYPE_CHECKING:
    from .daemon import Agent

log = logging.getLogger("mocksync.agent")

#: Largest environment file the daemon reads (also the model's limit).
MAX_FILE_BYTES = 64 * 1024 * 1024


def peer_refusal(views: dict[str, Any] | None, ops: Sequence[Op]) -> str | None:
    """Why peers would refuse the ops of this save (the very check they run on it,
    `validate_ops`), naming the place in the file; None when they would accept them."""
    from ..model import to_wire, validate_ops
    from ..model.errors import BadOpError

    try:
        validate_ops([to_wire(op) for op in ops])
    except BadOpError as exc:
        op = ops[exc.index] if 0 <= exc.index < len(ops) else None
        view = views.get(op.uuid) if op is not None and views else None
        where = f"{view.path or 'the environment'}: " if view is not None else ""
        return f"{where}{exc}; peers would refuse this edit"
    return None


def still_there(path: Path, sig: FileSig) -> bool:
    """Does `path` still hold the version `sig` (one stat)? An event's carried bytes may be
    older than the file by the time it is handled, and an older save taken in after a newer
    one (met by a write, or a rescan) reads as the newer one's edits undone (red team of
    issue 15): then the file is read again."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_ino, st.st_mtime_ns, st.st_size) == sig


class FolderEdits:
    """Reads the folder and turns editor saves into change sets (owned by `Agent`)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        #: Per file: (sha256, entity views) of the version the editor last had, so a save's
        #: diff against it need not flatten that version again.
        self.views: dict[Path, tuple[str, Any]] = {}
        #: Per file: its last version parsed, so the next save is parsed as what it changed
        #: (`model.reparse`: a one-property save of 15 MB costs a text compare, issue 15).
        self.parsed: dict[Path, ParsedEnv] = {}
        #: Per file: the text we wrote to it since its version in `parsed` (a remote edit's
        #: span patch). The next save is parsed against it, itself parsed from `parsed`
        #: first (two small re-parses), not parsed whole because `parsed` went stale.
        self.written: dict[Path, bytes] = {}
        #: Per file: the last (render, parsed save) found equal, so the next save's check
        #: compares only what is not the same objects as then (`model.samedoc`, issue 15).
        self.equal: dict[Path, KnownEqual] = {}
        #: Files whose span index the spare thread is making (`index_soon`).
        self.indexing: set[Path] = set()

    def forget_path(self, path: Path) -> None:
        """Drop what is cached about the file at `path` (renamed away, or no longer synced)."""
        self.views.pop(path, None)
        self.parsed.pop(path, None)
        self.written.pop(path, None)
        self.equal.pop(path, None)

    def note_written(self, path: Path, data: bytes) -> None:
        """We wrote `data` to `path`: parse it lazily, against the last version parsed."""
        if path in self.parsed:
            self.written[path] = data

    def index_parsed(self, path: Path) -> None:
        """Make the span index of the last version of `path` parsed now (for the store
        worker at start): else the first save after a start makes it, a scan of the whole
        text (half a second for 5 MB) on the event loop (issue 15)."""
        prev = self.parsed.get(path)
        if prev is None or prev.spans is not None or prev.views is None:
            return
        bom = "\ufeff" if prev.text.startswith("\ufeff") else ""
        try:
            spans = index_text(prev.text[len(bom):])
        except ValidationError:
            return  # (parsed whole at the next save, as without the index)
        if self.parsed.get(path) is prev:
            self.parsed[path] = dataclasses.replace(prev, spans=spans)

    def warm(self, rt: EnvRuntime) -> None:
        """Build now (a store-worker job at start and after sharing) what the first save of
        `rt`'s file would otherwise build on the loop: the span index of its last parsed
        version and the size and link memos of its document (`QuotaCheck.size_problem`,
        which walks every route the first time: ~0.4 s for 5 MB, issue 15)."""
        if rt.path not in self.indexing:  # (else the spare thread is making it already)
            self.index_parsed(rt.path)
        parsed = self.parsed.get(rt.path)
        if parsed is not None and rt.uuid in self.agent.envs:
            self.agent.quotas.size_problem(rt.space, parsed.doc)

    def index_soon(self, path: Path) -> None:
        """`index_parsed` on the spare thread: a version parsed whole (a share, a restart,
        a save the re-parse could not place) has no span index, and the next save would
        build it on the loop (a scan of the whole text, ~0.3 s for 5 MB: the slowest edit
        of all, issue 15). Off the loop it is ready long before anyone saves again; should a
        save come first, it builds its own and this one is dropped (`index_parsed`)."""
        prev = self.parsed.get(path)
        if prev is None or prev.spans is not None or prev.views is None or path in self.indexing:
            return
        self.indexing.add(path)
        if not self.agent.bridge.on_spare(self._index_spare, path):
            self.indexing.discard(path)

    def _index_spare(self, path: Path) -> None:
        try:
            self.index_parsed(path)
        finally:
            self.indexing.discard(path)

    def previous(self, path: Path) -> ParsedEnv | None:
        """The last version of `path` parsed, brought up to our last write to it."""
        prev = self.parsed.get(path)
        data = self.written.pop(path, None)
        if prev is None or data is None:
            return prev
        try:
            prev = parse_env(data, 10**9, previous=prev)
        except ValidationError:
            self.parsed.pop(path, None)
            return None
        self.parsed[path] = prev
        return prev

    def remove_stale_temps(self) -> None:
        """Temp files of ours left by a daemon killed mid-write (before its rename): never a
        version of anything (the target still holds the old or the new bytes), only litter
        in the user's folder. The home lock makes this daemon their only possible writer."""
        for p in self.agent.folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    log.info("removed %s, left by an interrupted write", p.name)

    def scan(self) -> None:
        """Look at every environment file (start-up, `reconnect`): catch edits made while down."""
        seen: set[Path] = set()
        for p in sorted(self.agent.folder.glob("*.json")):
            # A symlink is keyed by its target only when that stays in the folder (issue 13).
            p = folder_path(self.agent.folder, p)
            if p.name.startswith(".") or self.agent.linked.tracks(p):
                continue  # (a fixture named *.json is a linked file, not an environment)
            seen.add(p)
            self.on_file(p, initial=True)
        for rt in list(self.agent.envs.values()):
            if rt.path not in seen and rt.state != MISSING:
                if self.agent.store.base_sha(rt.uuid) is None and self.agent.store.has_env(rt.uuid):
                    # Never written on this device (held by the migration gate, or the daemon
                    # stopped before its first write): no file was deleted, so it is not
                    # `missing`; write it now, or hold it again if it still may not be.
                    self.agent.schedule_write(rt)
                else:
                    self.mark_missing(rt)
            elif rt.path in seen and self.agent.store.has_env(rt.uuid):
                self.agent.writes.ensure_written(rt)

    async def watch_loop(self) -> None:
        assert self.agent.watcher is not None
        async for ev in self.agent.watcher.events():
            try:
                async with self.agent.store_turn():
                    self.handle_event(ev)
            except Exception:
                log.exception("handling %s failed", ev)

    def handle_event(self, ev: FileEvent) -> None:
        if self.agent.linked.on_event(ev):
            return
        path = folder_path(self.agent.folder, Path(ev.path))
        if ev.kind == "deleted":
            self.agent.local.pop(path, None)
            rt = self.agent.env_at(path)
            if rt is not None:
                self.mark_missing(rt)
            return
        if ev.kind == "renamed" and ev.old_path is not None:
            old = folder_path(self.agent.folder, Path(ev.old_path))
            self.agent.local.pop(old, None)
            rt = self.agent.env_at(old)
            if rt is not None:
                rt.path = path
                self.agent.history.forget(old)
                self.views.pop(old, None)
                self.parsed.pop(old, None)
                self.equal.pop(old, None)
                self.written.pop(old, None)
                self.agent.registry.put(EnvRecord(rt.uuid, rt.space, str(path), rt.name))
                self.agent.publish(Renamed(env=rt.uuid, file=str(path)))
        content = ev.content if ev.kind in ("added", "changed") and ev.path == path else None
        self.on_file(path, seen=(content, ev.sha256) if content is not None else None)

    def mark_missing(self, rt: EnvRuntime) -> None:
        copy = next((lf for lf in self.agent.local.values() if lf.uuid == rt.uuid), None)
        if copy is not None and copy.path.exists():
            # A rename seen as two steps (the new name written first, the old one removed
            # later, as `cp` + `rm` or some editors do): the environment lives on there.
            self.agent.local.pop(copy.path, None)
            rt.state, rt.path = SYNCED, copy.path
            self.agent.registry.put(EnvRecord(rt.uuid, rt.space, str(rt.path), rt.name))
            self.agent.publish(Renamed(env=rt.uuid, file=str(rt.path)))
            self.on_file(rt.path)
            return
        rt.state = MISSING
        rt.reason = (
            f"the file {rt.path.name} was deleted on this device; the team still has it. "
            f"Run `mocksync restore {rt.uuid}` to get it back, or `mocksync delete {rt.uuid}` "
            "to remove it for everyone"
        )
        self.agent.publish(Missing(env=rt.uuid, file=str(rt.path)))

    def read(self, path: Path) -> bytes | None:
        return self.read_sig(path)[0]

    def read_sig(self, path: Path) -> tuple[bytes | None, FileSig | None]:
        """The file's bytes and the identity of the version read (inode, mtime, size).

        Through `folderread.read_regular` (issue 13): only a regular file beneath the folder
        is read, never blocking; anything else raises `SkippedFile` with its sentence."""
        got = read_regular(path, folder=self.agent.folder, max_bytes=MAX_FILE_BYTES)
        if got is None:
            return None, None
        return got.data, got.sig

    def on_file(self, path: Path, *, initial: bool = False,
                seen: tuple[FileRead, str | None] | None = None) -> None:
        """A file in the folder appeared or changed. `seen`: the version the watcher read
        and hashed for its event (taken in as it is, not read and hashed again: issue 15)."""
        sha: str | None = None
        data: bytes | None
        sig: FileSig | None
        try:
            if seen is not None and len(seen[0].data) <= MAX_FILE_BYTES \
                    and still_there(path, seen[0].sig):
                data, sig, sha = seen[0].data, seen[0].sig, seen[1]
            else:
                data, sig = self.read_sig(path)
        except SkippedFile as exc:
            self.skipped(path, exc)
            return
        except (OSError, ValidationError) as exc:
            self.agent.local[path] = LocalFile(path, valid=False, reason=str(exc))
            return
        if data is None:
            return
        rt = self.agent.env_at(path)
        try:
            parsed = parse_env(data, self.agent.settings.mockoon_max_migration,
                               previous=self.previous(path))
            self.parsed[path] = parsed
        except ValidationError as exc:
            if rt is not None:
                rt.file_sig = sig
                rt.state, rt.reason = INVALID, f"{exc}; the last good version is kept and synced"
                self.agent.publish(Invalid(env=rt.uuid, reason=str(exc)))
            else:
                self.agent.local[path] = LocalFile(path, valid=False, reason=str(exc))
            return
        if rt is None:
            rt = self.agent.envs.get(parsed.uuid)
            if rt is not None and rt.state == MISSING:
                rt.path = path  # the file came back (or under another name)
                self.agent.registry.put(EnvRecord(rt.uuid, rt.space, str(path), rt.name))
            elif rt is not None and rt.path != path:
                # A second file with a synced uuid (a copy): not synced, and say why.
                self.agent.local[path] = LocalFile(path, parsed.uuid, parsed.name, valid=False, reason=(
                    f"same uuid as the synced {rt.path.name}; use `mocksync share {path.name} "
                    "--copy` to sync it as a separate environment"))
                return
        if rt is None:
            self.agent.local[path] = LocalFile(path, parsed.uuid, parsed.name)
            return
        self.agent.local.pop(path, None)
        if parsed.spans is None:
            self.index_soon(path)
        rt.file_sig = sig
        if parsed.uuid != rt.uuid:
            rt.state = INVALID
            rt.reason = (f"the file now holds environment {parsed.uuid}, not the synced {rt.uuid}; "
                         "put the synced environment back or `mocksync unshare` it")
            return
        try:
            self.local_edit(rt, parsed, data, initial=initial, sha=sha)
        except RecursionError:  # a value nested hundreds deep that the JSON parser still took
            from ..model.limits import too_deep

            rt.state, rt.reason = INVALID, (f"the file holds {too_deep()}; the last good "
                                            "version is kept and synced")
            self.agent.publish(Invalid(env=rt.uuid, reason=rt.reason))
        except sqlite3.Error as exc:
            # The log could not take the save (the home's disk full, read-only, I/O error):
            # the file keeps it; retried by itself, and taken in once the log can (issue 13).
            if not self.agent.retries.failed(rt, COMMITTING, exc, "home"):
                raise
        else:
            self.agent.retries.recovered(rt.uuid, COMMITTING)

    def skipped(self, path: Path, exc: SkippedFile) -> None:
        """A folder file that is never read (FIFO, device, socket, symlink out of the folder,
        unreadable): named in `status` at once. A synced environment's file turned into one
        keeps the last good version synced, as an invalid file does."""
        rt = self.agent.env_at(path)
        if rt is None:
            self.agent.local[path] = LocalFile(path, valid=False, skipped=True, reason=exc.skip.reason)
            return
        rt.state, rt.reason = INVALID, f"{exc.skip.reason}; the last good version is kept and synced"
        self.agent.publish(Invalid(env=rt.uuid, reason=exc.skip.reason))

    def local_edit(self, rt: EnvRuntime, parsed: ParsedEnv, data: bytes, *, initial: bool,
                   sha: str | None = None) -> None:
        now = self.agent.clock()
        sha = sha or content_hash(data)
        if not initial:
            self.agent.blind.note_editor_save(rt.path, now)
        state = self.agent.store.state(rt.uuid)
        base = self.agent.store.base_sha(rt.uuid)  # (path, sha): the text only when needed
        tied: list[str] = []
        if base is not None and base[1] == sha:
            ops: list[Op] = []
            tied = [sha]
        else:
            candidates: list[tuple[str, Any]] = []
            if initial:
                # A crash between committing a save and recording its base (or between
                # writing a file and recording it) leaves a file that the state already
                # holds: against the state it is no edit, while the old base would commit
                # the same ops a second time. First in the list, so ties go to the base.
                candidates.append(("state", render(state)))
            known = self.agent.history.candidates(rt.path)
            if base is not None and all(label != base[1] for label, _ in known):
                # Parse the stored base only when the history does not hold that version
                # already (it does in a running daemon): one parse and one diff less a save.
                stored = self.agent.store.get_base(rt.uuid)
                if stored is not None and stored[1] == base[1]:
                    with contextlib.suppress(ValidationError):
                        candidates.append(("base", parse_env(stored[2], 10**9).doc))
            candidates += known
            if not candidates:
                candidates = [("state", render(state))]
            if len(candidates) == 1:
                label, base_doc = candidates[0]
                tied = [label]
            else:
                docs = dict(candidates)
                tied = tied_bases(parsed.doc, candidates, lambda a, b: len(
                    diff(a, b, state, self.agent.rng, new_views=parsed.views)))
                label = tied[0]
                base_doc = docs[label]
            cached = self.views.get(rt.path)
            ops = diff(base_doc, parsed.doc, state, self.agent.rng, new_views=parsed.views,
                       base_views=cached[1] if cached and cached[0] == label else None)
        seen = self.seen_by_editor(rt.uuid, tied, base[1] if base is not None else None)
        refusal = peer_refusal(parsed.views, ops) if ops else None
        if refusal is not None:  # a value peers would refuse (model.limits): never sent
            rt.state, rt.reason = INVALID, f"{refusal}; the last good version is kept and synced"
            self.agent.publish(Invalid(env=rt.uuid, reason=refusal))
            return
        if ops:
            problem = self.agent.quotas.size_problem(rt.space, parsed.doc)
            if problem:
                rt.state, rt.reason = HELD, problem + "; this edit is not synced until it fits"
                self.agent.publish(Held(env=rt.uuid, reason=rt.reason))
                return
            cs = self.agent.commit(rt, ops, seen=seen)
            rt.last_local_edit = now
            if not initial:  # an editor's save: its user is editing this environment
                self.agent.presence.saved(rt.space, rt.uuid, now)
                self.agent.push_presence()
            seen = None if seen is None else {**seen, self.agent.device: cs.seq}
        seen_now = seen if seen is not None else self.agent.store.version_vector(rt.uuid)
        self.agent.seen_versions.put(rt.uuid, sha, seen_now)
        rt.layout = parsed.layout
        rt.name = parsed.name or rt.name
        rt.state, rt.reason = SYNCED, ""
        # With what it reflects: the first save after a restart is stamped with it too.
        self.agent.store.set_base(rt.uuid, str(rt.path), sha, data, seen=seen_now)
        self.agent.history.note_loaded(rt.path, sha, parsed.doc)
        if parsed.views is not None:
            self.views[rt.path] = (sha, parsed.views)
        merged = render(state)
        if same_doc(merged, parsed.doc, self.equal.pop(rt.path, None)):
            self.equal[rt.path] = (merged, parsed.doc)
        else:
            self.agent.schedule_write(rt)
        self.agent.linked.after_local_edit(rt)  # fixtures and TLS files it links (issue #7)

    def seen_by_editor(self, env: str, labels: list[str], base_sha: str | None,
                        ) -> dict[str, int] | None:
        """The version vector a save was made against: what every base it may stem from
        holds ("state": all applied; "base": the stored base; else a version's hash). After
        a restart the stored base's is read from the store (kept with it); None when one of
        them is not known at all: the save then claims the log."""
        vvs = []
        for label in labels:
            if label == "state":
                vvs.append(self.agent.store.version_vector(env))
                continue
            sha = base_sha if label == "base" else label
            vv = self.agent.seen_versions.get(env, sha)
            if vv is None and sha is not None:
                vv = self.agent.store.base_seen(env, sha)
            if vv is None:
                return None
            vvs.append(vv)
        return meet(vvs) if vvs else None

    def free_path(self, name: str, wanted: Any = None) -> Path:
        """A new file name directly in the folder for an environment: `wanted` (the sharer's
        file name) when it passes `shared_name_problem` and is free, else one made from `name`
        by `env_file_stem` (no separator, no hidden name). Never one that exists, not even as
        a dangling symlink (it would be written through), nor another environment's file,
        nor a name the watcher ignores."""
        from .watcher import is_environment_name

        def free(candidate: str) -> bool:
            p = self.agent.folder / candidate
            return (is_environment_name(candidate) and not os.path.lexists(p)
                    and self.agent.env_at(p) is None)

        return self.agent.folder / choose_file_name(wanted, name, free)
