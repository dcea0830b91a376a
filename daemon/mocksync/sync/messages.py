"""The sync protocol's messages: what two daemons say to each other, and how it is checked.

Every message is one canonical CBOR map (`mocksync.changes.canonical`) with a kind `t` and
short keys. Canonical form matters even for unsigned messages: one meaning has one byte form,
so a fuzzer and a reviewer can reason about exactly what is accepted. Decoding is strict
because the bytes come from the network: a size ceiling before parsing, the exact key set per
kind, every type and range checked, and every failure a `ProtocolError` subclass naming the
field. Anything `encode_message` produces, `decode_message` accepts and returns equal.

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

import builtins
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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

_SPACE_RE = re.compile(r"[0-9a-f]{32}")
_DEVICE_RE = re.compile(rf"[A-Za-z0-9-]{{1,{MAX_DEVICE_CHARS}}}")


# ---------------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Hello:
    device: str
    envs: tuple[tuple[str, str], ...]
    protocol: int = PROTOCOL_VERSION
    model: int = MODEL_VERSION
    migration: int = MOCKOON_MAX_MIGRATION
    #: Heads of the sender's membership log per space (see `sync.membership`).
    mheads: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class MHeads:
    """The heads of the sender's membership log of one space."""

    space: str
    heads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class MLog:
    """Membership entries (wire bytes, verified by the receiver as a whole log); `final` marks
    the last message of one answer."""

    space: str
    wires: tuple[bytes, ...] = field(repr=False)
    final: bool


@dataclass(frozen=True, slots=True)
class Have:
    space: str
    env: str
    vv: Mapping[str, int] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Want:
    space: str
    env: str
    device: str
    after: int
    upto: int


@dataclass(frozen=True, slots=True)
class Cs:
    """One change set. The other fields are read from `wire` (see `Cs.of`), never trusted."""

    wire: bytes = field(repr=False)
    space: str
    env: str
    device: str
    seq: int

    @classmethod
    def of(cls, wire: bytes) -> Cs:
        space, env, device, seq = peek_changeset(wire)
        return cls(bytes(wire), space, env, device, seq)


@dataclass(frozen=True, slots=True)
class Ack:
    space: str
    env: str
    device: str
    seq: int
    vv: Mapping[str, int] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Nack:
    space: str
    env: str
    device: str
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int


@dataclass(frozen=True, slots=True)
class Presence:
    space: str | None
    env: str | None
    entity: str | None
    editor: str


@dataclass(frozen=True, slots=True)
class Bye:
    reason: str


@dataclass(frozen=True, slots=True)
class RelayedPresence:
    """Another device's presence note (opaque, signed by that device), `hops` hops left."""

    wire: bytes
    hops: int


Message = (Hello | Have | Want | Cs | Ack | Nack | Ping | Pong | Presence | Bye | MHeads | MLog
           | RelayedPresence)

_KIND_OF = {
    Hello: "hello", Have: "have", Want: "want", Cs: "cs", Ack: "ack", Nack: "nack",
    Ping: "ping", Pong: "pong", Presence: "presence", Bye: "bye", MHeads: "mheads",
    MLog: "mlog", RelayedPresence: "rpres",
}
#: Every kind this build speaks, with its exact key set (besides `t`).
KEYS: dict[str, frozenset[str]] = {
    "hello": frozenset({"p", "m", "mig", "d", "envs", "mh"}),
    "have": frozenset({"s", "e", "vv"}),
    "want": frozenset({"s", "e", "d", "a", "u"}),
    "cs": frozenset({"w"}),
    "ack": frozenset({"s", "e", "d", "n", "vv"}),
    "nack": frozenset({"s", "e", "d", "n", "r"}),
    "ping": frozenset({"n"}),
    "pong": frozenset({"n"}),
    "presence": frozenset({"s", "e", "u", "ed"}),
    "bye": frozenset({"r"}),
    "mheads": frozenset({"s", "h"}),
    "mlog": frozenset({"s", "w", "f"}),
    "rpres": frozenset({"w", "h"}),
}


