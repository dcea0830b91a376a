"""The relay protocol: every message a daemon and the relay exchange, and how each is checked.

Why a protocol of its own rather than the peer sync messages (`mocksync.sync.messages`): what
the relay carries is not a change set but an *envelope* it cannot read (space, env tag, device,
seq, key generation, ciphertext), and most of its vocabulary (challenge-response auth, signed
log upload, quotas, presence fan-out, signal passthrough) has no peer-to-peer counterpart. The
style is the same: one binary WebSocket frame = one canonical CBOR map with a kind `t` and
short keys, decoded strictly (a size ceiling before parsing, canonical form only, the exact key
set per kind, every type and range checked) and every failure a `RelayProtocolError` naming the
field. Each kind is a typed class below (`Put`, `Batch`, ...) whose fields declare their short
key and checker, and one `mocksync.wire.Codec` per sender maps them to frames (`encode`,
`decode`); code reads `msg.space`, never `msg["s"]`. Anything `encode` writes, `decode` accepts
and returns equal, and the bytes are those protocol 3 always had (tests/test_relay_wire_golden.py).
`encode_message` / `decode_message` keep the map form `{"t": kind, short key: value}` for tools
and tests that build frames by hand.

Field types: `space` 32 lowercase hex (a space id); `tag` 32 lowercase hex (an env tag, see
`relay.envelope`); `device` a device id `XXXXX-XXXXX-XXXXX-XXXXX`; `seq` 1..2^63-1; `vv` a map
device -> seq; `items` a list of envelopes `[device, seq, gen, ciphertext]`; `i` a request id
0..2^32-1, echoed by the reply; `code` a refusal code (see `relay.policy.CODES`); `reason` a
sentence for people.

Client -> relay
| t        | fields                                      | reply                              |
| -------- | ------------------------------------------- | ---------------------------------- |
| hello    | p protocol, m model, d device, sp [space],  | challenge, or refused              |
|          | a agent version text                        |                                    |
| auth     | sig (64 bytes, see relay.auth), u relay origin | welcome, or refused             |
|          | as dialled, logs {space: [membership entry wire bytes the relay lacks]} |        |
| log      | i, s space, w [entry wire bytes]            | ok, or nack                        |
| index    | i, s                                        | index                              |
| fetch    | i, s, e tag, vv (what the asker holds)      | batch, or nack                     |
| put      | i, s, e, z declared env bytes, x items      | ack, or nack                       |
| presence | s, e tag or null, u entity or null          | (none; members get a `who` delta)  |
| signal   | i, s, to device, p opaque signed payload    | ok, or nack                        |
| ping     | n nonce                                     | pong                               |
| joinrep  | s, j join id, p join handshake message      | (none; forwarded to the joiner)    |

Joiner (not a member yet, on /v1/join) -> relay
| join     | s space, to inviting device, p handshake message | jp replies, or refused        |

Relay -> client
| t         | fields                                                                         |
| --------- | ------------------------------------------------------------------------------ |
| challenge | p relay protocol, n nonce (32 bytes), k relay public key (32 bytes), ks its     |
|           | signature of the challenge (relay.auth.prove_relay), have {space: [entry hashes]} |
| welcome   | ok {space: {m model, plan, envs, bytes, devs}}, no {space: [code, reason]},     |
|           | lim {frame, items, rate}                                                        |
| refused   | c code, r reason (the whole session; the relay closes it)                      |
| ok        | i                                                                              |
| nack      | i, c, r                                                                        |
| index     | i, s, envs {tag: vv (contiguous prefix held per device)}                       |
| batch     | i, s, e, x items (ascending seq per device), more (true: fetch again)          |
| ack       | i, s, e, n (envelopes newly stored)                                            |
| env       | s, e, x (live push of envelopes another device just put)                       |
| who       | s, ds [[device, tag or null, entity or null]] online or changed, off [device]  |
|           | gone offline: a full snapshot after welcome, then deltas (coalesced per space) |
| signal    | s, from device, p payload                                                      |
| pong      | n                                                                              |
| bye       | c, r (the relay is closing this session, and why)                              |
| joinreq   | s, j join id, p: a joiner's handshake message, for the inviting device          |
| jp        | p: the inviting device's answer, to the joiner on /v1/join                     |
| entries   | s, w [membership entry wire bytes]: the space's log after welcome, then each   |
|           | entry as a member uploads it (so every device learns new members and removals); |
|           | also before the welcome (or `refused`) for each space refused `revoked`: the     |
|           | signed log proving the removal, one frame per space (the device verifies it)     |

Limits (named constants below): any frame MAX_FRAME_BYTES; any kind but auth, log, put, batch,
env MAX_CONTROL_BYTES; spaces per hello MAX_SPACES_PER_SESSION; envelopes per put/batch/env
MAX_BATCH_ITEMS and their ciphertext MAX_BATCH_BYTES (one envelope alone may be up to
MAX_CIPHERTEXT_BYTES); entries per log upload MAX_LOG_UPLOAD; envs in an index
MAX_INDEX_ENVS; vv entries MAX_VV_DEVICES; signal payloads MAX_SIGNAL_BYTES; reasons
MAX_REASON_CHARS; entity ids MAX_ENTITY_CHARS; agent version text MAX_AGENT_CHARS.

Compatibility: `hello` (keys p, m, d) and `refused` (c, r) are frozen forever, so a relay and a
daemon of different protocol versions can still say "incompatible version" to each other; a
hello whose `p` is not ours is read leniently (only p, m, d). Within one protocol version the
format is exact: a new kind or key needs a version bump.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import PROTOCOL_VERSION
from ..changes import canonical
from ..changes.changeset import MAX_SEQ
from ..space.keys import MAX_GENERATION
from ..space.membership import MAX_ENTRY_BYTES, MAX_LOG_ENTRIES
from ..wire import (
    Bool,
    Bytes,
    Check,
    Codec,
    FieldError,
    Int,
    ListOf,
    MapOf,
    Message,
    Nullable,
    Record,
    RecordCheck,
    Struct,
    Text,
    spec,
    to_legacy,
    wire,
)
from .auth import MAX_ORIGIN_CHARS, RELAY_KEY_BYTES
from .envelope import Envelope
from .errors import FrameTooLarge, RelayProtocolError, UnknownKind

#: Largest ciphertext of one envelope: a change set carrying a whole 15 MB (enterprise plan)
#: environment, compressed, with generous headroom.
MAX_CIPHERTEXT_BYTES = 20 * 1024 * 1024
#: Largest WebSocket frame either side sends or accepts.
MAX_FRAME_BYTES = MAX_CIPHERTEXT_BYTES + 64 * 1024
#: Largest frame of a control kind (everything but auth, log, put, batch, env).
MAX_CONTROL_BYTES = 1024 * 1024
#: Most envelopes in one put / batch / env message.
MAX_BATCH_ITEMS = 1000
#: Most ciphertext bytes in one put / batch / env, unless it holds a single envelope.
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Most spaces one session may name in its hello (a device's own limit, space.store.MAX_SPACES).
MAX_SPACES_PER_SESSION = 1000
#: Most membership entries in one log upload (one whole log).
MAX_LOG_UPLOAD = MAX_LOG_ENTRIES
#: Most env tags one index reply lists (far above any plan's environment count).
MAX_INDEX_ENVS = 100_000
#: Most devices in one version vector (a space has at most 400 active devices, plus removed).
MAX_VV_DEVICES = 4096
#: Join handshakes through the relay (a device that is not a member yet, on /v1/join): the
#: relay tags each with a random id, forwards the joiner's messages to the inviting device as
#: `joinreq` and that device's `joinrep` back to the joiner as `jp`.
JOIN_ID_BYTES = 16
#: Messages a joiner may send in one handshake (it needs two).
MAX_JOIN_MESSAGES = 8
#: Seconds a join handshake may take before the relay drops it.
JOIN_TIMEOUT_S = 60.0
#: Join handshakes in progress at once on one relay.
MAX_PENDING_JOINS = 64
#: Largest signaling payload (an SDP offer with its signature fits many times over).
MAX_SIGNAL_BYTES = 64 * 1024
#: Most devices one `who` snapshot lists (a space has at most 400 active devices).
MAX_WHO_DEVICES = 4096
#: Longest reason sentence, entity id and agent version text, in characters.
MAX_REASON_CHARS = 500
MAX_ENTITY_CHARS = 64
MAX_AGENT_CHARS = 64
MAX_CODE_CHARS = 32
#: Largest protocol / model version a hello may carry.
MAX_VERSION = 0xFFFF
#: Largest request id and ping nonce.
MAX_REQUEST_ID = 2**32 - 1
MAX_NONCE = 2**64 - 1
#: Bytes of the relay's challenge nonce and of an entry hash / auth signature.
NONCE_BYTES = 32
HASH_BYTES = 32
SIG_BYTES = 64
#: Largest declared environment size (compact JSON bytes) a put may carry.
MAX_DECLARED_BYTES = 2**40
#: Most CBOR items (every key, value, list and element) in one frame a client sends. Decoding
#: costs time per item, not per byte, and cbor2 holds the GIL while it builds and re-encodes a
#: value, so even on a worker thread an item-heavy frame slows the relay's event loop: four
#: unauthenticated 8 MB auth frames of 8 million zeros each, within the gate's generic 16 Mi
#: cap, kept a relay's CPU busy for 21 s and slowed every other request (issue 12). The
#: largest honest client frames: a put of MAX_BATCH_ITEMS envelopes (~5,000 items), a fetch
#: with MAX_VV_DEVICES (~8,200), a log upload of MAX_LOG_UPLOAD entries (~10,000), and an
#: auth frame whose logs fill its 8 MiB (every entry is a signed document of over 64 bytes:
#: under 130,000 entries, plus two items per space). 2^17 covers them all and bounds one frame's decode to about 0.1 s.
MAX_CLIENT_FRAME_ITEMS = 1 << 17
#: Most CBOR items in a joiner's frame (`join`: a map of four short fields).
MAX_JOINER_FRAME_ITEMS = 64

_HEX32 = re.compile(r"[0-9a-f]{32}")
_DEVICE = re.compile(r"[0-9A-HJKMNP-TV-Z]{5}(?:-[0-9A-HJKMNP-TV-Z]{5}){3}")
_CODE = re.compile(rf"[a-z][a-z_]{{0,{MAX_CODE_CHARS - 1}}}")


# ------------------------------------------------------------------------------ field checks

_space = Text(32, _HEX32, "a space id (32 lowercase hex digits)")
_tag = Text(32, _HEX32, "an env tag (32 lowercase hex digits)")
_device = Text(23, _DEVICE, "a device id like ABCDE-FGHIJ-KLMNP-QRSTV")
_code = Text(MAX_CODE_CHARS, _CODE, "a refusal code")
_reason = Text(MAX_REASON_CHARS)
_entity = Text(MAX_ENTITY_CHARS)
_seq = Int(1, MAX_SEQ)
_request = Int(0, MAX_REQUEST_ID)
_nonce = Int(0, MAX_NONCE)
_version = Int(0, MAX_VERSION)
_signal = Bytes(1, MAX_SIGNAL_BYTES)
_join_id = Bytes(JOIN_ID_BYTES, JOIN_ID_BYTES)
_entry = Bytes(1, MAX_ENTRY_BYTES)
_hash = Bytes(HASH_BYTES, HASH_BYTES)
_vv = MapOf(_device, _seq, MAX_VV_DEVICES)
_log = ListOf(_entry, MAX_LOG_UPLOAD, lo=1)


def _batch_bytes(items: Any, where: str) -> None:
    if len(items) > 1:
        total = sum(len(e.ct) for e in items)
        if total > MAX_BATCH_BYTES:
            raise FieldError(where, (
                f"{total} bytes of ciphertext, over the {MAX_BATCH_BYTES} byte limit for a "
                "batch of several envelopes"), limit=True)


#: A list of envelopes `[device, seq, gen, ciphertext]`, held as a tuple of `Envelope`.
_items = ListOf(
    Struct((("device", _device), ("seq", _seq), ("gen", Int(1, MAX_GENERATION)),
            ("ciphertext", Bytes(1, MAX_CIPHERTEXT_BYTES))),
           "an envelope [device, seq, gen, ciphertext]", build=Envelope,
           parts=lambda e: (e.device, e.seq, e.gen, e.ct)),
    MAX_BATCH_ITEMS, tuple_=True, what="a list of envelopes", whole=_batch_bytes,
    unit="envelopes")
_refusal_pair = Struct((("code", _code), ("reason", _reason)), "[code, reason]")
_who_item = Struct((("device", _device), ("tag", Nullable(_tag)), ("entity", Nullable(_entity))),
                   "[device, tag or null, entity or null]")

# Per sender: which kinds it sends. Both sides have an "index" and a "signal" with different
# fields, so each side has its own classes and its own codec.
CLIENT, RELAY, JOINER = "client", "relay", "joiner"
_BIG = MAX_FRAME_BYTES
_SMALL = MAX_CONTROL_BYTES


class RelayMessage(Message):
    """A relay message: its frame limit is the control limit unless it says otherwise."""

    __slots__ = ()
    MAX_BYTES: ClassVar[int | None] = _SMALL


# ------------------------------------------------------------------------------ records


@dataclass(frozen=True, slots=True)
class PlanInfo(Record):
    """What `welcome` says of one admitted space: its model version and the plan's limits."""

    model: int = wire("m", Int(1, MAX_VERSION))
    plan: str = wire("plan", Text(32))
    envs: int = wire("envs", Int(0, 2**40))
    max_bytes: int = wire("bytes", Int(0, 2**50))
    devs: int = wire("devs", Int(0, 2**20))


