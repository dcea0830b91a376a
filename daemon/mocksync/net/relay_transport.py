"""The agent's Transport through a relay: sealed change sets, catch-up by version vector.

What it adds on top of `relay_client`: the agent's change sets. Each change set the agent
broadcasts is sealed (`relay.envelope.seal_envelope`, space content key, AAD binding its slot)
and put to the relay under its environment's tag. Each time the connection is (re)established,
every environment of every admitted space is caught up both ways: the relay's `index` gives
the version vector it holds per env tag; what the relay has and we lack is fetched page by page
and handed to `agent.receive`; what of our own chain the relay lacks (anything a relay dropped
included) is uploaded. Only our own: a device's slot on the relay is its own (issue 12,
`relay.policy.foreign_slot`), so other devices' change sets we got over the LAN reach the relay
from their authors. So a device that was offline catches up from the relay alone, while every
other device is offline too.
At each reconnect the agent judges every environment before it is pulled
(`agent.offline_catch_up`: the `prompt` offline policy may hold it), and our own change sets
of a held environment are never uploaded until the user has decided.

What a dishonest relay can do, and how it shows (docs/design/security.md §3), all in `status()["relay"]`:
- alter or move a ciphertext: the AEAD fails, the envelope is refused and logged (`problems`);
- withhold an envelope: later ones of that chain wait as pending in the store (`gaps`), and a
  relay that claims a version vector it then does not deliver is named (`withheld`); the gap
  heals when a device that holds the chain reconnects and re-uploads it;
- reorder: the store's pending mechanism restores chain order; nothing to report.
A member uploading a forged change set is caught by the store's signature check (`problems`).

Quota refusals (plan limits) are per environment: the sentence is kept per env and shown as
the relay's `reason` while connected; edits keep flowing to LAN peers regardless.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .. import MODEL_VERSION, PROTOCOL_VERSION
from ..agentevents import Relay
from ..aiotime import within
from ..changes import vv as vvmod
from ..errors import MocksyncError
from ..ports import AgentPort
from ..relay.auth import open_signal
from ..relay.compaction import SNAPSHOT_CHANGESETS
from ..relay.envelope import (
    Envelope,
    Slot,
    Tagger,
    open_changeset,
    peek_slot,
    seal_envelope,
)
from ..relay.policy import PERSISTENT_CODES
from ..relay.protocol import MAX_BATCH_ITEMS, PlanInfo, Welcome, split_batches
from ..store import PENDING
from ..sync.offline import is_unsent
from ..sync.progress import SyncProgress, missing_count
from .errors import RelayError, RelayRefused
from .relay_client import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    CONNECTED,
    REFUSED_RETRY_S,
    REQUEST_TIMEOUT_S,
    RelayClient,
    RelayEvents,
)
from .relay_snapshots import SnapshotKeeper

log = logging.getLogger("mocksync.relay.transport")

#: Seconds between checks for new membership entries to upload (removals, migrations...).
LOG_CHECK_S = 5.0
#: Change sets queued for upload while connected; past this, a full catch-up runs instead.
MAX_OUTBOX = 10_000
#: Refusals and tamper reports kept for `status`.
MAX_PROBLEMS = 100
#: Signals kept for a reader that has not taken them.
MAX_SIGNALS = 100
#: Join handshakes this device answers at once as an inviter.
MAX_ADMIN_JOINS = 16
#: When MAX_ADMIN_JOINS are open, one silent for this long (seconds) gives way to a new one.
ADMIN_JOIN_EVICTABLE_S = 2.0


#: Seconds a session keeps a space refused for a passing reason (too many devices of the
#: member online) before reconnecting to ask again.
SPACE_RETRY_S = 10.0


def retry_refused_spaces(refused: dict[str, str], connected_for_s: float) -> bool:
    """Should a connected session reconnect to ask again for spaces the relay refused (pure)?

    `refused`: space -> refusal code. Only refusals that can pass by themselves count (the
    member's device limit: another device disconnects); those a person must fix (revoked,
    auth refused, incompatible version) are retried by the client's slow schedule instead."""
    passing = [code for code in refused.values() if code not in PERSISTENT_CODES]
    return bool(passing) and connected_for_s >= SPACE_RETRY_S


def catch_up_order(relay_tags: Iterable[str], local_tags: Sequence[str]) -> list[str]:
    """The order a catch-up visits a space's environment tags (pure).

    `local_tags`: this device's environments, the one shared first first. They come first, in
    that order, then the tags only the relay holds (sorted). Why: uploads happen in this
    order, and when a plan admits only some of them (its environment count), the relay keeps
    the ones that reach it first. Shared-first is what a person expects to keep (the newest
    share is the one refused, as `share` itself says once the plan is known) and it is the
    same on every run; the tags' own order is a keyed hash, a coin toss per space."""
    order = list(dict.fromkeys(local_tags))
    known = set(order)
    order.extend(sorted(t for t in set(relay_tags) if t not in known))
    return order