# ---------------------------------------------------------------------------------- checks


class _Fields:
    """Typed access to one decoded map; every failure names the kind and the field."""

    def __init__(self, kind: str, m: dict) -> None:
        self.kind = kind
        self.m = m

    def bad(self, key: str, problem: str) -> MalformedMessage:
        return MalformedMessage(f"sync message {self.kind}: field {key}: {problem}")

    def int(self, key: str, low: int, high: int) -> int:
        value = self.m.get(key)
        if type(value) is not int:
            raise self.bad(key, f"expected an int, got {type(value).__name__}")
        if not low <= value <= high:
            raise self.bad(key, f"{value} is outside the allowed range {low}..{high}")
        return value

    def text(self, key: str, limit: builtins.int, *, optional: bool = False) -> str | None:
        value = self.m.get(key)
        if value is None and optional:
            return None
        if type(value) is not str:
            raise self.bad(key, f"expected a string, got {type(value).__name__}")
        if len(value) > limit:
            raise MessageTooLarge(
                f"sync message {self.kind}: field {key}: {len(value)} characters, over the "
                f"{limit} character limit"
            )
        return value

    def space(self, key: str = "s", value: Any = ...) -> str:
        value = self.m.get(key) if value is ... else value
        if type(value) is not str or not _SPACE_RE.fullmatch(value):
            raise self.bad(key, f"expected a space id (32 lowercase hex), got {value!r:.80}")
        return value

    def env(self, key: str = "e", value: Any = ...) -> str:
        value = self.m.get(key) if value is ... else value
        if (
            type(value) is not str
            or not 1 <= len(value) <= MAX_ENV_CHARS
            or not value.isprintable()
        ):
            raise self.bad(
                key, f"expected an env id of 1..{MAX_ENV_CHARS} printable characters, got {value!r:.80}"
            )
        return value

    def device(self, key: str = "d", value: Any = ...) -> str:
        value = self.m.get(key) if value is ... else value
        if type(value) is not str or not _DEVICE_RE.fullmatch(value):
            raise self.bad(
                key,
                f"expected a device id of 1..{MAX_DEVICE_CHARS} characters A-Z a-z 0-9 -, "
                f"got {value!r:.80}",
            )
        return value

    def vv(self, key: str = "vv") -> dict[str, builtins.int]:
        value = self.m.get(key)
        if type(value) is not dict:
            raise self.bad(key, f"expected a map of device id to seq, got {type(value).__name__}")
        if len(value) > MAX_VV_DEVICES:
            raise MessageTooLarge(
                f"sync message {self.kind}: field {key}: {len(value)} devices, over the "
                f"{MAX_VV_DEVICES} device limit"
            )
        out: dict[str, int] = {}
        for device, seq in value.items():
            self.device(key, device)
            if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
                raise self.bad(key, f"seq of {device} must be an int in 1..{MAX_SEQ}, got {seq!r:.40}")
            out[device] = seq
        return out


# ---------------------------------------------------------------------------------- encode


def _as_map(msg: Message) -> dict[str, Any]:
    kind = _KIND_OF.get(type(msg))
    if kind is None:
        raise MalformedMessage(f"not a sync message: {type(msg).__name__}")
    if isinstance(msg, Hello):
        return {"t": kind, "p": msg.protocol, "m": msg.model, "mig": msg.migration,
                "d": msg.device, "envs": [[s, e] for s, e in msg.envs],
                "mh": {s: list(h) for s, h in msg.mheads.items()}}
    if isinstance(msg, MHeads):
        return {"t": kind, "s": msg.space, "h": list(msg.heads)}
    if isinstance(msg, MLog):
        return {"t": kind, "s": msg.space, "w": list(msg.wires), "f": msg.final}
    if isinstance(msg, Have):
        return {"t": kind, "s": msg.space, "e": msg.env, "vv": dict(msg.vv)}
    if isinstance(msg, Want):
        return {"t": kind, "s": msg.space, "e": msg.env, "d": msg.device, "a": msg.after,
                "u": msg.upto}
    if isinstance(msg, Cs):
        return {"t": kind, "w": msg.wire}
    if isinstance(msg, Ack):
        return {"t": kind, "s": msg.space, "e": msg.env, "d": msg.device, "n": msg.seq,
                "vv": dict(msg.vv)}
    if isinstance(msg, Nack):
        return {"t": kind, "s": msg.space, "e": msg.env, "d": msg.device, "n": msg.seq,
                "r": msg.reason}
    if isinstance(msg, Ping | Pong):
        return {"t": kind, "n": msg.nonce}
    if isinstance(msg, Presence):
        return {"t": kind, "s": msg.space, "e": msg.env, "u": msg.entity, "ed": msg.editor}
    if isinstance(msg, RelayedPresence):
        return {"t": kind, "w": msg.wire, "h": msg.hops}
    return {"t": kind, "r": msg.reason}


