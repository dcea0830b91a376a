"""One editor save is taken in once, even when a file write on the store worker meets it.

Why this test: `test_deep_value_in_a_local_file_is_invalid_not_sent` failed about one run
in ten with two change sets carrying the same `Set`. The log of both takes showed it: the
store worker was writing the environment's file (`EnvWrites.write_env`), met the test's save
(`FileChangedError`) and took it in there, while the test called `on_file` on the event
loop, outside a store turn. Both read the same base (neither had recorded the save yet), so
both diffed it to the same ops and committed them. In the daemon every loop-side take runs
in a store turn (`FolderEdits.watch_loop`, the control commands), which waits for the job
on the worker: the second take then finds the save as the base and diffs to nothing.

The interleaving is forced here, without sleeps: the worker's write is held (threading
events) at the moment it has taken the save in and is about to commit; the watcher's take
is started then, must wait, and once the write goes on must commit nothing. Called
directly on the loop instead (`on_file` outside the turn, as the flaky test did), the same
interleaving commits twice: this test then fails with `2 == 1`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mocksync.agent.watcher import FileEvent

from helpers.relaylab import Lab, detached_trio, rendered, until

#: Loop iterations given to a take that must be waiting (each `sleep(0)` only yields).
YIELDS = 20


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with detached_trio(Lab(tmp_path)) as t:
        yield t


async def watcher_take(agent: Any, path: Path) -> None:
    """What `FolderEdits.watch_loop` does with the watcher's event for a save."""
    async with agent.store_turn():
        agent.handle_event(FileEvent("changed", path))


async def test_a_save_met_by_a_write_on_the_worker_is_committed_once(
        trio: dict[str, Any]) -> None:
    t = trio
    a, b = t["agents"]["alice"], t["agents"]["bob"]
    env, space = t["env"], t["space"]
    rt, worker = b.envs[env], b.worker
    assert worker is not None
    p = rt.path
    await until(lambda: p.exists() and rt.write_handle is None and not worker.pending,
                what="bob's device to write the environment's file")

    # Bob's save, made while his device writes alice's newer version over the file.
    bdoc = json.loads(p.read_text(encoding="utf-8"))
    bdoc["routes"][0]["documentation"] = "bob's note, saved while the daemon wrote"
    save = json.dumps(bdoc, indent=4).encode("utf-8")  # (another size: the write must see it)

    at_commit, go_on = threading.Event(), threading.Event()
    keep, commit = b.writes.keep_replaced_version, b.commit
    worker_takes: list[int] = []

    def editor_saves_now(*args: Any) -> None:  # on the worker, right before the replace
        keep(*args)
        p.write_bytes(save)

    def held_commit(*args: Any, **kw: Any) -> Any:
        if worker.on_worker():
            worker_takes.append(1)
            at_commit.set()  # the worker took the save in and is about to commit it
            assert go_on.wait(30), "the test never let the worker go on"
        return commit(*args, **kw)

    b.writes.keep_replaced_version = editor_saves_now
    b.commit = held_commit
    try:
        adoc = rendered(a, env)
        adoc["name"] = "alice's rename"
        apath = a.envs[env].path
        apath.write_text(json.dumps(adoc, indent=2), encoding="utf-8")
        async with a.store_turn():
            a.on_file(apath)
        for wire in a.store.wires_missing(env, b.store.version_vector(env)):
            async with b.store_turn():
                b.receive(space, wire)  # schedules bob's write of alice's rename
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, at_commit.wait, 30), "the write never met the save"

        take = asyncio.create_task(watcher_take(b, p))
        for _ in range(YIELDS):
            await asyncio.sleep(0)
        assert not take.done()  # it waits for the job on the worker
        assert b.device not in b.store.version_vector(env)
        go_on.set()
        await take
        await worker.drain()
    finally:
        go_on.set()
        b.writes.keep_replaced_version, b.commit = keep, commit

    mine = [cs for cs, _r in b.store.log(env) if cs.device == b.device]
    assert worker_takes == [1]
    assert len(mine) == 1, [cs.ops for cs in mine]
    assert b.store.version_vector(env)[b.device] == 1
    merged = rendered(b, env)
    assert merged["routes"][0]["documentation"] == bdoc["routes"][0]["documentation"]
    assert merged["name"] == "alice's rename"  # the write's change is kept too