@dataclass(frozen=True, slots=True)
class Limits(Record):
    """The relay's limits a client must respect (frame bytes, envelopes per batch, rate)."""

    frame: int = wire("frame", Int(0, 2**40))
    items: int = wire("items", Int(0, 2**32))
    rate: int = wire("rate", Int(0, 2**32))


# ------------------------------------------------------------------------------ client -> relay


@dataclass(frozen=True, slots=True)
class Hello(RelayMessage):
    KIND = "hello"
    protocol: int = wire("p", _version)
    model: int = wire("m", _version)
    device: str = wire("d", _device)
    spaces: list[str] = wire("sp", ListOf(_space, MAX_SPACES_PER_SESSION, lo=1))
    agent: str = wire("a", Text(MAX_AGENT_CHARS))


@dataclass(frozen=True, slots=True)
class Auth(RelayMessage):
    KIND = "auth"
    MAX_BYTES = _BIG
    sig: bytes = wire("sig", Bytes(SIG_BYTES, SIG_BYTES))
    origin: str = wire("u", Text(MAX_ORIGIN_CHARS))
    logs: dict[str, list[bytes]] = wire("logs", MapOf(_space, ListOf(_entry, MAX_LOG_UPLOAD),
                                                      MAX_SPACES_PER_SESSION))


