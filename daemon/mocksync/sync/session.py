"""One sync session with one peer, sans-IO: frames and calls in, events out.

The design follows h11: the session is a state machine that never touches a socket, the
store or a clock. The I/O adapter feeds it what arrived (`receive_data`), what the local store
committed (`local_changeset`), the outcome of ingesting what it delivered (`delivered`) and
the time (`tick`, at `next_tick_ms()`); it carries out the returned events (`Send`,
`Deliver`, `Opened`, `PeerPresence`, `Closed`). Because nothing here blocks or waits, the whole
protocol — loss, duplication, reordering, dead peers, version gates — is tested with a virtual
clock and in-memory links, and the adapter stays a few dozen lines.

How change sets move (the part worth knowing before reading the code):
- Handshake: each side sends `hello` (versions, device, the envs it syncs with this peer).
  Incompatible protocol or model versions close the session with a sentence a person can act
  on. The envs both sides listed are "shared"; for each, both send `have` (applied vector).
- Pull: whatever a peer's vector shows that we lack we ask for with `want`, in windows of
  `want_window` change sets per peer. Every session claims in one device-wide `Wants` book
  first, so across all peers each change set is asked of one peer only (a device in a mesh
  receives each change once, not once per peer). An author's own chain is only ever fetched
  from the author while its session is open.
- Push: a change set the local device authors is sent at once to each peer that has told us
  its vector and holds (or is being sent) the predecessor: one message per live edit. A
  change set received from elsewhere is not forwarded blindly — that is what makes meshes
  receive everything n-1 times — but announced with a `have` (coalesced), and peers that lack
  it pull it. Nothing is ever announced or sent back to the peer it came from (the peer's
  known vector already covers it).
- Flow control: at most `max_inflight_messages` / `max_inflight_bytes` of change sets are
  unacknowledged at once; `ack` (receipt plus the receiver's vector) frees credit, `nack`
  reports a refusal (shown in `status`). A duplicate whose copy from us already left for the
  peer (the copies crossed) is not acknowledged: that copy tells the peer we hold it. Unacknowledged sets are resent after
  `resend_after_ms` (doubling, `max_send_attempts` times); unanswered wants expire in the book
  and are asked again, possibly of another peer; every `anti_entropy_ms` both sides re-send
  `have`, so any gap heals after loss.
- Membership: the hello carries the heads of each membership log the two devices share; each
  side sends (`mlog`) the entries the other's heads do not cover, and a later change of our
  log is announced with `mheads` (the peer answers with its heads if it lacks ours, and we
  send what it lacks). A complete answer is handed up as one `Members` event: the transport
  verifies it with the whole log (`sync.membership`).
- Liveness: `ping`/`pong` every `ping_interval_ms` measure the round trip (`rtt_ms`); nothing
  received for `dead_after_ms` closes the session as dead (aiortc itself needs 31-64 s). Only
  one side of a pair pings on the clock (the smaller device id); the other pings only when it
  has heard nothing for FOLLOWER_SILENCE_PCT of the interval, or to refresh its round trip
  every RTT_REFRESH_MS: every frame received proves the peer alive, and each data-channel
  message costs both daemons DTLS, SCTP and an acknowledgement, so two heartbeats per pair
  were half wasted (issue 16: idle CPU grows with the links). For the same reason the pinging
  side skips its ping while other frames from the peer keep arriving (a pong does not count:
  it only answers our ping), again bounded by RTT_REFRESH_MS; during edits heartbeats were
  the most frequent message kind. Dead-peer detection is unchanged: whichever side hears
  nothing pings, and silence for `dead_after_ms` ends the session.
- Framing: messages are split into data-channel-sized frames (`mocksync.changes.chunks`), so
  `Send.data` can go straight onto a WebRTC data channel.

Duplicates the protocol cannot rule out (a resend racing a late ack, a request that expired
just before its answer) are harmless: the store treats a duplicate as a no-op, and the session
drops change sets it already holds before they reach the store.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import struct
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

from .. import MOCKOON_MAX_MIGRATION, MODEL_VERSION, PROTOCOL_VERSION
from ..changes.chunks import CHUNK_SIZE, HEADER_SIZE, MAX_CHUNK_DATA, Reassembler, split
from ..changes.errors import ChunkError
from ..errors import ChangeSetError, ValidationError
from . import wants as wants_mod
from .errors import IncompatiblePeer, MalformedMessage, ProtocolError, UnexpectedMessage
from .events import (
    Closed,
    Deliver,
    Event,
    Members,
    Opened,
    PeerPresence,
    PresenceNote,
    Send,
)
from .membership import (
    MAX_MEMBERSHIP_SPACES,
    MAX_PEER_KNOWN,
    MAX_PENDING_BYTES,
    MAX_PENDING_ENTRIES,
    MembershipSource,
    batches,
    heads_of,
    missing_for,
)
from .messages import (
    DEVICE_ID,
    ENV_ID,
    MAX_EDITOR_CHARS,
    MAX_ENVS,
    MAX_NONCE,
    MAX_WANT_SPAN,
    SPACE_ID,
    Ack,
    Bye,
    Cs,
    Have,
    Hello,
    Message,
    MHeads,
    MLog,
    Nack,
    Ping,
    Pong,
    Presence,
    RelayedPresence,
    Want,
    check_field,
    check_reason,
    decode_message,
    encode_message,
)
from .source import Source
from .wants import Wants

#: Most change sets sent to one peer and not yet acknowledged.
MAX_INFLIGHT_MESSAGES = 64
#: Most change-set bytes sent to one peer and not yet acknowledged (one larger set may go alone).
MAX_INFLIGHT_BYTES = 4 * 1024 * 1024
#: Most change sets this device asks one peer for at a time (the pull window).
WANT_WINDOW = 256
#: Most change sets waiting in the send queue for one peer; wants beyond it are dropped
#: (the peer asks again when they expire).
MAX_QUEUED = 4096
#: Change sets read from the Source per call when serving a want.
FETCH_BATCH = 32
#: An unacknowledged change set is sent again after this long (then 2x, 4x...).
RESEND_AFTER_MS = 2_000
#: A change set is sent at most this many times per session before it is given up
#: (the peer's wants and anti-entropy take over).
MAX_SEND_ATTEMPTS = 5
#: Both sides re-send `have` for every shared env this often, so gaps heal after loss.
ANTI_ENTROPY_MS = 30_000
#: A heartbeat ping is sent this often once the session is open.
PING_INTERVAL_MS = 2_000
#: Nothing received from the peer for this long: the session is dead.
DEAD_AFTER_MS = 10_000
#: Announcements (`have`) of one env are sent at most once per this interval.
ANNOUNCE_COALESCE_MS = 20
#: A message of which only some frames arrived is dropped after this long.
PARTIAL_TIMEOUT_MS = 30_000
#: Messages that arrive before the peer's hello (a reordering transport) are kept, up to this
#: many and this many bytes, and handled once the hello is in.
MAX_EARLY_MESSAGES = 64
MAX_EARLY_BYTES = 1024 * 1024
#: The side of a pair that does not ping on the clock pings once it heard nothing for this
#: percentage of `ping_interval_ms` (later than the other side's ping is due, so the pair
#: settles on one pinger)...
FOLLOWER_SILENCE_PCT = 150
#: ...or when its last round-trip sample is this old (so `status` still shows its rtt). The
#: pinging side, while the peer's traffic proves it alive, also pings only this often.
RTT_REFRESH_MS = 30_000
#: Pings remembered for matching pongs.
MAX_PINGS_OUTSTANDING = 8
#: Refusals by the peer remembered for `status`.
MAX_REFUSALS_KEPT = 20
#: Throughput assumed when deciding a change set is lost rather than still in transit: a
#: large set gets `len / RESEND_BYTES_PER_MS` extra milliseconds before it is resent.
RESEND_BYTES_PER_MS = 1_000

CONNECTING = "connecting"
OPEN = "open"
CLOSED = "closed"

_FRAME_HEADER = struct.Struct(">BQIIQ")  # the chunk framing header (see changes/chunks.py)

Pair = tuple[str, str]
Key = tuple[str, str, str, int]  # (space, env, device, seq)


@dataclass(frozen=True)
class Config:
    """Timers and windows of one session (defaults: the module constants). Tests shrink them."""

    max_inflight_messages: int = MAX_INFLIGHT_MESSAGES
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES
    want_window: int = WANT_WINDOW
    max_queued: int = MAX_QUEUED
    resend_after_ms: int = RESEND_AFTER_MS
    max_send_attempts: int = MAX_SEND_ATTEMPTS
    anti_entropy_ms: int = ANTI_ENTROPY_MS
    ping_interval_ms: int = PING_INTERVAL_MS
    dead_after_ms: int = DEAD_AFTER_MS
    announce_coalesce_ms: int = ANNOUNCE_COALESCE_MS
    partial_timeout_ms: int = PARTIAL_TIMEOUT_MS
    request_timeout_ms: int = wants_mod.REQUEST_TIMEOUT_MS
    received_hold_ms: int = wants_mod.RECEIVED_HOLD_MS
    refused_backoff_ms: int = wants_mod.REFUSED_BACKOFF_MS
    chunk_size: int = CHUNK_SIZE

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if type(value) is not int or value < 1:
                raise ValidationError(f"sync config {name} must be a positive int, got {value!r}")
        if self.chunk_size > MAX_CHUNK_DATA:
            raise ValidationError(
                f"sync config chunk_size {self.chunk_size} does not fit a data channel message "
                f"(at most {MAX_CHUNK_DATA})"
            )

    def new_wants(self) -> Wants:
        return Wants(
            request_timeout_ms=self.request_timeout_ms,
            received_hold_ms=self.received_hold_ms,
            refused_backoff_ms=self.refused_backoff_ms,
        )


@dataclass
class Stats:
    """Counters for `status` and for tests that measure redundancy."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    cs_sent: int = 0
    cs_resent: int = 0
    cs_received: int = 0
    cs_redundant: int = 0
    delivered: int = 0
    refused_here: int = 0
    refused_by_peer: int = 0
    abandoned: int = 0
    wants_sent: int = 0
    haves_sent: int = 0
    early_dropped: int = 0
    queue_full: int = 0
    #: Messages by kind (`t`) each way: what an edit costs in data-channel messages.
    kinds_out: dict[str, int] = field(default_factory=dict)
    kinds_in: dict[str, int] = field(default_factory=dict)