def encode_message(msg: Message) -> bytes:
    """Canonical bytes of `msg`. Refuses (with the same errors as decoding) anything a peer
    would refuse, so a bug here surfaces on the sender, not as a closed session."""
    try:
        data = canonical.encode(_as_map(msg))
    except MalformedMessage:
        raise
    except Exception as exc:  # TypeError, ValueError, cbor2.CBOREncodeError...
        raise MalformedMessage(f"cannot encode {type(msg).__name__}: {exc}") from None
    if isinstance(msg, Cs):
        # The envelope carries only the wire; its fields come from `Cs.of`. Checking the size
        # is enough, and it spares re-reading a large change set on every send.
        if len(data) > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"sync message cs of {len(data)} bytes is over the {MAX_MESSAGE_BYTES} byte limit"
            )
        return data
    back = decode_message(data)
    if isinstance(msg, Hello) and msg.protocol != PROTOCOL_VERSION:
        same = (back.protocol, back.model, back.migration, back.device) == (  # type: ignore[union-attr]
            msg.protocol, msg.model, msg.migration, msg.device)
    else:
        same = back == msg
    if not same:
        raise MalformedMessage(f"{type(msg).__name__} does not survive encoding: {msg!r:.200}")
    return data


# ---------------------------------------------------------------------------------- decode


