"""The daemon's side of relay compaction: make snapshots, say what it holds, start from one.

Why beside `relay_transport` and not in it: compaction is one concern with its own loop and
its own decisions (`relay.compaction`, pure), and the transport is already the busiest module
of the daemon. The transport calls three hooks:

- `adopt(client, space, tag)` when a fetch is answered `nack compacted` (the relay dropped
  change sets this device lacks): fetch the snapshot, check its signature and that its signer
  is a device of the space, open it with the space key, check it names this environment and
  the version vector it claims, and adopt it in the store (`Store.adopt_snapshot`: whatever
  this device holds is applied again over it, so nothing held is lost). The pull then goes on
  from the new version vector: nothing is applied twice. A snapshot that fails any check is
  refused with a clear problem in `status`, and nothing changes.
- `run()`: every SNAPSHOT_CHECK_S, for each environment of each admitted space: tell the
  relay what this device holds (`hw`, its high-water mark, only when it changed) and, when
  `compaction.snapshot_due` says so and this device holds everything the relay holds of the
  environment (no gap waiting either), make a snapshot off the loop (the store worker builds
  the content, a thread seals it) and upload it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..changes import vv as vvmod
from ..errors import MocksyncError
from ..relay import compaction
from ..store import PENDING
from .errors import RelayError, RelayRefused
from .relay_client import RelayClient

if TYPE_CHECKING:
    from .relay_transport import RelayTransport

log = logging.getLogger("mocksync.relay.snapshots")

#: Seconds between two rounds of high-water marks and snapshot checks.
SNAPSHOT_CHECK_S = 5.0
#: Snapshots (by signature) this device refused and remembers, so a relay that serves the
#: same bad one again (answering `compacted` forever) costs a look-up, not an open.
MAX_REFUSED_SNAPSHOTS = 256


class SnapshotKeeper:
    """Compaction for one `RelayTransport` (its agent, client and problems list)."""

    def __init__(self, transport: RelayTransport, *, every: int = compaction.SNAPSHOT_CHANGESETS,
                 check_s: float = SNAPSHOT_CHECK_S,
                 min_gap_s: float = compaction.SNAPSHOT_MIN_GAP_S) -> None:
        self.t = transport
        self.every = every
        self.check_s = check_s
        self.min_gap_s = min_gap_s
        #: Per (space, tag): the version vector of the newest snapshot known on the relay, the
        #: last high-water mark sent, and when this device last tried to make a snapshot.
        self.snap_vv: dict[tuple[str, str], dict[str, int]] = {}
        self.sent_hw: dict[tuple[str, str], dict[str, int]] = {}
        self.tried_at: dict[tuple[str, str], float] = {}
        self.counters = {"made": 0, "adopted": 0, "refused": 0}
        #: Signature -> why this device refused that snapshot (oldest forgotten first).
        self.refused_sigs: dict[bytes, str] = {}

    # ---------------------------------------------------------------- adopting
    async def adopt(self, client: RelayClient, space: str, tag: str) -> str | None:
        """Start `tag` of `space` from the relay's snapshot; the env adopted, or None (the
        reason is a problem in `status`)."""
        agent = self.t.agent
        reply = await client.get_snapshot(space, tag)
        if reply.sealed is None or reply.signer is None or reply.sig is None:
            self._refused(space, "the relay dropped change sets this device needs but holds no "
                                 "snapshot to start from")
            return None
        stored = agent.spaces.get(space)
        if stored is None:
            return None
        seen = self.refused_sigs.get(reply.sig)
        if seen is not None:
            self._refused(space, seen)
            return None
        # Bounded before anything is opened: the relay's own limit, from the plan this
        # device holds the space to (a relay cannot raise it past what it announced).
        cap = compaction.SNAPSHOT_SIZE_FACTOR * agent.spaces.plan(space).max_env_bytes
        if len(reply.sealed) > cap:
            self._refused(space, f"snapshot refused: {len(reply.sealed)} bytes is over the "
                                 f"{cap} byte limit ({compaction.SNAPSHOT_SIZE_FACTOR} x the "
                                 "plan's environment size)", reply.sig)
            return None
        # Only an active device's snapshot: a removed one (still holding old keys) could
        # seal anything and date it before its removal.
        member = stored.state.devices.get(reply.signer)
        try:
            keys, tagger = self.t._keys(space), self.t._tagger(space)
            content = await asyncio.to_thread(
                compaction.open_snapshot, space, tag, keys, reply.signer,
                member.sign_key if member is not None else None, reply.vv, reply.sealed,
                reply.sig, tagger)
            if not compaction.dominates(reply.vv, reply.floors):
                raise compaction.SnapshotError(
                    "snapshot refused: it does not cover what the relay dropped")
            now_ms = int(agent.clock() * 1000)
            res = await agent.store_call(agent.store.adopt_snapshot, content, now_ms)
        except MocksyncError as exc:
            self._refused(space, str(exc), reply.sig)
            return None
        env = str(content["e"])
        self.t._tag_env.setdefault(space, {})[tag] = env
        self.snap_vv[(space, tag)] = dict(reply.vv)
        self.counters["adopted"] += 1
        log.info("space %s: started %s from the relay's snapshot by %s (covers %d change "
                 "set(s); %s)", space[:12], env, reply.signer, sum(reply.vv.values()),
                 res.status)
        return env

    def _refused(self, space: str, reason: str, sig: bytes | None = None) -> None:
        self.counters["refused"] += 1
        self.t._problem(space, "snapshot", reason)
        if sig is not None:
            if len(self.refused_sigs) >= MAX_REFUSED_SNAPSHOTS:
                self.refused_sigs.pop(next(iter(self.refused_sigs)))
            self.refused_sigs[sig] = reason

    # ---------------------------------------------------------------- marks and snapshots
    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            c = self.t.client
            if c is None or not c.connected or self.t.agent is None:
                continue
            with contextlib.suppress(RelayError):
                await self.round(c)

    async def round(self, client: RelayClient) -> None:
        """One round: high-water marks, then snapshots that are due."""
        store = self.t.agent.store
        for space in sorted(client.accepted):
            due: list[tuple[str, str, dict[str, int]]] = []
            for tag, env in sorted(self.t._tag_env.get(space, {}).items()):
                vv = store.version_vector(env)
                if vv and self.sent_hw.get((space, tag)) != vv:
                    await client.high_water(space, tag, vv)
                    self.sent_hw[(space, tag)] = vv
                if self.every > 0 and self._count_due(space, tag, vv):
                    due.append((tag, env, vv))
            if due:
                index = await client.index(space)
                for tag, env, vv in due:
                    await self._maybe_snapshot(client, space, tag, env, vv, index.get(tag, {}))

    def _count_due(self, space: str, tag: str, vv: dict[str, int]) -> bool:
        last = self.snap_vv.get((space, tag), {})
        since = sum(vv.values()) - sum(last.values())
        tried = self.tried_at.get((space, tag))
        since_s = None if tried is None else time.monotonic() - tried
        if since <= 0 or (since_s is not None and since_s < self.min_gap_s):
            return False  # nothing new, or too soon: no size is measured
        env = self.t._tag_env.get(space, {}).get(tag)
        history = env_bytes = 0
        if env is not None and since < self.every:
            # Few but big change sets: the history held since the last snapshot against the
            # environment's size (both measured only when the count alone says no).
            history = self.t.agent.store.history_bytes(env, last)
            env_bytes = self.t._declared(env)
        return compaction.snapshot_due(since, history, env_bytes, since_last_s=since_s,
                                       every=self.every, min_gap_s=self.min_gap_s)

    async def _maybe_snapshot(self, client: RelayClient, space: str, tag: str, env: str,
                              vv: dict[str, int], relay_vv: dict[str, int]) -> None:
        agent = self.t.agent
        if vvmod.missing(vv, relay_vv) or agent.store.count(env, PENDING):
            return  # this device does not hold the whole environment (yet)
        if vvmod.missing(relay_vv, vv):
            return  # the relay does not hold all of it yet: it would refuse the snapshot
        self.tried_at[(space, tag)] = time.monotonic()
        content = await agent.store_call(agent.store.snapshot_content, env)
        if content is None:
            return
        try:
            keys = self.t._keys(space)
            got_vv, sealed, sig = await asyncio.to_thread(
                compaction.seal_snapshot, space, tag, keys, agent.identity, content)
            await client.put_snapshot(space, tag, got_vv, sealed, sig)
        except RelayRefused as exc:
            self._refused(space, str(exc))
            return
        except MocksyncError as exc:
            self._refused(space, str(exc))
            return
        self.snap_vv[(space, tag)] = got_vv
        self.counters["made"] += 1
        log.info("space %s: uploaded a snapshot of %s (covers %d change set(s), %d bytes)",
                 space[:12], env, sum(got_vv.values()), len(sealed))


__all__ = ["SNAPSHOT_CHECK_S", "SnapshotKeeper"]
