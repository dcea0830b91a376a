"""Log -> folder: write each environment's file once its editor can see the change.

When (`editorsync.BlindWindow`: Mockoon is blind for a while after its own save, so a write
waits for it), what (`model.spans.text_to_write`: only changed spans, in the file's own
layout; nothing when the file already holds the document) and how (`writer.replace_file`:
compare-before-replace, so an editor save that slips in is taken in first, never
overwritten). Scheduled writes run on the store worker (issue 15).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from typing import TYPE_CHECKING, Any

from ..agentevents import WriteRaced, Written
from ..errors import ValidationError
from ..model import parse_env, render
from ..model.jsfmt import MOCKOON_LAYOUT
from ..model.spans import index_unwalked, indexed_text, text_to_write, walk_index
from .envfiles import HELD, INVALID, MISSING, SYNCED, EnvRuntime
from .errors import FileChangedError, FileWriteError
from .faults import WRITING
from .folderread import FileSig
from .writer import Expected, content_hash, hash_beside, replace_file, sig_of

if TYPE_CHECKING:
    from .daemon import Agent

log = logging.getLogger("mocksync.agent")

#: A forced write (stop, unshare, delete) that keeps meeting fresh editor saves gives up
#: after this many (each save is taken in; the file then holds the editor's last one).
MAX_FORCED_RACES = 5


class EnvWrites:
    """Schedules and performs environment file writes (owned by `Agent`)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        #: Per environment, the version of its file this device last wrote or found holding
        #: the document: (bytes, sha256, text). A write that finds the file still holding
        #: those bytes (one memcmp) neither hashes nor decodes it again, and patches the very
        #: text the span index was made for (issue 15: five sha256 passes over 5 MB a write).
        self.known: dict[str, tuple[bytes, str, str | None]] = {}
        #: Per environment, the signature (inode, mtime, size) of the version in `known` when
        #: this device wrote it: a write that finds the file still with that signature takes
        #: `known`'s bytes for it instead of reading 5-15 MB again (issue 15); the compare
        #: before the rename (`writer.replace_file`) still checks the bytes themselves.
        self.known_sig: dict[str, FileSig] = {}

    def forget(self, env: str) -> None:
        """`env` is no longer synced here: let go of its file's bytes."""
        self.known.pop(env, None)
        self.known_sig.pop(env, None)

    def read_current(self, rt: EnvRuntime) -> tuple[bytes | None, FileSig | None]:
        """The file's bytes and signature, as `FolderEdits.read_sig` gives them; without
        reading when the file is still the version this device wrote last (`known_sig`)."""
        known, known_sig = self.known.get(rt.uuid), self.known_sig.get(rt.uuid)
        if known is not None and known_sig is not None and known_sig == rt.file_sig:
            try:
                st = os.lstat(rt.path)
            except OSError:
                st = None
            if st is not None and stat.S_ISREG(st.st_mode) and sig_of(st) == known_sig:
                return known[0], known_sig
        return self.agent.edits.read_sig(rt.path)

    def flush_on_stop(self) -> None:
        """Stopping: write every held write now, so nothing acknowledged is lost."""
        for rt in self.agent.envs.values():
            if rt.write_handle is not None:
                rt.write_handle.cancel()
                rt.write_handle = None
                self.write_env(rt, force=True)

    def schedule(self, rt: EnvRuntime) -> None:
        if rt.uuid in self.agent.holds:
            return  # the `prompt` policy: the file waits for keep-local/discard-local
        self.agent.linked.after_remote(rt)  # linked files are written at once (no editor holds them)
        if self.agent.bridge.to_loop(self.schedule_timer, rt):
            return  # (from the store worker: timers are the loop's)
        self.schedule_timer(rt)

    def schedule_timer(self, rt: EnvRuntime) -> None:
        """Write `rt`'s file once its editor can see the change (docs/design/merge.md "Editors and the file": blind window)."""
        now = self.agent.clock()
        due = max(now, self.agent.blind.write_not_before(rt.path))
        if rt.write_handle is not None:
            if rt.write_due >= due:
                return
            rt.write_handle.cancel()
        rt.write_due = due
        loop = self.agent.bridge.loop or asyncio.get_event_loop()
        rt.write_handle = loop.call_later(max(0.0, due - now), self.write_due, rt)

    def write_due(self, rt: EnvRuntime) -> None:
        """A scheduled write: render and write on the store worker (a 15 MB environment's
        render, patch, fsync and base take far longer than a loop may be held, issue 15),
        in order after the ingest that asked for it."""
        if not self.agent.bridge.spawn_on_worker(self.write_env, rt):
            self.write_env(rt)

    def ensure_written(self, rt: EnvRuntime) -> None:
        """At start (or a rescan): write the file if it does not hold the merged state.

        On the store worker (a 15 MB environment's state load, render and patch take
        seconds; the loop must not wait, issue 15), and by the writer's own means: what it
        leaves behind (the state's render memo, the text's span index, the file's bytes and
        hash) makes the first write after start as cheap as every later one."""
        if not self.agent.bridge.spawn_on_worker(self.check_written, rt):
            self.check_written(rt)

    def check_written(self, rt: EnvRuntime) -> None:
        if rt.state not in (SYNCED,) or rt.uuid not in self.agent.envs \
                or not self.agent.store.has_env(rt.uuid):
            return
        self.agent.store.warm(rt.uuid)  # (the first save after start then decodes nothing)
        self.agent.edits.warm(rt)
        state = self.agent.store.state(rt.uuid)
        try:
            doc = render(state)
            current, sig = self.agent.edits.read_sig(rt.path)
        except (OSError, ValidationError):
            return
        if current is None:
            return
        layout = rt.layout if rt.layout else MOCKOON_LAYOUT
        cache = state.text_cache.setdefault(layout, {})
        if text_to_write(current, doc, layout, cache) is None:
            self.known[rt.uuid] = (current, content_hash(current), indexed_text(cache))
            return
        self.schedule(rt)

    def write_env(self, rt: EnvRuntime, force: bool = False, *, _raced: int = 0) -> None:
        rt.write_handle = None
        if rt.uuid not in self.agent.envs or rt.state == MISSING:
            return
        if rt.uuid in self.agent.holds and not force:
            return
        now = self.agent.clock()
        if not force and not self.agent.blind.can_write(rt.path, now):
            self.schedule(rt)
            return
        state = self.agent.store.state(rt.uuid)
        doc = render(state)
        lm = doc.get("lastMigration")
        if isinstance(lm, int) and lm > self.agent.settings.mockoon_max_migration:
            rt.state = HELD
            rt.reason = (f"held unwritten: a teammate's Mockoon saved migration {lm}, newer than "
                         f"the {self.agent.settings.mockoon_max_migration} this device's Mockoon reads "
                         "(setting mockoon_max_migration); update Mockoon")
            return
        try:
            current, sig = self.read_current(rt)
        except (OSError, ValidationError):
            current, sig = None, None
        if not force and None not in (sig, rt.file_sig) and sig != rt.file_sig:
            # The file was replaced since we last read or wrote it and the watcher has not
            # told us yet: an editor's save, maybe of the very bytes we wrote (Mockoon saves
            # again right after a reload). Take it in first: that starts the editor's blind
            # period, and the write is rescheduled after it if still needed.
            self.agent.on_file(rt.path)
            return
        base = self.agent.store.base_sha(rt.uuid)
        known = self.known.get(rt.uuid)
        previous: str | bytes | None = current
        current_sha: str | None
        if current is not None and known is not None and current == known[0]:
            current_sha, previous = known[1], known[2] if known[2] is not None else current
        else:
            self.known.pop(rt.uuid, None)
            self.known_sig.pop(rt.uuid, None)
            current_sha = content_hash(current) if current is not None else None
        if current_sha is not None and base is not None and current_sha != base[1] \
                and self.agent.history.find(rt.path, current_sha) is None:
            # An edit we have not processed yet: take it in first, never overwrite it.
            self.agent.on_file(rt.path)
            return
        if isinstance(doc.get("name"), str):
            rt.name = doc["name"]
        layout = rt.layout if rt.layout else MOCKOON_LAYOUT
        # The file's own layout is kept: only the spans of changed values are replaced, and a
        # file that already holds the document is not rewritten (issue 15, model/spans.py).
        text = text_to_write(previous, doc, layout, state.text_cache.setdefault(layout, {}))
        data = current if text is None and current is not None else (text or "").encode("utf-8")
        try:
            if current == data and current_sha is not None:
                self.known[rt.uuid] = (data, current_sha,
                                       text if text is not None else previous
                                       if isinstance(previous, str) else None)
                self.agent.store.set_base(rt.uuid, str(rt.path), current_sha, data)
                self.agent.seen_versions.put(rt.uuid, current_sha, self.agent.store.version_vector(rt.uuid))
                self.agent.retries.recovered(rt.uuid, WRITING)
                return
            self.keep_replaced_version(rt, current, current_sha)
            # Compare-before-replace (issue 13): the file is replaced only if it is still the
            # version read above; `replace_file` checks right before its rename, after the
            # slow part (render, temp write, fsync), so an editor save can slip in only in the
            # microseconds between that check and the rename, not in the whole write.
            expect = (Expected(sig, current_sha, current) if current_sha is not None
                      and sig is not None else Expected.absent())
            self.put_file(rt, data, doc, expect=expect, text=text)
        except FileChangedError:
            # The editor saved while this version was rendered and written: nothing was
            # replaced. Take its save in (a local edit, merged with the team's); the write
            # follows once the editor's blind window has passed. A forced write (stop,
            # unshare, delete) is tried again at once, with the save now merged in.
            log.info("%s was saved while the daemon wrote it; taking the save in first",
                     rt.path.name)
            self.agent.publish(WriteRaced(env=rt.uuid, file=str(rt.path)))
            self.agent.on_file(rt.path)
            if force and _raced < MAX_FORCED_RACES:
                if rt.write_handle is not None:
                    rt.write_handle.cancel()
                self.write_env(rt, force=True, _raced=_raced + 1)
            return
        except (FileWriteError, OSError, sqlite3.Error) as exc:
            where = "home" if isinstance(exc, sqlite3.Error) else "folder"
            if not self.agent.retries.failed(rt, WRITING, exc, where):
                raise
            return
        self.agent.retries.recovered(rt.uuid, WRITING)
        if rt.state in (HELD, INVALID) and not force:
            rt.state, rt.reason = SYNCED, ""
        self.agent.publish(Written(env=rt.uuid, file=str(rt.path), bytes=len(data)))
        cache = state.text_cache.setdefault(layout, {})
        if index_unwalked(cache):
            # Rendered whole (a new file, a layout change): its text is walked now on the
            # spare thread, not by the next remote edit's write (issue 15: first edit 0.4 s).
            self.agent.bridge.on_spare(walk_index, cache)

    def keep_replaced_version(self, rt: EnvRuntime, current: bytes | None,
                              current_sha: str | None) -> None:
        """The file about to be replaced is a version its editor may hold: when the history
        does not know it (the file as it was shared, or as found at start), keep it as the
        version the editor last loaded, so a save the editor makes on it is diffed against it
        and not against this write. Without, that save undid whatever this write brought (a
        teammate's move: the flaky reorders journey)."""
        if current is None or current_sha is None \
                or self.agent.history.find(rt.path, current_sha) is not None:
            return
        try:
            doc = parse_env(current, 10**9).doc
        except ValidationError:
            return  # not an environment: no save can stem from it
        self.agent.history.note_loaded(rt.path, current_sha, doc)
        # What that version reflects is kept with the stored base, which this write replaces.
        if self.agent.seen_versions.get(rt.uuid, current_sha) is None:
            seen = self.agent.store.base_seen(rt.uuid, current_sha)
            if seen is not None:
                self.agent.seen_versions.put(rt.uuid, current_sha, seen)

    def put_file(self, rt: EnvRuntime, data: bytes, doc: dict[str, Any],
                  expect: Expected | None = None, *, text: str | None = None) -> None:
        """Write an environment's file atomically and remember it as what the editor sees.
        With `expect`, only over that version of the file (else `FileChangedError`).
        `text`: `data` decoded, when the caller has it (kept for the next write)."""
        # The one hash of a write (watcher, writer and base share it), made while the bytes
        # are written; the watcher is told to expect them before they are in place.
        sha_soon = hash_beside(data)
        self.known.pop(rt.uuid, None)
        self.known_sig.pop(rt.uuid, None)
        watcher = self.agent.watcher
        expecting: list[str] = []

        def expect_it(sha: str) -> None:
            if watcher is not None:
                watcher.expect_write(rt.path, sha)
                expecting.append(sha)

        unflushed: FileWriteError | None = None
        try:
            written = replace_file(rt.path, data, expect=expect, sha256=sha_soon,
                                   before_rename=expect_it)
        except FileWriteError as exc:
            if exc.landed is None:
                if watcher is not None and expecting:  # never landed: a save may match it
                    watcher.withdraw_write(rt.path, expecting[0])
                raise
            # In place, only the folder flush failed: ours all the same (withdrawn, the
            # watcher took it for an editor's save and a teammate's edit was committed a
            # second time as this device's). Recorded as written; the error still follows.
            written, unflushed = exc.landed, exc
        except BaseException:
            if watcher is not None and expecting:  # never landed: a save may match it
                watcher.withdraw_write(rt.path, expecting[0])
            raise
        sha = written.sha256
        # The written version's identity from the temp file itself: a stat after the rename
        # could already see an editor's next save and take it for ours.
        rt.file_sig = written.sig
        if self.agent.watcher is not None:  # its probe of this version then hashes nothing
            self.agent.watcher.note_written(rt.path, sha, written.sig)
        self.known[rt.uuid] = (data, sha, text)
        self.known_sig[rt.uuid] = written.sig
        self.agent.edits.note_written(rt.path, data)  # the next save parses from it (issue 15)
        self.agent.history.record_write(rt.path, sha, doc)
        self.agent.store.set_base(rt.uuid, str(rt.path), sha, data)
        self.agent.seen_versions.put(rt.uuid, sha, self.agent.store.version_vector(rt.uuid))
        if unflushed is not None:  # (reported and retried: the retry finds it written)
            raise unflushed
