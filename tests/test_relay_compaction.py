"""Compaction in both relay storage engines (SQLite and PostgreSQL alike, `engine` fixture).

A snapshot is kept per (space, env tag) when the judge allows it; the change sets it covers
go once every member device's high-water mark holds them, or once they are older than the
retention period; a fetch from below what was dropped is told so (`Compacted`); the index
still reports the whole chain; a late upload of a dropped slot is held, not stored again."""

from __future__ import annotations

from typing import Any

import pytest

from mocksync.relay.compaction import HeldSnapshot, Verdict, judge_snapshot
from mocksync.relay.envelope import Envelope
from mocksync.relay.errors import Compacted
from mocksync.relay.policy import Refusal
from mocksync.relay.storage import StoredSnapshot

D1, D2 = "d1", "d2"


def ok(_usage: Any, _count: int) -> Refusal | None:
    return None


def allow(_held: HeldSnapshot | None, _floors: dict[str, int]) -> Verdict:
    return Verdict(True)


async def _fill(engine: Any, now_ms: int = 1_000) -> None:
    await engine.put("sp", "t", [Envelope(D1, s, 1, bytes([s]) * 100) for s in range(1, 6)],
                     declared_bytes=50, uploader=D1, now_ms=now_ms, check=ok)
    await engine.put("sp", "t", [Envelope(D2, s, 1, bytes([s]) * 100) for s in range(1, 4)],
                     declared_bytes=50, uploader=D2, now_ms=now_ms, check=ok)


async def test_snapshot_then_acks_drop_covered_history(engine: Any) -> None:
    await _fill(engine)
    assert await engine.compact("sp", "t", [D1, D2], 0) == 0  # no snapshot: nothing goes
    snap = StoredSnapshot(D1, {D1: 4, D2: 3}, b"sealed", b"s" * 64, 2_000)
    assert (await engine.put_snapshot("sp", "t", snap, allow)).ok
    got = await engine.snapshot("sp", "t")
    assert got is not None and got.vv == {D1: 4, D2: 3} and got.ct == b"sealed"
    await engine.note_acks("sp", "t", D1, {D1: 5, D2: 3})
    assert await engine.compact("sp", "t", [D1, D2], 0) == 0  # D2 has said nothing yet
    await engine.note_acks("sp", "t", D2, {D1: 2, D2: 3})
    await engine.note_acks("sp", "t", D2, {D1: 1})  # a mark only ever goes up
    assert await engine.compact("sp", "t", [D1, D2], 0) == 2 + 3  # D1#1..2, D2#1..3
    assert await engine.floors("sp", "t") == {D1: 2, D2: 3}
    await engine.note_acks("sp", "t", D2, {D1: 9})
    assert await engine.compact("sp", "t", [D1, D2], 0) == 2  # D1#3..4; never above the snapshot
    assert await engine.floors("sp", "t") == {D1: 4, D2: 3}
    # The index still names the whole chain; a fetch from below the floor is refused.
    assert (await engine.index("sp"))["t"] == {D1: 5, D2: 3}
    with pytest.raises(Compacted) as exc:
        await engine.fetch("sp", "t", {D1: 1, D2: 3}, max_items=100, max_bytes=10**6)
    assert exc.value.floors == {D1: 4, D2: 3}
    items, more = await engine.fetch("sp", "t", {D1: 4, D2: 3}, max_items=100, max_bytes=10**6)
    assert [(e.device, e.seq) for e in items] == [(D1, 5)] and not more
    # A late upload of a dropped slot is held already: nothing is stored again.
    again = await engine.put("sp", "t", [Envelope(D1, 2, 1, b"x"), Envelope(D1, 6, 1, b"y")],
                             declared_bytes=50, uploader=D1, now_ms=3_000, check=ok)
    assert [e.seq for e in again] == [6]
    assert (await engine.index("sp"))["t"] == {D1: 6, D2: 3}


async def test_retention_drops_old_covered_history_without_acks(engine: Any) -> None:
    await _fill(engine, now_ms=1_000)
    await engine.put("sp", "t", [Envelope(D1, 6, 1, b"z" * 100)], declared_bytes=50,
                     uploader=D1, now_ms=5_000, check=ok)
    snap = StoredSnapshot(D2, {D1: 6, D2: 2}, b"sealed", b"s" * 64, 6_000)
    assert (await engine.put_snapshot("sp", "t", snap, allow)).ok
    # Received before the cutoff: D1#1..5 and D2#1..2 (covered); D1#6 is young.
    assert await engine.compact("sp", "t", [D1, D2], 2_000) == 5 + 2
    assert await engine.floors("sp", "t") == {D1: 5, D2: 2}
    assert (await engine.index("sp"))["t"] == {D1: 6, D2: 3}


async def test_snapshot_judge_runs_against_what_is_held(engine: Any) -> None:
    await _fill(engine)
    first = StoredSnapshot(D1, {D1: 3}, b"one", b"s" * 64, 2_000)
    seen: list[Any] = []

    def judge(held: HeldSnapshot | None, floors: dict[str, int]) -> Verdict:
        seen.append((held, floors))
        return judge_snapshot(first.vv if held is None else {D1: 3}, 10, held=held,
                              floors=floors, max_env_bytes=1000, now_ms=3_000)

    assert (await engine.put_snapshot("sp", "t", first, judge)).ok
    refused = await engine.put_snapshot("sp", "t", StoredSnapshot(D2, {D1: 3}, b"two",
                                                                    b"s" * 64, 3_000), judge)
    assert not refused.ok and "covers as much" in refused.reason
    held = seen[-1][0]
    assert held is not None and held.signer == D1 and held.size == 3
    kept = await engine.snapshot("sp", "t")
    assert kept is not None and kept.ct == b"one"  # a refusal changed nothing


async def test_fetch_pages_by_count_and_bytes(engine: Any) -> None:
    await _fill(engine)
    items, more = await engine.fetch("sp", "t", {}, max_items=3, max_bytes=10**6)
    assert [(e.device, e.seq) for e in items] == [(D1, 1), (D1, 2), (D1, 3)] and more
    items, more = await engine.fetch("sp", "t", {D1: 3}, max_items=100, max_bytes=250)
    assert [(e.device, e.seq) for e in items] == [(D1, 4), (D1, 5)] and more
    items, more = await engine.fetch("sp", "t", {D1: 5}, max_items=100, max_bytes=10)
    assert [(e.device, e.seq) for e in items] == [(D2, 1)] and more  # always at least one
    items, more = await engine.fetch("sp", "t", {D1: 5, D2: 1}, max_items=100, max_bytes=10**6)
    assert [(e.device, e.seq) for e in items] == [(D2, 2), (D2, 3)] and not more
    assert all(len(e.ct) == 100 for e in items)
