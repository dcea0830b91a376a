"""A stand-in for Mockoon desktop editing one environment file, for tests that run the daemon
beside an editor (docs/design/testing.md "Stand-ins for real clients").

Written from the documented behaviour, not from Mockoon's code:
- it loads the file into memory; `edit(fn)` changes the in-memory document;
- `save()` writes the whole document as 2-space JSON, non-ASCII unescaped, no trailing
  newline, into a temp file beside the target (`<name>.<random hex>`), then renames it over;
- after each of its own saves it stops watching the file for `blind_s` (3 s in Mockoon;
  tests pass less). A change made while it is not watching is never noticed: when it starts
  watching again it takes the file as it then is as the baseline, as a re-added file watcher
  does. That is the hazard the daemon's BlindWindow exists for;
- on an external change seen while watching, it reloads the file and then saves it again in
  its own format (which starts another blind period). A file that does not parse is not
  loaded: the editor keeps its document (counted in `reload_errors`).

The watch is an mtime/inode/size poll every `poll_s`, run as an asyncio task (`start`/`stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Mockoon stops watching a file this long after each of its own saves.
MOCKOON_BLIND_S = 3.0
#: How often the stand-in polls the file.
DEFAULT_POLL_S = 0.01


def render(doc: Any) -> bytes:
    """Bytes Mockoon desktop writes for `doc`: JSON.stringify(doc, null, 2), no newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class EditorStandin:
    """One open environment in a Mockoon-like editor."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        blind_s: float = MOCKOON_BLIND_S,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        self.path = Path(path)
        self.blind_s = blind_s
        self.poll_s = poll_s
        self.doc: Any = None
        self.saves = 0
        self.reloads = 0
        self.reload_errors = 0
        #: ("load" | "save" | "reload" | "reload_error", sha256 of the file bytes or "")
        self.history: list[tuple[str, str]] = []
        self._blind_until = -1.0
        self._resume_pending = False
        self._baseline: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # ---- editing ------------------------------------------------------------------------

    def load(self) -> None:
        data = self.path.read_bytes()
        self.doc = json.loads(data)
        self._baseline = _signature(self.path)
        self.history.append(("load", hashlib.sha256(data).hexdigest()))

    def edit(self, fn: Callable[[Any], Any]) -> None:
        """Apply `fn` to the in-memory document (mutate it, or return a replacement)."""
        result = fn(self.doc)
        if result is not None:
            self.doc = result

    def save(self) -> bytes:
        """Write the whole document (temp file + rename), then stop watching for blind_s."""
        data = render(self.doc)
        tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.saves += 1
        self.history.append(("save", hashlib.sha256(data).hexdigest()))
        self._blind_until = time.monotonic() + self.blind_s
        self._resume_pending = True
        self._signal()
        return data

    @property
    def watching(self) -> bool:
        return time.monotonic() >= self._blind_until

    # ---- watching -----------------------------------------------------------------------

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_external_change(self) -> None:
        try:
            data = self.path.read_bytes()
            doc = json.loads(data)
        except (OSError, ValueError):
            self.reload_errors += 1
            self.history.append(("reload_error", ""))
            self._signal()
            return
        self.doc = doc
        self.reloads += 1
        self.history.append(("reload", hashlib.sha256(data).hexdigest()))
        self.save()  # Mockoon writes a reloaded environment back in its own format

    def poll_once(self) -> None:
        """One watch step (the task calls this every poll_s)."""
        if time.monotonic() < self._blind_until:
            return
        if self._resume_pending:
            # Watching again: whatever happened meanwhile went unnoticed.
            self._resume_pending = False
            self._baseline = _signature(self.path)
            return
        sig = _signature(self.path)
        if sig == self._baseline:
            return
        self._baseline = sig
        if sig is not None:
            self._on_external_change()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self.poll_once()

    async def start(self) -> None:
        if self.doc is None:
            self.load()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"editor {self.path.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> EditorStandin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_until(self, predicate: Callable[[EditorStandin], bool], timeout: float) -> None:
        """Wait until `predicate(self)` holds (checked after each save/reload/error)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"editor condition not met within {timeout} s: {self.history}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
