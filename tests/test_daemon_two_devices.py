"""Two devices, one team space, two in-process daemons on a LocalBus (issue #3).

The promise under test (docs/design/merge.md "Editors and the file"): an edit on one device reaches the
other device's file; concurrent edits of different properties both survive on both sides; and
beside an editor that behaves like Mockoon desktop (blind for a while after each of its saves,
reloading and re-saving on external changes) no edit is lost on either side, including a
remote edit that arrives while the editor is blind and an editor save that races the
daemon's write.
"""

from __future__ import annotations

import asyncio
import copy
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from editor_standin import EditorStandin
from helpers.agents import (
    TEST_BLIND_S,
    EventLog,
    Two,
    settle,
    state_doc,
    two_devices,
)
from helpers.files import edit_file, read_doc, response_by_uuid, responses, set_label
from helpers.polling import wait_until

#: The stand-in's blind period: Mockoon's 3 s scaled like the daemon's 3.5 s hold (0.3 s here).
EDITOR_BLIND_S = 0.2


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Two]:
    """A's petstore shared and adopted by B, nothing pending on either: B's adoption write
    (and its event) is over before a test counts B's writes (helpers.agents.two_devices)."""
    async with two_devices(tmp_path, settled=True) as t:
        yield t


def labels(doc: dict[str, Any], uuids: list[str]) -> dict[str, str]:
    return {u: response_by_uuid(doc, u)["label"] for u in uuids}


async def test_edit_on_a_reaches_b_file(two: Two) -> None:
    events = EventLog(two.b)
    target = responses(read_doc(two.file_a))[0]["uuid"]
    doc = edit_file(two.file_a, set_label(target, "hello from A"))
    # The write runs on B's store worker: the file is replaced before its "written" event
    # reaches the loop, so both are awaited, then a quiet time for any second write to show.
    await wait_until(lambda: read_doc(two.file_b) == doc and events.of("written", env=two.env),
                     "A's edit in B's file, and B's written event")
    await settle(two.a, two.b)
    remote = events.of("change", origin="remote", env=two.env)
    assert len(remote) == 1 and remote[0]["device"] == two.dev_a.id and remote[0]["ops"] == 1
    # B wrote the file once, and took nothing back from its own write.
    assert len(events.of("written", env=two.env)) == 1
    assert events.of("change", origin="local") == []


async def test_concurrent_edits_of_different_properties_survive_on_both_sides(two: Two) -> None:
    base = read_doc(two.file_a)
    r = responses(base)

    def on_a(doc: dict) -> None:
        response_by_uuid(doc, r[0]["uuid"])["label"] = "label by A"
        doc["port"] = 4321
        doc["routes"][2]["documentation"] = "docs by A"

    def on_b(doc: dict) -> None:
        response_by_uuid(doc, r[1]["uuid"])["label"] = "label by B"
        response_by_uuid(doc, r[0]["uuid"])["statusCode"] = 201  # same entity, other field
        doc["name"] = "Renamed by B"
        doc["routes"][3]["documentation"] = "docs by B"

    # Both saves land before either device has heard of the other's.
    edit_file(two.file_a, on_a)
    edit_file(two.file_b, on_b)
    want = copy.deepcopy(base)
    on_a(want)
    on_b(want)
    await wait_until(lambda: read_doc(two.file_a) == want and read_doc(two.file_b) == want,
                     "both files to hold both edits")
    await settle(two.a, two.b)
    assert read_doc(two.file_a) == read_doc(two.file_b) == want
    assert state_doc(two.a, two.env) == state_doc(two.b, two.env) == want
    assert two.a.store.conflicts(two.env) == []  # different registers: no conflict


async def test_concurrent_structural_edits_merge(two: Two) -> None:
    base = read_doc(two.file_a)
    new_route = dict(base["routes"][0], uuid="7a000000-0000-4000-8000-000000000001",
                     endpoint="added/by/a",
                     responses=[dict(base["routes"][0]["responses"][0],
                                     uuid="7a000000-0000-4000-8000-000000000002")])
    gone = base["rootChildren"][-1]

    def on_a(doc: dict) -> None:
        doc["routes"].append(new_route)
        doc["rootChildren"].append({"type": "route", "uuid": new_route["uuid"]})

    def on_b(doc: dict) -> None:
        doc["rootChildren"].remove(gone)
        if gone["type"] == "route":
            doc["routes"] = [x for x in doc["routes"] if x["uuid"] != gone["uuid"]]
        else:
            doc["folders"] = [x for x in doc["folders"] if x["uuid"] != gone["uuid"]]

    edit_file(two.file_a, on_a)
    edit_file(two.file_b, on_b)

    def merged() -> bool:
        da, db = read_doc(two.file_a), read_doc(two.file_b)
        uuids = {x["uuid"] for x in da["rootChildren"]}
        return da == db and new_route["uuid"] in uuids and gone["uuid"] not in uuids

    await wait_until(merged, "both files to hold the added and the removed route")
    await settle(two.a, two.b)
    assert read_doc(two.file_a) == read_doc(two.file_b)


