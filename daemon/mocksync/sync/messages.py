"""The sync protocol's messages: what two daemons say to each other, and how it is checked.

Every message is one canonical CBOR map (`mocksync.changes.canonical`) with a kind `t` and
short keys. Canonical form matters even for unsigned messages: one meaning has one byte form,
so a fuzzer and a reviewer can reason about exactly what is accepted. Decoding is strict
because the bytes come from the network: a size ceiling before parsing, the exact key set per
kind, every type and range checked, and every failure a `ProtocolError` subclass naming the
field. Anything `encode_message` produces, `decode_message` accepts and returns equal.

Each kind is a typed class on the one wire codec (`mocksync.wire`, issue 14), the same layer
the relay protocol and the space documents use: its fields declare their short key and
checker, rules that tie fields together are its `cross_check` (a want's span, presence's null
rules), and a `cs` derives its space, env, device and seq from the signed bytes it carries
(`Cs.from_fields`). The bytes are those the hand-written codec before it wrote
(tests/test_sync_wire_golden.py).

Messages (kind `t`, then fields; "space" is 32 lowercase hex, "env" 1..64 printable
characters, "device" 1..64 of A-Z a-z 0-9 -, "seq" 1..2^63-1, "vv" a map device -> seq):

| t        | fields                                   | meaning                                        |
| -------- | ---------------------------------------- | ---------------------------------------------- |
| hello    | p protocol, m model, mig Mockoon          | first message of each side; versions decide    |
|          | migration, d device, envs [[space, env]], | whether the session may go on; mh: the heads   |
|          | mh {space: [entry hash]}                  | of each membership log (sync.membership)       |
| mheads   | s space, h [entry hash]                   | "my log of s now ends at h" (it changed, or    |
|          |                                           | the peer named heads we lack)                  |
| mlog     | s space, w [entry wire], f final          | membership entries the peer lacks; f: last one |
| have     | s space, e env, vv                       | "my applied version vector of this env": after |
|          |                                          | hello, when it grows, every ANTI_ENTROPY_MS    |
| want     | s, e, d device, a after, u upto          | "send me d's change sets a+1..u" (u-a <= span) |
| cs       | w wire bytes of one signed change set    | one change set (space/env/device/seq are read  |
|          |                                          | from the signed bytes, never from the envelope)|
| ack      | s, e, d, n seq, vv                       | "got d#n (applied, pending or quarantined);    |
|          |                                          | my applied vector is now vv"                   |
| nack     | s, e, d, n, r reason                     | "refused d#n because r" (bad signature...)     |
| ping     | n nonce                                  | heartbeat; answered at once with pong          |
| pong     | n nonce of the ping                      | heartbeat answer: gives the round-trip time    |
| presence | s, e (both null or both set), u entity   | what this device's user is looking at, and in  |
|          | (null unless e), ed editor name          | which editor                                   |
| bye      | r reason                                 | the sender is closing the session, and why     |
| rpres    | w signed presence note, h hops left      | another device's presence, passed along the    |
|          |                                          | overlay (`net.presence_gossip` signs, checks)  |

Limits (named constants below): the whole message MAX_MESSAGE_BYTES (a cs must carry the
largest change set, MAX_CHANGESET_BYTES); any other kind MAX_CONTROL_MESSAGE_BYTES; versions
and migration 0..MAX_VERSION; envs in hello MAX_ENVS; vv entries MAX_VV_DEVICES; a want
spans at most MAX_WANT_SPAN change sets; heads per space `membership.MAX_HEADS`, spaces in
`mh` MAX_MEMBERSHIP_SPACES, entries per `mlog` MAX_MLOG_ENTRIES of MAX_MLOG_ENTRY_BYTES; reasons MAX_REASON_CHARS; editor names
MAX_EDITOR_CHARS; entity ids MAX_ENTITY_CHARS; nonces 0..MAX_NONCE.

Compatibility: `hello` is the one message two different versions must still understand, so
its keys p, m, mig, d are frozen forever; a hello whose protocol `p` differs from ours is read
leniently (only those keys) so the session can say "peer speaks protocol 2, this device 1"
instead of "malformed message". Within one protocol version the format is exact: a new kind or
key needs a version bump.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import MOCKOON_MAX_MIGRATION, MODEL_VERSION, PROTOCOL_VERSION
from ..changes import canonical
from ..changes.changeset import (
    MAX_BODY_ITEMS,
    MAX_CHANGESET_BYTES,
    MAX_DEPS,
    MAX_DEVICE_CHARS,
    MAX_ENV_CHARS,
    MAX_SEQ,
    SPACE_ID_BYTES,
    WIRE_ITEMS,
)
from ..errors import ChangeSetError
from ..wire import (
    KIND_KEY,
    Bool,
    Bytes,
    Check,
    Codec,
    FieldError,
    Ident,
    Int,
    ListOf,
    MapOf,
    Nullable,
    Struct,
    Text,
    derived,
    keys_of,
    record_from_map,
    wire,
)
from ..wire import Message as WireMessage
from .errors import MalformedMessage, MessageTooLarge, UnknownMessageKind
from .membership import (
    HASH_BYTES,
    MAX_HEADS,
    MAX_MEMBERSHIP_SPACES,
    MAX_MLOG_ENTRIES,
    MAX_MLOG_ENTRY_BYTES,
)

#: Largest message on the wire: a `cs` carrying the largest change set, plus its envelope.
MAX_MESSAGE_BYTES = MAX_CHANGESET_BYTES + 1024
#: Largest message of any kind other than `cs` (a hello listing MAX_ENVS envs fits).
MAX_CONTROL_MESSAGE_BYTES = 1024 * 1024
#: Largest protocol / model version and Mockoon migration level a hello may carry.
MAX_VERSION = 0xFFFF
#: Most (space, env) pairs one hello may list.
MAX_ENVS = 4096
#: Most devices in one version vector (the same bound as a change set's deps).
MAX_VV_DEVICES = MAX_DEPS
#: Most CBOR items in one message, checked before anything is built. Without it a peer's 16 MB
#: message of 16 million zeros was decoded in full (seconds with the GIL held) before its
#: kind was even known (issue 12). The largest honest messages: a hello of MAX_ENVS
#: [space, env] pairs and heads of MAX_MEMBERSHIP_SPACES spaces, a have or ack whose vv names
#: MAX_VV_DEVICES devices, an mlog of MAX_MLOG_ENTRIES entries (a cs holds five items).
MAX_MESSAGE_ITEMS = 64 + max(3 * MAX_ENVS + MAX_MEMBERSHIP_SPACES * (2 + MAX_HEADS),
                             2 * MAX_VV_DEVICES, MAX_MLOG_ENTRIES)
#: Most change sets one `want` may ask for.
MAX_WANT_SPAN = 256
#: Longest reason in `nack` / `bye`, in characters.
MAX_REASON_CHARS = 500
#: Longest editor name in `presence`.
MAX_EDITOR_CHARS = 64
#: Longest entity uuid in `presence`.
MAX_ENTITY_CHARS = 64
#: Largest ping nonce (unsigned 64-bit).
MAX_NONCE = (1 << 64) - 1
#: Largest signed presence note in `rpres` (a note is about 200 bytes).
MAX_PRESENCE_NOTE_BYTES = 512
#: Most hops a relayed presence note may still travel (`h` in `rpres`).
MAX_PRESENCE_HOPS = 16

_declare = wire

#: The label every refusal starts with.
LABEL = "sync message"

# ---------------------------------------------------------------------------------- fields

#: A space id: 32 lowercase hex digits.
SPACE_ID = Ident(32, 32, "a space id (32 lowercase hex)", re.compile(r"[0-9a-f]{32}"))
#: An environment id: 1..MAX_ENV_CHARS printable characters.
ENV_ID = Ident(1, MAX_ENV_CHARS, f"an env id of 1..{MAX_ENV_CHARS} printable characters")
#: A device id: 1..MAX_DEVICE_CHARS of A-Z a-z 0-9 -.
DEVICE_ID = Ident(1, MAX_DEVICE_CHARS,
                  f"a device id of 1..{MAX_DEVICE_CHARS} characters A-Z a-z 0-9 -",
                  re.compile(r"[A-Za-z0-9-]+"))
_entity = Ident(1, MAX_ENTITY_CHARS,
                f"an entity id of 1..{MAX_ENTITY_CHARS} printable characters")
_version = Int(0, MAX_VERSION)
_seq = Int(1, MAX_SEQ)
_nonce = Int(0, MAX_NONCE)
_reason = Text(MAX_REASON_CHARS)
_vv = MapOf(DEVICE_ID, _seq, MAX_VV_DEVICES)


def _distinct_pairs(pairs: Sequence[tuple[str, str]], where: str) -> None:
    if len(set(pairs)) != len(pairs):
        seen: set[tuple[str, str]] = set()
        for space, env in pairs:
            if (space, env) in seen:
                raise FieldError(where, f"lists {env} of space {space} twice")
            seen.add((space, env))


def _distinct_heads(heads: Sequence[bytes], where: str) -> None:
    if len(set(heads)) != len(heads):
        raise FieldError(where, "names a head twice")


_envs = ListOf(Struct((("space", SPACE_ID), ("env", ENV_ID)), "a [space, env] pair"),
               MAX_ENVS, tuple_=True, what="a list of [space, env] pairs",
               whole=_distinct_pairs, unit="envs")
_heads = ListOf(Bytes(HASH_BYTES, HASH_BYTES), MAX_HEADS, tuple_=True,
                what="a list of entry hashes", whole=_distinct_heads, unit="heads")
_mheads = MapOf(SPACE_ID, _heads, MAX_MEMBERSHIP_SPACES)


def check_field(check: Check, value: Any, where: str) -> Any:
    """`value` checked by one of this protocol's field checkers (`SPACE_ID`, `ENV_ID`,
    `DEVICE_ID`...), refused as a peer's message would be: for callers that hold a value
    before it is a message (a session's own envs)."""
    try:
        return check.decode(value, "")
    except FieldError as exc:
        raise _CODEC.refusal(FieldError(where + exc.where, exc.problem,
                                        limit=exc.limit)) from None


# ---------------------------------------------------------------------------------- messages


class _Control(WireMessage):
    """A sync message other than `cs`: its frame is at most MAX_CONTROL_MESSAGE_BYTES."""

    __slots__ = ()
    MAX_BYTES: ClassVar[int | None] = MAX_CONTROL_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class Hello(_Control):
    KIND = "hello"
    device: str = wire("d", DEVICE_ID)
    envs: tuple[tuple[str, str], ...] = wire("envs", _envs)
    protocol: int = wire("p", _version, default=PROTOCOL_VERSION)
    model: int = wire("m", _version, default=MODEL_VERSION)
    migration: int = wire("mig", _version, default=MOCKOON_MAX_MIGRATION)
    #: Heads of the sender's membership log per space (see `sync.membership`).
    mheads: Mapping[str, tuple[bytes, ...]] = wire("mh", _mheads, default_factory=dict,
                                                  hash=False)


@dataclass(frozen=True, slots=True)
class MHeads(_Control):
    """The heads of the sender's membership log of one space."""

    KIND = "mheads"
    space: str = wire("s", SPACE_ID)
    heads: tuple[bytes, ...] = wire("h", _heads)


@dataclass(frozen=True, slots=True)
class MLog(_Control):
    """Membership entries (wire bytes, verified by the receiver as a whole log); `final` marks
    the last message of one answer."""

    KIND = "mlog"
    space: str = wire("s", SPACE_ID)
    wires: tuple[bytes, ...] = wire("w", ListOf(
        Bytes(1, MAX_MLOG_ENTRY_BYTES), MAX_MLOG_ENTRIES, lo=1, tuple_=True,
        what="a non-empty list of entry wires"), repr=False)
    final: bool = wire("f", Bool())


@dataclass(frozen=True, slots=True)
class Have(_Control):
    KIND = "have"
    space: str = wire("s", SPACE_ID)
    env: str = wire("e", ENV_ID)
    vv: Mapping[str, int] = wire("vv", _vv, hash=False)


@dataclass(frozen=True, slots=True)
class Want(_Control):
    KIND = "want"
    space: str = wire("s", SPACE_ID)
    env: str = wire("e", ENV_ID)
    device: str = wire("d", DEVICE_ID)
    after: int = wire("a", Int(0, MAX_SEQ - 1))
    upto: int = wire("u", Int(1, MAX_SEQ))

    def cross_check(self) -> None:
        if self.upto <= self.after:
            raise FieldError(".u", f"{self.upto} is not above a ({self.after})")
        if self.upto - self.after > MAX_WANT_SPAN:
            raise FieldError("", f"asks for {self.upto - self.after} change sets, over the "
                             f"{MAX_WANT_SPAN} limit per want", limit=True)


@dataclass(frozen=True, slots=True)
class Cs(WireMessage):
    """One change set. The other fields are read from `wire` (see `Cs.of`), never trusted."""

    KIND = "cs"
    MAX_BYTES = MAX_MESSAGE_BYTES
    wire: bytes = wire("w", Bytes(0, MAX_CHANGESET_BYTES), repr=False)
    space: str = derived()
    env: str = derived()
    device: str = derived()
    seq: int = derived()

    @classmethod
    def of(cls, wire: bytes) -> Cs:
        space, env, device, seq = peek_changeset(wire)
        return cls(bytes(wire), space, env, device, seq)

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> Cs:
        wire = values["wire"]
        return cls(wire, *peek_changeset(wire))


@dataclass(frozen=True, slots=True)
class Ack(_Control):
    KIND = "ack"
    space: str = wire("s", SPACE_ID)
    env: str = wire("e", ENV_ID)
    device: str = wire("d", DEVICE_ID)
    seq: int = wire("n", _seq)
    vv: Mapping[str, int] = wire("vv", _vv, hash=False)


@dataclass(frozen=True, slots=True)
class Nack(_Control):
    KIND = "nack"
    space: str = wire("s", SPACE_ID)
    env: str = wire("e", ENV_ID)
    device: str = wire("d", DEVICE_ID)
    seq: int = wire("n", _seq)
    reason: str = wire("r", _reason)


@dataclass(frozen=True, slots=True)
class Ping(_Control):
    KIND = "ping"
    nonce: int = wire("n", _nonce)


@dataclass(frozen=True, slots=True)
class Pong(_Control):
    KIND = "pong"
    nonce: int = wire("n", _nonce)


@dataclass(frozen=True, slots=True)
class Presence(_Control):
    KIND = "presence"
    space: str | None = wire("s", Nullable(SPACE_ID))
    env: str | None = wire("e", Nullable(ENV_ID))
    entity: str | None = wire("u", Nullable(_entity))
    editor: str = wire("ed", Text(MAX_EDITOR_CHARS))

    def cross_check(self) -> None:
        if (self.space is None) != (self.env is None):
            raise FieldError(".s", "space and env must both be set or both be null")
        if self.entity is not None and self.env is None:
            raise FieldError(".u", "an entity needs an env")


@dataclass(frozen=True, slots=True)
class Bye(_Control):
    KIND = "bye"
    reason: str = wire("r", _reason)


@dataclass(frozen=True, slots=True)
class RelayedPresence(_Control):
    """Another device's presence note (opaque, signed by that device), `hops` hops left."""

    KIND = "rpres"
    wire: bytes = wire("w", Bytes(1, MAX_PRESENCE_NOTE_BYTES))
    hops: int = _declare("h", Int(0, MAX_PRESENCE_HOPS))  # `wire` is the field above here


Message = (Hello | Have | Want | Cs | Ack | Nack | Ping | Pong | Presence | Bye | MHeads | MLog
           | RelayedPresence)

KINDS: tuple[type[WireMessage], ...] = (
    Hello, Have, Want, Cs, Ack, Nack, Ping, Pong, Presence, Bye, MHeads, MLog, RelayedPresence)


def _unknown(kind: str) -> UnknownMessageKind:
    return UnknownMessageKind(
        f"sync message kind {kind!r:.40} is unknown to this mocksync (protocol "
        f"{PROTOCOL_VERSION}); the peer must not send it without a protocol version change")


#: The one codec of the peer sync protocol.
_CODEC = Codec(KINDS, label=LABEL, max_bytes=MAX_MESSAGE_BYTES, max_items=MAX_MESSAGE_ITEMS,
               error=MalformedMessage, limit_error=MessageTooLarge, unknown=_unknown,
               frame_what=LABEL)

_CLASSES: dict[str, type[WireMessage]] = {c.KIND: c for c in KINDS}
_KIND_ONLY = frozenset({KIND_KEY})

#: Every kind this build speaks, with its exact key set (besides `t`).
KEYS: dict[str, frozenset[str]] = {c.KIND: keys_of(c) for c in KINDS}


# ---------------------------------------------------------------------------------- encode


def encode_message(msg: Message) -> bytes:
    """Canonical bytes of `msg`. Refuses (with the same errors as decoding) anything a peer
    would refuse, so a bug here surfaces on the sender, not as a closed session. A `cs` is
    checked for size only: its fields come from `Cs.of`, and re-reading a large change set on
    every send would cost more than the send."""
    if not isinstance(msg, WireMessage):
        raise MalformedMessage(f"not a sync message: {type(msg).__name__}")
    return _CODEC.encode(msg)


# ---------------------------------------------------------------------------------- decode


def decode_message(data: bytes) -> Message:
    """Parse one message. Raises a `ProtocolError` subclass, never anything else."""
    obj, kind = _CODEC.parse(data)
    cls = _CLASSES.get(kind) or _CODEC.kind_class(kind)  # (refuses an unknown kind)
    n = len(data)
    if n > MAX_CONTROL_MESSAGE_BYTES and cls is not Cs:
        raise MessageTooLarge(
            f"sync message {kind} of {n} bytes is over the {MAX_CONTROL_MESSAGE_BYTES} "
            "byte limit for messages other than cs"
        )
    if cls is Hello and obj.get("p") != PROTOCOL_VERSION:
        return _foreign_hello(obj)
    try:  # what `Codec.from_map` does, without its second look-up on the hot path
        msg: Message = record_from_map(cls, obj, kind, _KIND_ONLY)  # type: ignore[assignment]
    except FieldError as exc:
        raise _CODEC.refusal(exc) from None
    return msg


def _foreign_hello(m: dict[Any, Any]) -> Hello:
    """A hello in another protocol version: read only the frozen keys, for the close reason."""
    protocol = check_field(_version, m.get("p"), "hello.p")
    model = m.get("m")
    migration = m.get("mig")
    device = m.get("d")
    return Hello(
        device=device if type(device) is str and _valid(DEVICE_ID, device) else "unknown",
        envs=(),
        protocol=protocol,
        model=model if type(model) is int and 0 <= model <= MAX_VERSION else 0,
        migration=migration if type(migration) is int and 0 <= migration <= MAX_VERSION else 0,
    )


def _valid(check: Check, value: Any) -> bool:
    try:
        check.decode(value, "")
    except FieldError:
        return False
    return True


def peek_changeset(wire: bytes) -> tuple[str, str, str, int]:
    """`(space, env, device, seq)` of a wire-form change set, read from its signed body.

    Cheap (no inflating of ops, no signature check: the store does those) but strict, so a
    session can refuse a change set for an env it does not share before anything stores it.
    """
    what = "sync message cs.w"
    if not isinstance(wire, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what}: expected bytes, got {type(wire).__name__}")
    if len(wire) > MAX_CHANGESET_BYTES:
        raise MessageTooLarge(
            f"{what}: change set of {len(wire)} bytes is over the {MAX_CHANGESET_BYTES} byte limit"
        )
    try:
        outer = canonical.decode(bytes(wire), what=what, max_items=WIRE_ITEMS)
        if type(outer) is not list or len(outer) != 2 or type(outer[0]) is not bytes:
            raise MalformedMessage(f"{what}: not a change set ([body, signature])")
        body = canonical.decode(outer[0], what=f"{what} body", max_items=MAX_BODY_ITEMS)
    except ChangeSetError as exc:
        raise MalformedMessage(str(exc)) from None
    if type(body) is not dict:
        raise MalformedMessage(f"{what}: change set body is not a map")
    raw_space = body.get("s")
    if type(raw_space) is not bytes or len(raw_space) != SPACE_ID_BYTES:
        raise MalformedMessage(f"{what}: change set has no {SPACE_ID_BYTES}-byte space id")
    try:  # one block for the three (this is on the hot path of every change set received)
        return (raw_space.hex(), ENV_ID.decode(body.get("e"), "cs.w e"),
                DEVICE_ID.decode(body.get("d"), "cs.w d"), _seq.decode(body.get("n"), "cs.w n"))
    except FieldError as exc:
        raise _CODEC.refusal(exc) from None


def check_reason(reason: str, kind: str = "bye") -> str:
    """`reason` cut to MAX_REASON_CHARS, so it always fits a `nack` / `bye`."""
    out: str = check_field(_reason, str(reason)[:MAX_REASON_CHARS], f"{kind}.r")
    return out
