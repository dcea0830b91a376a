"""`LanTransport`: the Agent's transport to peers on the LAN (mDNS + signed signaling + WebRTC).

How the pieces fit (each is its own module; this one only wires them to the Agent):

    mdns.MdnsService      announce {device id, port, protocol, space tags}; report peers
    peerbook.PeerBook     who to dial when (backoff, glare), what status says about each
    lan_signaling         aiohttp endpoint + client carrying the offer/answer
    handshake             signed offers/answers bound to DTLS fingerprints, replay guard
    webrtc.PeerLink       one aiortc data channel: flow control, compression, byte counts
    ice                   candidates only on the bind addresses, no public STUN
    mocksync.sync.Hub     the sans-IO sync protocol: hello/version check, catch-up by version
                          vector, live push, each change once per peer, heartbeat, presence

A peer is dialled when our verified membership log lists it as an active member of a space we
hold, whether its mDNS tags (made with the newest content key) match one or not: a member whose
key is a rotation behind must still meet the others to learn the rotation. An offer is answered only when its signature
verifies against the key that log holds. A session lists only envs of spaces both devices are
in, so a peer never even learns the ids of envs in other spaces.

Agent contract (`mocksync.ports`: `Transport` here, `AgentPort` there): `broadcast` is called
for each local commit; change sets from peers go to `agent.receive_async`; change sets the agent applied from elsewhere (the relay,
another peer) reach us through the agent's event stream (`change` events with origin
`remote`) and are announced to the other peers, which pull what they lack.

Membership (issue 16): every session gossips the membership logs of the spaces both devices
are in (`sync.membership`); entries a peer sends are verified as a whole log and stored by
`spaceio.learn` (the same path as entries from the relay), and a grown log is announced to every
open session, so a new device, a removal with its rotated key or a migration spreads from any
member to any member with no relay.

Overlay (issue 16, `net.overlay`): past FULL_MESH_UP_TO devices each keeps a few anchor
links and passes on what it receives once applied. Presence travels as signed notes along the same links (`net.presence_gossip`), so
`who` shows what teammates with no link to us edit, and a teammate who opens the environment
our user edits gets a link on demand (`overlay.co_editors`), closed once idle.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import MODEL_VERSION, PROTOCOL_VERSION
from ..agentevents import Peer, Presence
from ..aiotime import within
from ..errors import MocksyncError, ValidationError
from ..ports import AgentPort, LogPusher, SpaceDirectory
from ..spaceio.learn import learn_entries
from ..sync import (
    Closed,
    Config,
    Deliver,
    Event,
    Hub,
    Members,
    Opened,
    PeerPresence,
    PresenceNote,
    Send,
)
from ..sync.membership import LogItem
from ..sync.messages import peek_changeset
from ..sync.offline import HoldingSource
from . import handshake, ice
from .errors import Glare, LinkError, PeerRefused, PeerUnreachable, SignalError, Superseded
from .handshake import ANSWER, OFFER, ReplayGuard
from .lan_join import InviterResponder, newest_invite_secrets
from .lan_signaling import SignalingServer, send_offer
from .logsource import LogSource
from .mdns import MAX_ADVERTISED_INVITES, Announcement, Discovered, MdnsService, recognise
from .overlay import (
    FULL_MESH_UP_TO,
    LINK_IDLE_S,
    anchors,
    co_editors,
    idle_links,
)
from .peerbook import CONNECTED, CONNECTING, DISCOVERED, GLARE, IDLE, PeerBook
from .presence_gossip import (
    NOTE_FORWARD_DELAY_S,
    NOTE_HOPS,
    NOTE_REFRESH_S,
    Note,
    PresenceBook,
    make_note,
    next_counter,
    next_hops,
    read_note,
)
from .webrtc import CONNECT_TIMEOUT_S, PeerLink

log = logging.getLogger("mocksync.lan")

#: How often membership and keys are re-read (a removal closes sessions; a new space is
#: announced).
SPACE_CHECK_S = 2.0
#: Longest the timer sleeps when nothing is due.
MAX_TICK_SLEEP_S = 1.0
#: Frames held for a link whose session is not registered yet (the peer may speak first).
MAX_EARLY_FRAMES = 256
#: Time given to goodbyes (bye messages) to leave before connections close on stop.
STOP_FLUSH_S = 0.3
#: A timer firing this late means the event loop was blocked...
LOOP_STALL_MS = 1000
#: ...so received frames get this long to be read before heartbeats are judged.
STALL_CATCH_UP_S = 0.05
#: Applying one delivered change set for longer than this is logged (peers time out at 10 s).
SLOW_APPLY_S = 2.0
#: Peers dialled at once when there is something to send and no link to the space is open.
MAX_ON_DEMAND_DIALS = 4
#: Why an idle link is closed (the peer's status shows it; it reopens on demand).
IDLE_REASON = "idle: no change to send for a while; reopened when there is one"
#: Neighbour sets kept for `_relay_to` (one per online set seen; cleared when full).
MAX_RELAY_TREES = 64
#: Editor name used when the control API does not give one.
DEFAULT_EDITOR = "mockoon"


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _mono_ms() -> int:
    return int(time.monotonic() * 1000)


class SpaceLogs:
    """The agent's membership logs as the sync session reads them (`MembershipSource`)."""

    def __init__(self, spaces: SpaceDirectory) -> None:
        self.spaces = spaces
        self._cache: dict[str, tuple[int, list[LogItem]]] = {}

    def log(self, space: str) -> list[LogItem]:
        stored = self.spaces.get(space)
        if stored is None:
            return []
        cached = self._cache.get(space)
        if cached is None or cached[0] != len(stored.entries):
            cached = (len(stored.entries),
                      [LogItem(e.hash, tuple(e.parents), e.wire) for e in stored.entries])
            self._cache[space] = cached
        return cached[1]

    def hash_of(self, wire: bytes) -> bytes | None:
        return hashlib.sha256(wire).digest()  # an entry's hash is that of its wire bytes