@dataclass(frozen=True, slots=True)
class LogUpload(RelayMessage):
    KIND = "log"
    MAX_BYTES = _BIG
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    wires: list[bytes] = wire("w", _log)


@dataclass(frozen=True, slots=True)
class IndexRequest(RelayMessage):
    KIND = "index"
    rid: int = wire("i", _request)
    space: str = wire("s", _space)


@dataclass(frozen=True, slots=True)
class Fetch(RelayMessage):
    KIND = "fetch"
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    tag: str = wire("e", _tag)
    vv: dict[str, int] = wire("vv", _vv)


@dataclass(frozen=True, slots=True)
class Put(RelayMessage):
    KIND = "put"
    MAX_BYTES = _BIG
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    tag: str = wire("e", _tag)
    declared: int = wire("z", Int(0, MAX_DECLARED_BYTES))
    items: tuple[Envelope, ...] = wire("x", _items)


@dataclass(frozen=True, slots=True)
class Presence(RelayMessage):
    KIND = "presence"
    space: str = wire("s", _space)
    tag: str | None = wire("e", Nullable(_tag))
    entity: str | None = wire("u", Nullable(_entity))


@dataclass(frozen=True, slots=True)
class Signal(RelayMessage):
    KIND = "signal"
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    to: str = wire("to", _device)
    payload: bytes = wire("p", _signal)


