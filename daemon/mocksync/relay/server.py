"""The relay server: aiohttp, one WebSocket session per connected device.

What it does, and no more (docs/design/architecture.md): authenticate devices against the spaces' signed
membership logs, store and forward sealed change sets by version vector, relay presence and
WebRTC signaling between members, enforce the plan's quotas and the model-version gate. It
decides with `relay.policy` and `relay.session` (pure: what one connection may do next, its
handshake, heartbeats and reaping) and keeps state through `relay.storage.RelayStorage`; this
module is the I/O between them. The message classes and table are in `relay.protocol`.

Session life: hello -> challenge -> auth -> welcome (or refused + close) -> requests and pushes
-> bye/close. Every request is checked against the current verified log of its space (a device
removed while connected gets `bye revoked`). Each session has one writer task fed by a bounded
queue: replies wait for room (backpressure on that device only); pushes to other devices never
wait, and a device whose queue is full is disconnected (`slow_consumer`) and catches up by
version vector when it reconnects, so one slow device cannot stall a fan-out.

Endpoints: `GET /v1/ws` (the WebSocket), `GET /v1/health` (JSON, for monitoring).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import PROTOCOL_VERSION, __version__
from ..aiotime import within
from ..errors import MocksyncError
from ..space.errors import KeyMaterialError, MembershipError
from ..space.keys import payload_generation
from ..space.membership import Entry, SpaceState, extend_log, verify_log
from ..space.quotas import PLANS, Plan
from . import policy
from .auth import (
    fingerprint,
    load_relay_key,
    origin_accepted,
    prove_relay,
    relay_public,
    verify_challenge,
)
from .authbudget import (
    MAX_NEW_SPACES_PER_AUTH,
    ItemBudget,
    NewSpaceRate,
    deferral,
    known_key,
    search_key,
    verify_order,
)
from .compaction import COMPACT_INTERVAL_S, RETENTION_S
from .engine import (
    ClusterEvent,
    Engine,
    InstanceGone,
    OnLoop,
    PresenceBook,
    RemoteLog,
    RemoteMail,
    RemotePresence,
    RemotePut,
    Resynced,
)
from .envelope import Envelope
from .errors import AuthBudgetExceeded, Compacted, RelayProtocolError
from .fanout import Outgoing
from .frames import (
    JOIN_IDLE_TIMEOUT_S,
    MAX_AUTH_FRAME_BYTES,
    MAX_HELLO_FRAME_BYTES,
    OFFLOAD_DECODE_BYTES,
    AuthSlots,
    HandshakeLimiter,
    JoinLimiter,
    set_frame_limit,
)
from .policy import Refusal, TokenBucket
from .protocol import (
    CLIENT,
    JOIN_TIMEOUT_S,
    JOINER,
    MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
    MAX_FRAME_BYTES,
    MAX_JOIN_MESSAGES,
    MAX_LOG_UPLOAD,
    MAX_PENDING_JOINS,
    MAX_SIGNAL_BYTES,
    MAX_WHO_DEVICES,
    RELAY,
    Ack,
    Batch,
    Bye,
    Entries,
    EnvPush,
    Fetch,
    IndexReply,
    IndexRequest,
    JoinAnswer,
    JoinReply,
    JoinRequest,
    Limits,
    LogUpload,
    Nack,
    Ok,
    PlanInfo,
    Presence,
    Put,
    Refused,
    RelayMessage,
    Signal,
    SignalPush,
    Welcome,
    Who,
    clip_reason,
    decode,
    from_map,
)
from .protocol import Challenge as ChallengeMsg
from .protocol import Join as JoinMsg
from .session import (
    READY,
    Admit,
    Challenge,
    Close,
    Delay,
    Handle,
    Heartbeat,
    RelaySession,
    Send,
)
from .snapshots import HANDLERS as SNAPSHOT_HANDLERS
from .snapshots import compaction_loop, compaction_stats
from .storage import EnvUsage, RelayStorage, SQLiteStorage

log = logging.getLogger("mocksync.relay")

WS_PATH = "/v1/ws"
#: Where a device that is not a member yet runs its join handshake with the inviting device.
JOIN_PATH = "/v1/join"
HEALTH_PATH = "/v1/health"
#: Sessions the relay holds at once (authenticated or in handshake).
MAX_SESSIONS = 10_000
#: Simultaneous sessions of one device (a reconnect may overlap the old one briefly).
MAX_CONNECTIONS_PER_DEVICE = 3
#: Frames, and bytes, queued for one session before it is disconnected as a slow consumer.
MAX_QUEUED_MESSAGES = 1024
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: Per-device message rate: average per second, and burst.
MESSAGES_PER_S = 200
MESSAGE_BURST = 1000
#: Seconds a client has for each handshake step (hello, then auth).
AUTH_TIMEOUT_S = 10.0
#: Seconds a TCP connection may take to send one whole HTTP request (the WebSocket upgrade,
#: a join, a health check), and may then sit idle between requests. aiohttp's own default is
#: an hour (3630 s), and it counts from the connection, not per byte: a client that connects
#: and dribbles header lines (slowloris) held a socket and a file descriptor that long,
#: before the handshake limits (relay.frames) ever saw it. An upgraded WebSocket is not
#: touched by it (its handler runs; the session's own timeouts apply).
HTTP_REQUEST_TIMEOUT_S = 10.0
#: Seconds of silence from an admitted device before the relay pings it (WebSocket ping);
#: one silent for `stall_timeout_s` (relay.session.STALL_TIMEOUT_S) is reaped.
HEARTBEAT_S = 20.0
#: Presence changes in a space are coalesced for this long, then sent as one `who` delta to
#: each member: a burst of N arrivals (a relay restart) costs each member a few frames, not N.
PRESENCE_FLUSH_S = 0.05
#: Seconds `stop()` waits for sessions to say goodbye.
SHUTDOWN_GRACE_S = 2.0
#: Checks of one uploaded membership log redone because the stored log grew between the
#: check and its append (at another instance of a cluster: merges at one instance take turns
#: per space). Past this the upload is refused for now (`server_full`: the device brings it
#: again on its next connection or log check).
MAX_LOG_MERGE_TRIES = 5


@dataclass(frozen=True)
class RelayConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    plan: Plan = field(default_factory=lambda: PLANS["team"])
    ssl: ssl.SSLContext | None = None
    rate_per_s: float = MESSAGES_PER_S
    burst: int = MESSAGE_BURST
    max_sessions: int = MAX_SESSIONS
    max_connections_per_device: int = MAX_CONNECTIONS_PER_DEVICE
    auth_timeout_s: float = AUTH_TIMEOUT_S
    heartbeat_s: float = HEARTBEAT_S
    #: Seconds of silence after which an admitted device is reaped (None: three heartbeats,
    #: relay.session.STALL_TIMEOUT_S with the default heartbeat).
    stall_timeout_s: float | None = None
    max_queued_bytes: int = MAX_QUEUED_BYTES
    #: The addresses devices dial this relay by (`https://relay.example.com`). Set them when
    #: the relay sits behind a proxy; without, a device's signed origin must match the Host
    #: header of its request (relay.auth.origin_accepted).
    public_urls: tuple[str, ...] = ()
    #: A `postgresql://` URL: keep state in that database, shared with every other instance
    #: given the same URL (relay.pgstorage); None keeps it in SQLite under `data_dir`.
    db_url: str | None = None
    #: Seconds after which change sets an environment's snapshot covers are dropped even if
    #: some member device has not said it holds them (relay.compaction; `--retention`).
    retention_s: float = RETENTION_S
    #: Seconds a connection has to send a whole HTTP request, and may idle between two
    #: (`HTTP_REQUEST_TIMEOUT_S`).
    http_request_timeout_s: float = HTTP_REQUEST_TIMEOUT_S
    #: Seconds between two rounds of the compaction timer (relay.snapshots.compaction_loop).
    compact_interval_s: float = COMPACT_INTERVAL_S


def tls_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server TLS context from PEM files (TLS 1.2+), or a clear error."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise MocksyncError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return ctx


class _Closing(Exception):
    """Raised inside a session to end it after a `bye` or `refused` was queued."""


def _frame(msg: RelayMessage | dict[str, Any]) -> bytes:
    """A relay frame of a typed message (or of a map, for handlers not typed yet)."""
    return msg_encode(from_map(msg, sender=RELAY) if isinstance(msg, dict) else msg)


def msg_encode(msg: RelayMessage) -> bytes:
    from .protocol import CODECS

    return CODECS[RELAY].encode(msg)


class Session:
    """One connected device (or a client still in its handshake): the I/O half of
    `relay.session.RelaySession` (`sm`), which decides what the session may do."""

    def __init__(self, ws: web.WebSocketResponse, peer: str,
                 max_queued_bytes: int = MAX_QUEUED_BYTES,
                 sm: RelaySession | None = None) -> None:
        self.ws = ws
        self.sm = sm or RelaySession(time.monotonic())
        #: The TCP transport under the WebSocket: aborted when the session is reaped.
        self.transport: asyncio.Transport | None = None
        self.max_queued_bytes = max_queued_bytes
        self.peer = peer
        #: The Host header the client sent: the address it dialled, checked against the origin
        #: its challenge answer signs.
        self.host: str | None = None
        #: The HTTP connection under the WebSocket (its frame limit grows with the phase), and
        #: whether this session still holds a pre-auth slot (relay.frames.HandshakeLimiter).
        self.protocol: Any = None
        self.pending = False
        self.device: str | None = None
        self.model = 0
        self.spaces: dict[str, str] = {}  # admitted space -> member id
        self.presence: dict[str, tuple[str | None, str | None]] = {}
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_QUEUED_MESSAGES)
        self.writer: asyncio.Task[None] | None = None
        self.closing = False
        self.queued_bytes = 0

    def __repr__(self) -> str:
        return f"Session({self.device or '?'} from {self.peer})"

    async def send(self, msg: RelayMessage | dict[str, Any]) -> None:
        """A reply to this session's own request: waits for room in its queue."""
        if not self.closing:
            data = _frame(msg)
            self.queued_bytes += len(data)
            await self.queue.put(data)

    def push(self, data: bytes | Outgoing) -> bool:
        """A frame on behalf of another device: never waits. False if the device is too far
        behind (`max_queued_bytes` waiting for it, or a full queue).

        With nothing queued, every earlier frame is in the transport already, so the frame
        (built once per fan-out, `relay.fanout`) is written straight to it: no task wakes up
        per subscriber. Otherwise it waits in the queue behind the others (order kept)."""
        if self.closing:
            return True
        out = data if isinstance(data, Outgoing) else Outgoing(data)
        t = self.transport
        if self.queue.empty() and t is not None and not t.is_closing() and not self.ws.closed:
            if t.get_write_buffer_size() + len(out.frame) > self.max_queued_bytes:
                return False
            t.write(out.frame)
            return True
        held = t.get_write_buffer_size() if t is not None and not t.is_closing() else 0
        if held + self.queued_bytes + len(out) > self.max_queued_bytes:
            return False
        try:
            self.queue.put_nowait(out.data)
        except asyncio.QueueFull:
            return False
        self.queued_bytes += len(out)
        return True

    def end(self, msg: RelayMessage | dict[str, Any] | None = None) -> None:
        """Queue a last message (if any) and close after it."""
        if self.closing:
            return
        self.closing = True
        data = _frame(msg) if msg is not None else None
        # Make room: what was queued no longer matters once we close.
        while self.queue.full():
            self.queue.get_nowait()
        if data is not None:
            self.queue.put_nowait(data)
            while self.queue.full():
                self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def run_writer(self) -> None:
        try:
            while True:
                data = await self.queue.get()
                if data is None:
                    break
                self.queued_bytes -= len(data)
                await self.ws.send_bytes(data)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self.closing = True
            with contextlib.suppress(Exception):
                await self.ws.close()


