"""The relay's compaction requests: snapshots kept, high-water marks noted, history dropped.

Why a module of its own: the session machinery (`relay.server`) is being reshaped, and these
handlers only need what every handler has (the session's admitted spaces, the verified
membership state, the storage engine, the plan). Each is `async (server, session, msg)`,
hooked into the server's dispatch table by kind (`HANDLERS`). The decisions are
`relay.compaction` (pure); the storage engines run them inside their transactions.

- `snapput`: a member device uploads a sealed snapshot of one environment. The relay checks
  what it can without reading it: the signer is the session's own device, its signature
  verifies with that device's key from the verified membership log, the key generation is
  readable, and `compaction.judge_snapshot` (size, rate, coverage of what was dropped).
  Refused: `nack bad_snapshot` with the sentence, logged, nothing changed.
- `snapget`: the snapshot kept (or none) and what was dropped, for a device whose catch-up
  was answered `nack compacted`.
- `hw`: a device says which change sets of an environment it holds (its high-water mark).
After each stored snapshot and each mark, `compact` drops what the snapshot covers and every
active device holds, or what is older than the retention period. Marks compact an environment
at most every `compaction.HW_COMPACT_GAP_S` (a member flooding `hw` costs an upsert each), and
`compaction_loop` compacts every environment with a snapshot every
`compaction.COMPACT_INTERVAL_S`, a bounded page per round, so retention-based drops do not
wait for the next upload or mark.

What a hostile member cannot do here (tests/test_attack_snapshots.py): keep a snapshot signed
by another device or by a removed one; cover change sets the relay does not hold (which would
let the relay drop, and devices skip, a teammate's later real ones); shrink the snapshot held;
make the relay drop anything no snapshot covers or anything it never received; grow the acks
table with made-up device names (a mark keeps only devices of the space).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MocksyncError
from ..space.errors import KeyMaterialError
from ..space.keys import payload_generation
from . import compaction
from .policy import Refusal
from .protocol import (
    HighWater,
    Nack,
    Ok,
    SnapshotGet,
    SnapshotPut,
    SnapshotReply,
    clip_reason,
)
from .storage import StoredSnapshot

if TYPE_CHECKING:
    from .server import RelayServer, Session

log = logging.getLogger("mocksync.relay.compaction")


#: Environments whose last mark-started compaction time is remembered per relay; past it the
#: entries older than HW_COMPACT_GAP_S are forgotten (they no longer hold anything back).
MAX_HW_SLOTS = 10_000


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Compactor:
    """One relay's compaction bookkeeping: when each env was last compacted on a mark, where
    the timer's walk stands, and what it did (shown by the health endpoint)."""

    hw_at: dict[tuple[str, str], float] = field(default_factory=dict)
    after: tuple[str, str] | None = None
    rounds: int = 0


_COMPACTORS: weakref.WeakKeyDictionary[Any, _Compactor] = weakref.WeakKeyDictionary()


def _compactor(server: RelayServer) -> _Compactor:
    c = _COMPACTORS.get(server)
    if c is None:
        c = _COMPACTORS[server] = _Compactor()
    return c


async def compact(server: RelayServer, space: str, tag: str) -> int:
    """Drop what the env's snapshot lets go now; how many change sets went (logged)."""
    state = server.state(space)
    if state is None:
        return 0
    held = await server.db.snapshot(space, tag)
    if held is not None and held.signer not in state.devices:
        # Its signer was removed: devices refuse it, so it must not let anything more go
        # (an active device's next snapshot replaces it at once, `judge_snapshot`).
        log.warning("relay: env %s of space %s: its snapshot's signer %s was removed; nothing "
                    "more is dropped until a device uploads a new one", tag[:12], space[:12],
                    held.signer)
        return 0
    retention = float(getattr(server.config, "retention_s", compaction.RETENTION_S))
    gone = await server.db.compact(space, tag, sorted(state.devices),
                                   _now_ms() - int(retention * 1000))
    if gone:
        server.stats["dropped"] = server.stats.get("dropped", 0) + gone
        log.info("relay: compacted env %s of space %s: dropped %d change set(s) covered by its "
                 "snapshot (%d dropped in all)", tag[:12], space[:12], gone,
                 server.stats["dropped"])
    return gone


async def on_snapshot_put(server: RelayServer, session: Session, msg: SnapshotPut) -> None:
    sp, tag, vv, ct, sig = msg.space, msg.tag, msg.vv, msg.sealed, msg.sig
    r = server._check_space(session, sp)
    if r is None:
        r = _check_sealed(server, session, sp, tag, vv, ct, sig)
    if r is None:
        now = _now_ms()
        max_env_bytes = server.plan.max_env_bytes
        cheap = compaction.judge_snapshot(vv, len(ct), held=None, floors={},
                                          max_env_bytes=max_env_bytes, now_ms=now)
        if not cheap.ok:  # size and emptiness: refused before any storage read
            r = Refusal("bad_snapshot", cheap.reason)
    if r is None:
        # What the relay holds only grows (a removal's purge aside, which `compact` clamps
        # to), so checking against it before the transaction is safe.
        relay_vv = (await server.db.index(sp)).get(tag, {})
        state = server.state(sp)
        active = set(state.devices) if state is not None else set()

        def judge(held: compaction.HeldSnapshot | None, floors: dict[str, int]
                  ) -> compaction.Verdict:
            return compaction.judge_snapshot(
                vv, len(ct), held=held, floors=floors, max_env_bytes=max_env_bytes,
                now_ms=now, relay_vv=relay_vv,
                held_active=held is None or held.signer in active)

        verdict = await server.db.put_snapshot(
            sp, tag, StoredSnapshot(session.device or "", dict(vv), ct, sig, now), judge)
        if not verdict.ok:
            r = Refusal("bad_snapshot", verdict.reason)
    if r is not None:
        log.warning("relay: snapshot from %s refused: %s", session, r.reason)
        await session.send(Nack(msg.rid, r.code, clip_reason(r.reason)))
        return
    server.stats["snapshots"] = server.stats.get("snapshots", 0) + 1
    log.info("relay: stored a snapshot of env %s of space %s from %s (%d bytes, covers %d "
             "change set(s))", tag[:12], sp[:12], session.device, len(ct), sum(vv.values()))
    # The uploader holds what it snapshotted: its own high-water mark.
    await server.db.note_acks(sp, tag, session.device or "", vv)
    await session.send(Ok(msg.rid))
    await compact(server, sp, tag)