@dataclass(frozen=True, slots=True)
class Ping(RelayMessage):
    KIND = "ping"
    nonce: int = wire("n", _nonce)


@dataclass(frozen=True, slots=True)
class JoinReply(RelayMessage):
    KIND = "joinrep"
    space: str = wire("s", _space)
    join: bytes = wire("j", _join_id)
    payload: bytes = wire("p", _signal)


# ------------------------------------------------------------------------------ joiner -> relay


@dataclass(frozen=True, slots=True)
class Join(RelayMessage):
    """A device that is not a member yet, on /v1/join: it may only carry handshake messages."""

    KIND = "join"
    space: str = wire("s", _space)
    to: str = wire("to", _device)
    payload: bytes = wire("p", _signal)


# ------------------------------------------------------------------------------ relay -> client


@dataclass(frozen=True, slots=True)
class Challenge(RelayMessage):
    KIND = "challenge"
    MAX_BYTES = _BIG
    protocol: int = wire("p", _version)
    nonce: bytes = wire("n", Bytes(NONCE_BYTES, NONCE_BYTES))
    key: bytes = wire("k", Bytes(RELAY_KEY_BYTES, RELAY_KEY_BYTES))
    proof: bytes = wire("ks", Bytes(SIG_BYTES, SIG_BYTES))
    have: dict[str, list[bytes]] = wire("have", MapOf(_space, ListOf(_hash, MAX_LOG_ENTRIES),
                                                      MAX_SPACES_PER_SESSION))