class RelayTransport(RelayEvents):
    """`Transport` (mocksync/ports.py) over a relay. `start(agent)` returns at once; the
    connection comes up in the background (`wait_synced` waits for a finished catch-up)."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        spaces: Iterable[str] | None = None,
        ssl: Any = None,
        protocol_version: int = PROTOCOL_VERSION,
        model_version: int = MODEL_VERSION,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        refused_retry_s: float = REFUSED_RETRY_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        log_check_s: float = LOG_CHECK_S,
        snapshot_every: int = SNAPSHOT_CHANGESETS,
    ) -> None:
        #: The relay's addresses (instances of one cluster; the client fails over in order).
        self.urls = [url] if isinstance(url, str) else list(url)
        self.url = self.urls[0]
        self.only = set(spaces) if spaces is not None else None
        self._client_kw = dict(ssl=ssl, protocol_version=protocol_version,
                               model_version=model_version, backoff_min_s=backoff_min_s,
                               backoff_max_s=backoff_max_s, refused_retry_s=refused_retry_s,
                               request_timeout_s=request_timeout_s)
        self.log_check_s = log_check_s
        #: Relay compaction: snapshots made and adopted, high-water marks (relay_snapshots).
        self.snapshots = SnapshotKeeper(self, every=snapshot_every)
        self._agent: AgentPort | None = None
        self.client: RelayClient | None = None
        self.problems: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_PROBLEMS)
        self.signals: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_SIGNALS)
        self.signal_handlers: list[Callable[[str, str, bytes], None]] = []
        #: Join handshakes this device is answering as the inviter, by relay join id.
        self._joins: dict[bytes, Any] = {}
        #: When each of those last heard from its joiner (monotonic seconds).
        self._join_seen: dict[bytes, float] = {}
        self.withheld: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.env_refusals: dict[tuple[str, str], str] = {}
        self.counters = {"sent": 0, "received": 0, "refused": 0, "syncs": 0}
        #: Catch-ups in flight and how far each has come (`status --json` `progress`).
        self.progress = SyncProgress()
        self._taggers: dict[str, Tagger] = {}
        self._tag_env: dict[str, dict[str, str]] = {}
        #: Per environment: (declared size, the version vector it was measured at).
        self._sizes: dict[str, tuple[int, tuple[tuple[str, int], ...]]] = {}
        self._outbox: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue(MAX_OUTBOX)
        self._tasks: list[asyncio.Task[Any]] = []
        #: The last live push being applied (the next one waits for it: arrival order).
        self._push_chain: asyncio.Task[Any] | None = None
        self._synced = asyncio.Condition()
        self._resync = False
        self._bg: set[asyncio.Task[Any]] = set()
        self.my_presence: dict[str, Any] = {"space": None, "env": None, "entity": None}
        #: Key generations seen on envelopes this device could not open, per space, and the
        #: recovery running for each (`keyrecovery`): never left stuck on a rotation.
        self._missing_gen: dict[str, int] = {}
        self._key_tasks: dict[str, asyncio.Task[None]] = {}
        self._key_arrived: dict[str, asyncio.Event] = {}
        #: Called when the relay sends a `relays` entry (a space moved relay): the fleet
        #: plans its routes again (`net.relay_fleet`).
        self.on_relays_moved: Callable[[], None] | None = None

    @property
    def agent(self) -> AgentPort:
        """The agent this transport was started with (`start`)."""
        if self._agent is None:
            raise RelayError("the relay transport is not started")
        return self._agent

    @agent.setter
    def agent(self, agent: AgentPort) -> None:
        self._agent = agent

    # ---------------------------------------------------------------- Transport protocol
    # ---------------------------------------------------------------- membership from the relay
    def on_entries(self, space: str, wires: list[bytes]) -> None:
        """Membership entries from the relay: learn new devices, removals and key rotations
        made by other members (without them, a device added after us would be refused here).
        Verified as a whole log before anything is stored; a bad entry changes nothing."""
        from ..spaceio.learn import learn_entries

        if self._agent is None:
            return
        stored = self.agent.spaces.get(space)
        if stored is None:
            return
        try:  # the same path as entries from a LAN peer (keys opened and stored with them)
            learned = learn_entries(self.agent.home, self.agent.identity, space, stored, wires)
        except MocksyncError as exc:
            self._problem(space, "membership entries", str(exc))
            return
        fresh, new_keys = learned.fresh, learned.new_keys
        if not fresh:
            return
        self._taggers.pop(space, None)
        if any(e.kind == "relays" for e in fresh) and self.on_relays_moved is not None:
            self.on_relays_moved()  # the space moved relay: its route changes now
        if learned.removals:
            # Take back what the removal refuses (on the agent's store worker when it has one).
            self.agent.enforce_membership_soon()
        if learned.signed:  # this device rotated the key after a member left: pass it on
            async def push() -> None:
                with contextlib.suppress(MocksyncError, ConnectionError):
                    await self.push_logs()

            task = asyncio.create_task(push(), name="relay rotation")
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)
        if self.client is not None:  # the relay holds what it sent: never upload it back
            self.client.uploaded.setdefault(space, set()).update(e.hash for e in fresh)
        if new_keys:
            self._key_arrived.setdefault(space, asyncio.Event()).set()
        log.info("space %s: %d new membership entries from the relay%s", space, len(fresh),
                 f" (key generations {sorted(new_keys)})" if new_keys else "")

    # ---------------------------------------------------------------- admitting joiners
    def on_join_request(self, space: str, join_id: bytes, payload: bytes) -> None:
        """A device with an invite from us runs its join handshake through the relay."""
        from ..space.invite import Admission
        from ..spaceio.actions import admin_session, record_admission

        if self._agent is None:
            return
        sess = self._joins.get(join_id)
        now = time.monotonic()
        if sess is None:
            if len(self._joins) >= MAX_ADMIN_JOINS:
                # Make room: the handshake silent longest gives way, so idle handshakes never
                # block a real join (issue 12); an honest joiner answers within a round trip.
                oldest = min(self._joins, key=lambda j: self._join_seen.get(j, 0.0))
                if now - self._join_seen.get(oldest, 0.0) < ADMIN_JOIN_EVICTABLE_S:
                    return
                self._joins.pop(oldest, None)
                self._join_seen.pop(oldest, None)
            try:
                sess = admin_session(self.agent.home, self.agent.identity, space)
            except MocksyncError as exc:
                self._problem(space, "join", str(exc))
                return
            self._joins[join_id] = sess
        self._join_seen[join_id] = now
        replies = sess.receive(payload, time.time())  # never raises on joiner input
        outcome = sess.outcome
        if outcome is not None:
            self._joins.pop(join_id, None)
            self._join_seen.pop(join_id, None)
            if isinstance(outcome, Admission):
                try:
                    record_admission(self.agent.home, sess)
                except MocksyncError as exc:
                    self._problem(space, "join", str(exc))
                    return
                log.info("admitted a new device into space %s", space)
        client = self.client

        async def answer() -> None:
            if client is None:
                return
            for m in replies:
                with contextlib.suppress(MocksyncError, ConnectionError):
                    await client.join_reply(space, join_id, m)
            if isinstance(outcome, Admission):
                with contextlib.suppress(MocksyncError, ConnectionError):
                    await self.push_logs()

        task = asyncio.create_task(answer())
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def start(self, agent: AgentPort) -> None:
        self.agent = agent
        from ..spaceio.store import SpacePins

        self.client = RelayClient(self.urls, agent.identity, self._logs, self,
                                  pins=SpacePins(agent.home),
                                  **self._client_kw)
        await self.client.start()
        self._tasks = [asyncio.create_task(self._flush_loop(), name="relay flush"),
                       asyncio.create_task(self._log_loop(), name="relay logs"),
                       asyncio.create_task(self.snapshots.run(), name="relay snapshots")]

    async def stop(self) -> None:
        for t in self._key_tasks.values():
            t.cancel()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self.client is not None:
            await self.client.stop()

    async def reconnect(self) -> None:
        if self.client is not None:
            await self.client.reconnect()

    def broadcast(self, space: str, env: str, wire: bytes) -> None:
        c = self.client
        if c is None or not c.connected or space not in c.accepted:
            return  # the next catch-up uploads it
        try:
            self._outbox.put_nowait((space, env, wire))
        except asyncio.QueueFull:
            self._resync = True

    def status(self) -> dict[str, Any]:
        relay: dict[str, Any] = (self.client.status() if self.client is not None else
                                 {"url": self.url, "state": "offline", "reason": "not started",
                                  "next_retry_s": None})
        if relay["state"] == CONNECTED and not relay.get("reason") and self.env_refusals:
            relay["reason"] = list(self.env_refusals.values())[-1]
        relay["quota"] = [{"space": s, "env": e, "reason": r}
                          for (s, e), r in self.env_refusals.items()]
        relay["gaps"] = self.gaps()
        relay["withheld"] = [{"space": s, "env": e, "device": d, "relay_claimed": c, "got": g}
                             for (s, e, d), (c, g) in self.withheld.items()]
        relay["problems"] = list(self.problems)[-10:]
        relay["counters"] = dict(self.counters)
        return {"relay": relay, "peers": self.who(), "progress": self.progress.view()}

    # ---------------------------------------------------------------- public extras
    async def wait_synced(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until `count` catch-ups have finished since start (False on timeout)."""
        async with self._synced:
            try:
                await within(timeout, self._synced.wait_for(lambda: self.counters["syncs"] >= count))
            except TimeoutError:
                return False
        return True

    def gaps(self) -> list[dict[str, Any]]:
        """Environments with change sets waiting for a predecessor nobody delivered yet."""
        if self._agent is None:
            return []
        out = []
        for space, tags in self._tag_env.items():
            for env in tags.values():
                n = self.agent.store.count(env, PENDING)
                if n:
                    out.append({"space": space, "env": env, "pending": n, "reason": (
                        f"{n} change set(s) of {env} wait for predecessors the relay did not "
                        "deliver; they apply when a device holding them reconnects")})
        return out

    def who(self) -> list[dict[str, Any]]:
        """Devices online through the relay in our spaces, and what they are looking at."""
        if self.client is None or self._agent is None:
            return []
        out = []
        for space, book in self.client.presence.items():
            names = self._tag_env.setdefault(space, {})
            if any(tag and tag not in names for tag, _e in book.values()):
                # An environment that reached us over the LAN only has no tag learnt yet:
                # tag what we hold, so `who` names what a teammate edits (issue 11 item 6).
                with contextlib.suppress(MocksyncError):
                    tagger = self._tagger(space)
                    for env in self._local_envs(space):
                        names.setdefault(tagger(env), env)
            for device, (tag, entity) in sorted(book.items()):
                out.append({"device": device,
                            "member": self.agent.spaces.member_name(space, device),
                            "via": "relay", "state": "online", "rtt_ms": None, "space": space,
                            "env": names.get(tag) if tag else None, "entity": entity})
        return out

    def set_presence(self, *, space: str | None = None, env: str | None = None,
                     entity: str | None = None, editor: str | None = None, **_: Any) -> None:
        """What this device's user is looking at (one place at a time; None: nothing). The
        relay sees the env tag and entity id only; the editor name stays on the LAN."""
        self.my_presence = {"space": space, "env": env, "entity": entity if env else None}
        task = asyncio.create_task(self._send_presence(space, env, entity if env else None))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _send_presence(self, space: str | None, env: str | None,
                             entity: str | None) -> None:
        c = self.client
        if c is None:
            return
        targets = set(c.accepted) | set(c.my_presence)
        for sp in sorted(targets):
            if sp == space:
                tag = self._tagger(sp)(env) if env else None
                value = (tag, entity)
            else:
                value = (None, None)
            if c.my_presence.get(sp, (None, None)) == value and sp != space:
                continue
            with contextlib.suppress(RelayError):
                await c.set_presence(sp, *value)

    async def send_signal(self, space: str, to: str, body: bytes) -> None:
        if self.client is None:
            raise RelayError("the relay transport is not started")
        await self.client.signal(space, to, body)

    # ---------------------------------------------------------------- helpers
    def _spaces(self) -> list[Any]:
        return [s for s in self.agent.spaces.spaces()
                if self.only is None or s.space_id in self.only]

    def _logs(self) -> dict[str, list[bytes]]:
        return {s.space_id: [e.wire for e in s.entries] for s in self._spaces()}

    def _tagger(self, space: str) -> Tagger:
        t = self._taggers.get(space)
        if t is None:
            stored = self.agent.spaces.get(space)
            if stored is None:
                raise RelayError(f"this device does not belong to space {space[:12]}")
            t = self._taggers[space] = Tagger(space, stored.keys)
        return t

    def _keys(self, space: str) -> dict[int, bytes]:
        stored = self.agent.spaces.get(space)
        if stored is None:
            raise RelayError(f"this device does not belong to space {space[:12]}")
        return stored.keys

    def _declared(self, env: str) -> int:
        """The environment's compact-JSON size plus its linked files, declared to the relay for
        its quota: the size of the very state being uploaded. Measured again whenever the
        state changed (keyed by its version vector): a size remembered from before an edit
        declared a grown environment at its old size, and the relay let it past its quota."""
        from ..model import render
        from ..model.envsize import compact_size
        from ..model.files import linked_bytes
        from ..model.lifecycle import is_tombstoned

        vv = tuple(sorted(self.agent.store.version_vector(env).items()))
        hit = self._sizes.get(env)
        if hit is not None and hit[1] == vv:
            return hit[0]
        state = self.agent.store.state(env)
        if is_tombstoned(state):
            # Unshared or deleted: no device renders it any more, and its tombstone (and any
            # late edit under it) must reach the relay whatever the quota: it holds nothing.
            self._sizes[env] = (0, vv)
            return 0
        # Linked files (FILE bodies, TLS files) count toward the environment's size, as they
        # do in the daemon's own check.
        size = compact_size(render(state)) + linked_bytes(state)[1]
        self._sizes[env] = (size, vv)
        return size

    def _problem(self, space: str, what: str, reason: str, **extra: Any) -> None:
        self.counters["refused"] += 1
        entry = {"time": round(time.time(), 3), "space": space, "what": what, "reason": reason,
                 **extra}
        self.problems.append(entry)
        log.warning("relay: %s refused: %s", what, reason)

    def _sendable(self, env: str, wires: list[bytes]) -> list[bytes]:
        """`wires` without our own change sets of an environment the agent holds (offline
        policy `prompt`): those leave only once the user has decided."""
        cut = self.agent.offline_cut(env)
        if cut is None:
            return wires
        return [w for w in wires if not is_unsent(w, self.agent.device, cut)]

    def _own(self, wires: list[bytes]) -> list[bytes]:
        """Only this device's change sets: the relay stores a slot from its own device only."""
        me = self.agent.device
        return [w for w in wires if peek_slot(w).device == me]

    def _local_envs(self, space: str) -> list[str]:
        """This device's environments of `space`, the one shared first first
        (`catch_up_order`)."""
        store = self.agent.store
        return [e for e in store.envs_oldest_first() if store.head_space(e) == space]

    # ---------------------------------------------------------------- receiving
    def on_envelopes(self, space: str, tag: str, items: Iterable[Envelope]) -> None:
        """A live push: opened and decoded on a worker thread, applied in arrival order (each
        push waits for the one before), so a peer's big or many pushes never hold the loop."""
        prev = self._push_chain

        async def run() -> None:
            if prev is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await prev
            await self._ingest_off_loop(space, tag, list(items))

        task = asyncio.create_task(run(), name="relay push")
        self._push_chain = task
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    async def _ingest_off_loop(self, space: str, tag: str, items: list[Envelope],
                               touched: set[str] | None = None) -> int:
        """Open and apply envelopes: the CPU-heavy part (AEAD open, decoding gate, change set
        parse) on a worker thread and the store's part (verify, ingest, materialise, one
        transaction per batch) on the agent's store worker, in arrival order: the loop only
        awaits them (issue 12). `touched`: a pull in pages collects the environments applied
        here and settles their files once it is complete (`agent.settle_remote_async`);
        None: settle at once (a live push)."""
        try:
            keys = self._keys(space)
            tagger = self._tagger(space)
        except MocksyncError as exc:
            self._problem(space, "envelopes", str(exc))
            return 0
        opened = await asyncio.to_thread(_open_all, space, tag, keys, tagger, items)
        wires = self._opened_wires(space, tag, items, keys, opened)
        await self._note_undecodable(items, opened)
        if not wires:
            return 0
        got = await self.agent.receive_batch_async(space, wires, settle=touched is None)
        return self._ingested(space, tag, wires, touched, *got)

    def _opened_wires(self, space: str, tag: str, items: list[Envelope], keys: Any,
                      opened: list[Any]) -> list[Any]:
        """The change sets of the envelopes that opened (each refusal reported)."""
        names = self._tag_env.setdefault(space, {})
        wires: list[Any] = []
        for env, done in zip(items, opened, strict=True):
            what = f"envelope {env.device}#{env.seq}"
            if isinstance(done, Undecodable):  # opened, but not a change set: listed as refused
                self._problem(space, what, done.reason, tag=tag, device=env.device, seq=env.seq)
                continue
            try:
                if isinstance(done, Exception):
                    raise done
                slot, wire = done
            except MocksyncError as exc:
                if env.gen not in keys and env.gen > max(keys, default=0):
                    self._missing_key(space, env.gen)  # fetched and retried by itself
                self._problem(space, what, str(exc), tag=tag, device=env.device, seq=env.seq)
                continue
            names[tag] = slot.env
            wires.append(wire)
        return wires

    async def _note_undecodable(self, items: list[Envelope], opened: list[Any]) -> None:
        """Change sets that opened (the space key vouches for the slot) but did not decode:
        recorded as refusals of their slot, so `status` lists them (issue 12)."""
        rows = [(done.slot.env, env.device, env.seq, done.reason)
                for env, done in zip(items, opened, strict=True) if isinstance(done, Undecodable)]
        if rows:
            try:
                await self.agent.note_undecodable_async(rows)
            except Exception:  # recording a refusal must never stop the pull
                log.exception("could not record undecodable change sets")

    def _ingested(self, space: str, tag: str, wires: list[Any], touched: set[str] | None,
                  res: Any, refused: list[tuple[Any, Exception]]) -> int:
        """Report what the agent refused of `wires`; count what it took."""
        if touched is not None:
            touched.update(c.env for c in res.applied)
        for cs, exc in refused:
            if cs is None:
                self._problem(space, "envelope", str(exc), tag=tag)
            else:
                self._problem(space, f"envelope {cs.device}#{cs.seq}", str(exc), env=cs.env,
                              device=cs.device, seq=cs.seq)
        n = len(wires) - len(refused)
        self.counters["received"] += n
        return n

    def on_signal(self, space: str, sender: str, payload: bytes) -> None:
        stored = self._agent.spaces.get(space) if self._agent is not None else None
        if stored is None:
            return
        keys = {d.id: d.sign_key for d in stored.state.devices.values()}
        try:
            body = open_signal(keys, space, sender, self.agent.device, payload)
        except MocksyncError as exc:
            self._problem(space, f"signal from {sender}", str(exc))
            return
        self.signals.append({"space": space, "from": sender, "body": body})
        for fn in list(self.signal_handlers):
            try:
                fn(space, sender, body)
            except Exception:
                log.exception("signal handler failed")

    def on_state(self, client: RelayClient) -> None:
        """The relay connection went up or down: say so on the daemon's event stream, so the
        web page (issue 19) and `events` readers show it at once, not at their next poll."""
        if self._agent is not None:
            self._agent.publish(Relay(state=client.state, reason=client.reason))

    # ---------------------------------------------------------------- catch-up
    async def on_session(self, client: RelayClient, welcome: Welcome) -> None:
        self._learn_plans(welcome.ok)
        await self._catch_up_all(client, reconnect=True)

    def _learn_plans(self, admitted: Mapping[str, PlanInfo]) -> None:
        """Keep the limits the relay enforces on each admitted space, so that `share` and
        every save are judged by the relay's numbers (not a default plan the relay does not
        run) and a refusal is said at once instead of after an upload."""
        from ..space.quotas import plan_from_relay

        for space, info in admitted.items():
            try:
                if self.agent.spaces.learn_plan(space, plan_from_relay(info)):
                    log.info("space %s: the relay enforces plan %s", space, info)
            except MocksyncError as exc:
                self._problem(space, "plan", str(exc))

    async def _catch_up_all(self, client: RelayClient, *, reconnect: bool) -> None:
        """Catch every space up. `reconnect`: this follows a time without the relay, so the
        agent judges each environment by its offline policy (a resync while connected does not)."""
        for space in sorted(client.accepted):
            try:
                await self._catch_up(client, space, reconnect=reconnect)
            except RelayRefused as exc:
                self._problem(space, "catch-up", str(exc))
        async with self._synced:
            self.counters["syncs"] += 1
            self._synced.notify_all()

    async def _catch_up(self, client: RelayClient, space: str, *, reconnect: bool = True) -> None:
        try:
            tagger = self._tagger(space)
        except MocksyncError as exc:
            self._problem(space, "catch-up", str(exc))
            return
        store = self.agent.store
        names = self._tag_env.setdefault(space, {})
        local: list[str] = []
        for mine in self._local_envs(space):
            local.append(tagger(mine))
            names[local[-1]] = mine
        index = await client.index(space)
        for tag in catch_up_order(index, local):
            relay_vv = index.get(tag, {})
            env = names.get(tag)
            local_vv = store.version_vector(env) if env else {}
            if reconnect and env is not None:
                # Before pulling: may hold env (offline policy `prompt`).
                self.agent.offline_catch_up(env, relay_vv)
            if vvmod.missing(local_vv, relay_vv):
                self.progress.begin(space, tag, env, missing_count(local_vv, relay_vv),
                                    time.time())
                try:
                    await self._pull(client, space, tag, local_vv)
                except RelayRefused as exc:
                    if exc.code != "compacted":
                        raise
                    # No usable snapshot for this environment (the reason is a problem in
                    # status already): the space's other environments still catch up.
                    continue
                finally:
                    self.progress.end(space, tag)
                env = names.get(tag)
                now_vv = store.version_vector(env) if env else {}
                for device, claimed in relay_vv.items():
                    got = now_vv.get(device, 0)
                    key = (space, env or tag, device)
                    if got < claimed:
                        self.withheld[key] = (claimed, got)
                        log.warning("relay claimed %s#%d of %s but delivered up to #%d",
                                    device, claimed, env or tag, got)
                    else:
                        self.withheld.pop(key, None)
            if env is not None:
                local_vv = store.version_vector(env)
                if vvmod.missing(relay_vv, local_vv):
                    wires = self._sendable(env, self._own(store.wires_missing(env, relay_vv)))
                    await self._upload(client, space, env, tag, wires)
            await asyncio.sleep(0)

    async def _pull(self, client: RelayClient, space: str, tag: str, have: dict[str, int]) -> None:
        have = dict(have)
        touched: set[str] = set()
        adopted = False
        try:
            while True:
                try:
                    items, more = await client.fetch(space, tag, have)
                except RelayRefused as exc:
                    # The relay dropped change sets we lack (compaction): start from its
                    # snapshot once, then go on from what we hold after it.
                    if exc.code != "compacted" or adopted:
                        raise
                    adopted = True
                    env = await self.snapshots.adopt(client, space, tag)
                    if env is None:
                        raise
                    touched.add(env)
                    have = dict(self.agent.store.version_vector(env))
                    continue
                await self._ingest_off_loop(space, tag, list(items), touched)
                self.progress.advance(space, tag, len(items),
                                      self._tag_env.get(space, {}).get(tag))
                for e in items:
                    if e.seq > have.get(e.device, 0):
                        have[e.device] = e.seq
                if not more or not items:
                    return
                await asyncio.sleep(0)
        finally:
            # Files follow the whole pull (or what arrived before the connection dropped),
            # so an environment whose tombstone is in a later page never gets a file.
            if touched:
                await self.agent.settle_remote_async(space, touched)

    async def _upload(self, client: RelayClient, space: str, env: str, tag: str,
                      wires: list[bytes]) -> bool:
        if not wires:
            return True
        keys = self._keys(space)
        # A key rotation reaches every member in the same exchange as the first change set
        # sealed with it: the relay stores and fans out entries before it sees this put.
        await self._push_space_log(client, space)
        envelopes = [seal_envelope(space, tag, keys, w) for w in wires]
        declared = self._declared(env)
        for batch in split_batches(envelopes):
            try:
                await client.put(space, tag, batch, declared)
            except RelayRefused as exc:
                self.env_refusals[(space, env)] = str(exc)
                self._problem(space, f"upload of {env}", str(exc), env=env, code=exc.code)
                self.agent.upload_refused(env, str(exc))
                return False
            self.counters["sent"] += len(batch)
        if self.env_refusals.pop((space, env), None) is not None:
            self.agent.upload_accepted(env)
        return True

    async def _upload_missing(self, client: RelayClient, space: str, env: str, tag: str) -> None:
        """Upload everything of `env` the relay lacks. After a refused put, the refused change
        sets are not in the relay's chain: uploading only the newest would leave a gap that
        stalls every other device until their next reconnect."""
        index = await client.index(space)
        wires = self._sendable(env, self.agent.store.wires_missing(env, index.get(tag, {})))
        await self._upload(client, space, env, tag, wires)

    # ---------------------------------------------------------------- background loops
    async def _flush_loop(self) -> None:
        carry: tuple[str, str, bytes] | None = None
        while True:
            first = carry or await self._outbox.get()
            carry = None
            space, env, wire = first
            wires = [wire]
            while len(wires) < MAX_BATCH_ITEMS and not self._outbox.empty():
                nxt = self._outbox.get_nowait()
                if nxt[:2] != (space, env):
                    carry = nxt
                    break
                wires.append(nxt[2])
            c = self.client
            wires = self._sendable(env, wires)
            if c is None or not c.connected or not wires:
                continue
            try:
                tag = self._tagger(space)(env)
                self._tag_env.setdefault(space, {})[tag] = env
                if (space, env) in self.env_refusals:
                    await self._upload_missing(c, space, env, tag)
                else:
                    await self._upload(c, space, env, tag, wires)
            except RelayError:
                pass  # disconnected: the catch-up after reconnecting uploads it
            except MocksyncError as exc:
                self._problem(space, f"upload of {env}", str(exc), env=env)
            if self._resync and self._outbox.empty() and c.connected:
                self._resync = False
                with contextlib.suppress(RelayError):
                    await self._catch_up_all(c, reconnect=False)

    async def _log_loop(self) -> None:
        while True:
            await asyncio.sleep(self.log_check_s)
            with contextlib.suppress(RelayError):
                await self.push_logs()

    async def push_logs(self) -> None:
        """Upload membership entries the relay has not seen from us (e.g. a removal made with
        the CLI while the daemon runs); reconnect if we joined a space since connecting."""
        c = self.client
        if c is None or not c.connected:
            return
        spaces = {s.space_id: s for s in self._spaces()}
        if set(spaces) - set(c.accepted) - set(c.space_refusals):
            await c.reconnect()
            return
        connected_for = time.monotonic() - (c.connected_at or time.monotonic())
        if retry_refused_spaces({s: code for s, (code, _r) in c.space_refusals.items()
                                 if s in spaces}, connected_for):
            await c.reconnect()  # e.g. a device of the same member went offline meanwhile
            return
        for space in list(c.accepted):
            if space in spaces:
                await self._push_space_log(c, space)

    async def farewell(self, spaces: set[str]) -> None:
        """This connection is about to stop carrying `spaces` (they moved to other relays):
        upload the entries of each its relay lacks, the move among them."""
        c = self.client
        if c is None or not c.connected:
            return
        for space in sorted(spaces & set(c.accepted)):
            await self._push_space_log(c, space)

    async def _push_space_log(self, client: RelayClient, space: str) -> None:
        """Upload the entries of `space` the relay has not had from us (none: no request)."""
        stored = self._agent.spaces.get(space) if self._agent is not None else None
        if stored is None or space not in client.accepted:
            return
        sent = client.uploaded.get(space, set())
        new = [e.wire for e in stored.entries if e.hash not in sent]
        if new:
            try:
                await client.upload_log(space, new)
            except RelayRefused as exc:
                self._problem(space, "membership upload", str(exc))

    # ---------------------------------------------------------------- missing key generations
    def _missing_key(self, space: str, gen: int) -> None:
        """An envelope of `space` is sealed with generation `gen`, newer than any key held
        here: start (once per space) the recovery `keyrecovery.key_step` decides."""
        self._missing_gen[space] = max(gen, self._missing_gen.get(space, 0))
        task = self._key_tasks.get(space)
        if task is None or task.done():
            self._key_tasks[space] = asyncio.create_task(self._recover_key(space),
                                                         name=f"relay key {space[:8]}")

    async def _recover_key(self, space: str) -> None:
        """Get the missing key (wait for the entries, else reconnect: the welcome re-sends the
        log), then fetch again what could not be opened. Bounded by `keyrecovery`."""
        from .keyrecovery import GIVE_UP, PULL, key_step

        reconnects = 0
        while True:
            needed = self._missing_gen.get(space, 0)
            try:
                held = max(self._keys(space), default=0)
            except MocksyncError:
                return  # no longer in the space
            step = key_step(held, needed, reconnects)
            if step.action == PULL:
                self._missing_gen.pop(space, None)
                c = self.client
                if c is not None and c.connected and space in c.accepted:
                    with contextlib.suppress(RelayError):
                        await self._catch_up(c, space, reconnect=False)
                log.info("space %s: key generation %d arrived; fetched again", space[:12], needed)
                return
            if step.action == GIVE_UP:
                self._problem(space, "key rotation", step.reason)
                return
            arrived = self._key_arrived.setdefault(space, asyncio.Event())
            arrived.clear()
            try:
                await within(step.wait_s, arrived.wait())
                continue  # keys came with membership entries: pull now
            except TimeoutError:
                pass
            if max(self._keys(space), default=0) >= needed:
                continue
            reconnects += 1
            log.info("space %s: no key generation %d yet; reconnecting to fetch the membership "
                     "log (try %d)", space[:12], needed, reconnects)
            c = self.client
            if c is not None:
                await c.reconnect()
                await c.wait_connected(step.wait_s * 4)


