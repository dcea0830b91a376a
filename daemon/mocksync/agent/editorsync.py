"""Living beside Mockoon desktop: when the daemon may write a file, and what a save is based on.

The facts (docs/design/merge.md "Editors and the file"): after each of its own saves Mockoon stops
watching that file for 3 s, so a remote change written in that window is never seen by it, and
its next save would silently revert the change unless we know which version it was editing.
Hence two rules, both pure decisions here (the caller passes `now`; nothing reads a clock):

1. `BlindWindow`: hold remote writes to a file until `WRITE_HOLD_S` (3.5 s: the 3 s plus a
   margin) after the editor last saved it.
2. Diff each save against the version the editor last loaded. When a save may race one of our
   writes (the editor saved just after we renamed a file into place), we don't know whether it
   saw our write, so `pick_base` tries each candidate the editor might have had (the version it
   last loaded and every version we wrote since, kept by `VersionHistory`) and takes the one
   giving the fewest ops: edits on top of the right base are small, while a wrong base adds
   the reverse of a remote change.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

#: Mockoon stops watching a file this long after each of its own saves.
EDITOR_BLIND_S = 3.0
#: We hold remote writes to a file this long after the editor last saved it.
WRITE_HOLD_S = 3.5
#: Versions the daemon wrote that are kept per file as candidate bases.
VERSION_HISTORY_MAXLEN = 5

PathLike = str | os.PathLike[str]
Doc = TypeVar("Doc")
Label = TypeVar("Label")


def _key(path: PathLike) -> str:
    return os.fspath(path)


class BlindWindow:
    """When may the daemon write each file, given when the editor last saved it."""

    def __init__(self, hold_s: float = WRITE_HOLD_S) -> None:
        if not hold_s >= 0:
            raise ValueError("hold_s must be >= 0")
        self.hold_s = hold_s
        self._last_save: dict[str, float] = {}

    def note_editor_save(self, path: PathLike, now: float) -> None:
        key = _key(path)
        self._last_save[key] = max(now, self._last_save.get(key, -math.inf))

    def write_not_before(self, path: PathLike) -> float:
        """Earliest time a write to `path` is safe; `-inf` if the editor never saved it."""
        last = self._last_save.get(_key(path))
        return -math.inf if last is None else last + self.hold_s

    def can_write(self, path: PathLike, now: float) -> bool:
        return now >= self.write_not_before(path)

    def forget(self, path: PathLike) -> None:
        self._last_save.pop(_key(path), None)

    def prune(self, now: float) -> None:
        """Drop entries whose hold has passed (keeps memory bounded on long runs)."""
        self._last_save = {k: t for k, t in self._last_save.items() if t + self.hold_s > now}


def pick_base(
    saved_doc: Doc,
    candidates: Sequence[tuple[Label, Doc]],
    cost: Callable[[Doc, Doc], int],
) -> Label:
    """The label of the candidate base from which `saved_doc` is the fewest ops away.

    `candidates` are oldest first; `cost(base, saved)` counts the ops of the diff. Ties go to
    the most recent candidate (the last in the list).
    """
    return tied_bases(saved_doc, candidates, cost)[0]


def tied_bases(
    saved_doc: Doc,
    candidates: Sequence[tuple[Label, Doc]],
    cost: Callable[[Doc, Doc], int],
) -> list[Label]:
    """Every candidate from which `saved_doc` is the fewest ops away, most recent first (the
    first is `pick_base`'s answer). More than one means the save does not tell which of them
    the editor had: a save that sets a property a remote version also set, 16 ms after we
    wrote that version, is one op away from both. The caller then claims to have seen only
    what all of them hold (`meet`), so a write racing a teammate's is a listed conflict."""
    if not candidates:
        raise ValueError("pick_base needs at least one candidate")
    best: list[Label] = []
    best_cost: int | None = None
    for label, doc in reversed(candidates):
        c = cost(doc, saved_doc)
        if c <= 0:
            return [label]  # the very version: nothing is ambiguous
        if best_cost is None or c < best_cost:
            best, best_cost = [label], c
        elif c == best_cost:
            best.append(label)
    return best


def meet(vvs: Sequence[dict[str, int]]) -> dict[str, int]:
    """What every one of several version vectors holds (element-wise minimum)."""
    if not vvs:
        return {}
    keys = set(vvs[0]).intersection(*vvs[1:])
    out = {k: min(v[k] for v in vvs) for k in sorted(keys)}
    return {k: n for k, n in out.items() if n > 0}


@dataclass(frozen=True)
class Version:
    sha256: str
    doc: Any
    seq: int


class VersionHistory:
    """Per file: the last few versions the daemon wrote, and the version the editor last had.

    `record_write` after each write of ours; `note_loaded` when the editor is known to hold a
    version (it saved it, or it was the file when we first read it). `candidates(path)` gives
    the versions a new save can be based on, oldest first, labelled by content hash, ready for
    `pick_base`.
    """

    def __init__(self, maxlen: int = VERSION_HISTORY_MAXLEN) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.maxlen = maxlen
        self._written: dict[str, deque[Version]] = {}
        self._loaded: dict[str, Version] = {}
        self._seq = 0

    def _next(self, sha256: str, doc: Any) -> Version:
        self._seq += 1
        return Version(sha256, doc, self._seq)

    def record_write(self, path: PathLike, sha256: str, doc: Any) -> None:
        key = _key(path)
        versions = self._written.setdefault(key, deque(maxlen=self.maxlen))
        for old in [v for v in versions if v.sha256 == sha256]:
            versions.remove(old)  # written again: it is now the most recent
        versions.append(self._next(sha256, doc))

    def note_loaded(self, path: PathLike, sha256: str, doc: Any) -> None:
        self._loaded[_key(path)] = self._next(sha256, doc)

    def loaded(self, path: PathLike) -> Version | None:
        return self._loaded.get(_key(path))

    def written(self, path: PathLike) -> list[Version]:
        """Versions the daemon wrote, oldest first (at most `maxlen`)."""
        return list(self._written.get(_key(path), ()))

    def find(self, path: PathLike, sha256: str) -> Any | None:
        """The document of a known version of `path` by content hash, or None."""
        loaded = self._loaded.get(_key(path))
        if loaded is not None and loaded.sha256 == sha256:
            return loaded.doc
        for v in reversed(self._written.get(_key(path), ())):
            if v.sha256 == sha256:
                return v.doc
        return None

    def candidates(self, path: PathLike) -> list[tuple[str, Any]]:
        """Bases an editor save of `path` may stem from: the version the editor last loaded,
        then each version we wrote after it, oldest first."""
        key = _key(path)
        writes = self._written.get(key, ())
        loaded = self._loaded.get(key)
        if loaded is None:
            return [(v.sha256, v.doc) for v in writes]
        later = [(v.sha256, v.doc) for v in writes if v.seq > loaded.seq and v.sha256 != loaded.sha256]
        return [(loaded.sha256, loaded.doc), *later]

    def forget(self, path: PathLike) -> None:
        self._written.pop(_key(path), None)
        self._loaded.pop(_key(path), None)


#: Versions per environment whose version vector `SeenVersions` keeps (the candidate bases of
#: `VersionHistory`, the stored base and the last save, with room to spare).
SEEN_VERSIONS_MAXLEN = 2 * VERSION_HISTORY_MAXLEN + 2


class SeenVersions:
    """Per environment: which change sets each recent version of its file reflects.

    A save is an edit of the version the editor had, so its change set must say it had seen
    exactly that version's change sets, not everything applied here since: a teammate's edit
    that arrived while the editor was blind to it is concurrent with the save, and a write of
    the same property by both must be listed as a conflict, not silently overwritten (issue
    11 item 8). Unknown versions (after a restart) return None: the caller then claims the
    whole log, as before.
    """

    def __init__(self, maxlen: int = SEEN_VERSIONS_MAXLEN) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.maxlen = maxlen
        self._by_env: dict[str, dict[str, dict[str, int]]] = {}

    def put(self, env: str, sha256: str, vv: dict[str, int]) -> None:
        """Version `sha256` of `env`'s file reflects version vector `vv`."""
        versions = self._by_env.setdefault(env, {})
        versions.pop(sha256, None)  # re-inserted: now the most recent
        versions[sha256] = dict(vv)
        while len(versions) > self.maxlen:
            versions.pop(next(iter(versions)))

    def get(self, env: str, sha256: str | None) -> dict[str, int] | None:
        if sha256 is None:
            return None
        vv = self._by_env.get(env, {}).get(sha256)
        return None if vv is None else dict(vv)

    def forget(self, env: str) -> None:
        self._by_env.pop(env, None)