def _check_sealed(server: RelayServer, session: Session, space: str, tag: str,
                  vv: dict[str, int], ct: bytes, sig: bytes) -> Refusal | None:
    """What the relay can check of a sealed snapshot without reading it."""
    state = server.state(space)
    device = session.device or ""
    member = state.devices.get(device) if state is not None else None
    try:
        compaction.verify_snapshot_sig(member.sign_key if member is not None else None,
                                       space, tag, vv, ct, sig)
        payload_generation(ct)
    except (compaction.SnapshotError, KeyMaterialError) as exc:
        return Refusal("bad_snapshot", str(exc))
    except MocksyncError as exc:
        return Refusal("bad_snapshot", f"snapshot refused: {exc}")
    if len(vv) > compaction.MAX_SNAPSHOT_DEVICES:
        return Refusal("bad_snapshot", "snapshot refused: its version vector names too many "
                                       "devices")
    return None


async def on_snapshot_get(server: RelayServer, session: Session, msg: SnapshotGet) -> None:
    sp, tag = msg.space, msg.tag
    r = server._check_space(session, sp)
    if r is not None:
        await session.send(Nack(msg.rid, r.code, clip_reason(r.reason)))
        return
    snap = await server.db.snapshot(sp, tag)
    floors = await server.db.floors(sp, tag)
    await session.send(SnapshotReply(
        msg.rid, sp, tag, signer=snap.signer if snap else None,
        vv=dict(snap.vv) if snap else {}, sealed=snap.ct if snap else None,
        sig=snap.sig if snap else None, floors=dict(floors)))


async def on_high_water(server: RelayServer, session: Session, msg: HighWater) -> None:
    sp, tag = msg.space, msg.tag
    if server._check_space(session, sp) is not None:
        return  # no reply; a stale space is simply ignored
    state = server.state(sp)
    if state is None:
        return
    # Only devices of the space can author change sets: made-up names are not kept.
    known = state.devices.keys() | state.removed_devices.keys()
    marks = {d: n for d, n in msg.vv.items() if d in known}
    if not marks:
        return
    await server.db.note_acks(sp, tag, session.device or "", marks)
    c = _compactor(server)
    now = time.monotonic()
    last = c.hw_at.get((sp, tag))
    if last is not None and now - last < compaction.HW_COMPACT_GAP_S:
        return  # compacted a moment ago; the next mark or the timer takes this one
    if len(c.hw_at) >= MAX_HW_SLOTS:
        c.hw_at = {k: t for k, t in c.hw_at.items() if now - t < compaction.HW_COMPACT_GAP_S}
    c.hw_at[(sp, tag)] = now
    await compact(server, sp, tag)


async def compaction_round(server: RelayServer,
                           limit: int = compaction.COMPACT_ENVS_PER_ROUND) -> int:
    """Compact the next `limit` environments holding a snapshot (a page of the walk, which
    starts over after the last); how many change sets went."""
    c = _compactor(server)
    slots = await server.db.snapshot_slots(c.after, limit)
    c.after = slots[-1] if len(slots) == limit else None
    c.rounds += 1
    gone = 0
    for space, tag in slots:
        if server.state(space) is None:
            await server._load(space)
        gone += await compact(server, space, tag)
    return gone


async def compaction_loop(server: RelayServer) -> None:
    """Every `compact_interval_s` (config; `compaction.COMPACT_INTERVAL_S`): one round."""
    interval = float(getattr(server.config, "compact_interval_s",
                             compaction.COMPACT_INTERVAL_S))
    while True:
        await asyncio.sleep(interval)
        try:
            await compaction_round(server)
        except asyncio.CancelledError:
            raise
        except Exception:  # a database hiccup must not end the timer; logged, next round
            log.exception("relay: compaction round failed")


def compaction_stats(server: RelayServer) -> dict[str, int]:
    """What the health endpoint shows of compaction at this instance since it started."""
    return {"snapshots": int(server.stats.get("snapshots", 0)),
            "dropped": int(server.stats.get("dropped", 0)),
            "rounds": _compactor(server).rounds}


#: Kind -> handler, merged into the server's dispatch table.
HANDLERS: dict[str, Callable[..., Awaitable[None]]] = {
    "snapput": on_snapshot_put, "snapget": on_snapshot_get, "hw": on_high_water}

__all__ = ["HANDLERS", "MAX_HW_SLOTS", "compact", "compaction_loop", "compaction_round",
           "compaction_stats", "on_high_water", "on_snapshot_get", "on_snapshot_put"]