def decode_message(data: bytes) -> Message:
    """Parse one message. Raises a `ProtocolError` subclass, never anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"sync message: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"sync message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES} byte limit"
        )
    try:
        m = canonical.decode(data, what="sync message", max_items=MAX_MESSAGE_ITEMS)
    except ChangeSetError as exc:
        raise MalformedMessage(str(exc)) from None
    if type(m) is not dict:
        raise MalformedMessage(f"sync message: expected a map, got {type(m).__name__}")
    kind = m.get("t")
    if type(kind) is not str:
        raise MalformedMessage("sync message: kind t missing or not a string")
    keys = KEYS.get(kind)
    if keys is None:
        raise UnknownMessageKind(
            f"sync message kind {kind!r:.40} is unknown to this mocksync (protocol "
            f"{PROTOCOL_VERSION}); the peer must not send it without a protocol version change"
        )
    if kind != "cs" and len(data) > MAX_CONTROL_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"sync message {kind} of {len(data)} bytes is over the {MAX_CONTROL_MESSAGE_BYTES} "
            "byte limit for messages other than cs"
        )
    f = _Fields(kind, m)
    if kind == "hello" and m.get("p") != PROTOCOL_VERSION:
        return _foreign_hello(f)
    present = set(m) - {"t"}
    if present != keys:
        extra = sorted(repr(k) for k in present - keys)
        absent = sorted(repr(k) for k in keys - present)
        raise MalformedMessage(
            f"sync message {kind}: unexpected keys {', '.join(extra) or 'none'}, missing keys "
            f"{', '.join(absent) or 'none'}"
        )
    return _PARSERS[kind](f)


def _foreign_hello(f: _Fields) -> Hello:
    """A hello in another protocol version: read only the frozen keys, for the close reason."""
    protocol = f.int("p", 0, MAX_VERSION)
    model = f.m.get("m")
    migration = f.m.get("mig")
    device = f.m.get("d")
    return Hello(
        device=device if type(device) is str and _DEVICE_RE.fullmatch(device) else "unknown",
        envs=(),
        protocol=protocol,
        model=model if type(model) is int and 0 <= model <= MAX_VERSION else 0,
        migration=migration if type(migration) is int and 0 <= migration <= MAX_VERSION else 0,
    )


def _hello(f: _Fields) -> Hello:
    envs = f.m["envs"]
    if type(envs) is not list:
        raise f.bad("envs", f"expected a list of [space, env] pairs, got {type(envs).__name__}")
    if len(envs) > MAX_ENVS:
        raise MessageTooLarge(
            f"sync message hello: field envs: {len(envs)} envs, over the {MAX_ENVS} env limit"
        )
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for item in envs:
        if type(item) is not list or len(item) != 2:
            raise f.bad("envs", "each entry must be a [space, env] pair")
        pair = (f.space("envs", item[0]), f.env("envs", item[1]))
        if pair in seen:
            raise f.bad("envs", f"lists {pair[1]} of space {pair[0]} twice")
        seen.add(pair)
        pairs.append(pair)
    mh = f.m["mh"]
    if type(mh) is not dict:
        raise f.bad("mh", f"expected a map of space id to heads, got {type(mh).__name__}")
    if len(mh) > MAX_MEMBERSHIP_SPACES:
        raise MessageTooLarge(
            f"sync message hello: field mh: {len(mh)} spaces, over the {MAX_MEMBERSHIP_SPACES} "
            "space limit"
        )
    mheads = {f.space("mh", s): _heads(f, "mh", h) for s, h in mh.items()}
    return Hello(
        device=f.device(),
        envs=tuple(pairs),
        protocol=f.int("p", 0, MAX_VERSION),
        model=f.int("m", 0, MAX_VERSION),
        migration=f.int("mig", 0, MAX_VERSION),
        mheads=mheads,
    )


def _heads(f: _Fields, key: str, value: Any) -> tuple[bytes, ...]:
    if type(value) is not list:
        raise f.bad(key, f"expected a list of entry hashes, got {type(value).__name__}")
    if len(value) > MAX_HEADS:
        raise MessageTooLarge(
            f"sync message {f.kind}: field {key}: {len(value)} heads, over the {MAX_HEADS} limit"
        )
    if any(type(h) is not bytes or len(h) != HASH_BYTES for h in value):
        raise f.bad(key, f"each head must be a {HASH_BYTES}-byte entry hash")
    if len(set(value)) != len(value):
        raise f.bad(key, "names a head twice")
    return tuple(value)


def _mheads(f: _Fields) -> MHeads:
    return MHeads(f.space(), _heads(f, "h", f.m["h"]))


def _mlog(f: _Fields) -> MLog:
    wires = f.m["w"]
    if type(wires) is not list or not wires:
        raise f.bad("w", "expected a non-empty list of entry wires")
    if len(wires) > MAX_MLOG_ENTRIES:
        raise MessageTooLarge(
            f"sync message mlog: field w: {len(wires)} entries, over the {MAX_MLOG_ENTRIES} "
            "entry limit"
        )
    for w in wires:
        if type(w) is not bytes or not w:
            raise f.bad("w", "each entry must be non-empty bytes")
        if len(w) > MAX_MLOG_ENTRY_BYTES:
            raise MessageTooLarge(
                f"sync message mlog: an entry of {len(w)} bytes is over the "
                f"{MAX_MLOG_ENTRY_BYTES} byte limit"
            )
    final = f.m["f"]
    if type(final) is not bool:
        raise f.bad("f", f"expected a bool, got {type(final).__name__}")
    return MLog(f.space(), tuple(wires), final)


def _have(f: _Fields) -> Have:
    return Have(f.space(), f.env(), f.vv())


def _want(f: _Fields) -> Want:
    after = f.int("a", 0, MAX_SEQ - 1)
    upto = f.int("u", after + 1, MAX_SEQ)
    if upto - after > MAX_WANT_SPAN:
        raise MessageTooLarge(
            f"sync message want: asks for {upto - after} change sets, over the {MAX_WANT_SPAN} "
            "limit per want"
        )
    return Want(f.space(), f.env(), f.device(), after, upto)


def _cs(f: _Fields) -> Cs:
    wire = f.m["w"]
    if type(wire) is not bytes:
        raise f.bad("w", f"expected change set bytes, got {type(wire).__name__}")
    return Cs.of(wire)


def _ack(f: _Fields) -> Ack:
    return Ack(f.space(), f.env(), f.device(), f.int("n", 1, MAX_SEQ), f.vv())


def _nack(f: _Fields) -> Nack:
    return Nack(f.space(), f.env(), f.device(), f.int("n", 1, MAX_SEQ),
                f.text("r", MAX_REASON_CHARS))  # type: ignore[arg-type]


def _ping(f: _Fields) -> Ping:
    return Ping(f.int("n", 0, MAX_NONCE))


def _pong(f: _Fields) -> Pong:
    return Pong(f.int("n", 0, MAX_NONCE))


def _presence(f: _Fields) -> Presence:
    space, env, entity = f.m["s"], f.m["e"], f.m["u"]
    if (space is None) != (env is None):
        raise f.bad("s", "space and env must both be set or both be null")
    if space is not None:
        space, env = f.space(), f.env()
    if entity is not None:
        if env is None:
            raise f.bad("u", "an entity needs an env")
        if (
            type(entity) is not str
            or not 1 <= len(entity) <= MAX_ENTITY_CHARS
            or not entity.isprintable()
        ):
            raise f.bad(
                "u", f"expected an entity id of 1..{MAX_ENTITY_CHARS} printable characters"
            )
    editor = f.text("ed", MAX_EDITOR_CHARS)
    return Presence(space, env, entity, editor)  # type: ignore[arg-type]


def _rpres(f: _Fields) -> RelayedPresence:
    wire = f.m["w"]
    if type(wire) is not bytes or not wire:
        raise f.bad("w", "expected a non-empty signed presence note")
    if len(wire) > MAX_PRESENCE_NOTE_BYTES:
        raise MessageTooLarge(
            f"sync message rpres: a presence note of {len(wire)} bytes is over the "
            f"{MAX_PRESENCE_NOTE_BYTES} byte limit"
        )
    return RelayedPresence(wire, f.int("h", 0, MAX_PRESENCE_HOPS))


def _bye(f: _Fields) -> Bye:
    return Bye(f.text("r", MAX_REASON_CHARS))  # type: ignore[arg-type]


#: One strict reader per kind: `decode_message` dispatches on `t`.
_PARSERS: dict[str, Callable[[_Fields], Message]] = {
    "hello": _hello, "have": _have, "want": _want, "cs": _cs, "ack": _ack, "nack": _nack,
    "ping": _ping, "pong": _pong, "presence": _presence, "bye": _bye, "mheads": _mheads,
    "mlog": _mlog, "rpres": _rpres,
}


def peek_changeset(wire: bytes) -> tuple[str, str, str, int]:
    """`(space, env, device, seq)` of a wire-form change set, read from its signed body.

    Cheap (no inflating of ops, no signature check: the store does those) but strict, so a
    session can refuse a change set for an env it does not share before anything stores it.
    """
    what = "sync message cs: field w"
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
    f = _Fields("cs", body)
    raw_space = body.get("s")
    if type(raw_space) is not bytes or len(raw_space) != SPACE_ID_BYTES:
        raise MalformedMessage(f"{what}: change set has no {SPACE_ID_BYTES}-byte space id")
    return raw_space.hex(), f.env("e"), f.device("d"), f.int("n", 1, MAX_SEQ)


def check_reason(reason: str, kind: str = "bye") -> str:
    """`reason` cut to MAX_REASON_CHARS, so it always fits a `nack` / `bye`."""
    return _Fields(kind, {"r": str(reason)[:MAX_REASON_CHARS]}).text(  # type: ignore[return-value]
        "r", MAX_REASON_CHARS)