@dataclass(frozen=True, slots=True)
class Welcome(RelayMessage):
    KIND = "welcome"
    ok: dict[str, PlanInfo] = wire("ok", MapOf(_space, RecordCheck(PlanInfo),
                                               MAX_SPACES_PER_SESSION))
    no: dict[str, tuple[str, str]] = wire("no", MapOf(_space, _refusal_pair,
                                                      MAX_SPACES_PER_SESSION))
    limits: Limits = wire("lim", RecordCheck(Limits))


@dataclass(frozen=True, slots=True)
class Refused(RelayMessage):
    """The whole session is refused; the relay closes it. Frozen forever (with `hello`)."""

    KIND = "refused"
    code: str = wire("c", _code)
    reason: str = wire("r", _reason)


@dataclass(frozen=True, slots=True)
class Ok(RelayMessage):
    KIND = "ok"
    rid: int = wire("i", _request)


@dataclass(frozen=True, slots=True)
class Nack(RelayMessage):
    KIND = "nack"
    rid: int = wire("i", _request)
    code: str = wire("c", _code)
    reason: str = wire("r", _reason)


@dataclass(frozen=True, slots=True)
class IndexReply(RelayMessage):
    KIND = "index"
    MAX_BYTES = _BIG
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    envs: dict[str, dict[str, int]] = wire("envs", MapOf(_tag, _vv, MAX_INDEX_ENVS))


@dataclass(frozen=True, slots=True)
class Batch(RelayMessage):
    KIND = "batch"
    MAX_BYTES = _BIG
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    tag: str = wire("e", _tag)
    items: tuple[Envelope, ...] = wire("x", _items)
    more: bool = wire("more", Bool())


@dataclass(frozen=True, slots=True)
class Ack(RelayMessage):
    KIND = "ack"
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    tag: str = wire("e", _tag)
    stored: int = wire("n", Int(0, MAX_BATCH_ITEMS))


@dataclass(frozen=True, slots=True)
class EnvPush(RelayMessage):
    KIND = "env"
    MAX_BYTES = _BIG
    space: str = wire("s", _space)
    tag: str = wire("e", _tag)
    items: tuple[Envelope, ...] = wire("x", _items)


@dataclass(frozen=True, slots=True)
class Who(RelayMessage):
    KIND = "who"
    space: str = wire("s", _space)
    online: list[tuple[str, str | None, str | None]] = wire(
        "ds", ListOf(_who_item, MAX_WHO_DEVICES))
    off: list[str] = wire("off", ListOf(_device, MAX_WHO_DEVICES))