@dataclass
class Counts:
    """Messages by kind and frames each way, summed over every session of a device (the
    hub's): sessions on demand close, so their own `Stats` go with them. Each data-channel
    message costs both daemons DTLS, SCTP and an SCTP acknowledgement, which is what an
    edit's CPU on a receiving daemon is mostly made of (issue 16); `status --json` shows
    these under `lan.messages`."""

    kinds_out: dict[str, int] = field(default_factory=dict)
    kinds_in: dict[str, int] = field(default_factory=dict)
    frames_out: int = 0
    frames_in: int = 0

    def as_dict(self) -> dict:
        return {"out": dict(sorted(self.kinds_out.items())),
                "in": dict(sorted(self.kinds_in.items())),
                "frames_out": self.frames_out, "frames_in": self.frames_in}


@dataclass(slots=True)
class _Item:
    key: Key
    wire: bytes | None = field(default=None, repr=False)


@dataclass(slots=True)
class _Flight:
    wire: bytes = field(repr=False)
    sent_at: int
    attempts: int


def _printable(text: str) -> str:
    """Peer-supplied text shown to people: no control characters (terminal escapes)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def check_compatible(peer: Hello, *, protocol: int = PROTOCOL_VERSION,
                     model: int = MODEL_VERSION) -> None:
    """Raise `IncompatiblePeer`, with what to update where, unless `peer` can sync with us."""
    for what, theirs, ours in (("speaks protocol", peer.protocol, protocol),
                               ("uses register model", peer.model, model)):
        if theirs != ours:
            where = "this device" if theirs > ours else f"device {peer.device}"
            raise IncompatiblePeer(
                f"incompatible version: peer {peer.device} {what} {theirs}, this device "
                f"{ours}; update mocksync on {where}"
            )


class Session:
    """The sync protocol with one peer. Every method returns the events to carry out."""

    def __init__(
        self,
        device: str,
        envs: Iterable[Pair],
        source: Source,
        *,
        link: Hashable | None = None,
        wants: Wants | None = None,
        config: Config | None = None,
        expect_device: str | None = None,
        protocol: int = PROTOCOL_VERSION,
        model: int = MODEL_VERSION,
        migration: int = MOCKOON_MAX_MIGRATION,
        spaces: Iterable[str] = (),
        membership: MembershipSource | None = None,
        relay_push: bool = False,
        counts: Counts | None = None,
    ) -> None:
        try:
            check_field(DEVICE_ID, device, "hello.d")
            self._envs: set[Pair] = {
                (check_field(SPACE_ID, s, "hello.envs space"),
                 check_field(ENV_ID, e, "hello.envs env")) for s, e in envs
            }
        except MalformedMessage as exc:
            raise ValidationError(f"cannot open a sync session: {exc}") from None
        if len(self._envs) > MAX_ENVS:
            raise ValidationError(
                f"cannot sync {len(self._envs)} envs with one peer: the limit is {MAX_ENVS}"
            )
        try:
            #: Spaces whose membership logs this session gossips (both devices are members).
            self._spaces: set[str] = {check_field(SPACE_ID, s, "hello.mh key")
                                     for s in spaces}
        except MalformedMessage as exc:
            raise ValidationError(f"cannot open a sync session: {exc}") from None
        if len(self._spaces) > MAX_MEMBERSHIP_SPACES:
            raise ValidationError(f"cannot gossip the membership of {len(self._spaces)} spaces "
                                  f"with one peer: the limit is {MAX_MEMBERSHIP_SPACES}")
        self._membership = membership
        #: Entries of the peer's current answer per space (until its final `mlog`).
        self._mlog: dict[str, list[bytes]] = {}
        self._mlog_bytes: dict[str, int] = {}
        #: Per space, the peer heads we last answered with our own (never twice for the same,
        #: so two devices whose logs cannot merge do not ping-pong).
        self._answered_heads: dict[str, tuple[bytes, ...]] = {}
        #: Per space, entry hashes the peer is known to hold (heads it named, entries sent
        #: either way): their ancestors are never sent to it.
        self._peer_known: dict[str, set[bytes]] = {}
        self.device = device
        self.link: Hashable = self if link is None else link
        self.config = config or Config()
        self._source = source
        self._wants = wants if wants is not None else self.config.new_wants()
        self.expect_device = expect_device
        #: Push change sets received from elsewhere too, not only our own (a sparse overlay,
        #: `net.overlay`: each hop then costs one message instead of have/want/cs; in a full
        #: mesh it stays off, or every device would get each change n-1 times).
        self.relay_push = relay_push
        self.protocol, self.model, self.migration = protocol, model, migration

        self.state = CONNECTING
        self.closed_reason: str | None = None
        self.dead = False
        self.peer_device: str | None = None
        self.peer_hello: Hello | None = None
        self.peer_presence: PeerPresence | None = None
        self.rtt_ms: float | None = None
        self.last_rtt_ms: int | None = None
        self.stats = Stats()
        #: Device-wide message counts (the hub's, shared by its sessions).
        self.counts = counts if counts is not None else Counts()
        self.peer_refusals: deque[tuple[str, str, str, int, str]] = deque(
            maxlen=MAX_REFUSALS_KEPT
        )
        self.shared: set[Pair] = set()
        self._peer_envs: set[Pair] = set()

        self._out: list[Event] = []
        self._reasm = Reassembler()
        self._msg_id = 0
        self._partials: dict[int, int] = {}
        self._last_recv = 0
        self._last_traffic = 0  # last frame from the peer that was not a pong
        self._hello_bytes: bytes | None = None
        self._hello_sent_at = 0
        self._peer_confirmed = False
        self._early: list[Message] = []
        self._early_bytes = 0
        self._nonce = 0
        self._pings: dict[int, int] = {}
        self._last_ping = 0
        self._last_pong_at: int | None = None
        self._presence: tuple[str | None, str | None, str | None, str] | None = None

        self._mine: dict[Pair, dict[str, int]] = {}
        self._peer_vv: dict[Pair, dict[str, int]] = {}
        self._heard: set[Pair] = set()  # pairs the peer has sent its `have` for
        # seqs the peer acknowledged receiving but has not applied yet -> when (trusted for
        # received_hold_ms, as long as the peer itself holds them before asking again)
        self._acked: dict[tuple[str, str, str], dict[int, int]] = {}
        self._top: dict[tuple[str, str, str], int] = {}
        self._queue: deque[_Item] = deque()
        self._queued: set[Key] = set()
        self._inflight: dict[Key, _Flight] = {}
        self._inflight_bytes = 0
        self._last_have: dict[Pair, int] = {}
        self._announce_due: set[Pair] = set()
        self._next_anti_entropy = 0
        self._wants_gen = self._wants.generation

    # ================================================================ public API

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    def start(self, now_ms: int) -> list[Event]:
        """Begin the handshake: sends our hello."""
        if self._hello_bytes is None and not self.closed:
            self._last_recv = self._last_ping = now_ms
            hello = Hello(
                device=self.device,
                envs=tuple(sorted(self._envs)),
                protocol=self.protocol,
                model=self.model,
                migration=self.migration,
                mheads={s: self._heads(s) for s in sorted(self._spaces)},
            )
            self._hello_bytes = encode_message(hello)
            self._count_out(Hello.KIND)
            self._send_bytes(self._hello_bytes)
            self._hello_sent_at = now_ms
        return self._flush()

    def receive_data(self, data: bytes, now_ms: int) -> list[Event]:
        """One frame from the connection."""
        if self.closed:
            return []
        self.stats.frames_in += 1
        self.counts.frames_in += 1
        self.stats.bytes_in += len(data)
        self._last_recv = now_ms
        try:
            payload = self._feed(data, now_ms)
            if payload is None:
                self._last_traffic = now_ms  # one frame of a larger message: never a pong
            else:
                msg = decode_message(payload)
                if not isinstance(msg, Pong):
                    self._last_traffic = now_ms
                self._count_in(msg.KIND)
                self._on_message(msg, len(payload), now_ms)
        except (ProtocolError, ChunkError) as exc:
            self._close(f"peer {self._peer_name()} broke the sync protocol: {exc}", now_ms)
        return self._flush()

    def tick(self, now_ms: int) -> list[Event]:
        """Let time pass: heartbeats, resends, announcements, anti-entropy, dead-peer check."""
        if self.closed:
            return []
        cfg = self.config
        if now_ms - self._last_recv >= cfg.dead_after_ms:
            self.dead = True
            what = "sent nothing" if self.state == CONNECTING else "went silent"
            self._close(
                f"peer {self._peer_name()} {what} for {cfg.dead_after_ms / 1000:g} s: "
                "connection presumed dead (check that the device is online)",
                now_ms,
            )
            return self._flush()
        if not self._peer_confirmed and now_ms - self._hello_sent_at >= cfg.resend_after_ms:
            if self._hello_bytes is not None:
                self._send_bytes(self._hello_bytes)
            self._hello_sent_at = now_ms
        for msg_id, first in list(self._partials.items()):
            if now_ms - first >= cfg.partial_timeout_ms:
                self._reasm.discard(msg_id)
                del self._partials[msg_id]
        if self.state != OPEN:
            return self._flush()
        if now_ms >= self._ping_due():
            self._ping(now_ms)
        self._resend(now_ms)
        for pair in list(self._announce_due):
            if now_ms - self._last_have.get(pair, -math.inf) >= cfg.announce_coalesce_ms:
                self._send_have(pair, now_ms)
        repull = False
        if now_ms >= self._next_anti_entropy:
            self._next_anti_entropy = now_ms + cfg.anti_entropy_ms
            for pair in sorted(self.shared):
                self._refresh_mine(pair)
                self._send_have(pair, now_ms)
            for space in sorted(self._spaces):  # heals a lost mlog: the peer answers
                self._send(MHeads(space, self._heads(space)))
            repull = True
        if self._wants.expire(now_ms) or self._wants.generation != self._wants_gen:
            repull = True
        if repull:
            self._wants_gen = self._wants.generation
            for pair in sorted(self.shared):
                self._pull(pair, now_ms)
        self._pump(now_ms)
        return self._flush()

    def next_tick_ms(self) -> int | None:
        """When `tick` must next be called (None once closed)."""
        if self.closed:
            return None
        cfg = self.config
        due = [self._last_recv + cfg.dead_after_ms]
        if not self._peer_confirmed:
            due.append(self._hello_sent_at + cfg.resend_after_ms)
        if self._partials:
            due.append(min(self._partials.values()) + cfg.partial_timeout_ms)
        if self.state == OPEN:
            due.append(self._ping_due())
            due.append(self._next_anti_entropy)
            for fl in self._inflight.values():
                due.append(fl.sent_at + self._resend_interval(fl))
            for pair in self._announce_due:
                due.append(int(self._last_have.get(pair, 0)) + cfg.announce_coalesce_ms)
            wants_due = self._wants.next_deadline()
            if wants_due is not None:
                due.append(wants_due)
        return int(min(due))

    def local_changeset(
        self, space: str, env: str, device: str, seq: int, wire: bytes | None, now_ms: int,
        *, relay_to: Callable[[str], bool] | None = None,
    ) -> list[Event]:
        """The local store applied `device#seq` (our own edit, or one received from anyone).

        Call it on every session for every change set the store applies, including ones a
        delivery unblocked. Our own edits are pushed to the peer, others' only with
        `relay_push`, and either only to a peer `relay_to` accepts (None: any); what is not
        pushed is announced, and nothing goes back to a peer that already has it.
        """
        pair = (space, env)
        self._wants.applied(space, env, device, seq)
        if self.closed or pair not in self.shared:
            return []
        mine = self._mine[pair]
        if seq > mine.get(device, 0):
            mine[device] = seq
        key = (space, env, device, seq)
        if self._peer_has(key, now_ms):
            return []
        allowed = relay_to is None or self.peer_device is None or relay_to(self.peer_device)
        if (device == self.device or self.relay_push) and allowed and pair in self._heard:
            # Push only once the peer told us its vector: before that it may be fetching
            # our older sets from someone else, and a push could duplicate them.
            frontier = max(self._peer_vv[pair].get(device, 0), self._top.get(key[:3], 0))
            if seq <= frontier:
                return []  # already queued or in flight
            if seq == frontier + 1 and (wire is not None or device != self.device):
                self._enqueue(key, None if wire is None else bytes(wire), now_ms)
                self._pump(now_ms)
                return self._flush()
        self._announce(pair, now_ms)
        return self._flush()

    def delivered(
        self, event: Deliver, now_ms: int, *, refused: str | None = None
    ) -> list[Event]:
        """The caller ingested `event.wire`: acknowledge it, or report why it was refused."""
        pair = (event.space, event.env)
        if self.closed or pair not in self.shared:
            return []
        if refused is not None:
            self._wants.refused(event.space, event.env, event.device, event.seq, now_ms)
            self.stats.refused_here += 1
            self._send(Nack(event.space, event.env, event.device, event.seq,
                            check_reason(str(refused), "nack")))
        else:
            self._send(Ack(event.space, event.env, event.device, event.seq,
                           dict(self._mine[pair])))
        self._pull(pair, now_ms)
        return self._flush()

    def add_env(self, space: str, env: str, now_ms: int) -> list[Event]:
        """Start syncing another env with this peer (only envs of spaces the peer is in)."""
        try:
            pair = (check_field(SPACE_ID, space, "have.s"), check_field(ENV_ID, env, "have.e"))
        except MalformedMessage as exc:
            raise ValidationError(f"cannot sync this env: {exc}") from None
        if self.closed or pair in self._envs:
            return []
        if len(self._envs) >= MAX_ENVS:
            raise ValidationError(f"cannot sync more than {MAX_ENVS} envs with one peer")
        self._envs.add(pair)
        if self.state == OPEN:
            if pair in self._peer_envs:
                self._share(pair, now_ms)
            else:  # tell the peer we sync it too; it answers with its own have if it does
                self._send(Have(space, env, dict(self._source.version_vector(space, env))))
        return self._flush()

    def set_presence(
        self, space: str | None, env: str | None, entity: str | None, editor: str, now_ms: int
    ) -> list[Event]:
        """What the local user is looking at. Sent only for envs shared with this peer;
        otherwise the peer learns just "elsewhere" (never an env id it does not sync)."""
        self._presence = (space, env, entity, str(editor)[:MAX_EDITOR_CHARS])
        if self.state == OPEN:
            self._send(self._presence_message())
        return self._flush()

    def relay_presence(self, wire: bytes, hops: int, now_ms: int) -> list[Event]:
        """Pass a device's signed presence note to the peer (the caller decides which notes
        travel where and how far: `net.presence_gossip`)."""
        if self.state == OPEN:
            self._send(RelayedPresence(bytes(wire), hops))
        return self._flush()

    def membership_changed(self, space: str, now_ms: int) -> list[Event]:
        """Our membership log of `space` grew: send the peer what it lacks of it now (nothing
        when the new entries came from this peer)."""
        if self.state == OPEN and space in self._spaces:
            self._send_missing(space)
        return self._flush()

    def close(self, reason: str, now_ms: int) -> list[Event]:
        """Close the session (tells the peer why)."""
        self._close(reason, now_ms)
        return self._flush()

    def peer_vv(self, space: str, env: str) -> dict[str, int]:
        """What we know the peer has applied of an env (a copy)."""
        return dict(self._peer_vv.get((space, env), {}))

    def status(self) -> dict:
        """Plain data for `mocksync status`."""
        hello = self.peer_hello
        return {
            "peer": self.peer_device,
            "state": self.state,
            "closed_reason": self.closed_reason,
            "dead": self.dead,
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 1),
            "peer_protocol": hello.protocol if hello else None,
            "peer_model": hello.model if hello else None,
            "peer_migration": hello.migration if hello else None,
            "shared_envs": len(self.shared),
            "inflight": len(self._inflight),
            "inflight_bytes": self._inflight_bytes,
            "queued": len(self._queue),
            "requested": self._wants.outstanding(self.link),
            "presence": None if self.peer_presence is None else {
                "space": self.peer_presence.space, "env": self.peer_presence.env,
                "entity": self.peer_presence.entity, "editor": self.peer_presence.editor,
            },
            "refused_by_peer": [
                {"space": s, "env": e, "device": d, "seq": n, "reason": r}
                for s, e, d, n, r in self.peer_refusals
            ],
            "stats": asdict(self.stats),
        }

    # ================================================================ receiving

    def _feed(self, data: bytes, now: int) -> bytes | None:
        reasm = self._reasm
        total = 1
        msg_id = length = 0
        if isinstance(data, bytes | bytearray | memoryview) and len(data) >= HEADER_SIZE:
            _, msg_id, _, total, length = _FRAME_HEADER.unpack_from(bytes(data[:HEADER_SIZE]))
        if total > 1 and msg_id not in self._partials:
            # A new multi-frame message: make room by giving up the oldest incomplete ones
            # (their frames were lost; the sender resends under a new id), so loss never
            # turns into the reassembler's limit closing the session.
            while self._partials and (
                reasm.pending_count >= reasm.max_pending - 1
                or reasm.buffered_bytes + min(length, reasm.max_message_bytes)
                > reasm.max_pending_bytes
            ):
                oldest = next(iter(self._partials))
                reasm.discard(oldest)
                del self._partials[oldest]
        before = reasm.pending_count
        payload = reasm.feed(data)
        if total > 1:
            self._wants.progress(self.link, now)
            if payload is not None:
                self._partials.pop(msg_id, None)
            elif reasm.pending_count > before:
                self._partials[msg_id] = now
        return payload

    def _on_message(self, msg: Message, size: int, now: int) -> None:
        if isinstance(msg, Hello):
            self._on_hello(msg, now)
        elif isinstance(msg, Bye):
            self._close(f"peer {self._peer_name()} closed the session: {_printable(msg.reason)}",
                        now, bye=False)
        elif isinstance(msg, Ping):
            self._send(Pong(msg.nonce))
            if self.state == OPEN:
                self._peer_confirmed = True
        elif isinstance(msg, Pong):
            sent = self._pings.pop(msg.nonce, None)
            if sent is not None:
                self._last_pong_at = now
                sample = now - sent
                self.last_rtt_ms = sample
                self.rtt_ms = sample if self.rtt_ms is None else 0.875 * self.rtt_ms + 0.125 * sample
        elif self.state == CONNECTING:
            if len(self._early) < MAX_EARLY_MESSAGES and self._early_bytes + size <= MAX_EARLY_BYTES:
                self._early.append(msg)
                self._early_bytes += size
            else:
                self.stats.early_dropped += 1
        else:
            self._peer_confirmed = True
            if isinstance(msg, Have):
                self._on_have(msg, now)
            elif isinstance(msg, Cs):
                self._on_cs(msg, now)
            elif isinstance(msg, Ack):
                self._on_ack(msg, now)
            elif isinstance(msg, Want):
                self._on_want(msg, now)
            elif isinstance(msg, Nack):
                self._on_nack(msg, now)
            elif isinstance(msg, Presence):
                self._on_presence(msg)
            elif isinstance(msg, RelayedPresence):
                self._out.append(PresenceNote(self.link, self.peer_device or "", msg.wire,
                                              msg.hops))
            elif isinstance(msg, MHeads):
                self._on_mheads(self._gossiped(msg.space, "mheads"), msg.heads, reply=True)
            elif isinstance(msg, MLog):
                self._on_mlog(msg)

    def _on_hello(self, msg: Hello, now: int) -> None:
        if self.state == OPEN:
            if msg == self.peer_hello:
                return  # a resent hello
            raise UnexpectedMessage("peer sent a second, different hello")
        peer = msg.device
        try:
            check_compatible(msg, protocol=self.protocol, model=self.model)
        except IncompatiblePeer as exc:
            self._close(str(exc), now, bye=False)  # the peer reads the same from our hello
            return
        if self.expect_device is not None and peer != self.expect_device:
            self._close(
                f"peer says it is device {peer} but the connection was authenticated as device "
                f"{self.expect_device}: closing (possible impersonation)", now)
            return
        if peer == self.device:
            self._close(f"connected to itself (device {peer}): check the peer's address", now)
            return
        self.peer_hello = msg
        self.peer_device = peer
        self._peer_envs = set(msg.envs)
        self.state = OPEN
        self._next_anti_entropy = now + self.config.anti_entropy_ms
        self._last_ping = now
        for pair in sorted(self._envs & self._peer_envs):
            self._share(pair, now)
        self._out.append(Opened(self.link, peer, frozenset(self.shared)))
        # The peer listed the spaces it holds with us; the gossip covers those both listed.
        self._spaces &= set(msg.mheads)
        for space in sorted(self._spaces):
            self._on_mheads(space, msg.mheads[space], reply=False)
        if self._presence is not None:
            self._send(self._presence_message())
        early, self._early, self._early_bytes = self._early, [], 0
        for m in early:
            if not self.closed:
                self._on_message(m, 0, now)

    # ---------------------------------------------------------------- membership gossip

    def _heads(self, space: str) -> tuple[bytes, ...]:
        return heads_of(self._membership.log(space)) if self._membership is not None else ()

    def _gossiped(self, space: str, kind: str) -> str:
        if space not in self._spaces:
            raise UnexpectedMessage(
                f"{kind} for space {space}, whose membership this session does not exchange"
            )
        return space

    def _known(self, space: str, hashes: Iterable[bytes]) -> None:
        known = self._peer_known.setdefault(space, set())
        if len(known) >= MAX_PEER_KNOWN:
            known.clear()
        known.update(hashes)

    def _send_missing(self, space: str) -> list[bytes]:
        """Send the entries of `space` the peer is not known to hold; our log's heads."""
        if self._membership is None:
            return []
        log = self._membership.log(space)
        items = missing_for(log, self._peer_known.get(space, ()))
        chunks = batches([item.wire for item in items])
        for i, chunk in enumerate(chunks):
            self._send(MLog(space, tuple(chunk), i == len(chunks) - 1))
        self._known(space, (item.hash for item in items))
        return [item.hash for item in log]

    def _on_mheads(self, space: str, peer_heads: tuple[bytes, ...], *, reply: bool) -> None:
        """The peer's log of `space` ends at `peer_heads`: send what it lacks, and when it has
        entries we lack, let it know our heads (once per distinct set of its heads: it then
        sends what we lack)."""
        if self._membership is None:
            return
        self._known(space, peer_heads)
        ours = set(self._send_missing(space))
        if (reply and any(h not in ours for h in peer_heads)
                and self._answered_heads.get(space) != peer_heads):
            self._answered_heads[space] = peer_heads
            self._send(MHeads(space, self._heads(space)))

    def _on_mlog(self, msg: MLog) -> None:
        space = self._gossiped(msg.space, "mlog")
        held = self._mlog.setdefault(space, [])
        size = self._mlog_bytes.get(space, 0) + sum(len(w) for w in msg.wires)
        if len(held) + len(msg.wires) > MAX_PENDING_ENTRIES or size > MAX_PENDING_BYTES:
            raise UnexpectedMessage(
                f"membership entries of space {space} over the limit of {MAX_PENDING_ENTRIES} "
                f"entries / {MAX_PENDING_BYTES} bytes per answer"
            )
        held.extend(msg.wires)
        self._mlog_bytes[space] = size
        if msg.final:
            wires = tuple(self._mlog.pop(space))
            self._mlog_bytes.pop(space, None)
            if self._membership is not None:
                self._known(space, (h for w in wires if (h := self._membership.hash_of(w))))
            assert self.peer_device is not None
            self._out.append(Members(self.link, self.peer_device, space, wires))

    def _shared_pair(self, space: str, env: str, kind: str) -> Pair:
        pair = (space, env)
        if pair not in self.shared:
            raise UnexpectedMessage(
                f"{kind} for env {env} of space {space}, which this session does not sync"
            )
        return pair

    def _on_have(self, msg: Have, now: int) -> None:
        pair = (msg.space, msg.env)
        if pair not in self._peer_envs:
            if len(self._peer_envs) >= MAX_ENVS:
                raise UnexpectedMessage(f"peer announced more than {MAX_ENVS} envs")
            self._peer_envs.add(pair)
            if pair in self._envs:
                self._share(pair, now)
        if pair not in self.shared:
            return
        self._heard.add(pair)
        self._learn(pair, msg.vv)
        self._pull(pair, now)
        self._pump(now)

    def _on_want(self, msg: Want, now: int) -> None:
        pair = self._shared_pair(msg.space, msg.env, "want")
        mine = self._mine[pair]
        if msg.upto > mine.get(msg.device, 0):
            self._refresh_mine(pair)
        upto = min(msg.upto, mine.get(msg.device, 0))
        # Seqs the peer acknowledged a moment ago are skipped: this want crossed them. It asks
        # again for any it really lost once its own hold on them has expired, and so do we.
        for seq in range(msg.after + 1, upto + 1):
            self._enqueue((msg.space, msg.env, msg.device, seq), None, now)
        self._pump(now)

    def _on_cs(self, msg: Cs, now: int) -> None:
        pair = self._shared_pair(msg.space, msg.env, "change set")
        self.stats.cs_received += 1
        # Our own copy of it already left for this peer (the copies crossed, as neighbours
        # of a sparse overlay pass a change set on at about the same time): that copy tells
        # the peer we hold it, so a duplicate needs no ack (issue 16: each message costs
        # both daemons DTLS, SCTP and an SCTP ack).
        crossed = (msg.space, msg.env, msg.device, msg.seq) in self._inflight
        # The peer only ever sends change sets it has applied: it holds this chain up to seq.
        self._learn(pair, {msg.device: msg.seq})
        if self._mine[pair].get(msg.device, 0) >= msg.seq or self._wants.held(
            msg.space, msg.env, msg.device, msg.seq, now
        ):
            self.stats.cs_redundant += 1
            if not crossed:
                self._send(Ack(msg.space, msg.env, msg.device, msg.seq, dict(self._mine[pair])))
            return
        self._wants.received(msg.space, msg.env, msg.device, msg.seq, now)
        self.stats.delivered += 1
        self._out.append(Deliver(self.link, msg.space, msg.env, msg.device, msg.seq, msg.wire))

    def _on_ack(self, msg: Ack, now: int) -> None:
        pair = self._shared_pair(msg.space, msg.env, "ack")
        key = (msg.space, msg.env, msg.device, msg.seq)
        self._drop_inflight(key)
        if msg.vv.get(msg.device, 0) < msg.seq:
            self._acked.setdefault(key[:3], {})[msg.seq] = now
        self._learn(pair, msg.vv)
        self._pull(pair, now)
        self._pump(now)

    def _on_nack(self, msg: Nack, now: int) -> None:
        self._shared_pair(msg.space, msg.env, "nack")
        self._drop_inflight((msg.space, msg.env, msg.device, msg.seq))
        self.stats.refused_by_peer += 1
        self.peer_refusals.append(
            (msg.space, msg.env, msg.device, msg.seq, _printable(msg.reason)))
        self._pump(now)

    def _on_presence(self, msg: Presence) -> None:
        if msg.space is not None:
            self._shared_pair(msg.space, msg.env, "presence")  # type: ignore[arg-type]
        assert self.peer_device is not None
        self.peer_presence = PeerPresence(
            self.link, self.peer_device, msg.space, msg.env, msg.entity, _printable(msg.editor)
        )
        self._out.append(self.peer_presence)

    # ================================================================ sync state

    def _share(self, pair: Pair, now: int) -> None:
        if pair in self.shared:
            return
        self.shared.add(pair)
        self._mine[pair] = dict(self._source.version_vector(*pair))
        self._peer_vv[pair] = {}
        self._wants.connect(self.peer_device, {pair})  # type: ignore[arg-type]
        self._send_have(pair, now)

    def _refresh_mine(self, pair: Pair) -> None:
        mine = self._mine[pair]
        for device, seq in self._source.version_vector(*pair).items():
            if seq > mine.get(device, 0):
                mine[device] = seq

    def _peer_has(self, key: Key, now: int) -> bool:
        pv = self._peer_vv.get(key[:2])
        if pv is not None and pv.get(key[2], 0) >= key[3]:
            return True
        acked = self._acked.get(key[:3])
        if not acked or key[3] not in acked:
            return False
        if now - acked[key[3]] < self.config.received_hold_ms:
            return True
        del acked[key[3]]
        return False

    def _learn(self, pair: Pair, vv: Mapping[str, int]) -> None:
        """Merge what the peer told us it has; free credit for what it now covers."""
        pv = self._peer_vv[pair]
        grown = [d for d, seq in vv.items() if seq > pv.get(d, 0)]
        if not grown:
            return
        for d in grown:
            pv[d] = vv[d]
            acked = self._acked.get((*pair, d))
            if acked:
                for n in [n for n in acked if n <= pv[d]]:
                    del acked[n]
        for key in [k for k in self._inflight if k[:2] == pair and pv.get(k[2], 0) >= k[3]]:
            self._drop_inflight(key)

    def _announce(self, pair: Pair, now: int) -> None:
        if now - self._last_have.get(pair, -math.inf) >= self.config.announce_coalesce_ms:
            self._send_have(pair, now)
        else:
            self._announce_due.add(pair)

    def _send_have(self, pair: Pair, now: int) -> None:
        self._announce_due.discard(pair)
        self._last_have[pair] = now
        self.stats.haves_sent += 1
        self._send(Have(pair[0], pair[1], dict(self._mine[pair])))

    def _pull(self, pair: Pair, now: int) -> None:
        """Ask this peer for what it has and we lack, unless someone else is already asked."""
        if self.state != OPEN or pair not in self.shared:
            return
        space, env = pair
        mine = self._mine[pair]
        for device, top in list(self._peer_vv[pair].items()):
            have = mine.get(device, 0)
            if top <= have or device == self.device:
                continue
            if device != self.peer_device and self._wants.is_connected(space, env, device):
                continue  # the author is connected to us and pushes its own changes
            budget = self.config.want_window - self._wants.outstanding(self.link)
            if budget <= 0:
                return
            runs = self._wants.claim(space, env, device, have, top, self.link, now, budget)
            for first, last in runs:
                while first <= last:
                    end = min(last, first + MAX_WANT_SPAN - 1)
                    self.stats.wants_sent += 1
                    self._send(Want(space, env, device, first - 1, end))
                    first = end + 1

    # ================================================================ sending change sets

    def _enqueue(self, key: Key, wire: bytes | None, now: int) -> None:
        if self._peer_has(key, now) or key in self._inflight or key in self._queued:
            return
        if len(self._queue) >= self.config.max_queued:
            self.stats.queue_full += 1
            return
        self._queue.append(_Item(key, wire))
        self._queued.add(key)
        if key[3] > self._top.get(key[:3], 0):
            self._top[key[:3]] = key[3]

    def _fetch(self) -> None:
        """Read wires for the run of queued items at the head of the queue."""
        head = self._queue[0]
        space, env, device, seq = head.key
        run = [head]
        for item in itertools.islice(self._queue, 1, FETCH_BATCH):
            if item.wire is not None or item.key != (space, env, device, seq + len(run)):
                break
            run.append(item)
        wires = self._source.wires(space, env, device, seq - 1, seq - 1 + len(run))
        for item, wire in zip(run, wires, strict=False):
            try:
                got = Cs.of(wire)
            except ProtocolError:
                break
            if (got.space, got.env, got.device, got.seq) != item.key:
                break
            item.wire = got.wire

    def _pump(self, now: int) -> None:
        cfg = self.config
        while self._queue and len(self._inflight) < cfg.max_inflight_messages:
            item = self._queue[0]
            key = item.key
            if self._peer_has(key, now) or key in self._inflight:
                self._queue.popleft()
                self._queued.discard(key)
                continue
            if item.wire is None:
                self._fetch()
                if item.wire is None:  # the log no longer has it: nothing to send
                    self._queue.popleft()
                    self._queued.discard(key)
                    continue
            size = len(item.wire)
            if self._inflight and self._inflight_bytes + size > cfg.max_inflight_bytes:
                return
            self._queue.popleft()
            self._queued.discard(key)
            self._inflight[key] = _Flight(item.wire, now, 1)
            self._inflight_bytes += size
            self.stats.cs_sent += 1
            self._send(Cs(item.wire, *key))

    def _drop_inflight(self, key: Key) -> None:
        fl = self._inflight.pop(key, None)
        if fl is not None:
            self._inflight_bytes -= len(fl.wire)

    def _resend_interval(self, fl: _Flight) -> int:
        base = self.config.resend_after_ms + len(fl.wire) // RESEND_BYTES_PER_MS
        return base * (1 << min(fl.attempts - 1, 4))

    def _resend(self, now: int) -> None:
        for key, fl in list(self._inflight.items()):
            if now < fl.sent_at + self._resend_interval(fl):
                continue
            if self._peer_has(key, now):
                self._drop_inflight(key)
            elif fl.attempts >= self.config.max_send_attempts:
                self._drop_inflight(key)
                self.stats.abandoned += 1
            else:
                fl.attempts += 1
                fl.sent_at = now
                self.stats.cs_resent += 1
                self._send(Cs(fl.wire, *key))

    # ================================================================ plumbing

    def _ping_due(self) -> int:
        """When the next heartbeat ping is due: on the clock for the pinging side of the pair
        (and before the peer's hello names it), but not while the peer's own traffic proves
        it alive; for the other side only after a silence. Both ping anyway when their
        round-trip sample is RTT_REFRESH_MS old, and before they have one."""
        interval = self.config.ping_interval_ms
        on_clock = self._last_ping + interval
        peer = self.peer_device
        if peer is None or self._last_pong_at is None:
            return on_clock
        refresh = self._last_pong_at + RTT_REFRESH_MS
        if self.device < peer:
            return max(on_clock, min(self._last_traffic + interval, refresh))
        silence = self._last_recv + interval * FOLLOWER_SILENCE_PCT // 100
        return max(on_clock, min(silence, refresh))

    def _ping(self, now: int) -> None:
        self._nonce = (self._nonce + 1) & MAX_NONCE
        self._pings[self._nonce] = now
        while len(self._pings) > MAX_PINGS_OUTSTANDING:
            del self._pings[next(iter(self._pings))]
        self._last_ping = now
        self._send(Ping(self._nonce))

    def _presence_message(self) -> Presence:
        assert self._presence is not None
        space, env, entity, editor = self._presence
        if space is None or env is None or (space, env) not in self.shared:
            return Presence(None, None, None, editor)
        return Presence(space, env, entity, editor)

    def _peer_name(self) -> str:
        return self.peer_device or "(device not yet known)"

    def _count_out(self, kind: str) -> None:
        for kinds in (self.stats.kinds_out, self.counts.kinds_out):
            kinds[kind] = kinds.get(kind, 0) + 1

    def _count_in(self, kind: str) -> None:
        for kinds in (self.stats.kinds_in, self.counts.kinds_in):
            kinds[kind] = kinds.get(kind, 0) + 1

    def _send(self, msg: Message) -> None:
        self._count_out(msg.KIND)
        self._send_bytes(encode_message(msg))

    def _send_bytes(self, data: bytes) -> None:
        for frame in split(self._msg_id, data, self.config.chunk_size):
            self.stats.frames_out += 1
            self.counts.frames_out += 1
            self.stats.bytes_out += len(frame)
            self._out.append(Send(self.link, frame))
        self._msg_id += 1

    def _close(self, reason: str, now: int, *, bye: bool = True) -> None:
        if self.closed:
            return
        if bye:
            with contextlib.suppress(ProtocolError, ChangeSetError):
                self._send(Bye(check_reason(reason)))
        was_open = self.state == OPEN
        self.state = CLOSED
        self.closed_reason = reason
        if was_open and self.peer_device is not None:
            self._wants.disconnect(self.peer_device, self.shared)
        self._wants.release(self.link)
        self._queue.clear()
        self._queued.clear()
        self._inflight.clear()
        self._inflight_bytes = 0
        self._early.clear()
        self._out.append(Closed(self.link, reason))

    def _flush(self) -> list[Event]:
        out, self._out = self._out, []
        return out