class RelayServer:
    """The relay: `await start()`, then `url`/`port`; `await stop()` closes every session."""

    def __init__(self, config: RelayConfig, storage: RelayStorage | None = None) -> None:
        self.config = config
        self.db: Engine
        if config.db_url is not None and storage is None:
            from .pgstorage import PgStorage

            pg = PgStorage(config.db_url)
            self.storage: RelayStorage | PgStorage = pg
            self.db = pg
            #: A cluster's instances share one key, kept in the database: until `start()`
            #: reads it, a placeholder that is never used (nothing is served before).
            self.key = Ed25519PrivateKey.generate()
        else:
            local = storage or SQLiteStorage(config.data_dir)
            self.storage = local
            self.db = OnLoop(local)
            #: The relay's own key: devices pin it per space and sign challenges bound to it.
            self.key = load_relay_key(config.data_dir)
        self.public_key = relay_public(self.key)
        #: Devices online at the other instances of this relay (PostgreSQL only).
        self.book = PresenceBook()
        self.plan = config.plan
        self._entries: dict[str, list[Entry]] = {}
        self._states: dict[str, SpaceState] = {}
        self.by_space: dict[str, set[Session]] = {}
        self.by_device: dict[str, set[Session]] = {}
        self.sessions: set[Session] = set()
        self._buckets: dict[str, TokenBucket] = {}
        self._presence_dirty: dict[str, dict[str, tuple[str | None, str | None] | None]] = {}
        self._presence_flush: dict[str, asyncio.TimerHandle] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port: int | None = None
        self._stopping = False
        self.stats = {"sessions": 0, "refused": 0, "puts": 0, "stored": 0, "pushed": 0,
                      "joins": 0, "reaped": 0}
        #: Join handshakes in progress: join id -> (joiner's websocket, space, inviting device).
        self.joins: dict[bytes, tuple[web.WebSocketResponse, str, str]] = {}
        #: What unauthenticated clients may hold (relay.frames): sessions before auth, auth
        #: frames in flight, join connections.
        self._handshakes = HandshakeLimiter()
        self._auth_slots = AuthSlots()
        self._join_limiter = JoinLimiter()
        #: Spaces new to the relay that each address may create (relay.authbudget).
        self._new_spaces = NewSpaceRate()
        self._join_sockets: dict[bytes, web.WebSocketResponse] = {}
        self._bg: set[asyncio.Future[Any]] = set()
        #: The compaction timer (relay.snapshots.compaction_loop), while serving.
        self._compaction: asyncio.Task[None] | None = None
        #: Admissions in progress per (space, device): their session rows are being written.
        self._admitting: dict[tuple[str, str], int] = {}
        #: Per space with a log merge in progress or waiting: its lock and how many hold or
        #: wait for it (the entry goes when none does, so the map stays as small as the work).
        self._log_turns: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        scheme = "https" if self.config.ssl is not None else "http"
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        await self.db.open(self._on_cluster)
        raw = await self.db.relay_key()
        if raw is not None:
            self.key = Ed25519PrivateKey.from_private_bytes(raw)
            self.public_key = relay_public(self.key)
        app = web.Application()
        app.router.add_get(WS_PATH, self._handle_ws)
        app.router.add_get(JOIN_PATH, self._handle_join)
        app.router.add_get(HEALTH_PATH, self._handle_health)
        if self.config.http_request_timeout_s <= 0:
            raise MocksyncError("the relay's http_request_timeout_s must be above 0")
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     keepalive_timeout=self.config.http_request_timeout_s)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.host, self.config.port,
                                 ssl_context=self.config.ssl, reuse_address=True)
        await self._site.start()
        self._compaction = asyncio.create_task(compaction_loop(self), name="relay compaction")
        addresses = self._runner.addresses  # what was bound (learns an ephemeral port)
        self.port = addresses[0][1] if addresses else self.config.port
        log.info("mocksync relay %s listening on %s (plan %s)", __version__, self.url,
                 self.plan.name)

    async def stop(self) -> None:
        self._stopping = True
        if self._compaction is not None:
            self._compaction.cancel()
            self._compaction = None
        for handle in self._presence_flush.values():
            handle.cancel()
        self._presence_flush.clear()
        for s in list(self.sessions):
            s.end(Bye("shutting_down", "the relay is shutting down"))
        writers = [s.writer for s in self.sessions if s.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=SHUTDOWN_GRACE_S)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.db.close()

    # ---------------------------------------------------------------- spaces
    def state(self, space: str) -> SpaceState | None:
        """The verified state of `space` as held in memory (`_load` fetches it first)."""
        return self._states.get(space)

    async def _load(self, space: str) -> SpaceState | None:
        """Make sure the log of `space` is in memory (read from storage once)."""
        st = self._states.get(space)
        if st is None and space not in self._entries:
            wires = await self.db.log_entries(space)
            if space in self._states or space in self._entries:  # loaded meanwhile
                return self._states.get(space)
            if not wires:
                return None
            entries = [Entry.from_wire(w) for w in wires]
            st = verify_log(entries)
            self._entries[space] = entries
            self._states[space] = st
        return st

    def _prepare_log(self, space: str, wires: Iterable[bytes], budget: ItemBudget
                     ) -> tuple[list[Entry], SpaceState | None, Refusal | None]:
        """Verify uploaded entries against what we hold; nothing is stored yet. Entries we
        hold are skipped by hash, and each other one is charged to the frame's `budget`
        before it is decoded (relay.authbudget)."""
        current = self.state(space)
        existing = self._entries.get(space, [])
        try:
            known = {e.hash for e in existing}
            fresh = []
            for w in wires:
                digest = hashlib.sha256(w).digest()
                if digest in known:
                    continue
                budget.charge(w)
                e = Entry.from_wire(w)
                known.add(digest)
                fresh.append(e)
            if not fresh:
                return [], current, None
            state = extend_log(existing, fresh) if existing else verify_log(fresh)
        except AuthBudgetExceeded as exc:
            label = policy.space_label(current, space)
            return [], current, Refusal("bad_message", clip_reason(
                f"the membership log uploaded for {label} was not verified: {exc}"))
        except MembershipError as exc:
            label = policy.space_label(current, space)
            return [], current, Refusal("auth_refused", clip_reason(
                f"auth refused: the membership log uploaded for {label} was refused: {exc}"))
        if state.space_id != space:
            return [], current, Refusal("auth_refused", (
                f"auth refused: the membership log uploaded for space {space[:12]} belongs to "
                f"space {state.space_id[:12]}"))
        if not existing:
            void = [e for e in fresh if state.void.get(e.hash_hex)]
            if void:
                return [], current, Refusal("auth_refused", clip_reason(
                    f"auth refused: the membership log of {policy.space_label(state, space)} "
                    f"holds a void entry ({void[0].short}: {state.void[void[0].hash_hex]})"))
        return fresh, state, None

    @contextlib.asynccontextmanager
    async def _log_turn(self, space: str) -> AsyncIterator[None]:
        """Hold the log of `space` for one merge or reload: what is checked against the held
        log is stored and adopted before anything else reads or extends it at this instance."""
        lock, users = self._log_turns.setdefault(space, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._log_turns[space]

    async def _merge_log(self, space: str, wires: Sequence[bytes], budget: ItemBudget
                         ) -> tuple[SpaceState | None, Refusal | None]:
        """Verify an uploaded log (auth frame or `log` request) against the log held, store
        its new entries and adopt them; returns the space's state after (None: a space the
        relay does not know and the upload did not bring) or why the upload was refused.

        Why it takes turns and asks the store: two uploads checked against the same old log
        used to be stored one after the other, the second re-adding what the first stored and
        leaving the relay with a state that lacked the first's entries (a member refused as
        "not a member"). At this instance one merge per space runs at a time (`_log_turn`);
        across the instances of a cluster the engine's transaction refuses an append onto a
        log that grew since the check (`base`), and the log as stored is adopted and the
        upload checked again. The check itself is CPU work a member controls: off the loop
        (issue 12)."""
        async with self._log_turn(space):
            await self._load(space)  # on the loop (storage); the check is pure CPU
            for _ in range(MAX_LOG_MERGE_TRIES):
                held = self._entries.get(space, [])
                items, entries = budget.items_left, budget.entries_left
                fresh, state, r = await asyncio.to_thread(self._prepare_log, space, wires,
                                                          budget)
                if r is not None or not fresh or state is None:
                    return state, r
                stored = await self.db.append_log(space, [e.wire for e in fresh],
                                                  [e.hash for e in fresh], base=len(held))
                if stored is None:
                    old = self._adopt_log(space, held + fresh, fresh, state)
                    if old is not None:
                        await self._purge_removed(space, old, state)
                    return state, None
                await self._adopt_stored(space, stored)
                # Checked again: a subset of the same entries (some are held now), so what
                # this check was charged bounds the next one; the frame is not charged twice.
                budget = ItemBudget(items - budget.items_left, entries - budget.entries_left)
        label = policy.space_label(self.state(space), space)
        return self.state(space), Refusal("server_full", (
            f"the membership log of {label} changed {MAX_LOG_MERGE_TRIES} times while this "
            "upload was being checked; it is checked again on the next connection"))

    def _adopt_log(self, space: str, entries: list[Entry], fresh: list[Entry],
                   state: SpaceState) -> SpaceState | None:
        """Hold `entries` as the log of `space` (stored already, here or by another instance):
        drop sessions it no longer admits and send the new entries to members online here.
        Returns the state held before."""
        self._entries[space] = entries
        old = self._states.get(space)
        self._states[space] = state
        # Every member online learns the new entries (new devices, removals, key rotations),
        # a device they remove included: it gets the signed proof before its `bye revoked`.
        for i in range(0, len(fresh), MAX_LOG_UPLOAD):
            data = Outgoing(msg_encode(Entries(space, [e.wire for e in
                                                       fresh[i:i + MAX_LOG_UPLOAD]])))
            for other in list(self.by_space.get(space, ())):
                other.push(data)
        if old is not None:
            self._recheck_space(space, state)
        return old

    async def _purge_removed(self, space: str, old: SpaceState, state: SpaceState) -> None:
        """A removal now in effect: drop what the removed device uploaded after its cut (it
        reached the relay before the removal did). Members refuse those change sets by the
        same rule (`space.writers`), so nobody is served what everybody refuses."""
        for device, removal in state.removed_devices.items():
            if device in old.removed_devices:
                continue
            n = await self.db.purge_after(space, device, removal.covers)
            if n:
                log.info("relay: dropped %d envelope(s) of removed device %s in %s", n, device,
                         space[:12])

    def _recheck_space(self, space: str, state: SpaceState) -> None:
        """After the log grew: drop sessions it no longer admits (removed, model too old)."""
        for s in list(self.by_space.get(space, ())):
            assert s.device is not None
            r = None
            if s.device not in state.devices or s.model < state.model:
                r = policy.admit(state, space, s.device, model=s.model, plan=self.plan,
                                 member_online=())
            if r is not None:
                log.info("relay: %s loses %s: %s", s, space[:12], r.reason)
                s.end(Bye(r.code, clip_reason(r.reason)))

    # ---------------------------------------------------------------- HTTP
    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "protocol": PROTOCOL_VERSION, "version": __version__,
                                  "key": fingerprint(self.public_key),
                                  "sessions": len(self.sessions), "plan": self.plan.name,
                                  "compaction": compaction_stats(self)})

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        # Until it authenticates, a client may send only small frames: aiohttp refuses a
        # bigger one from its header, before buffering it (relay.frames).
        # Heartbeats are the session machine's (relay.session): pings and pongs reach us.
        ws = web.WebSocketResponse(max_msg_size=MAX_HELLO_FRAME_BYTES, heartbeat=None,
                                   autoping=False, compress=False)
        await ws.prepare(request)
        cfg = self.config
        sm = RelaySession(time.monotonic(), handshake_s=cfg.auth_timeout_s,
                          heartbeat_s=cfg.heartbeat_s,
                          stall_s=(cfg.stall_timeout_s if cfg.stall_timeout_s is not None
                                   else 3 * cfg.heartbeat_s),
                          requests=frozenset(_HANDLERS))
        session = Session(ws, request.remote or "?", cfg.max_queued_bytes, sm)
        session.host = request.headers.get("Host")
        session.protocol = request.protocol
        session.transport = request.transport
        session.writer = asyncio.create_task(session.run_writer())
        self.sessions.add(session)
        try:
            busy = self._handshakes.admit(session.peer)
            session.pending = busy is None
            if len(self.sessions) > self.config.max_sessions:
                self._refuse(session, Refusal("server_full", (
                    f"the relay holds its maximum of {self.config.max_sessions} sessions; "
                    "retrying later")))
            elif busy is not None:
                self._refuse(session, Refusal("server_full", busy))
            else:
                await self._serve(session)
        except _Closing:
            pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # a bug must not take the relay down; the session ends
            log.exception("relay: session %s failed", session)
            session.end(Bye("bad_message", "internal relay error"))
        finally:
            session.end()
            self._end_handshake(session)
            self._unregister(session)
            if session.writer is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await within(SHUTDOWN_GRACE_S, session.writer)
        return ws

    # ---------------------------------------------------------------- join handshakes
    async def _handle_join(self, request: web.Request) -> web.StreamResponse:
        """A joiner (not a member, so not authenticated) talks to the inviting device only.

        The relay learns nothing it could use: the handshake proves knowledge of the invite
        secret to the inviting device, whose admission then arrives as signed log entries.
        """
        ws = web.WebSocketResponse(max_msg_size=MAX_SIGNAL_BYTES + 1024, compress=False)
        await ws.prepare(request)

        async def refuse(code: str, reason: str) -> None:
            self.stats["refused"] += 1
            with contextlib.suppress(Exception):
                await ws.send_bytes(msg_encode(Refused(code, clip_reason(reason))))
            await ws.close()

        jid = os.urandom(16)
        # Idle connections never block a real join: when full, the oldest connection that has
        # not sent its first message is closed to make room (relay.frames.JoinLimiter).
        evicted, busy = self._join_limiter.connect(jid, request.remote or "?", time.monotonic())
        self._close_joins(evicted)
        if busy is not None:
            await refuse("server_full", busy)
            return ws
        self._join_sockets[jid] = ws
        space = to = ""  # set by the first message
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_S):
                for n in range(MAX_JOIN_MESSAGES):
                    if n == 0:
                        try:
                            async with asyncio.timeout(JOIN_IDLE_TIMEOUT_S):
                                msg = await ws.receive()
                        except TimeoutError:
                            await refuse("timeout", "a join handshake must start within "
                                         f"{JOIN_IDLE_TIMEOUT_S:g} s")
                            return ws
                    else:
                        msg = await ws.receive()
                    if msg.type != WSMsgType.BINARY:
                        return ws
                    try:
                        m = decode(msg.data, sender=JOINER)
                    except RelayProtocolError as exc:
                        await refuse("bad_message", str(exc))
                        return ws
                    assert isinstance(m, JoinMsg)
                    if n == 0:
                        space, to = m.space, m.to
                        evicted, busy = self._join_limiter.start(jid, (space, to),
                                                                 time.monotonic())
                        self._close_joins(evicted)
                        if busy is None and len(self.joins) >= MAX_PENDING_JOINS:
                            busy = (f"the relay has {MAX_PENDING_JOINS} join handshakes in "
                                    "progress; try again in a minute")
                        if busy is not None:
                            await refuse("server_full", busy)
                            return ws
                        self.joins[jid] = (ws, space, to)
                        self.stats["joins"] += 1
                    else:
                        self._join_limiter.touch(jid, time.monotonic())
                    if (m.space, m.to) != (space, to):
                        await refuse("bad_message", "a join handshake stays with one space and device")
                        return ws
                    targets = [x for x in self.by_space.get(space, ()) if x.device == to]
                    if not targets and self.book.remote(space, to) is not None:
                        # The inviting device is connected to another instance of this relay.
                        await self.db.mail(RemoteMail("joinreq", space, to, "", jid, m.payload))
                        continue
                    if not targets:
                        await refuse("not_online", (
                            f"no admin device of this space is reachable: the inviting device {to} "
                            "is not connected to the relay; start its daemon and try again"))
                        return ws
                    data = msg_encode(JoinRequest(space, jid, m.payload))
                    for x in targets:
                        x.push(data)
                await refuse("bad_message", f"a join handshake takes at most {MAX_JOIN_MESSAGES} messages")
        except TimeoutError:
            await refuse("timeout", f"the join handshake took longer than {JOIN_TIMEOUT_S:g} s")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.joins.pop(jid, None)
            self._join_limiter.close(jid)
            self._join_sockets.pop(jid, None)
        return ws

    def _close_joins(self, ids: list[bytes]) -> None:
        """Close join connections the limiter evicted to make room for newer ones."""
        for jid in ids:
            self.joins.pop(jid, None)
            other = self._join_sockets.pop(jid, None)
            if other is not None:
                asyncio.ensure_future(other.close())

    async def _on_joinrep(self, session: Session, msg: JoinReply) -> None:
        entry = self.joins.get(msg.join)
        if entry is None:
            if self.db.clustered and session.device is not None:
                # The joiner may be connected to another instance; it checks the pairing.
                await self.db.mail(RemoteMail("joinrep", msg.space, "", session.device,
                                              msg.join, msg.payload))
            return  # the joiner left (or is elsewhere); nothing to answer here
        ws, space, to = entry
        if session.device != to or msg.space != space:
            return  # only the device the joiner asked for may answer it
        self._join_limiter.touch(msg.join, time.monotonic())  # the handshake is alive
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(msg_encode(JoinAnswer(msg.payload)))

    def _refuse(self, session: Session, r: Refusal) -> None:
        """End the session with refusal `r` (`refused` in the handshake, `bye` after)."""
        for act in session.sm.refuse(r):
            if isinstance(act, Close):
                self._close(session, act)
        session.end()  # already closed by the session machine: nothing more is sent

    def _close(self, session: Session, act: Close) -> None:
        """Carry out the session machine's `Close`: the last word, then the close; a reaped
        session's connection is dropped at once (nothing queued for it is flushed)."""
        if isinstance(act.msg, Refused):
            self.stats["refused"] += 1
            log.info("relay: refused %s: %s", session, act.msg.reason)
        elif act.msg is not None:
            log.info("relay: closing %s: %s", session, act.msg.reason)
        session.end(act.msg)
        if act.reap:
            self.stats["reaped"] += 1
            if session.transport is not None:
                session.transport.abort()

    def _step(self, session: Session, actions: list[Any]) -> Challenge | Admit | None:
        """Carry out a handshake step's actions; the step the adapter must run, if any."""
        step = None
        for act in actions:
            if isinstance(act, Close):
                self._close(session, act)
            elif isinstance(act, Challenge | Admit):
                step = act
        return step

    async def _ping(self, session: Session) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await session.ws.ping()

    async def _watch(self, session: Session) -> None:
        """The session machine's clock once admitted: heartbeats, and reaping a stalled peer."""
        sm = session.sm
        while not session.closing:
            deadline = sm.deadline()
            if deadline is None:
                return
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            for act in sm.tick(time.monotonic()):
                if isinstance(act, Heartbeat):  # never awaited here: a stalled peer blocks it
                    self._background(self._ping(session))
                elif isinstance(act, Close):
                    self._close(session, act)

    async def _receive(self, session: Session) -> RelayMessage | None:
        """The next message from the peer (None: the connection ended). WebSocket pings are
        answered and pongs noted here; a handshake step past its time ends the session as
        the session machine decides (relay.session)."""
        sm = session.sm
        while True:
            deadline = None if sm.phase == READY else sm.deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                msg = await within(timeout, session.ws.receive())
            except TimeoutError:
                self._step(session, sm.tick(time.monotonic()))
                if session.closing:
                    raise _Closing from None
                continue
            if msg.type == WSMsgType.PING:
                sm.heard(time.monotonic())
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await session.ws.pong(msg.data)
                continue
            if msg.type == WSMsgType.PONG:
                sm.heard(time.monotonic())
                continue
            break
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        if msg.type == WSMsgType.ERROR:  # e.g. a frame over this phase's limit (close 1009)
            reason = str(session.ws.exception() or "connection error")
            self.stats["refused"] += 1
            log.info("relay: %s: %s", session, reason)
            return None
        if msg.type != WSMsgType.BINARY:
            self._refuse(session, Refusal("bad_message", "the relay speaks binary frames only"))
            raise _Closing
        try:
            if len(msg.data) >= OFFLOAD_DECODE_BYTES:  # big or item-heavy: not on the loop
                return await asyncio.to_thread(decode, msg.data, sender=CLIENT)
            return decode(msg.data, sender=CLIENT)
        except RelayProtocolError as exc:
            self._step(session, sm.bad_frame(str(exc)))
            raise _Closing from None

    # ---------------------------------------------------------------- handshake
    async def _challenge(self, session: Session, challenge: ChallengeMsg
                         ) -> RelayMessage | None:
        """Send the challenge and read the auth frame within an auth slot (relay.frames):
        only then may the client send a frame above MAX_HELLO_FRAME_BYTES."""
        timeout = self.config.auth_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._auth_slots.acquire(session.peer)
        except TimeoutError:
            self._refuse(session, Refusal("server_full", (
                f"the relay is busy authenticating other devices (waited {timeout:g} s); "
                "retrying later")))
            raise _Closing from None
        try:
            set_frame_limit(session.ws, session.protocol, MAX_AUTH_FRAME_BYTES)
            await session.send(challenge)
            session.sm.challenged(time.monotonic())
            return await self._receive(session)
        finally:
            # Back to small frames until admitted: the next big frame needs a slot again.
            set_frame_limit(session.ws, session.protocol, MAX_HELLO_FRAME_BYTES)
            self._auth_slots.release(session.peer)

    def _end_handshake(self, session: Session) -> None:
        if session.pending:
            session.pending = False
            self._handshakes.release(session.peer)

    async def _serve(self, session: Session) -> None:
        cfg = self.config
        sm = session.sm
        opening = await self._receive(session)
        if opening is None:
            return
        step = self._step(session, sm.receive(opening, time.monotonic()))
        if not isinstance(step, Challenge):
            return
        hello = step.hello
        device = hello.device
        spaces = list(step.spaces)
        nonce = os.urandom(32)
        have = {}
        for sp in spaces:
            if await self._load(sp) is not None:
                have[sp] = [e.hash for e in self._entries.get(sp, [])]
        answer = await self._challenge(session, ChallengeMsg(
            PROTOCOL_VERSION, nonce, self.public_key, prove_relay(self.key, nonce, device), have))
        if answer is None:
            return
        # The session machine checks the answer's kind, its spaces and its size before
        # anything is decoded (relay.authbudget; issue 12).
        admit = self._step(session, sm.receive(answer, time.monotonic()))
        if not isinstance(admit, Admit):
            return
        auth = admit.auth
        logs = auth.logs
        refusals: dict[str, Refusal] = {}
        prepared: dict[str, SpaceState] = {}  # space -> its state after the merge
        for sp in spaces:
            await self._load(sp)  # loaded here, on the loop (storage); the checks are pure CPU
        held = {sp: st for sp in spaces if (st := self.state(sp)) is not None}
        uploaded = [sp for sp in spaces if logs.get(sp)]
        # The cheapest key first: a log the relay verified, else the uploaded entry that
        # registers the device (a few bounded decodes), uploads to known spaces first.
        found = known_key(held, device)
        if found is None and uploaded:
            search = [sp for sp in uploaded if sp in held] + [sp for sp in uploaded
                                                              if sp not in held]
            found = await asyncio.to_thread(search_key, device, logs, search)
        if found is None:
            first = spaces[0]
            lacking = first not in held and not logs.get(first)
            self._refuse(session, Refusal("auth_refused", policy.admit(
                None, first, device, model=hello.model, plan=self.plan, member_online=()
            ).reason if lacking else (  # type: ignore[union-attr]
                f"auth refused: device {device} is not a member of any space this relay knows "
                "(its membership log has not been uploaded by a member)")))
            return
        key = found.sign_key
        if not origin_accepted(auth.origin, session.host, cfg.public_urls):
            self._refuse(session, Refusal("auth_refused", (
                f"auth refused: the answer is addressed to the relay at {auth.origin}, which is "
                "not this relay's address (a relay passed on another relay's challenge, or "
                "this relay's public URL is not configured)")))
            return
        if not verify_challenge(key, nonce, device, self.public_key, auth.origin, auth.sig):
            self._refuse(session, Refusal("auth_refused", (
                f"auth refused: the challenge signature does not verify with device {device}'s "
                "key for this relay's key (a different device claimed its id, or the answer "
                "was made for another relay)")))
            return
        # Authenticated as the holder of the device's key. Now the uploaded logs are
        # verified within the frame's budget: known spaces first, then at most the new
        # spaces the per-frame and per-address limits allow (the rest on a later connection).
        now = time.monotonic()
        new = [sp for sp in uploaded if sp not in held]
        allowed = min(MAX_NEW_SPACES_PER_AUTH, self._new_spaces.allowance(session.peer, now))
        order, deferred = verify_order(list(held), new, None if found.known else found.space,
                                       allowed)
        self._new_spaces.spend(session.peer, len(new) - len(deferred), now)
        for sp in deferred:
            refusals[sp] = Refusal("server_full", deferral(
                sp, MAX_NEW_SPACES_PER_AUTH, by_rate=allowed < MAX_NEW_SPACES_PER_AUTH))
        # The uploaded entries that verify are stored as they are checked, one merge per
        # space at a time (`_merge_log`: devices of one space authenticating at once).
        budget = ItemBudget()
        for sp in order:
            wires = logs.get(sp, [])
            state, refusal = (await self._merge_log(sp, wires, budget) if wires
                              else (self.state(sp), None))
            if refusal is not None:
                refusals[sp] = refusal
            elif state is not None:
                prepared[sp] = state
        for sp in spaces:
            if sp not in held and sp not in prepared and sp not in refusals:  # nothing at all
                refusals[sp] = policy.admit(None, sp, device, model=hello.model, plan=self.plan,
                                            member_online=())  # type: ignore[assignment]
        mine = self.by_device.get(device, set())
        if len(mine) >= cfg.max_connections_per_device:
            self._refuse(session, Refusal("too_many_connections", (
                f"device {device} already holds {len(mine)} connections to the relay, the limit "
                f"({cfg.max_connections_per_device})")))
            return
        admitted: dict[str, str] = {}
        # An admission writes the device's session row (clustered); until `_register` below
        # the session is not in `by_space`, so if it dies in between (an error, a database
        # call that committed but never answered) the rows it may have written are removed
        # here, and a session of the same device ending meanwhile leaves them (`_admitting`).
        pending = [(sp, device) for sp in prepared]
        tried: list[str] = []
        for slot in pending:
            self._admitting[slot] = self._admitting.get(slot, 0) + 1
        try:
            for sp, merged in prepared.items():
                state = self._states.get(sp, merged)  # the newest: a removal may have landed
                member = state.member_of(device)
                online = set()
                if member is not None:
                    online = {s.device for s in self.by_space.get(sp, ())
                              if s.spaces.get(sp) == member.id and s.device is not None}

                def decide(devices: set[str], state: SpaceState = state, sp: str = sp
                           ) -> Refusal | None:
                    return policy.admit(state, sp, device, model=hello.model, plan=self.plan,
                                        member_online=devices)

                if member is None:
                    r = decide(online)
                else:  # the device limit counts devices at every instance (one transaction)
                    tried.append(sp)
                    r = await self.db.admit(sp, member.id, device, online, decide)
                if r is not None:
                    refusals[sp] = r
                else:
                    admitted[sp] = member.id  # type: ignore[union-attr]
            # A removed device is handed the signed entries that prove it (the space's log,
            # which it verifies like any other) before it hears `revoked`: it stops showing
            # the space as synced, and no relay can make it believe a removal no admin signed.
            for sp in sorted(s for s, r in refusals.items() if r.code == "revoked"):
                wires = [e.wire for e in self._entries.get(sp, [])]
                for i in range(0, len(wires), MAX_LOG_UPLOAD):
                    await session.send(Entries(sp, wires[i:i + MAX_LOG_UPLOAD]))
            if not admitted:
                self._refuse(session, policy.session_refusal({s: refusals[s] for s in spaces
                                                              if s in refusals}))
                return
            session.device = device
            session.model = hello.model
            session.spaces = admitted
            self._register(session)
            session.sm.admitted(device, self._buckets[device], time.monotonic())
        finally:
            for slot in pending:
                left = self._admitting[slot] - 1
                if left:
                    self._admitting[slot] = left
                else:
                    del self._admitting[slot]
            if session.device is None and self.db.clustered:
                for sp in tried:  # admitted (maybe), never registered: no row may linger
                    self._left_unless_held(sp, device)
        self._end_handshake(session)  # authenticated: full-size frames from now on
        set_frame_limit(session.ws, session.protocol, MAX_FRAME_BYTES)
        p = self.plan
        await session.send(Welcome(
            {sp: PlanInfo(self._states[sp].model, p.name, p.max_envs, p.max_env_bytes,
                          p.max_devices_per_member) for sp in admitted},
            {sp: (r.code, clip_reason(r.reason)) for sp, r in refusals.items()},
            Limits(MAX_FRAME_BYTES, MAX_BATCH_ITEMS, int(cfg.rate_per_s))))
        log.info("relay: %s admitted to %d space(s), refused %d", session, len(admitted),
                 len(refusals))
        for sp in admitted:  # the log as the relay holds it: the device may lack entries
            wires = [e.wire for e in self._entries.get(sp, [])]
            for i in range(0, len(wires), MAX_LOG_UPLOAD):
                await session.send(Entries(sp, wires[i:i + MAX_LOG_UPLOAD]))
        for sp in admitted:
            present: dict[str, tuple[str | None, str | None]] = self.book.online(sp)
            present.pop(device, None)
            for other in self.by_space.get(sp, ()):
                if other.device is not None and other.device != device:
                    present[other.device] = other.presence.get(sp, (None, None))
            if present:
                await session.send(Who(sp, [(d, t, u) for d, (t, u) in sorted(present.items())],
                                       []))
            self._presence_changed(sp, device, (None, None))
        await self._loop(session)

    def _presence_changed(self, space: str, device: str,
                          value: tuple[str | None, str | None] | None) -> None:
        """Record a presence change (None: offline); members hear it in the next batch."""
        if self._stopping:
            return
        self._presence_dirty.setdefault(space, {})[device] = value
        if space not in self._presence_flush:
            loop = asyncio.get_running_loop()
            self._presence_flush[space] = loop.call_later(PRESENCE_FLUSH_S,
                                                          self._flush_presence, space)

    def _flush_presence(self, space: str) -> None:
        self._presence_flush.pop(space, None)
        changes = self._presence_dirty.pop(space, {})
        members = self.by_space.get(space)
        if not changes or not members:
            return
        items = sorted(changes.items())
        for i in range(0, len(items), MAX_WHO_DEVICES):
            part = items[i:i + MAX_WHO_DEVICES]
            data = Outgoing(msg_encode(Who(space, [(d, v[0], v[1]) for d, v in part
                                                   if v is not None],
                                           [d for d, v in part if v is None])))
            for s in list(members):
                self._push(s, data)

    def _register(self, session: Session) -> None:
        assert session.device is not None
        self.stats["sessions"] += 1
        self.by_device.setdefault(session.device, set()).add(session)
        for sp in session.spaces:
            self.by_space.setdefault(sp, set()).add(session)
        if session.device not in self._buckets:
            self._buckets[session.device] = TokenBucket(self.config.rate_per_s, self.config.burst,
                                                        time.monotonic())

    def _unregister(self, session: Session) -> None:
        self.sessions.discard(session)
        device = session.device
        if device is None:
            return
        mine = self.by_device.get(device)
        if mine is not None:
            mine.discard(session)
            if not mine:
                del self.by_device[device]
                self._buckets.pop(device, None)
        for sp in session.spaces:
            members = self.by_space.get(sp)
            if members is None:
                continue
            members.discard(session)
            if not any(s.device == device for s in members):
                # Offline here; still online if another instance holds it (a failover).
                self._presence_changed(sp, device, self.book.remote(sp, device))
                if self.db.clustered:
                    self._left_unless_held(sp, device)
            if not members:
                del self.by_space[sp]

    def _left_unless_held(self, space: str, device: str) -> None:
        """Remove the device's session row in `space` unless a session here still holds it
        or is being admitted with it (the row is this instance's, shared by its sessions)."""
        if self._stopping or (space, device) in self._admitting or any(
                s.device == device for s in self.by_space.get(space, ())):
            return
        self._background(self.db.left(space, device))

    def _background(self, coro: Any) -> None:
        """Run a storage call whose caller cannot wait (a session ending); errors logged."""
        task = asyncio.ensure_future(coro)
        self._bg.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._bg.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("relay: background storage call failed: %s", t.exception())

        task.add_done_callback(done)

    # ---------------------------------------------------------------- other instances
    async def _on_cluster(self, ev: ClusterEvent) -> None:
        """What another instance of this relay did, for the devices connected here."""
        if self._stopping:
            return
        if isinstance(ev, RemotePut):
            if ev.envelopes:
                data = Outgoing(msg_encode(EnvPush(ev.space, ev.tag, tuple(ev.envelopes))))
                for s in list(self.by_space.get(ev.space, ())):
                    if s.device != ev.uploader:
                        self.stats["pushed"] += self._push(s, data)
        elif isinstance(ev, RemoteLog):
            await self._reload_log(ev.space)
        elif isinstance(ev, RemotePresence):
            changed, now = self.book.apply(ev.instance, ev.space, ev.device, ev.value)
            if changed and not any(s.device == ev.device for s in self.by_space.get(ev.space, ())):
                self._presence_changed(ev.space, ev.device, now)
        elif isinstance(ev, InstanceGone):
            for space, device, now in self.book.drop_instance(ev.instance):
                if not any(s.device == device for s in self.by_space.get(space, ())):
                    self._presence_changed(space, device, now)
        elif isinstance(ev, RemoteMail):
            self._deliver_mail(ev)
        elif isinstance(ev, Resynced):
            await self._resynced(ev)

    async def _resynced(self, ev: Resynced) -> None:
        """This instance heard nothing from the others for a while: presence as the database
        holds it, membership logs re-read; if puts were missed beyond what could be replayed,
        the devices here reconnect (and catch up by version vector)."""
        for space, device, now in self.book.resync(ev.presence):
            if not any(s.device == device for s in self.by_space.get(space, ())):
                self._presence_changed(space, device, now)
        for space in list(self._entries):
            await self._reload_log(space)
        if not ev.complete:
            log.warning("relay: more was missed than can be replayed; devices here reconnect")
            for s in list(self.sessions):
                if s.device is not None:
                    s.end(Bye("slow_consumer", "this relay instance lost touch with the others "
                                               "for a while; reconnect to catch up"))

    async def _reload_log(self, space: str) -> None:
        """Another instance stored entries of `space`: adopt the log as the database holds it."""
        if space not in self._entries:
            return  # not loaded here: the next use reads it whole
        async with self._log_turn(space):
            await self._adopt_stored(space, await self.db.log_entries(space))

    async def _adopt_stored(self, space: str, wires: list[bytes]) -> None:
        """Hold the log as stored (`wires`, in stored order), which extends the one held:
        verified off the loop, then adopted. The caller holds the space's `_log_turn`."""
        held = self._entries.get(space)  # None when not loaded yet (compared by identity)
        known = {e.hash for e in held or ()}
        entries = [Entry.from_wire(w) for w in wires]
        fresh = [e for e in entries if e.hash not in known]
        if not fresh:
            return
        try:
            state = await asyncio.to_thread(verify_log, entries)
        except MembershipError as exc:  # stored by a peer instance that verified it: a bug
            log.error("relay: the membership log of %s in the database does not verify: %s",
                      space[:12], exc)
            return
        if self._entries.get(space) is not held:  # changed meanwhile: the next event redoes it
            return
        self._adopt_log(space, entries, fresh, state)

    def _deliver_mail(self, m: RemoteMail) -> None:
        if m.kind == "signal":
            data = msg_encode(SignalPush(m.space, m.sender, m.payload))
            for s in list(self.by_space.get(m.space, ())):
                if s.device == m.to:
                    s.push(data)
        elif m.kind == "joinreq":
            data = msg_encode(JoinRequest(m.space, m.jid, m.payload))
            for s in list(self.by_space.get(m.space, ())):
                if s.device == m.to:
                    s.push(data)
        elif m.kind == "joinrep":
            entry = self.joins.get(m.jid)
            if entry is not None and (entry[1], entry[2]) == (m.space, m.sender):
                self._join_limiter.touch(m.jid, time.monotonic())
                asyncio.ensure_future(self._send_join(entry[0], m.payload))

    @staticmethod
    async def _send_join(ws: web.WebSocketResponse, payload: bytes) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(msg_encode(JoinAnswer(payload)))

    def _fanout(self, space: str, sender: Session, msg: RelayMessage) -> int:
        """Push one message to every other device's sessions in `space`; returns how many.
        Encoded and framed once, whatever the number of sessions (relay.fanout)."""
        data = Outgoing(msg_encode(msg))
        n = 0
        for s in list(self.by_space.get(space, ())):
            if s is sender or s.device == sender.device:
                continue
            n += self._push(s, data)
        return n

    @staticmethod
    def _push(s: Session, data: bytes | Outgoing) -> bool:
        if s.push(data):
            return True
        log.info("relay: %s is too slow (queue full); disconnecting it", s)
        s.end(Bye("slow_consumer", "the relay dropped this connection because it fell too far "
                                   "behind; it catches up on reconnect"))
        return False

    # ---------------------------------------------------------------- requests
    async def _loop(self, session: Session) -> None:
        """Requests of an admitted device, as the session machine lets them through (in
        order, slowed to the device's rate); its clock runs beside (`_watch`)."""
        watch = asyncio.create_task(self._watch(session))
        try:
            while not session.closing:
                msg = await self._receive(session)
                if msg is None:
                    return
                for act in session.sm.receive(msg, time.monotonic()):
                    if isinstance(act, Delay):
                        await asyncio.sleep(act.seconds)
                    elif isinstance(act, Send):
                        await session.send(act.msg)
                    elif isinstance(act, Handle):
                        await self._handle(session, act.msg)
                    elif isinstance(act, Close):
                        self._close(session, act)
                        return
        finally:
            watch.cancel()

    async def _handle(self, session: Session, msg: RelayMessage) -> None:
        await _HANDLERS[msg.KIND](self, session, msg)

    def _check_space(self, session: Session, space: str) -> Refusal | None:
        if space not in session.spaces:
            return Refusal("not_member", (
                f"this session was not admitted to space {space[:12]}; reconnect to join it"))
        state = self._states[space]
        if session.device not in state.devices or session.model < state.model:
            return policy.admit(state, space, session.device or "", model=session.model,
                                plan=self.plan, member_online=()) or Refusal(
                "auth_refused", "auth refused")
        return None

    async def _nack(self, session: Session, i: int, r: Refusal) -> None:
        await session.send(Nack(i, r.code, clip_reason(r.reason)))

    async def _on_log(self, session: Session, msg: LogUpload) -> None:
        sp = msg.space
        r = self._check_space(session, sp)
        if r is None:
            _state, r = await self._merge_log(sp, msg.wires, ItemBudget())
            if r is None:  # stored first: an `ok` is never sent for entries then lost
                await session.send(Ok(msg.rid))
                return
        await self._nack(session, msg.rid, r)

    async def _on_index(self, session: Session, msg: IndexRequest) -> None:
        r = self._check_space(session, msg.space)
        if r is not None:
            return await self._nack(session, msg.rid, r)
        await session.send(IndexReply(msg.rid, msg.space, await self.db.index(msg.space)))

    async def _on_fetch(self, session: Session, msg: Fetch) -> None:
        r = self._check_space(session, msg.space)
        if r is not None:
            return await self._nack(session, msg.rid, r)
        try:
            items, more = await self.db.fetch(msg.space, msg.tag, msg.vv,
                                              max_items=MAX_BATCH_ITEMS,
                                              max_bytes=MAX_BATCH_BYTES)
        except Compacted as exc:  # compaction (relay.snapshots): start from the snapshot
            return await self._nack(session, msg.rid, Refusal("compacted", str(exc)))
        await session.send(Batch(msg.rid, msg.space, msg.tag, tuple(items), more))

    async def _on_put(self, session: Session, msg: Put) -> None:
        sp, tag, items, declared = msg.space, msg.tag, msg.items, msg.declared
        r = self._check_space(session, sp)
        if r is None:
            r = self._check_envelopes(self._states[sp], items, session.device or "", tag)
        if r is None:
            def check(usage: EnvUsage | None, env_count: int) -> Refusal | None:
                # Run inside the put's transaction: every instance's puts are counted.
                return policy.check_put(
                    self.plan, env_count=env_count,
                    known_env=policy.counted_env(usage.declared_bytes if usage else None,
                                                 declared),
                    declared_bytes=declared, stored_bytes=usage.stored_bytes if usage else 0,
                    adding_bytes=sum(len(e.ct) for e in items))

            got = await self.db.put(sp, tag, list(items), declared_bytes=declared,
                                    uploader=session.device or "",
                                    now_ms=int(time.time() * 1000), check=check)
            r = got if isinstance(got, Refusal) else None
        if r is not None:
            log.warning("relay: put by %s refused: %s", session, r.reason)
            return await self._nack(session, msg.rid, r)
        assert not isinstance(got, Refusal)
        stored = got
        self.stats["puts"] += 1
        self.stats["stored"] += len(stored)
        if stored:
            self.stats["pushed"] += self._fanout(sp, session, EnvPush(sp, tag, tuple(stored)))
        await session.send(Ack(msg.rid, sp, tag, len(stored)))

    @staticmethod
    def _check_envelopes(state: SpaceState, items: Iterable[Envelope], uploader: str,
                         tag: str = "") -> Refusal | None:
        for e in items:
            r = policy.unknown_device(state, e.device) or policy.foreign_slot(uploader, e) \
                or policy.refused_writer(state, tag, e)
            if r is not None:
                return r
            try:
                gen = payload_generation(e.ct)
            except KeyMaterialError as exc:
                return Refusal("bad_envelope", f"envelope {e.device}#{e.seq}: {exc}")
            if gen != e.gen:
                return Refusal("bad_envelope", (
                    f"envelope {e.device}#{e.seq} claims key generation {e.gen} but its "
                    f"ciphertext names {gen}"))
        return None

    async def _on_presence(self, session: Session, msg: Presence) -> None:
        sp = msg.space
        if self._check_space(session, sp) is not None:
            return  # presence has no reply; a stale space is simply ignored
        value = (msg.tag, msg.entity)
        session.presence[sp] = value
        self._presence_changed(sp, session.device or "", value)
        if self.db.clustered:
            await self.db.presence(sp, session.device or "", value)

    async def _on_signal(self, session: Session, msg: Signal) -> None:
        sp, to = msg.space, msg.to
        r = self._check_space(session, sp)
        if r is None:
            targets = [s for s in self.by_space.get(sp, ()) if s.device == to]
            if not targets and self.book.remote(sp, to) is not None:
                # Connected to another instance of this relay: it gets the signal from there.
                await self.db.mail(RemoteMail("signal", sp, to, session.device or "", b"",
                                              msg.payload))
                await session.send(Ok(msg.rid))
                return
            if not targets:
                r = Refusal("not_online", f"device {to} is not connected to the relay in this space")
            else:
                data = msg_encode(SignalPush(sp, session.device or "", msg.payload))
                for s in targets:
                    s.push(data)
                await session.send(Ok(msg.rid))
                return
        await self._nack(session, msg.rid, r)


