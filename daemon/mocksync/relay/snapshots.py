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
active device holds, or what is older than the retention period.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import MocksyncError
from ..space.errors import KeyMaterialError
from ..space.keys import payload_generation
from . import compaction
from .policy import Refusal
from .protocol import clip_reason
from .storage import StoredSnapshot

if TYPE_CHECKING:
    from .server import RelayServer, Session

log = logging.getLogger("mocksync.relay.compaction")


def _now_ms() -> int:
    return int(time.time() * 1000)


async def compact(server: RelayServer, space: str, tag: str) -> int:
    """Drop what the env's snapshot lets go now; how many change sets went (logged)."""
    state = server.state(space)
    if state is None:
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


async def on_snapshot_put(server: RelayServer, session: Session, msg: dict[str, Any]) -> None:
    sp, tag, vv, ct, sig = msg["s"], msg["e"], msg["v"], msg["b"], msg["g"]
    r = server._check_space(session, sp)
    if r is None:
        r = _check_sealed(server, session, sp, tag, vv, ct, sig)
    if r is None:
        now = _now_ms()
        max_env_bytes = server.plan.max_env_bytes

        def judge(held: compaction.HeldSnapshot | None, floors: dict[str, int]
                  ) -> compaction.Verdict:
            return compaction.judge_snapshot(vv, len(ct), held=held, floors=floors,
                                             max_env_bytes=max_env_bytes, now_ms=now)

        verdict = await server.db.put_snapshot(
            sp, tag, StoredSnapshot(session.device or "", dict(vv), ct, sig, now), judge)
        if not verdict.ok:
            r = Refusal("bad_snapshot", verdict.reason)
    if r is not None:
        log.warning("relay: snapshot from %s refused: %s", session, r.reason)
        await session.send({"t": "nack", "i": msg["i"], "c": r.code,
                            "r": clip_reason(r.reason)})
        return
    server.stats["snapshots"] = server.stats.get("snapshots", 0) + 1
    log.info("relay: stored a snapshot of env %s of space %s from %s (%d bytes, covers %d "
             "change set(s))", tag[:12], sp[:12], session.device, len(ct), sum(vv.values()))
    # The uploader holds what it snapshotted: its own high-water mark.
    await server.db.note_acks(sp, tag, session.device or "", vv)
    await session.send({"t": "ok", "i": msg["i"]})
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


async def on_snapshot_get(server: RelayServer, session: Session, msg: dict[str, Any]) -> None:
    sp, tag = msg["s"], msg["e"]
    r = server._check_space(session, sp)
    if r is not None:
        await session.send({"t": "nack", "i": msg["i"], "c": r.code,
                            "r": clip_reason(r.reason)})
        return
    snap = await server.db.snapshot(sp, tag)
    floors = await server.db.floors(sp, tag)
    await session.send({"t": "snap", "i": msg["i"], "s": sp, "e": tag,
                        "by": snap.signer if snap else None, "v": snap.vv if snap else {},
                        "b": snap.ct if snap else None, "g": snap.sig if snap else None,
                        "f": floors})


async def on_high_water(server: RelayServer, session: Session, msg: dict[str, Any]) -> None:
    sp, tag = msg["s"], msg["e"]
    if server._check_space(session, sp) is not None:
        return  # no reply; a stale space is simply ignored
    await server.db.note_acks(sp, tag, session.device or "", msg["v"])
    await compact(server, sp, tag)


#: Kind -> handler, merged into the server's dispatch table.
HANDLERS = {"snapput": on_snapshot_put, "snapget": on_snapshot_get, "hw": on_high_water}

__all__ = ["HANDLERS", "compact", "on_high_water", "on_snapshot_get", "on_snapshot_put"]