@dataclass(frozen=True, slots=True)
class SignalPush(RelayMessage):
    KIND = "signal"
    space: str = wire("s", _space)
    sender: str = wire("from", _device)
    payload: bytes = wire("p", _signal)


@dataclass(frozen=True, slots=True)
class Pong(RelayMessage):
    KIND = "pong"
    nonce: int = wire("n", _nonce)


@dataclass(frozen=True, slots=True)
class Bye(RelayMessage):
    KIND = "bye"
    code: str = wire("c", _code)
    reason: str = wire("r", _reason)


@dataclass(frozen=True, slots=True)
class JoinRequest(RelayMessage):
    KIND = "joinreq"
    space: str = wire("s", _space)
    join: bytes = wire("j", _join_id)
    payload: bytes = wire("p", _signal)


@dataclass(frozen=True, slots=True)
class JoinAnswer(RelayMessage):
    KIND = "jp"
    payload: bytes = wire("p", _signal)


@dataclass(frozen=True, slots=True)
class Entries(RelayMessage):
    KIND = "entries"
    MAX_BYTES = _BIG
    space: str = wire("s", _space)
    wires: list[bytes] = wire("w", _log)


# ------------------------------------------------------------------------------ compaction
# (task SNAP, relay.compaction / relay.snapshots) Kinds of their own beside the ones above:
#
# | from   | t       | fields                                                | reply        |
# | ------ | ------- | ----------------------------------------------------- | ------------ |
# | client | snapput | i, s, e, v vv covered, b sealed snapshot, g signature | ok, or nack  |
# | client | snapget | i, s, e                                               | snap, nack   |
# | client | hw      | s, e, v vv this device holds (its high-water mark)    | (none)       |
# | relay  | snap    | i, s, e, by signer or null, v vv, b sealed or null,   |              |
# |        |         | g signature or null, f {device: seq dropped}          |              |
#
# A `fetch` whose vv is below what the relay dropped is answered `nack` code `compacted`:
# the device asks `snapget`, adopts the snapshot, and fetches again from its new vv.

#: Largest sealed snapshot in one frame (the relay's own limit is its plan's env size x
#: relay.compaction.SNAPSHOT_SIZE_FACTOR, checked by the server).
MAX_SNAPSHOT_BYTES = MAX_CIPHERTEXT_BYTES


@dataclass(frozen=True, slots=True)
class SnapshotPut(RelayMessage):
    KIND = "snapput"
    MAX_BYTES = _BIG
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    tag: str = wire("e", _tag)
    vv: dict[str, int] = wire("v", _vv)
    sealed: bytes = wire("b", Bytes(1, MAX_SNAPSHOT_BYTES))
    sig: bytes = wire("g", Bytes(SIG_BYTES, SIG_BYTES))


@dataclass(frozen=True, slots=True)
class SnapshotGet(RelayMessage):
    KIND = "snapget"
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    tag: str = wire("e", _tag)


@dataclass(frozen=True, slots=True)
class HighWater(RelayMessage):
    KIND = "hw"
    space: str = wire("s", _space)
    tag: str = wire("e", _tag)
    vv: dict[str, int] = wire("v", _vv)


@dataclass(frozen=True, slots=True)
class SnapshotReply(RelayMessage):
    KIND = "snap"
    MAX_BYTES = _BIG
    rid: int = wire("i", _request)
    space: str = wire("s", _space)
    tag: str = wire("e", _tag)
    signer: str | None = wire("by", Nullable(_device))
    vv: dict[str, int] = wire("v", _vv)
    sealed: bytes | None = wire("b", Nullable(Bytes(1, MAX_SNAPSHOT_BYTES)))
    sig: bytes | None = wire("g", Nullable(Bytes(SIG_BYTES, SIG_BYTES)))
    floors: dict[str, int] = wire("f", _vv)


SNAPSHOT_CLIENT_MESSAGES: tuple[type[Message], ...] = (SnapshotPut, SnapshotGet, HighWater)
SNAPSHOT_RELAY_MESSAGES: tuple[type[Message], ...] = (SnapshotReply,)
# ------------------------------------------------------------------------------ end compaction


