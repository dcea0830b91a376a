"""Change sets from other devices: verify, store, and settle the files they change.

The store verifies and applies (`Store.ingest`); who may write what is `space.writers`
(`SpaceDirectory.judge`); this part sequences them for the transports: refusals recorded
for `status`, conflicts announced, a teammate's new environment adopted into the folder, an
unshare/delete applied, removals enforced (`enforce_membership`), and the files' writes
scheduled. The `*_async` forms run on the store worker so a big catch-up never holds the loop.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
from functools import partial
from typing import TYPE_CHECKING, Any

from ..agentevents import (
    ConflictSeen,
    Deleted,
    RemoteBatch,
    RemoteChange,
    Revoked,
    Shared,
    Unshared,
)
from ..errors import MocksyncError, ValidationError
from ..model import render
from ..model.ops import DELETED, FILE_NAME, LIFECYCLE, SHARED
from ..space.writers import NOT_A_DEVICE, overreach
from .envfiles import EnvRuntime
from .faults import RECEIVING
from .registry import EnvRecord

if TYPE_CHECKING:
    from .daemon import Agent

log = logging.getLogger("mocksync.agent")


def decode_for(space: str, wire: bytes) -> Any:
    """The change set in `wire`, refused when it names another space than it arrived on."""
    from ..changes import ChangeSet

    # A transport may hand over a change set it decoded off the loop already.
    cs = wire if isinstance(wire, ChangeSet) else ChangeSet.decode(wire)
    if cs.space != space:
        raise ValidationError(f"change set for space {cs.space} arrived on space {space}")
    return cs


class RemoteIngest:
    """Takes in peers' change sets and settles their files (owned by `Agent`)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def receive_async(self, space: str, wire: bytes) -> Any:
        """`receive` on the store worker, after every change set handed over before it: the
        loop only awaits the result, so a peer's big or many change sets never hold it."""
        if self.agent.worker is None or self.agent.worker.closed:
            return self.receive(space, wire)
        return await self.agent.worker.run(self.receive, space, wire)

    async def receive_batch_async(self, space: str, wires: list[bytes], *, settle: bool = True,
                                  ) -> tuple[Any, list[tuple[Any, Exception]]]:
        """`receive_batch` on the store worker, in order (see `receive_async`)."""
        if self.agent.worker is None or self.agent.worker.closed:
            return self.receive_batch(space, wires, settle=settle)
        return await self.agent.worker.run(partial(self.receive_batch, settle=settle), space, wires)

    async def settle_remote_async(self, space: str, envs: set[str]) -> None:
        """`settle_remote` on the store worker (adopting a big environment renders it)."""
        if self.agent.worker is None or self.agent.worker.closed:
            self.settle_remote(space, envs)
            return
        await self.agent.worker.run(self.settle_remote, space, envs)

    def receive(self, space: str, wire: bytes) -> Any:
        """A change set from another device. Raises the store's refusal on bad input."""
        cs = decode_for(space, wire)
        try:
            res = self.agent.store.ingest(cs, self.author_key(space, cs), int(self.agent.clock() * 1000))
        except MocksyncError as exc:
            self.note_refused(cs, exc)
            raise
        except sqlite3.Error as exc:
            self.agent.retries.store_failed({cs.env}, exc)
            raise
        self.agent.retries.recovered(cs.env, RECEIVING)
        for c in res.applied:
            self.agent.publish(RemoteChange(env=c.env, device=c.device, seq=c.seq,
                                            ops=len(c.ops)))
        self.after_remote(space, res)
        return res

    def note_refused(self, cs: Any, exc: Exception) -> None:
        """Keep a refused change set's reason so `status` can say why the environment cannot
        sync (`agent.health`), whether it came over the LAN or from the relay. Refusals the
        store or the membership check already recorded are not recorded twice."""
        from ..changes.errors import SignatureError
        from ..store.errors import EquivocationError, UnknownDeviceError
        from .health import FORGED

        if cs is None or isinstance(exc, EquivocationError | UnknownDeviceError):
            return
        reason = f"{FORGED}{exc}" if isinstance(exc, SignatureError) else str(exc)
        with contextlib.suppress(Exception):  # a full disk must not hide the refusal itself
            self.agent.store.refuse(cs, reason, int(self.agent.clock() * 1000))

    def note_undecodable(self, rows: list[tuple[str, str, int, str]]) -> None:
        """Keep `(env, device, seq, reason)` of change sets that arrived but did not decode,
        so `status` lists them in the environment's `refused` (issue 12), not only the log."""
        now_ms = int(self.agent.clock() * 1000)
        for env, device, seq, reason in rows:
            with contextlib.suppress(Exception):  # a full disk must not hide the refusal
                self.agent.store.refuse_slot(env, device, seq, reason, now_ms)

    async def note_undecodable_async(self, rows: list[tuple[str, str, int, str]]) -> None:
        """`note_undecodable` on the store worker, in order with the ingests before it."""
        if self.agent.worker is None or self.agent.worker.closed:
            self.note_undecodable(rows)
            return
        await self.agent.worker.run(self.note_undecodable, rows)

    def author_key(self, space: str, cs: Any) -> bytes | None:
        """The key to verify `cs` with, when its author may write it (`space.writers`, the
        relay's decision too); None when not, after recording a final refusal (a removed
        device past its cut) so `status` lists it. A device we do not know may be one whose
        addition has not reached us yet: refused now (the store says so), not listed."""
        return self.author_keys(space, [cs])[0]

    def author_keys(self, space: str, changesets: list[Any]) -> list[bytes | None]:
        """`author_key` of each of `changesets`, judged against one reading of the
        membership (`SpaceDirectory.judge_all`: a catch-up page at a time)."""
        verdicts = self.agent.spaces.judge_all(
            space, [(cs.device, cs.env, cs.seq) for cs in changesets])
        keys: list[bytes | None] = []
        for cs, verdict in zip(changesets, verdicts, strict=True):
            if not verdict.accept and verdict.code != NOT_A_DEVICE:
                self.agent.store.refuse(cs, verdict.reason, int(self.agent.clock() * 1000))
            keys.append(verdict.sign_key if verdict.accept else None)
        return keys

    def enforce_membership_soon(self) -> None:
        """`enforce_membership` as a store-worker job (a rebuild can be big), in order with
        the ingests queued before it; at once when there is no worker."""
        if not self.agent.bridge.spawn_on_worker(self.enforce_membership):
            self.enforce_membership()

    def enforce_membership(self) -> int:
        """Take back change sets that a removal now refuses and rewrite their files; returns
        how many were taken back.

        A member may have applied a removed device's change set before it learned of the
        removal (it arrived over the LAN, or from the relay before the removal did); the
        removal's cut says it is refused everywhere, so this member rebuilds the environment
        without it (`space.writers.overreach`, `Store.revoke`) and ends where every other
        member is. Run whenever membership may have changed: at start, when the CLI pokes the
        daemon after `remove`, and when entries arrive from the relay."""
        now = int(self.agent.clock() * 1000)
        revoked = 0
        by_space = {sp.space_id: sp for sp in self.agent.spaces.spaces()
                    if sp.state.removed_devices}
        if not by_space:
            return 0
        for env in self.agent.store.envs():
            sp = by_space.get(self.agent.store.head_space(env) or "")
            if sp is None:
                continue
            over = overreach(sp.state, self.agent.spaces.tag(sp.space_id, env), self.agent.store.held_seqs(env))
            taken: list[tuple[str, list[int]]] = []
            for device, (cut, reason) in over.items():
                if device == self.agent.device:
                    continue  # removed ourselves: our own edits stay here, they just sync no more
                seqs = self.agent.store.revoke(env, device, cut, reason, now)
                if seqs:
                    taken.append((device, seqs))
            for device, seqs in taken:
                revoked += len(seqs)
                log.warning("env %s: took back %d change set(s) of removed device %s (after "
                            "#%d)", env, len(seqs), device, seqs[0] - 1)
                self.agent.publish(Revoked(env=env, device=device, seqs=seqs))
            if taken:
                self.settle_remote(sp.space_id, {env})
        return revoked

    def after_remote(self, space: str, res: Any, *, settle: bool = True) -> None:
        """Files to (re)write and conflicts to announce after change sets from others.
        `settle=False`: announce only; the caller settles the files with `settle_remote`."""
        if settle:
            self.settle_remote(space, {c.env for c in res.applied})
        for c in res.conflicts:
            self.agent.publish(ConflictSeen(env=c.env, id=c.id, entity=c.entity,
                                            field=list(c.field)))

    def settle_remote(self, space: str, envs: set[str]) -> None:
        """Give the files of `envs` what their logs now say: adopt an environment a teammate
        shared, apply an unshare/delete, or schedule the write of remote edits.

        A relay catch-up calls this once an environment's pull is complete, not per page: a
        device that pulls a whole log (a new member, a device that never had it) must not
        adopt an environment whose tombstone is still in a later page."""
        for env in sorted(envs):
            rt = self.agent.envs.get(env) or self.adopt_remote(space, env)
            if rt is not None:
                rt.last_remote_edit = self.agent.clock()
                if not self.apply_lifecycle(rt):
                    self.agent.schedule_write(rt)

    def receive_batch(self, space: str, wires: list[bytes], *, settle: bool = True,
                      ) -> tuple[Any, list[tuple[Any, Exception]]]:
        """Many change sets at once (relay catch-up): one store transaction, one write per env.

        Returns the store's result and the refused change sets with why, so the transport can
        report each refusal while the rest is applied. `settle=False`: one page of a longer
        pull; the caller calls `settle_remote` for the envs it touched once the pull is done.
        """
        decoded = []
        errors: list[tuple[Any, Exception]] = []
        for wire in wires:
            try:
                decoded.append(decode_for(space, wire))
            except MocksyncError as exc:
                errors.append((None, exc))
        items = list(zip(decoded, self.author_keys(space, decoded), strict=True))
        try:
            res, refused = self.agent.store.ingest_batch(items, int(self.agent.clock() * 1000))
        except sqlite3.Error as exc:
            self.agent.retries.store_failed({cs.env for cs, _key in items}, exc)
            raise  # not stored, so not acknowledged: fetched again by `FaultRetries.refetch`
        for env in {cs.env for cs, _key in items}:
            self.agent.retries.recovered(env, RECEIVING)
        errors += refused
        for bad, why in refused:
            self.note_refused(bad, why)
        if res.applied:
            self.agent.publish(RemoteBatch(batch=len(res.applied),
                                           envs=sorted({c.env for c in res.applied})))
        self.after_remote(space, res, settle=settle)
        return res, errors

    def adopt_remote(self, space: str, env: str) -> EnvRuntime | None:
        """An environment shared by a teammate arrives: give it a file in our folder."""
        state = self.agent.store.state(env)
        ent = state.entity(env)
        if ent is None or not ent.live:
            return None  # not renderable yet (its first change set has not arrived)
        if ent.get(LIFECYCLE, SHARED) != SHARED:
            return None
        doc = render(state)
        # The sharer's file name when it is safe and free here (model/sharedname.py).
        path = self.agent.edits.free_path(str(doc.get("name") or env), wanted=ent.get(FILE_NAME, None))
        rt = EnvRuntime(env, space, path, name=str(doc.get("name", "")))
        self.agent.envs[env] = rt
        self.agent.registry.put(EnvRecord(env, space, str(path), rt.name))
        self.agent.publish(Shared(env=env, file=str(path), origin="remote"))
        return rt

    def apply_lifecycle(self, rt: EnvRuntime) -> bool:
        """Apply unshare/delete decided by a teammate. True when the env left the space."""
        ent = self.agent.store.state(rt.uuid).entity(rt.uuid)
        value = ent.get(LIFECYCLE, SHARED) if ent is not None else SHARED
        if value == SHARED:
            return False
        if value == DELETED and rt.path.exists():
            self.agent.writes.write_env(rt, force=True)
            self.agent.home.trash.mkdir(exist_ok=True)
            stamp = int(self.agent.clock())
            dest = self.agent.home.trash / f"{stamp}-{rt.path.name}"
            n = 2
            while dest.exists():  # two deletes of same-named files in one second: keep both
                dest = self.agent.home.trash / f"{stamp}-{n}-{rt.path.name}"
                n += 1
            shutil.move(str(rt.path), dest)
            self.agent.publish(Deleted(env=rt.uuid, trash=str(dest)))
        else:
            self.agent.writes.write_env(rt, force=True)
            self.agent.publish(Unshared(env=rt.uuid, file=str(rt.path)))
        self.agent.forget(rt)
        if rt.path.exists():
            # Now a local file: list it as one (as a local `unshare` does), not nowhere.
            self.agent.on_file(rt.path, initial=True)
        return True
