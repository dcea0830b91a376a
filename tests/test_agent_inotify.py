"""The inotify reader under the folder watcher (issue 16: an idle daemon must not poll)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest

from mocksync.agent.inotify import Inotify
from mocksync.agent.watcher import FolderWatcher

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
WAIT_S = 10.0


def test_names_touched_in_a_watched_folder(tmp_path: Path) -> None:
    ino = Inotify.open()
    assert ino is not None
    try:
        ino.add_dir(tmp_path)
        assert ino.read_touched().events == 0  # nothing yet, and it does not block
        (tmp_path / "a.json").write_bytes(b"{}")
        os.replace(tmp_path / "a.json", tmp_path / "b.json")
        got = ino.read_touched()
        assert got.events >= 3 and got.paths == {tmp_path / "a.json", tmp_path / "b.json"}
        assert not got.overflow and not got.lost
        (tmp_path / "b.json").unlink()
        assert ino.read_touched().paths == {tmp_path / "b.json"}
    finally:
        ino.close()


def test_a_removed_folder_is_reported_lost(tmp_path: Path) -> None:
    sub = tmp_path / "envs"
    sub.mkdir()
    ino = Inotify.open()
    assert ino is not None
    try:
        ino.add_dir(sub)
        sub.rmdir()
        assert sub in ino.read_touched().lost
    finally:
        ino.close()


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    ino = Inotify.open()
    assert ino is not None
    try:
        with pytest.raises(OSError, match="cannot watch"):
            ino.add_dir(tmp_path / "nope")
    finally:
        ino.close()


async def test_an_idle_watcher_runs_no_polling_thread(tmp_path: Path) -> None:
    """watchfiles polls from an AnyIO worker thread every step (200 wake-ups a second at
    5 ms); the inotify watch waits on the loop, so it starts no such thread."""
    before = {t.ident for t in threading.enumerate()}
    async with FolderWatcher(tmp_path) as w:
        await asyncio.sleep(0.3)
        pollers = [t.name for t in threading.enumerate()
                   if t.ident not in before and t.name.startswith("AnyIO worker")]
        assert pollers == []
        (tmp_path / "x.json").write_bytes(b"{}")
        it = w.events()
        ev = await asyncio.wait_for(anext(it), WAIT_S)
        assert ev.kind == "added" and ev.path.name == "x.json"


async def test_a_save_burst_is_one_batch(tmp_path: Path) -> None:
    """Events closer than step_ms apart are one batch: the file is looked at once."""
    (tmp_path / "e.json").write_bytes(b'{"v": 0}')
    async with FolderWatcher(tmp_path, step_ms=30, debounce_ms=300) as w:
        with open(tmp_path / "e.json", "wb") as f:  # an editor writing in place, in pieces
            for i in range(1, 6):
                f.write(b'{"v": %d}' % i if i == 1 else b" ")
                f.flush()
                await asyncio.sleep(0.005)
        it = w.events()
        ev = await asyncio.wait_for(anext(it), WAIT_S)
        assert ev.kind == "changed" and ev.path.name == "e.json"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(it), 0.5)  # no second event for the same burst


def test_a_rename_into_place_is_named_as_one(tmp_path: Path) -> None:
    ino = Inotify.open()
    assert ino is not None
    try:
        ino.add_dir(tmp_path)
        (tmp_path / ".e.json.tmp").write_bytes(b"{}")
        os.replace(tmp_path / ".e.json.tmp", tmp_path / "e.json")
        got = ino.read_touched()
        assert got.moved_in == {tmp_path / "e.json"}
        os.replace(tmp_path / "e.json", tmp_path / "f.json")
        with open(tmp_path / "f.json", "ab") as f:  # written after the rename: not whole
            f.write(b" ")
        got = ino.read_touched()
        assert got.paths == {tmp_path / "e.json", tmp_path / "f.json"}
        assert got.moved_in == set()
    finally:
        ino.close()


async def test_an_atomic_save_is_looked_at_without_the_debounce(tmp_path: Path) -> None:
    """An editor's temp-file-then-rename save is whole the moment the rename lands: it is
    looked at at once (issue 15: a step less per save), not after `step_ms` of quiet. The
    temp file's own events start no batch."""
    (tmp_path / "e.json").write_bytes(b'{"v": 0}')
    async with FolderWatcher(tmp_path, step_ms=3000, debounce_ms=3000) as w:
        it = w.events()
        tmp = tmp_path / ".e.json.1"
        tmp.write_bytes(b'{"v": 1}')
        await asyncio.sleep(0.2)  # the temp file's events alone: no batch waits on them
        os.replace(tmp, tmp_path / "e.json")
        ev = await asyncio.wait_for(anext(it), 1.5)  # (half the step: not debounced)
        assert ev.kind == "changed" and ev.path.name == "e.json"