__all__ = ["LOG_CHECK_S", "MAX_OUTBOX", "RelayTransport", "SPACE_RETRY_S", "retry_refused_spaces"]


def _open_all(space: str, tag: str, keys: Any, tagger: Tagger, items: list[Envelope]
              ) -> list[Any]:
    """Open each envelope and decode its change set: pure CPU, safe on a worker thread.

    Per item: `(slot, ChangeSet)` (the agent takes a decoded change set as it takes wire
    bytes), `Undecodable(slot, reason)` when the change set does not decode, or the exception
    that refused the envelope. Each layer of a change set is decoded once (issue 17:
    `open_changeset` reads the slot from the body it decodes for the change set)."""
    out: list[Any] = []
    for env in items:
        try:
            slot, cs = open_changeset(space, tag, keys, env, tagger)
        except MocksyncError as exc:
            out.append(exc)
            continue
        if isinstance(cs, MocksyncError):
            out.append(Undecodable(slot, f"{UNDECODABLE}{cs}"))
        else:
            out.append((slot, cs))
    return out


#: How the refusal of a change set that did not decode starts in `status`.
UNDECODABLE = "undecodable change set: "


class Undecodable(NamedTuple):
    """An envelope that opened (its slot is bound by the space key) whose change set did not
    decode, and why."""

    slot: Slot
    reason: str