class LanTransport:
    """Sync with LAN peers over WebRTC data channels found by mDNS."""

    def __init__(
        self,
        *,
        bind: Iterable[str] = (),
        ice_servers: Iterable[str] = (),
        mdns: bool = True,
        port: int = 0,
        session_config: Config | None = None,
        compress: bool = True,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        link_idle_s: float = LINK_IDLE_S,
        protocol: int = PROTOCOL_VERSION,
        model: int = MODEL_VERSION,
    ) -> None:
        self.bind = ice.check_bind(bind)
        self.ice_servers = ice.check_ice_servers(ice_servers)
        self.mdns_enabled = mdns
        self.requested_port = port
        self.session_config = session_config
        self.compress = compress
        self.connect_timeout_s = connect_timeout_s
        #: A link on demand closes after this long without a change set (`overlay.idle_links`).
        self.link_idle_s = link_idle_s
        # Versions spoken (tests set them to play an older or newer build).
        self.protocol, self.model = protocol, model
        self._agent: AgentPort | None = None
        self.me = ""
        self.hub: Hub | None = None
        self.book: PeerBook | None = None
        self.server: SignalingServer | None = None
        self.mdns: MdnsService | None = None
        self.port: int | None = None
        self.networks: Any = None
        self.replay = ReplayGuard()
        self.links: dict[str, PeerLink] = {}  # device -> link with a registered session
        self.pending: dict[str, PeerLink] = {}  # device -> link being set up
        self.presence: dict[str, PeerPresence] = {}
        self.my_presence: dict[str, Any] | None = None
        #: Presence of devices we may have no link to, passed along the overlay (issue 16),
        #: and our own signed note (re-sent every NOTE_REFRESH_S while an env is open).
        self.notes = PresenceBook("")
        self._my_note: bytes | None = None
        #: Signing keys of the active members of our spaces, per space, re-read only when
        #: membership changes (`_check_spaces`): checking each presence note on the event
        #: loop must not re-list the spaces (about 100 ms at 30 devices whenever the docs
        #: file changed).
        self._member_keys: dict[str, dict[str, bytes]] = {}
        self._note_counter = 0
        self._note_sent_at = -math.inf
        #: Devices whose new note waits to be passed on (`_forward_notes`), and its timer.
        self._notes_due: set[str] = set()
        self._note_timer: asyncio.TimerHandle | None = None
        self._announced: dict[str, Discovered] = {}
        self._early: dict[PeerLink, list[bytes]] = {}
        self._link_envs: dict[PeerLink, set[tuple[str, str]]] = {}
        self._link_spaces: dict[PeerLink, frozenset[str]] = {}
        self._peer_env_counts: dict[PeerLink, int] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._spawned: set[asyncio.Task[Any]] = set()
        #: Change sets from peers waiting to be applied, in arrival order, by one consumer
        #: that hands each to the agent's store worker (issue 12: never on the loop).
        self._deliveries: collections.deque[Deliver] = collections.deque()
        self._deliverer: asyncio.Task[None] | None = None
        self._tick_wake = asyncio.Event()
        self._dial_wake = asyncio.Event()
        self._planned_tick = math.inf
        self._space_sig: tuple = ()
        self._stopping = False
        self.started = False
        #: Links on demand (issue 16): when each peer's link last carried a change set, and
        #: peers dialled because there is something to send (until when).
        self._last_used: dict[str, float] = {}
        self._on_demand: dict[str, float] = {}
        #: Our overlay neighbours per online set (`_relay_to`), computed once per change.
        self._relay_cache: dict[frozenset[str], frozenset[str]] = {}
        #: The invite books of spaces we administer, with the docs file stamp they were read at.
        self._invite_cache: tuple[tuple, list[Any]] | None = None

    @property
    def agent(self) -> AgentPort:
        """The agent this transport was started with (`start`)."""
        if self._agent is None:
            raise RuntimeError("the LAN transport is not started")
        return self._agent

    @agent.setter
    def agent(self, agent: AgentPort) -> None:
        self._agent = agent

    # ================================================================ lifecycle

    async def start(self, agent: AgentPort) -> None:
        self.agent = agent
        self.me = agent.device
        self.book = PeerBook(self.me)
        self.notes = PresenceBook(self.me)
        # Envs held by the `prompt` offline policy: our own change sets of them stay unsent.
        source = HoldingSource(LogSource(agent.store), agent.device, agent.offline_cut)
        self.hub = Hub(self.me, source, config=self.session_config,
                       protocol=self.protocol, model=self.model,
                       membership=SpaceLogs(agent.spaces))
        ice.install()
        self.networks = ice.bind_networks(self.bind) if self.bind else None
        self.server = SignalingServer(self.bind, self.requested_port, self._on_offer,
                                      join=self._join_responder)
        self.port = await self.server.start()
        self._space_sig = self._space_signature()
        self._cache_member_keys()
        if self.mdns_enabled:
            self.mdns = MdnsService(self.bind, self.networks, on_peer=self._on_discovered,
                                    on_gone=self._on_gone)
            await self.mdns.start(self._announcement())
        agent.listeners.append(self._on_agent_event)
        self.started = True
        self._tasks = [asyncio.create_task(self._tick_loop(), name="lan-tick"),
                       asyncio.create_task(self._dial_loop(), name="lan-dial")]
        log.info("LAN sync on %s port %s (mDNS %s)", ",".join(self.bind) or "all interfaces",
                 self.port, "on" if self.mdns_enabled else "off")

    async def stop(self) -> None:
        if not self.started:
            return
        self._stopping = True
        assert self.hub is not None
        now = _mono_ms()
        links = list(self.links.values()) + list(self.pending.values())
        for link in list(self.hub.sessions):
            self._run(self.hub.close(link, "the peer's daemon is shutting down", now))
        deadline = time.monotonic() + STOP_FLUSH_S
        while time.monotonic() < deadline and any(not ln.closed and ln.buffered for ln in links):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        self._deliveries.clear()  # not acknowledged: the peers send them again
        extra = [self._deliverer] if self._deliverer is not None else []
        for t in self._tasks + list(self._spawned) + extra:
            t.cancel()
        for t in self._tasks + list(self._spawned) + extra:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await asyncio.gather(*(ln.close("stopping") for ln in links), return_exceptions=True)
        self.links.clear()
        self.pending.clear()
        if self.mdns is not None:
            await self.mdns.stop()
        if self.server is not None:
            await self.server.stop()
        with contextlib.suppress(ValueError):
            self.agent.listeners.remove(self._on_agent_event)
        self.started = False

    async def reconnect(self) -> None:
        """`mocksync reconnect`: dial every known peer now."""
        if self.book is None:
            return
        await self.push_logs()
        self.book.retry_all(time.monotonic())
        if self.mdns is not None:
            for device in list(self.book.peers):
                self.mdns.refresh(device)
        self._dial_wake.set()

    async def push_logs(self) -> None:
        """The CLI changed membership or issued an invite: re-read spaces and invites now (not
        at the next SPACE_CHECK_S): peers learn new entries, mDNS announces the invite."""
        if self.started and not self._stopping:
            await self._check_spaces()

    # ================================================================ spaces and keys

    def _my_spaces(self) -> dict[str, Any]:
        spaces = self.agent.spaces.spaces()
        return {s.space_id: s for s in spaces if s.state.is_member(self.me)}

    def _space_signature(self) -> tuple:
        return tuple(sorted(
            (sid, max(s.keys, default=0), tuple(sorted(s.state.devices)), len(s.entries))
            for sid, s in self._my_spaces().items())), tuple(self._invite_secrets())

    def _invite_secrets(self) -> list[bytes]:
        """Secrets of the newest unused invites this device issued (announced as join tags,
        so `mocksync join` finds this device on the LAN with no relay)."""
        from ..spaceio.store import load_invite_book

        home = self.agent.home
        admin_of = tuple(sorted(sid for sid, s in self._my_spaces().items()
                                if s.state.is_admin(self.me)))
        try:  # re-read the books only when the docs file changed (checked every SPACE_CHECK_S)
            st = home.docs.stat()
            stamp: tuple = (st.st_mtime_ns, st.st_ino, st.st_size, admin_of)
        except OSError:
            stamp = (None, admin_of)
        if self._invite_cache is None or self._invite_cache[0] != stamp:
            self._invite_cache = (stamp, [load_invite_book(home, sid) for sid in admin_of])
        return newest_invite_secrets(self._invite_cache[1], time.time(), MAX_ADVERTISED_INVITES)

    def _join_responder(self) -> InviterResponder | None:
        if self._stopping or self._agent is None:
            return None
        return InviterResponder(self.agent.home, self.agent.identity, self._admitted)

    def _admitted(self, space: str) -> None:
        """A device joined through us on the LAN: re-announce (the invite is used), tell our
        peers and the relay of the new entries."""
        self._spawn(self._check_spaces())
        transport = self.agent.transport
        if isinstance(transport, LogPusher):
            self._spawn(transport.push_logs())

    def _announcement(self) -> Announcement:
        secrets = [s.keys[max(s.keys)] for s in self._my_spaces().values() if s.keys]
        assert self.port is not None
        return Announcement.make(self.me, self.port, secrets, protocol=self.protocol,
                                 invites=self._invite_secrets())

    def _cache_member_keys(self) -> None:
        """Re-read member keys (membership changed); a removed device's note is dropped."""
        self._member_keys = {
            sid: {d: dev.sign_key for d, dev in s.state.devices.items() if s.state.is_member(d)}
            for sid, s in self._my_spaces().items()}
        for device in list(self.notes.current(time.monotonic())):
            if self._cached_key(device) is None:
                self.notes.forget(device)

    def _cached_key(self, device: str) -> bytes | None:
        """`device`'s signing key if it is an active member of one of our spaces (cached)."""
        for keys in self._member_keys.values():
            if device in keys:
                return keys[device]
        return None

    def _key_of(self, device: str) -> bytes | None:
        for s in self._my_spaces().values():
            dev = s.state.devices.get(device)
            if dev is not None:
                return dev.sign_key
        return None

    def _shared(self, device: str) -> frozenset[str]:
        return frozenset(sid for sid, s in self._my_spaces().items() if s.state.is_member(device))

    def _member_name(self, device: str, spaces: Iterable[str]) -> str | None:
        for sid in sorted(spaces):
            name = self.agent.spaces.member_name(sid, device)
            if name:
                return name
        return None

    def _space_of(self, env: str) -> str | None:
        rt = self.agent.envs.get(env)
        if rt is not None:
            return rt.space
        return self.agent.store.head_space(env)

    def _envs_for(self, spaces: frozenset[str]) -> set[tuple[str, str]]:
        pairs = {(rt.space, rt.uuid) for rt in self.agent.envs.values() if rt.space in spaces}
        for env in self.agent.store.envs():
            space = self.agent.store.head_space(env)
            if space in spaces:
                pairs.add((space, env))
        return pairs

    async def _check_spaces(self) -> None:
        """Membership or keys changed: re-announce, re-judge peers, drop removed ones."""
        sig = self._space_signature()
        if sig == self._space_sig:
            return
        before = {space: length for space, _gen, _devices, length in
                  (self._space_sig[0] if self._space_sig else ())}
        grown = {space for space, _gen, _devices, length in sig[0] if before.get(space) != length}
        self._space_sig = sig
        self._cache_member_keys()
        if self.mdns is not None:
            await self.mdns.update(self._announcement())
        for d in list(self._announced.values()):
            self._on_discovered(d)
        assert self.hub is not None
        now = _mono_ms()
        for device, link in list(self.links.items()):
            shared = self._shared(device)
            if not shared:
                self._run(self.hub.close(
                    link, f"device {device} is no longer a member of any space shared with "
                          "this device", now))
                continue
            self._link_spaces[link] = shared
            for pair in self._envs_for(shared) - self._link_envs.get(link, set()):
                self._add_env(link, pair, now)
        for space in sorted(grown):  # tell every peer what it lacks of the grown logs
            self._run(self.hub.membership_changed(space, now))

    # ================================================================ discovery

    def _on_discovered(self, d: Discovered) -> None:
        if self._stopping or self.book is None:
            return
        ann = d.announcement
        mine = self._my_spaces()
        tagged = recognise(ann, {sid: list(s.keys.values()) for sid, s in mine.items()})
        # Our log is what counts: a member whose tags we cannot read (its key is newer than
        # ours: we missed a rotation) is dialled too, to learn the rotation from it.
        members = {sid for sid, s in mine.items() if s.state.is_member(ann.device)}
        if not tagged and not members:
            return  # a stranger (or a device of spaces we are not in): never kept
        self._announced[ann.device] = d
        verified = members
        unknown = None
        if not verified:
            unknown = (f"device {ann.device} announces a space this device belongs to, but this "
                       "device's copy of the membership log does not list it as a member "
                       "(removed, or added after this device last heard of the space)")
        self.book.discovered(ann.device, d.addresses, ann.port, ann.protocol, verified,
                             time.monotonic(), our_protocol=self.protocol,
                             unknown_reason=unknown)
        self._dial_wake.set()

    def _on_gone(self, device: str) -> None:
        self._announced.pop(device, None)
        if self.book is not None:
            self.book.gone(device, time.monotonic())

    # ================================================================ dialling

    async def _dial_loop(self) -> None:
        assert self.book is not None
        next_space_check = time.monotonic() + SPACE_CHECK_S
        while True:
            now = time.monotonic()
            wanted = self._wanted(now)
            for device in self.book.due(now):
                if device not in wanted:
                    continue  # reachable, but no link needed now (opened on demand)
                self.book.dialing(device, now)
                self._spawn(self._dial(device))
            self._close_idle(now)
            if (self._my_note is not None and self.my_presence and self.my_presence.get("env")
                    and now - self._note_sent_at >= NOTE_REFRESH_S):
                self._send_my_note()
            if now >= next_space_check:
                next_space_check = now + SPACE_CHECK_S
                try:
                    await self._check_spaces()
                except Exception:
                    log.exception("re-reading spaces failed")
            due = self.book.next_due(only=self._wanted(time.monotonic()))
            timeout = min(MAX_TICK_SLEEP_S, max(0.0, (due or math.inf) - time.monotonic()),
                          max(0.0, next_space_check - time.monotonic()))
            with contextlib.suppress(asyncio.TimeoutError):
                await within(timeout, self._dial_wake.wait())
            self._dial_wake.clear()

    # ---------------------------------------------------------------- links on demand

    def _online(self) -> set[str]:
        """Members reachable now: linked, or announced on mDNS and dialable."""
        assert self.book is not None
        return {d for d, r in self.book.peers.items()
                if d in self.links or r.state in (CONNECTED, CONNECTING)
                or (r.via_mdns and r.dialable)}

    def _wanted(self, now: float) -> set[str]:
        """Peers to have a link to: the overlay's anchors, plus those with something to
        send (`_on_demand`, until it expires)."""
        for d in [d for d, until in self._on_demand.items() if until <= now]:
            del self._on_demand[d]
        return set(anchors(self.me, self._online())) | set(self._on_demand)

    def _link_co_editors(self, where: tuple[str, str] | None = None) -> None:
        """Presence changed (ours, or a teammate's, first-hand or by note), or this device
        committed an edit of `where` ((space, env)): open a link on demand to teammates
        editing the environment our user has open (or `where`, `overlay.co_editors`), so
        their edits and ours cross one hop. Like any link on demand it is kept while it
        carries change sets and closed after `link_idle_s` without (presence lasts minutes
        after a save; an idle link must not), and the next edit opens it again."""
        mine = self.my_presence
        if self.book is None:
            return
        if where is None:
            if not mine or not mine.get("env"):
                return
            where = (mine["space"], mine["env"])
        editing: dict[str, tuple[str, str] | None] = {
            d: (n.space, n.env) if n.env and n.space else None
            for d, n in self.notes.current(time.monotonic()).items()}
        for d, p in self.presence.items():
            editing[d] = (p.space, p.env) if p.env and p.space else None
        wanted = co_editors(where, editing, self._online())
        until = time.monotonic() + self.link_idle_s
        fresh = [d for d in wanted if d not in self.links and d not in self._on_demand]
        for d in wanted:  # wanted (and pushed to, `_relay_to`) while either of us edits
            self._on_demand[d] = until
            if d in self.links:
                self._used(d)
        if fresh:
            self._dial_wake.set()

    def _close_idle(self, now: float) -> None:
        """Close links we dialled that are not overlay links and carried no change set for
        LINK_IDLE_S (the peer's own links are its to close: no flapping)."""
        assert self.hub is not None
        keep = anchors(self.me, self._online()) | set(self._on_demand)
        last = {d: self._last_used.get(d, link.opened_at or link.created)
                for d, link in self.links.items() if link.outgoing}
        for device in idle_links(now, last, keep, self.link_idle_s):
            self._run(self.hub.close(self.links[device], IDLE_REASON, _mono_ms()))

    def _used(self, device: str) -> None:
        self._last_used[device] = time.monotonic()

    def _demand(self, space: str) -> None:
        """Something to send in `space` and no link to any member of it: dial up to
        MAX_ON_DEMAND_DIALS of them now (the overlay covers the rest)."""
        if self.book is None:
            return
        linked = [d for d in self.links if space in self._link_spaces.get(self.links[d], ())]
        if linked:  # (a link is kept by the change sets it carries, `_deliver`/`_used`)
            return
        until = time.monotonic() + self.link_idle_s
        reachable = sorted(d for d, r in self.book.peers.items()
                           if space in r.spaces and r.dialable and d not in self.links)
        for d in reachable[:MAX_ON_DEMAND_DIALS]:
            self._on_demand[d] = until
        if reachable:
            self._dial_wake.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    def _new_link(self, device: str, outgoing: bool) -> PeerLink:
        return PeerLink(device, bind=self.bind, ice_servers=self.ice_servers, outgoing=outgoing,
                        on_frame=self._on_frame, on_closed=self._on_link_lost,
                        compress=self.compress)

    async def _dial(self, device: str) -> None:
        assert self.book is not None
        rec = self.book.get(device)
        if rec is None:
            return
        link = self._new_link(device, outgoing=True)
        self.pending[device] = link
        try:
            sdp = await link.offer()
            offer = handshake.build(self.agent.identity.sign, kind=OFFER, sender=self.me,
                                    recipient=device, sdp=sdp, now_ms=_wall_ms(),
                                    protocol=self.protocol)
            answer = await self._post_offer(rec.addresses, rec.port or 0, offer, link)
            sig = handshake.verify(answer, me=self.me, key_of=self._key_of, now_ms=_wall_ms(),
                                   expect_kind=ANSWER, expect_sender=device,
                                   answers=hashlib.sha256(offer).digest(),
                                   protocol=self.protocol)
            if self.pending.get(device) is not link:
                raise Superseded("the peer's own connection won")
            remote, kept = ice.filter_remote_sdp(sig.sdp, self.networks)
            if not kept:
                raise LinkError(f"device {device} offered no address on this device's networks "
                                "(check --bind on both devices)")
            await link.accept_answer(remote)
            await link.wait_open(self.connect_timeout_s)
            if self.pending.get(device) is not link:
                raise Superseded("the peer's own connection won")
            self._established(device, link)
        except Superseded:
            await link.close("superseded")
        except asyncio.CancelledError:
            await link.close("stopping")
            raise
        except PeerRefused as exc:
            await link.close("refused")
            self.book.failed(device, f"device {device} refused the connection: {exc}",
                             time.monotonic(), incompatible=exc.code == "incompatible",
                             forbidden=exc.code == "forbidden")
        except (MocksyncError, OSError, ValueError) as exc:
            await link.close("failed")
            self.book.failed(device, str(exc), time.monotonic())
        except Exception as exc:  # aiortc internals: never let one peer break the loop
            log.exception("connecting to %s failed", device)
            await link.close("failed")
            self.book.failed(device, f"connection failed: {type(exc).__name__}: {exc}",
                             time.monotonic())
        finally:
            if self.pending.get(device) is link:
                del self.pending[device]
            self.book.dial_done(device)
            self._dial_wake.set()

    async def _post_offer(self, addresses: Iterable[str], port: int, offer: bytes,
                          link: PeerLink) -> bytes:
        last: Exception | None = None
        for address in addresses:
            try:
                answer = await send_offer(address, port, offer, bind=self.bind)
            except PeerUnreachable as exc:
                last = exc
                continue
            link.address = address
            return answer
        raise last or PeerUnreachable("the peer announced no address")

    async def _on_offer(self, wire: bytes, remote: str | None) -> bytes:
        """The signaling endpoint got an offer: verify, decide, answer."""
        if self._stopping or self.book is None:
            raise SignalError("this device is shutting down")
        sig = handshake.verify(wire, me=self.me, key_of=self._key_of, now_ms=_wall_ms(),
                               expect_kind=OFFER, guard=self.replay, protocol=self.protocol)
        device = sig.sender
        shared = self._shared(device)
        now = time.monotonic()
        self.book.learned(device, remote, None, shared, now)
        if self.book.incoming(device) == GLARE:
            raise Glare(f"both devices dialled each other; {self.me}'s offer goes ahead")
        remote_sdp, kept = ice.filter_remote_sdp(sig.sdp, self.networks)
        if not kept:
            raise SignalError("the offer lists no address on this device's networks "
                              "(check --bind on both devices)")
        old = self.pending.pop(device, None)
        if old is not None:
            self._spawn(old.close("superseded by the peer's connection"))
        link = self._new_link(device, outgoing=False)
        link.address = remote
        self.pending[device] = link
        rec = self.book.get(device)
        if rec is not None and rec.state != CONNECTED:
            rec.state = CONNECTING
        try:
            sdp = await link.answer(remote_sdp)
        except Exception as exc:
            if self.pending.get(device) is link:
                del self.pending[device]
            await link.close("failed")
            raise LinkError(f"could not answer the offer: {exc}") from None
        answer = handshake.build(self.agent.identity.sign, kind=ANSWER, sender=self.me,
                                 recipient=device, sdp=sdp, now_ms=_wall_ms(),
                                 answers=sig.hash, protocol=self.protocol)
        self._spawn(self._await_incoming(device, link))
        return answer

    async def _await_incoming(self, device: str, link: PeerLink) -> None:
        assert self.book is not None
        try:
            await link.wait_open(self.connect_timeout_s)
            if self.pending.get(device) is not link:
                raise Superseded("a newer connection from the peer won")
            self._established(device, link)
        except Superseded:
            await link.close("superseded")
        except LinkError as exc:
            mine = self.pending.get(device) is link
            if mine:
                del self.pending[device]
            await link.close("failed")
            if mine:
                self.book.failed(device, str(exc), time.monotonic())

    def _established(self, device: str, link: PeerLink) -> None:
        """A data channel is open: start the sync session on it."""
        assert self.hub is not None and self.book is not None
        if self.pending.get(device) is link:
            del self.pending[device]
        now = _mono_ms()
        old = self.links.get(device)
        if old is not None and old is not link:
            self._run(self.hub.close(old, "replaced by a new connection from the same device",
                                     now))
            self._spawn(old.close("replaced"))
        shared = self._shared(device)
        envs = self._envs_for(shared)
        self.links[device] = link
        self._link_spaces[link] = shared
        self._link_envs[link] = set(envs)
        self.book.connected(device, time.monotonic())
        # A sparse overlay (more devices than a full mesh keeps): forward what we receive.
        sparse = len(self._online() | {device}) > FULL_MESH_UP_TO
        self._run(self.hub.open(link, envs, now, expect_device=device, spaces=shared,
                                relay_push=sparse))
        for frame in self._early.pop(link, []):
            self._run(self.hub.receive_data(link, frame, _mono_ms()))
        self._tell_notes(link, shared)
        self._wake_tick()
        self.agent.publish(Peer(device=device, via="lan", state="connected"))

    # ================================================================ data path

    def _on_frame(self, link: PeerLink, frame: bytes) -> None:
        if self.hub is None:
            return
        if link in self.hub.sessions:
            self._run(self.hub.receive_data(link, frame, _mono_ms()))
            self._adopt_peer_envs(link)
            return
        if self.pending.get(link.device) is not link and self.links.get(link.device) is not link:
            return  # a link that lost a race or was closed: nothing to hold for
        held = self._early.setdefault(link, [])
        if len(held) < MAX_EARLY_FRAMES:
            held.append(frame)

    def _on_link_lost(self, link: PeerLink, reason: str) -> None:
        self._early.pop(link, None)
        if self.hub is not None and link in self.hub.sessions:
            self._run(self.hub.close(link, f"connection to {link.device} lost: {reason}",
                                     _mono_ms()))

    def _run(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, Send):
                ev.link.send(ev.data)  # type: ignore[attr-defined]
            elif isinstance(ev, Deliver):
                self._deliver(ev)
            elif isinstance(ev, Opened):
                self._session_opened(ev)
            elif isinstance(ev, PeerPresence):
                before = self.presence.get(ev.device)
                self.presence[ev.device] = ev
                if before is None or (before.space, before.env) != (ev.space, ev.env):
                    self._link_co_editors()  # only on a change: a refresh opens nothing
                self.agent.publish(Presence(device=ev.device, env=ev.env, entity=ev.entity,
                                            editor=ev.editor))
            elif isinstance(ev, Closed):
                self._session_closed(ev)
            elif isinstance(ev, Members):
                self._learn_members(ev)
            elif isinstance(ev, PresenceNote):
                self._on_note(ev)
        if events:
            self._wake_tick()

    def _deliver(self, ev: Deliver) -> None:
        """Queue a peer's change set; applied in arrival order off the loop (`_deliver_all`),
        then acknowledged."""
        self._used(ev.link.device)  # type: ignore[attr-defined]
        self._deliveries.append(ev)
        if self._deliverer is None or self._deliverer.done():
            self._deliverer = asyncio.ensure_future(self._deliver_all())

    async def _deliver_all(self) -> None:
        while self._deliveries and not self._stopping:
            ev = self._deliveries.popleft()
            started = time.monotonic()
            try:
                await self.agent.receive_async(ev.space, ev.wire)
                refused = None
            except MocksyncError as exc:
                refused = str(exc)
            except Exception as exc:
                log.exception("applying a change set from %s failed", ev.link)
                refused = f"internal error while applying it ({type(exc).__name__})"
            self._after_apply(ev, time.monotonic() - started, refused)

    def _after_apply(self, ev: Deliver, took: float, refused: str | None) -> None:
        if took > SLOW_APPLY_S:
            log.warning("applying %s#%d of %s (%d bytes) took %.1f s; peers see this device "
                        "as silent meanwhile", ev.device, ev.seq, ev.env, len(ev.wire), took)
        if self.hub is not None and not self._stopping:
            self._run(self.hub.delivered(ev, _mono_ms(), refused=refused))

    def _learn_members(self, ev: Members) -> None:
        """A peer sent membership entries: verify with our whole log, store, act on them."""
        stored = self.agent.spaces.get(ev.space)
        if stored is None:
            return
        try:
            learned = learn_entries(self.agent.home, self.agent.identity, ev.space, stored,
                                    ev.wires)
        except MocksyncError as exc:
            log.warning("refused membership entries of space %s from %s: %s", ev.space,
                        ev.device, exc)
            return
        if not learned.fresh:
            return
        log.info("space %s: %d new membership entries from %s%s", ev.space,
                 len(learned.fresh), ev.device,
                 f" (key generations {sorted(learned.new_keys)})" if learned.new_keys else "")
        if learned.removals:  # take back what the removal refuses (on the store worker)
            self.agent.enforce_membership_soon()
        # Re-judge peers (a removed one is dropped), re-announce, tell the other sessions.
        self._spawn(self._check_spaces())

    def _session_opened(self, ev: Opened) -> None:
        """The handshake is done: also sync the envs the peer has that we lack."""
        assert self.hub is not None
        link: PeerLink = ev.link  # type: ignore[assignment]
        session = self.hub.sessions.get(link)
        if session is None or session.peer_hello is None:
            return
        shared = self._link_spaces.get(link, frozenset())
        now = _mono_ms()
        for pair in session.peer_hello.envs:
            if pair[0] in shared:
                self._add_env(link, pair, now)
        log.info("LAN session with %s open (%d envs shared)", ev.device, len(session.shared))

    def _adopt_peer_envs(self, link: PeerLink) -> None:
        """The peer announced (`have`) an env it syncs that we do not have yet, e.g. one a
        teammate shared after the session opened: start syncing it too, if its space is one
        we share with that peer. The session keeps such announcements in `_peer_envs` and
        emits no event for them, so this reads that set (cheaply: only when it grew).
        """
        session = self.hub.sessions.get(link) if self.hub is not None else None
        peer_envs = getattr(session, "_peer_envs", None)
        if not peer_envs or len(peer_envs) == self._peer_env_counts.get(link, 0):
            return
        self._peer_env_counts[link] = len(peer_envs)
        shared = self._link_spaces.get(link, frozenset())
        mine = self._link_envs.get(link, set())
        now = _mono_ms()
        for pair in sorted(set(peer_envs) - mine):
            if pair[0] in shared:
                self._add_env(link, pair, now)

    def _add_env(self, link: PeerLink, pair: tuple[str, str], now: int) -> None:
        envs = self._link_envs.setdefault(link, set())
        if pair in envs:
            return
        envs.add(pair)
        assert self.hub is not None
        try:
            self._run(self.hub.add_env(link, pair[0], pair[1], now))
        except MocksyncError as exc:
            log.info("not syncing %s with %s: %s", pair[1], link.device, exc)

    def _session_closed(self, ev: Closed) -> None:
        assert self.book is not None
        link: PeerLink = ev.link  # type: ignore[assignment]
        device = link.device
        self._link_envs.pop(link, None)
        self._link_spaces.pop(link, None)
        self._peer_env_counts.pop(link, None)
        self._early.pop(link, None)
        if self.links.get(device) is link:
            del self.links[device]
            self.presence.pop(device, None)
            if not self._stopping and IDLE_REASON in ev.reason:
                self.book.idle(device, IDLE_REASON, time.monotonic())
            elif not self._stopping:
                self.book.closed(device, ev.reason, time.monotonic(),
                                 incompatible=ev.reason.startswith("incompatible version"))
                self._dial_wake.set()
                self.agent.publish(Peer(device=device, via="lan", state="closed",
                                        reason=ev.reason))
        if not self._stopping:
            self._spawn(self._close_later(link, ev.reason))

    async def _close_later(self, link: PeerLink, reason: str) -> None:
        await asyncio.sleep(0.2)  # let the bye leave first
        await link.close(reason)

    def _ensure_env(self, space: str, env: str) -> None:
        now = _mono_ms()
        for link in list(self.links.values()):
            if space in self._link_spaces.get(link, ()):
                self._add_env(link, (space, env), now)

    # ================================================================ agent side

    def broadcast(self, space: str, env: str, wire: bytes) -> None:
        if not self.started or self.hub is None:
            return
        try:
            _space, _env, device, seq = peek_changeset(wire)
        except MocksyncError:
            log.exception("not broadcasting an unreadable change set")
            return
        self._ensure_env(space, env)
        self._demand(space)
        self._link_co_editors((space, env))  # a link closed while idle reopens on an edit
        self._run(self.hub.committed(space, env, device, seq, wire, _mono_ms(),
                                     relay_to=self._relay_to(self.me)))

    def _on_agent_event(self, event: dict[str, Any]) -> None:
        if (event.get("event") != "change" or event.get("origin") != "remote"
                or self.hub is None or self._stopping):
            return
        env, device, seq = event.get("env"), event.get("device"), event.get("seq")
        if not isinstance(env, str) or not isinstance(device, str) or not isinstance(seq, int):
            return
        space = self._space_of(env)
        if space is None:
            return
        self._ensure_env(space, env)
        self._run(self.hub.committed(space, env, device, seq, None, _mono_ms(),
                                     relay_to=self._relay_to(device)))

    def _relay_to(self, origin: str) -> Callable[[str], bool] | None:
        """Which peers a change set by `origin` (this device or another) is pushed to, the
        others being told with a `have`: our overlay neighbours and the links opened on
        demand (co-editors, something to send: opened to be fast). A link left over from an
        older overlay only gets announcements, so it goes idle and closes instead of being
        kept open, and flooded, by the change sets it carries (measured at 12 devices: the
        author kept 6 such links). None: push on every link (a full mesh).

        Pushing only along the breadth-first tree from the author (tried, then removed)
        cut the copies a device receives per edit from 4.3 to
        1.8 at 12 devices, but on this loaded 2-core machine the 30-device p50 went from
        0.8 s to 1.5 s (one run each, load 12): flooding takes the fastest of several paths
        through busy daemons, a tree the one path it fixed. So the tree is not used."""
        online = frozenset(self._online())
        if len(online | {self.me}) <= FULL_MESH_UP_TO:
            return None
        neighbours = self._relay_cache.get(online)
        if neighbours is None:
            if len(self._relay_cache) >= MAX_RELAY_TREES:
                self._relay_cache.clear()
            neighbours = self._relay_cache[online] = anchors(self.me, online)
        demand = self._on_demand
        return lambda peer: peer in neighbours or peer in demand

    def set_presence(self, *, space: str | None = None, env: str | None = None,
                     entity: str | None = None, editor: str | None = None, **_: Any) -> None:
        """What this device's user is looking at; sent to peers that share that env."""
        editor = editor or DEFAULT_EDITOR
        before = self.my_presence
        self.my_presence = {"space": space, "env": env, "entity": entity, "editor": editor}
        if self.hub is not None:
            self._run(self.hub.set_presence(space, env, entity if env else None, editor,
                                            _mono_ms()))
            self._send_my_note()
            if before is None or (before["space"], before["env"]) != (space, env):
                self._link_co_editors()

    # ---------------------------------------------------------------- presence notes

    def _send_my_note(self) -> None:
        """Sign our presence as a note and send it on every link (`net.presence_gossip`):
        devices with no link to us learn what our user edits through the overlay."""
        if self.hub is None or self.my_presence is None:
            return
        p = self.my_presence
        space, env = (p["space"], p["env"]) if p.get("env") and p.get("space") else (None, None)
        self._note_counter = next_counter(self._note_counter, _wall_ms())
        note = Note(self.me, self._note_counter, space, env,
                    p.get("entity") if env else None, p["editor"])
        try:
            self._my_note = make_note(self.agent.identity.sign, note)
        except ValidationError as exc:
            log.warning("not sending presence to the overlay: %s", exc)
            self._my_note = None
            return
        self._note_sent_at = time.monotonic()
        for link in list(self.links.values()):
            if space is None or space in self._link_spaces.get(link, ()):
                self._run(self.hub.relay_presence(link, self._my_note, NOTE_HOPS, _mono_ms()))

    def _tell_notes(self, link: PeerLink, shared: frozenset[str]) -> None:
        """A link opened: give the peer our note and the notes we hold that may still
        travel, for spaces it shares with us (never an env id of a space it is not in)."""
        assert self.hub is not None
        now_ms = _mono_ms()
        own = [] if self._my_note is None else [(self._my_note, NOTE_HOPS)]
        for wire, hops in own + self.notes.to_pass_on(time.monotonic(), shared):
            self._run(self.hub.relay_presence(link, wire, hops, now_ms))

    def _on_note(self, ev: PresenceNote) -> None:
        """A peer passed on a presence note: check it, keep it if newer, pass it on."""
        assert self.hub is not None
        copy = self.notes.copy_of(ev.wire)
        if copy is not None:  # the note we hold, by another path: that peer holds it too
            self.notes.held_by(copy, ev.device)
            return
        try:
            note = read_note(ev.wire, self._cached_key)
        except ValidationError as exc:
            log.debug("dropped a presence note from %s: %s", ev.device, exc)
            return
        if note.space is not None and note.device not in self._member_keys.get(note.space, {}):
            return  # names a space we do not share with its device: never shown
        before = self.notes.current(time.monotonic()).get(note.device)
        if not self.notes.offer(note, time.monotonic(), ev.wire, ev.hops):
            return
        self.notes.held_by(note.device, ev.device)
        if note.device not in self.presence:  # a direct session says it first-hand
            self.agent.publish(Presence(device=note.device, env=note.env, entity=note.entity,
                                        editor=note.editor))
        mine = self.my_presence
        moved = before is None or (before.space, before.env) != (note.space, note.env)
        if moved and mine and mine.get("env") and note.env == mine.get("env"):
            self._link_co_editors()  # only when it moved here: a refresh reopens nothing
        if next_hops(ev.hops) is None:
            return
        # Passed on a moment later, to the peers that did not send it meanwhile
        # (`presence_gossip`: deduplicated per hop).
        self._notes_due.add(note.device)
        if self._note_timer is None:
            self._note_timer = asyncio.get_running_loop().call_later(
                NOTE_FORWARD_DELAY_S, self._forward_notes)

    def _forward_notes(self) -> None:
        """Pass the notes that arrived in the last NOTE_FORWARD_DELAY_S on to the linked
        peers not known to hold them, for spaces each shares with us."""
        self._note_timer = None
        due, self._notes_due = self._notes_due, set()
        if self.hub is None or self._stopping:
            return
        now_ms = _mono_ms()
        for device in sorted(due):
            held = self.notes.note_of(device)
            if held is None:
                continue
            note, wire, hops = held
            links = {ln.device: ln for ln in list(self.links.values())
                     if note.space is None or note.space in self._link_spaces.get(ln, ())}
            for peer in self.notes.to_send(device, links):
                self._run(self.hub.relay_presence(links[peer], wire, hops, now_ms))

    # ================================================================ timer

    def _wake_tick(self) -> None:
        if self.hub is None:
            return
        due = self.hub.next_tick_ms()
        if due is not None and due < self._planned_tick:
            self._tick_wake.set()

    async def _tick_loop(self) -> None:
        assert self.hub is not None
        while True:
            now = _mono_ms()
            due = self.hub.next_tick_ms()
            sleep_ms = MAX_TICK_SLEEP_S * 1000 if due is None else min(
                MAX_TICK_SLEEP_S * 1000, max(0, due - now))
            self._planned_tick = now + sleep_ms
            if sleep_ms > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await within(sleep_ms / 1000, self._tick_wake.wait())
            self._tick_wake.clear()
            late = _mono_ms() - self._planned_tick
            self._planned_tick = math.inf
            if late > LOOP_STALL_MS:
                # The loop was blocked (a large change set being applied): let the frames
                # that arrived meanwhile in first, so a busy device does not judge its
                # peers silent for its own stall.
                await asyncio.sleep(STALL_CATCH_UP_S)
            try:
                self._run(self.hub.tick(_mono_ms()))
            except Exception:
                log.exception("sync timer failed")
                await asyncio.sleep(0.1)

    # ================================================================ status

    def status(self) -> dict[str, Any]:
        peers: list[dict[str, Any]] = []
        if self.book is not None and self.hub is not None:
            wanted = self._wanted(time.monotonic())
            notes = self.notes.current(time.monotonic())
            for rec in sorted(self.book.peers.values(), key=lambda r: r.device):
                link = self.links.get(rec.device)
                session = self.hub.sessions.get(link) if link is not None else None
                st = session.status() if session is not None else None
                state, reason = rec.state, rec.reason
                if st is not None and st["state"] != "open":
                    state = "connecting"
                if state == DISCOVERED and rec.device not in wanted:
                    state, reason = IDLE, IDLE_REASON  # reachable; linked when needed
                pres: Any = self.presence.get(rec.device) or notes.get(rec.device)
                entry: dict[str, Any] = {
                    "device": rec.device,
                    "member": self._member_name(rec.device, rec.spaces),
                    "via": "lan",
                    "state": state,
                    "rtt_ms": st["rtt_ms"] if st else None,
                    "reason": reason,
                    "address": (link.address if link is not None else None)
                    or (rec.addresses[0] if rec.addresses else None),
                    "spaces": sorted(self.agent.spaces.name(s) for s in rec.spaces),
                    "presence": None if pres is None else {
                        "space": pres.space, "env": pres.env, "entity": pres.entity,
                        "editor": pres.editor},
                }
                if link is not None:
                    entry["link"] = link.stats()
                    entry["connected_s"] = round(time.monotonic() - (link.opened_at or
                                                                     link.created), 1)
                if st is not None:
                    entry["session"] = {k: st[k] for k in (
                        "shared_envs", "inflight", "queued", "requested", "refused_by_peer",
                        "stats", "peer_protocol", "peer_model")}
                peers.append(entry)
        return {"peers": peers,
                "lan": {"running": self.started, "port": self.port,
                        "bind": list(self.bind) or ["all interfaces"],
                        "mdns": self.mdns_enabled, "presence": self.my_presence,
                        "messages": None if self.hub is None else self.hub.counts.as_dict()}}


def build_lan_transport(settings: Any, **kw: Any) -> LanTransport | None:
    """The LAN transport the daemon's settings ask for (None when LAN sync is off)."""
    if not (settings.mdns or settings.bind):
        return None
    kw.setdefault("link_idle_s", getattr(settings, "lan_link_idle_s", LINK_IDLE_S))
    return LanTransport(bind=settings.bind, ice_servers=settings.ice_servers,
                        mdns=settings.mdns, **kw)


__all__ = ["LanTransport", "build_lan_transport"]