class TimedStandin(EditorStandin):
    """The stand-in, recording when it saved (to show a remote edit arrived while blind)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.save_times: list[float] = []
        #: While set, the stand-in's watcher has not noticed anything yet (its latency).
        self.unnoticed = False

    def save(self) -> bytes:
        self.save_times.append(time.monotonic())
        return super().save()

    def poll_once(self) -> None:
        if not self.unnoticed:
            super().poll_once()

    def blind_now(self) -> bool:
        return bool(self.save_times) and time.monotonic() - self.save_times[-1] < self.blind_s


async def test_editor_standin_beside_remote_edits_loses_nothing(two: Two) -> None:
    rng = random.Random(11)
    uuids = [r["uuid"] for r in responses(read_doc(two.file_a))]
    mine_a, mine_b = uuids[0::2], uuids[1::2]
    expect: dict[str, str] = {}
    held_while_blind = 0
    raced_a_write = 0

    async with TimedStandin(two.file_b, blind_s=EDITOR_BLIND_S, poll_s=0.01) as ed:
        for i in range(8):
            kind = ("remote_in_blind", "simultaneous", "save_after_write")[i % 3]
            ua, ub = mine_a[i % len(mine_a)], mine_b[i % len(mine_b)]
            va, vb = f"A-{i}", f"B-{i}"
            expect[ua], expect[ub] = va, vb
            if kind == "remote_in_blind":
                ed.edit(set_label(ub, vb))
                ed.save()
                await asyncio.sleep(0.03)
                edit_file(two.file_a, set_label(ua, va))
                # B's daemon has A's edit while the editor is blind, and holds the write.
                await wait_until(lambda ua=ua, va=va: response_by_uuid(
                    state_doc(two.b, two.env), ua)["label"] == va,
                    "A's edit to reach B's log", timeout=5)
                if ed.blind_now() and response_by_uuid(read_doc(two.file_b), ua)["label"] != va:
                    held_while_blind += 1
            elif kind == "simultaneous":
                edit_file(two.file_a, set_label(ua, va))
                ed.edit(set_label(ub, vb))
                ed.save()
            else:
                # The daemon writes A's edit into B's file and the editor saves a stale
                # document right after the rename, before its watcher could notice: the race
                # docs/design/merge.md describes. Saving from the daemon's own "written" event makes the
                # race certain, not a matter of luck; the event reaches the loop after the
                # rename (the write runs on the store worker), so the stand-in's watcher is
                # kept from noticing until then (a real editor's watcher is slower still).
                def save_stale(ev: dict, ub: str = ub, vb: str = vb, ua: str = ua,
                               va: str = va) -> None:
                    nonlocal raced_a_write
                    if ev.get("event") != "written" or save_stale not in two.b.listeners:
                        return
                    two.b.listeners.remove(save_stale)
                    if response_by_uuid(ed.doc, ua)["label"] != va:
                        raced_a_write += 1  # the editor's document lacks A's edit
                    ed.edit(set_label(ub, vb))
                    ed.save()
                    ed.unnoticed = False

                ed.unnoticed = True
                two.b.listeners.append(save_stale)
                edit_file(two.file_a, set_label(ua, va))
                await wait_until(lambda f=save_stale: f not in two.b.listeners,
                                 "B's daemon to write A's edit", timeout=5)
            await asyncio.sleep(rng.uniform(0.0, 0.25))

        def converged() -> bool:
            da, db = read_doc(two.file_a), read_doc(two.file_b)
            return (da == db and labels(da, list(expect)) == expect
                    and ed.doc == db and not ed.blind_now())

        await wait_until(converged, "both files and the editor to hold every edit", timeout=15)
        await settle(two.a, two.b, quiet_s=2 * TEST_BLIND_S)
        assert converged()

    da, db = read_doc(two.file_a), read_doc(two.file_b)
    assert da == db
    assert two.file_a.read_bytes() == two.file_b.read_bytes()  # same layout on both sides
    assert labels(da, list(expect)) == expect  # no edit lost, on either side
    assert state_doc(two.a, two.env) == state_doc(two.b, two.env) == da
    assert ed.reload_errors == 0  # the editor never saw a half-written file
    assert held_while_blind >= 1, "no remote edit arrived inside the editor's blind window"
    assert raced_a_write >= 1, "no editor save raced a daemon write"
    # Every edit went through the log exactly once per author: B's chain holds B's saves.
    vv = two.a.store.version_vector(two.env)
    assert vv == two.b.store.version_vector(two.env)


@pytest.mark.long
@pytest.mark.skipif(not os.environ.get("MOCKSYNC_LONG"), reason="set MOCKSYNC_LONG=1 (make test-long)")
@pytest.mark.parametrize("seed", range(12))
async def test_editor_standin_random_schedule_soak(two: Two, seed: int) -> None:
    """Random interleavings of A's saves and the stand-in's saves on B, gaps chosen around
    the watcher's step, the editor's blind period and the daemon's hold."""
    rng = random.Random(seed)
    uuids = [r["uuid"] for r in responses(read_doc(two.file_a))]
    mine_a, mine_b = uuids[0::2], uuids[1::2]
    expect: dict[str, str] = {}
    async with TimedStandin(two.file_b, blind_s=EDITOR_BLIND_S, poll_s=0.01) as ed:
        for i in range(40):
            if rng.random() < 0.5:
                u = rng.choice(mine_a)
                expect[u] = f"A-{i}"
                edit_file(two.file_a, set_label(u, expect[u]))
            else:
                u = rng.choice(mine_b)
                expect[u] = f"B-{i}"
                ed.edit(set_label(u, expect[u]))
                ed.save()
            await asyncio.sleep(rng.choice([0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.3, 0.35]))

        def converged() -> bool:
            da, db = read_doc(two.file_a), read_doc(two.file_b)
            return (da == db and labels(da, list(expect)) == expect
                    and ed.doc == db and not ed.blind_now())

        await wait_until(converged, "both files and the editor to hold every edit", timeout=20)
    assert ed.reload_errors == 0
    assert state_doc(two.a, two.env) == state_doc(two.b, two.env) == read_doc(two.file_a)