CLIENT_MESSAGES: tuple[type[Message], ...] = (
    Hello, Auth, LogUpload, IndexRequest, Fetch, Put, Presence, Signal, Ping, JoinReply,
    *SNAPSHOT_CLIENT_MESSAGES)
JOINER_MESSAGES: tuple[type[Message], ...] = (Join,)
RELAY_MESSAGES: tuple[type[Message], ...] = (
    Challenge, Welcome, Refused, Ok, Nack, IndexReply, Batch, Ack, EnvPush, Who, SignalPush,
    Pong, Bye, JoinRequest, JoinAnswer, Entries, *SNAPSHOT_RELAY_MESSAGES)
#: What a request kind is answered with on success (a `nack` otherwise).
REPLY_KIND: dict[str, str] = {"log": "ok", "index": "index", "fetch": "batch", "put": "ack",
                              "signal": "ok", "snapput": "ok", "snapget": "snap"}


def _table(classes: tuple[type[Message], ...]) -> dict[str, tuple[dict[str, Check], int]]:
    return {c.KIND: ({k: chk for _a, k, chk in spec(c)}, c.MAX_BYTES or _SMALL)
            for c in classes}


#: kind -> (key -> checker, largest frame): the tables the codecs are built from, by sender.
CLIENT_KINDS = _table(CLIENT_MESSAGES)
JOINER_KINDS = _table(JOINER_MESSAGES)
RELAY_KINDS = _table(RELAY_MESSAGES)
_BY_SENDER = {CLIENT: CLIENT_KINDS, RELAY: RELAY_KINDS, JOINER: JOINER_KINDS}
#: Item caps by sender (the relay's frames, trusted less than peers' but more than strangers',
#: keep the gate's own cap: a challenge may list 1,000 spaces' entry hashes).
_MAX_ITEMS_BY_SENDER = {CLIENT: MAX_CLIENT_FRAME_ITEMS, JOINER: MAX_JOINER_FRAME_ITEMS}


def _unknown(sender: str) -> Callable[[str], Exception]:
    def refuse(kind: str) -> Exception:
        if any(kind in _BY_SENDER[other] for other in _BY_SENDER if other != sender):
            return UnknownKind(f"relay message kind {kind[:32]!r} is not one the {sender} sends")
        return UnknownKind(
            f"unknown relay message kind {kind[:32]!r}: the other side speaks a newer protocol; "
            "update mocksync")

    return refuse


def _codec(sender: str, classes: tuple[type[Message], ...]) -> Codec:
    return Codec(classes, label="relay message", max_bytes=MAX_FRAME_BYTES,
                 max_items=_MAX_ITEMS_BY_SENDER.get(sender, canonical.MAX_ITEMS),
                 error=RelayProtocolError, limit_error=FrameTooLarge, unknown=_unknown(sender),
                 frame_what="relay frame")


#: The one codec per sender.
CODECS: dict[str, Codec] = {CLIENT: _codec(CLIENT, CLIENT_MESSAGES),
                            RELAY: _codec(RELAY, RELAY_MESSAGES),
                            JOINER: _codec(JOINER, JOINER_MESSAGES)}


# ------------------------------------------------------------------------------ encode/decode


def _sender_of(msg: Message) -> str:
    for sender, codec in CODECS.items():
        if codec.kinds.get(msg.KIND) is type(msg):
            return sender
    raise RelayProtocolError(f"relay message t: {type(msg).__name__} is not a relay message")


def encode(msg: Message) -> bytes:
    """Canonical CBOR of a typed relay message (its class says who sends it)."""
    return CODECS[_sender_of(msg)].encode(msg)


