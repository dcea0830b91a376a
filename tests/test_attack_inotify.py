"""Floods and folder tricks against the inotify folder watcher (agent/inotify.py, issue 16).

What must hold:
- a flood of file events that overflows the kernel's queue (100k events while the loop is
  busy) costs a rescan, never a missed save: the environment saved after the overflow, whose
  own event the kernel dropped, is reported, once, with its content's hash; what the watcher
  gathers per batch stays bounded by the names touched, not the events;
- the watched folder moved away (or removed) and made again at its path: the watcher says
  what happened while it is gone (`error`) and watches the new folder once it is there,
  reporting what is in it; before, it stopped watching for good and nothing said so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from mocksync.agent import watcher as watcher_mod
from mocksync.agent.inotify import Inotify, Touched
from mocksync.agent.watcher import FileEvent, FolderWatcher

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or Inotify.open() is None,
                                reason="inotify is Linux only")

#: Events the flood makes (each write of a scratch file: a modify and a close-write).
FLOOD_EVENTS = 100_000


def env_bytes(name: str) -> bytes:
    return json.dumps({"uuid": "u-" + name, "name": name, "routes": []}).encode()


async def next_events(w: FolderWatcher, want: int, timeout: float = 20.0) -> list[FileEvent]:
    got: list[FileEvent] = []
    it = w.events()

    async def take() -> None:
        async for ev in it:
            got.append(ev)
            if len(got) >= want:
                return

    await asyncio.wait_for(take(), timeout)
    return got


async def test_an_overflowing_flood_costs_a_rescan_not_a_save(tmp_path: Path) -> None:
    folder = tmp_path / "envs"
    folder.mkdir()
    (folder / "petstore.json").write_bytes(env_bytes("before"))
    seen_paths: list[int] = []
    overflows: list[bool] = []
    read = Inotify.read_touched

    def counting(self: Inotify) -> Touched:
        out = read(self)
        seen_paths.append(len(out.paths))
        overflows.append(out.overflow)
        return out

    async with FolderWatcher(folder) as w:
        Inotify.read_touched = counting  # type: ignore[method-assign]
        try:
            # The flood, on the loop itself, so the watcher cannot drain the kernel's queue
            # (16,384 events by default): it overflows and drops what follows.
            scratch = [os.open(folder / f"scratch{i}.tmp", os.O_CREAT | os.O_WRONLY, 0o600)
                       for i in range(50)]
            for n in range(FLOOD_EVENTS // 2):
                os.write(scratch[n % 50], b"x")
            for fd in scratch:
                os.close(fd)
            saved = env_bytes("after the flood")
            (folder / "petstore.json").write_bytes(saved)  # its events are dropped
            got = await next_events(w, 1)
        finally:
            Inotify.read_touched = read  # type: ignore[method-assign]
        assert [(e.kind, Path(e.path).name, e.sha256) for e in got] == [
            ("changed", "petstore.json", hashlib.sha256(saved).hexdigest())]
        assert any(overflows)  # the kernel did drop events
        assert max(seen_paths) <= 51  # names touched, not events: bounded
        await asyncio.sleep(0.3)
        assert w._queue.empty()  # reported once


async def test_a_folder_moved_away_and_made_again_is_watched_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher_mod, "FOLDER_RETRY_S", 0.1)
    folder = tmp_path / "envs"
    folder.mkdir()
    (folder / "petstore.json").write_bytes(env_bytes("petstore"))
    async with FolderWatcher(folder) as w:
        folder.rename(tmp_path / "envs.old")
        for _ in range(100):
            if w.error is not None:
                break
            await asyncio.sleep(0.05)
        assert w.error is not None and str(folder) in str(w.error)
        folder.mkdir()  # e.g. a checkout or a sync tool put the folder back
        (folder / "users.json").write_bytes(env_bytes("users"))
        got = await next_events(w, 2)
        assert sorted((e.kind, Path(e.path).name) for e in got) == [
            ("added", "users.json"), ("deleted", "petstore.json")]
        assert w.error is None
        later = env_bytes("edited later")
        (folder / "users.json").write_bytes(later)
        got = await next_events(w, 1)
        assert [(e.kind, Path(e.path).name, e.sha256) for e in got] == [
            ("changed", "users.json", hashlib.sha256(later).hexdigest())]