#: Request kind -> its handler (`ping` is answered by the session machine itself).
_HANDLERS: dict[str, Callable[..., Awaitable[None]]] = {
    "log": RelayServer._on_log,
    "index": RelayServer._on_index,
    "fetch": RelayServer._on_fetch,
    "put": RelayServer._on_put,
    "presence": RelayServer._on_presence,
    "signal": RelayServer._on_signal,
    "joinrep": RelayServer._on_joinrep,
    **SNAPSHOT_HANDLERS,  # compaction: snapput, snapget, hw (relay.snapshots)
}

async def run_relay(config: RelayConfig, stop: asyncio.Event,
                    on_ready: Callable[[RelayServer], None] | None = None) -> RelayServer:
    """Run a relay until `stop` is set (the CLI sets it on SIGTERM/SIGINT)."""
    server = RelayServer(config)
    await server.start()
    try:
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
    finally:
        await server.stop()
    return server


__all__ = [
    "AUTH_TIMEOUT_S",
    "HEARTBEAT_S",
    "MAX_CONNECTIONS_PER_DEVICE",
    "MAX_QUEUED_BYTES",
    "MAX_QUEUED_MESSAGES",
    "MAX_SESSIONS",
    "MESSAGES_PER_S",
    "MESSAGE_BURST",
    "PRESENCE_FLUSH_S",
    "RelayConfig",
    "RelayServer",
    "Session",
    "WS_PATH",
    "run_relay",
    "tls_context",
]