def decode(data: Any, *, sender: str, max_items: int | None = None) -> RelayMessage:
    """Check and decode one frame sent by `sender` (CLIENT, RELAY or JOINER) into its typed
    message; `RelayProtocolError` on anything off. A `hello` of another protocol version and
    any `refused` are read leniently (their frozen keys only), so versions can still refuse
    each other kindly. `max_items`: a tighter item cap for this frame (the daemon's per-kind
    caps, `net.relay_gate`), held in the decoding gate's one pass (`FrameTooLarge` past it)."""
    codec = CODECS[sender]
    obj, kind = codec.parse(data, max_items=max_items)
    if kind == "hello" and sender == CLIENT and obj.get("p") != PROTOCOL_VERSION:
        return _lenient_hello(obj)
    if kind == "refused" and sender == RELAY:
        return _lenient_refused(obj)
    msg = codec.from_map(obj, kind)
    assert isinstance(msg, RelayMessage)
    limit = type(msg).MAX_BYTES or _SMALL
    if len(data) > limit:
        raise FrameTooLarge(f"relay message {kind}: {len(data)} bytes, over the {limit} byte limit")
    return msg


def _plain(v: Any) -> Any:
    """Envelopes and tuples as the CBOR lists they travel as (only where they may occur)."""
    if isinstance(v, tuple | list):
        return [[e.device, e.seq, e.gen, e.ct] if isinstance(e, Envelope)
                else list(e) if isinstance(e, tuple) else e for e in v]
    if isinstance(v, dict):
        return {k: list(x) if isinstance(x, tuple) else x for k, x in v.items()}
    return v


def from_map(msg: Mapping[str, Any], *, sender: str) -> RelayMessage:
    """The typed message of a map `{"t": kind, short key: value}` (tools and tests that build
    frames by hand); checked like a decoded frame."""
    out = CODECS[sender].from_map({k: _plain(v) for k, v in msg.items()})
    assert isinstance(out, RelayMessage)
    return out


def encode_message(msg: Mapping[str, Any] | Message, *, sender: str) -> bytes:
    """Canonical CBOR of a message sent by `sender`, typed or as a map `{"t": kind, ...}`.

    Checked against the same rules as decoding, so nothing malformed ever leaves."""
    if isinstance(msg, Message):
        return CODECS[sender].encode(msg)
    return CODECS[sender].encode(from_map(msg, sender=sender))


def decode_message(data: Any, *, sender: str) -> dict[str, Any]:
    """`decode` as a map with the short keys (envelope lists as tuples of `Envelope`): for
    tools and tests that look at frames as maps."""
    out: dict[str, Any] = to_legacy(decode(data, sender=sender))
    return out


def _lenient_hello(obj: dict[Any, Any]) -> Hello:
    """A hello of another protocol version: only the frozen keys, so we can refuse it kindly."""
    try:
        return Hello(_version.decode(obj.get("p"), "hello.p"),
                     _version.decode(obj.get("m"), "hello.m"),
                     _device.decode(obj.get("d"), "hello.d"), [], "")
    except FieldError as exc:
        raise CODECS[CLIENT].refusal(exc) from None


def _lenient_refused(obj: dict[Any, Any]) -> Refused:
    try:
        return Refused(_code.decode(obj.get("c"), "refused.c"),
                       _reason.decode(obj.get("r"), "refused.r"))
    except FieldError as exc:
        raise CODECS[RELAY].refusal(exc) from None


def split_batches(envelopes: list[Envelope]) -> list[list[Envelope]]:
    """Cut envelopes into runs that each fit one put/batch (MAX_BATCH_ITEMS, MAX_BATCH_BYTES)."""
    out: list[list[Envelope]] = []
    cur: list[Envelope] = []
    size = 0
    for e in envelopes:
        if cur and (len(cur) >= MAX_BATCH_ITEMS or size + len(e.ct) > MAX_BATCH_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(e)
        size += len(e.ct)
    if cur:
        out.append(cur)
    return out


def clip_reason(text: str) -> str:
    """A reason sentence cut to MAX_REASON_CHARS (sentences come from many modules)."""
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


__all__ = [
    "CLIENT",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ITEMS",
    "MAX_CIPHERTEXT_BYTES",
    "MAX_CLIENT_FRAME_ITEMS",
    "MAX_CONTROL_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_JOINER_FRAME_ITEMS",
    "MAX_SIGNAL_BYTES",
    "MAX_SPACES_PER_SESSION",
    "RELAY",
    "FrameTooLarge",
    "RelayProtocolError",
    "UnknownKind",
    "clip_reason",
    "decode_message",
    "encode_message",
    "split_batches",
]
