"""The relay protocol: every message a daemon and the relay exchange, and how each is checked.

Why a protocol of its own rather than the peer sync messages (`mocksync.sync.messages`): what
the relay carries is not a change set but an *envelope* it cannot read (space, env tag, device,
seq, key generation, ciphertext), and most of its vocabulary (challenge-response auth, signed
log upload, quotas, presence fan-out, signal passthrough) has no peer-to-peer counterpart. The
style is the same: one binary WebSocket frame = one canonical CBOR map with a kind `t` and
short keys, decoded strictly (a size ceiling before parsing, canonical form only, the exact key
set per kind, every type and range checked) and every failure a `RelayProtocolError` naming the
field. Anything `encode_message` produces, `decode_message` accepts and returns equal.

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
|           | entry as a member uploads it (so every device learns new members and removals) |

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
from typing import Any

from .. import PROTOCOL_VERSION
from ..changes import canonical
from ..changes.changeset import MAX_SEQ
from ..errors import ChangeSetError, LimitError, ValidationError
from ..space.keys import MAX_GENERATION
from ..space.membership import MAX_ENTRY_BYTES, MAX_LOG_ENTRIES
from .auth import MAX_ORIGIN_CHARS, RELAY_KEY_BYTES
from .envelope import Envelope

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


class RelayProtocolError(ValidationError):
    """Bytes from the other side that are not a well-formed relay message."""

    code = "bad_message"


class UnknownKind(RelayProtocolError):
    """A message kind this build does not know, or one the sender's side may not send."""


class FrameTooLarge(RelayProtocolError, LimitError):
    """A frame, or one of its fields, over its named limit."""

    code = "bad_message"


def _bad(where: str, problem: str) -> RelayProtocolError:
    return RelayProtocolError(f"relay message {where}: {problem}")


# ------------------------------------------------------------------------------ field checks

Check = Callable[[Any, str], Any]


def _int(lo: int, hi: int) -> Check:
    def check(v: Any, where: str) -> int:
        if type(v) is not int:
            raise _bad(where, f"expected an integer, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise _bad(where, f"{v} is outside {lo}..{hi}")
        return v

    return check


def _bool(v: Any, where: str) -> bool:
    if type(v) is not bool:
        raise _bad(where, f"expected true or false, got {type(v).__name__}")
    return v


def _bytes(lo: int, hi: int) -> Check:
    def check(v: Any, where: str) -> bytes:
        if type(v) is not bytes:
            raise _bad(where, f"expected bytes, got {type(v).__name__}")
        if not lo <= len(v) <= hi:
            if len(v) > hi:
                raise FrameTooLarge(f"relay message {where}: {len(v)} bytes is over the {hi} byte limit")
            raise _bad(where, f"{len(v)} bytes, expected at least {lo}")
        return v

    return check


def _text(hi: int, pattern: re.Pattern[str] | None = None, what: str = "text") -> Check:
    def check(v: Any, where: str) -> str:
        if type(v) is not str:
            raise _bad(where, f"expected {what}, got {type(v).__name__}")
        if len(v) > hi:
            raise FrameTooLarge(f"relay message {where}: {len(v)} characters, over the {hi} limit")
        if pattern is not None and not pattern.fullmatch(v):
            raise _bad(where, f"expected {what}, got {v[:40]!r}")
        return v

    return check


_space = _text(32, _HEX32, "a space id (32 lowercase hex digits)")
_tag = _text(32, _HEX32, "an env tag (32 lowercase hex digits)")
_device = _text(23, _DEVICE, "a device id like ABCDE-FGHIJ-KLMNP-QRSTV")
_code = _text(MAX_CODE_CHARS, _CODE, "a refusal code")
_reason = _text(MAX_REASON_CHARS)
_seq = _int(1, MAX_SEQ)
_request = _int(0, MAX_REQUEST_ID)


def _nullable(inner: Check) -> Check:
    def check(v: Any, where: str) -> Any:
        return None if v is None else inner(v, where)

    return check


def _list(inner: Check, hi: int, lo: int = 0) -> Check:
    def check(v: Any, where: str) -> list[Any]:
        if type(v) is not list:
            raise _bad(where, f"expected a list, got {type(v).__name__}")
        if len(v) > hi:
            raise FrameTooLarge(f"relay message {where}: {len(v)} entries, over the {hi} limit")
        if len(v) < lo:
            raise _bad(where, f"needs at least {lo} entries")
        return [inner(x, f"{where}[{n}]") for n, x in enumerate(v)]

    return check


def _map(key: Check, value: Check, hi: int) -> Check:
    def check(v: Any, where: str) -> dict[Any, Any]:
        if type(v) is not dict:
            raise _bad(where, f"expected a map, got {type(v).__name__}")
        if len(v) > hi:
            raise FrameTooLarge(f"relay message {where}: {len(v)} entries, over the {hi} limit")
        return {key(k, f"{where} key"): value(x, f"{where}[{str(k)[:32]}]") for k, x in v.items()}

    return check


_vv = _map(_device, _seq, MAX_VV_DEVICES)


def _items(v: Any, where: str) -> tuple[Envelope, ...]:
    if type(v) is not list:
        raise _bad(where, f"expected a list of envelopes, got {type(v).__name__}")
    if len(v) > MAX_BATCH_ITEMS:
        raise FrameTooLarge(f"relay message {where}: {len(v)} envelopes, over the {MAX_BATCH_ITEMS} limit")
    out = []
    total = 0
    for n, item in enumerate(v):
        w = f"{where}[{n}]"
        if type(item) is not list or len(item) != 4:
            raise _bad(w, "expected an envelope [device, seq, gen, ciphertext]")
        d, s, g, c = item
        c = _bytes(1, MAX_CIPHERTEXT_BYTES)(c, w + " ciphertext")
        total += len(c)
        out.append(Envelope(_device(d, w + " device"), _seq(s, w + " seq"),
                            _int(1, MAX_GENERATION)(g, w + " gen"), c))
    if len(out) > 1 and total > MAX_BATCH_BYTES:
        raise FrameTooLarge(
            f"relay message {where}: {total} bytes of ciphertext, over the {MAX_BATCH_BYTES} "
            "byte limit for a batch of several envelopes"
        )
    return tuple(out)


def _plan_info(v: Any, where: str) -> dict[str, Any]:
    return _exact(v, where, {"m": _int(1, MAX_VERSION), "plan": _text(32), "envs": _int(0, 2**40),
                             "bytes": _int(0, 2**50), "devs": _int(0, 2**20)})


def _refusal_pair(v: Any, where: str) -> tuple[str, str]:
    if type(v) is not list or len(v) != 2:
        raise _bad(where, "expected [code, reason]")
    return (_code(v[0], where + " code"), _reason(v[1], where + " reason"))


def _who_item(v: Any, where: str) -> tuple[str, str | None, str | None]:
    if type(v) is not list or len(v) != 3:
        raise _bad(where, "expected [device, tag or null, entity or null]")
    return (_device(v[0], where + " device"), _nullable(_tag)(v[1], where + " tag"),
            _nullable(_text(MAX_ENTITY_CHARS))(v[2], where + " entity"))


def _limits(v: Any, where: str) -> dict[str, int]:
    return _exact(v, where, {"frame": _int(0, 2**40), "items": _int(0, 2**32),
                             "rate": _int(0, 2**32)})


def _exact(v: Any, where: str, fields: Mapping[str, Check]) -> dict[str, Any]:
    if type(v) is not dict:
        raise _bad(where, f"expected a map, got {type(v).__name__}")
    if set(v) != set(fields):
        extra = sorted(str(k) for k in set(v) - set(fields))
        absent = sorted(set(fields) - set(v))
        raise _bad(where, f"unexpected keys {extra or 'none'}, missing keys {absent or 'none'}")
    return {k: check(v[k], f"{where}.{k}") for k, check in fields.items()}


_entry = _bytes(1, MAX_ENTRY_BYTES)
_hash = _bytes(HASH_BYTES, HASH_BYTES)

# Per sender: kind -> (fields, largest frame). Both sides have an "index" and a "signal" with
# different fields, so each side has its own table.
CLIENT, RELAY, JOINER = "client", "relay", "joiner"
_BIG = MAX_FRAME_BYTES
_SMALL = MAX_CONTROL_BYTES
CLIENT_KINDS: dict[str, tuple[dict[str, Check], int]] = {
    "hello": ({"p": _int(0, MAX_VERSION), "m": _int(0, MAX_VERSION), "d": _device,
               "sp": _list(_space, MAX_SPACES_PER_SESSION, lo=1), "a": _text(MAX_AGENT_CHARS)},
              _SMALL),
    "auth": ({"sig": _bytes(SIG_BYTES, SIG_BYTES), "u": _text(MAX_ORIGIN_CHARS),
              "logs": _map(_space, _list(_entry, MAX_LOG_UPLOAD), MAX_SPACES_PER_SESSION)}, _BIG),
    "log": ({"i": _request, "s": _space, "w": _list(_entry, MAX_LOG_UPLOAD, lo=1)}, _BIG),
    "index": ({"i": _request, "s": _space}, _SMALL),
    "fetch": ({"i": _request, "s": _space, "e": _tag, "vv": _vv}, _SMALL),
    "put": ({"i": _request, "s": _space, "e": _tag, "z": _int(0, MAX_DECLARED_BYTES),
             "x": _items}, _BIG),
    "presence": ({"s": _space, "e": _nullable(_tag), "u": _nullable(_text(MAX_ENTITY_CHARS))},
                 _SMALL),
    "signal": ({"i": _request, "s": _space, "to": _device, "p": _bytes(1, MAX_SIGNAL_BYTES)},
               _SMALL),
    "ping": ({"n": _int(0, MAX_NONCE)}, _SMALL),
    "joinrep": ({"s": _space, "j": _bytes(JOIN_ID_BYTES, JOIN_ID_BYTES),
                 "p": _bytes(1, MAX_SIGNAL_BYTES)}, _SMALL),
}
#: A device that is not a member yet, on /v1/join: it may only carry join handshake messages.
JOINER_KINDS: dict[str, tuple[dict[str, Check], int]] = {
    "join": ({"s": _space, "to": _device, "p": _bytes(1, MAX_SIGNAL_BYTES)}, _SMALL),
}
RELAY_KINDS: dict[str, tuple[dict[str, Check], int]] = {
    "challenge": ({"p": _int(0, MAX_VERSION), "n": _bytes(NONCE_BYTES, NONCE_BYTES),
                   "k": _bytes(RELAY_KEY_BYTES, RELAY_KEY_BYTES), "ks": _bytes(SIG_BYTES, SIG_BYTES),
                   "have": _map(_space, _list(_hash, MAX_LOG_ENTRIES), MAX_SPACES_PER_SESSION)},
                  _BIG),
    "welcome": ({"ok": _map(_space, _plan_info, MAX_SPACES_PER_SESSION),
                 "no": _map(_space, _refusal_pair, MAX_SPACES_PER_SESSION), "lim": _limits},
                _SMALL),
    "refused": ({"c": _code, "r": _reason}, _SMALL),
    "ok": ({"i": _request}, _SMALL),
    "nack": ({"i": _request, "c": _code, "r": _reason}, _SMALL),
    "index": ({"i": _request, "s": _space, "envs": _map(_tag, _vv, MAX_INDEX_ENVS)}, _BIG),
    "batch": ({"i": _request, "s": _space, "e": _tag, "x": _items, "more": _bool}, _BIG),
    "ack": ({"i": _request, "s": _space, "e": _tag, "n": _int(0, MAX_BATCH_ITEMS)}, _SMALL),
    "env": ({"s": _space, "e": _tag, "x": _items}, _BIG),
    "who": ({"s": _space, "ds": _list(_who_item, MAX_WHO_DEVICES),
             "off": _list(_device, MAX_WHO_DEVICES)}, _SMALL),
    "signal": ({"s": _space, "from": _device, "p": _bytes(1, MAX_SIGNAL_BYTES)}, _SMALL),
    "pong": ({"n": _int(0, MAX_NONCE)}, _SMALL),
    "bye": ({"c": _code, "r": _reason}, _SMALL),
    "joinreq": ({"s": _space, "j": _bytes(JOIN_ID_BYTES, JOIN_ID_BYTES),
                 "p": _bytes(1, MAX_SIGNAL_BYTES)}, _SMALL),
    "jp": ({"p": _bytes(1, MAX_SIGNAL_BYTES)}, _SMALL),
    "entries": ({"s": _space, "w": _list(_entry, MAX_LOG_UPLOAD, lo=1)}, _BIG),
}
_BY_SENDER = {CLIENT: CLIENT_KINDS, RELAY: RELAY_KINDS, JOINER: JOINER_KINDS}
#: Item caps by sender (the relay's frames, trusted less than peers' but more than strangers',
#: keep the gate's own cap: a challenge may list 1,000 spaces' entry hashes).
_MAX_ITEMS_BY_SENDER = {CLIENT: MAX_CLIENT_FRAME_ITEMS, JOINER: MAX_JOINER_FRAME_ITEMS}


# ------------------------------------------------------------------------------ encode/decode


def _check_fields(kind: str, msg: Mapping[str, Any], sender: str) -> dict[str, Any]:
    table = _BY_SENDER[sender]
    spec = table.get(kind)
    if spec is None:
        other = CLIENT if sender == RELAY else RELAY
        if kind in _BY_SENDER[other]:
            raise UnknownKind(f"relay message kind {kind!r} is not one the {sender} sends")
        raise UnknownKind(
            f"unknown relay message kind {kind[:32]!r}: the other side speaks a newer protocol; "
            "update mocksync"
        )
    fields, _limit = spec
    keys = set(msg) - {"t"}
    if keys != set(fields):
        extra = sorted(str(k)[:16] for k in keys - set(fields))
        absent = sorted(set(fields) - keys)
        raise _bad(kind, f"unexpected keys {extra or 'none'}, missing keys {absent or 'none'}")
    out: dict[str, Any] = {"t": kind}
    for key, check in fields.items():
        out[key] = check(msg[key], f"{kind}.{key}")
    return out


def _plain(v: Any) -> Any:
    """Envelopes and tuples as the CBOR lists they travel as (only where they may occur)."""
    if isinstance(v, tuple | list):
        return [[e.device, e.seq, e.gen, e.ct] if isinstance(e, Envelope)
                else list(e) if isinstance(e, tuple) else e for e in v]
    if isinstance(v, dict):
        return {k: list(x) if isinstance(x, tuple) else x for k, x in v.items()}
    return v


def encode_message(msg: Mapping[str, Any], *, sender: str) -> bytes:
    """Canonical CBOR of a message `{"t": kind, ...}` sent by `sender` (CLIENT or RELAY).

    Checked against the same table as decoding, so nothing malformed ever leaves."""
    kind = msg.get("t")
    if type(kind) is not str:
        raise _bad("t", "every message needs a text kind")
    plain = {k: _plain(v) for k, v in msg.items()}
    _check_fields(kind, plain, sender)
    data = canonical.encode(plain)
    limit = _BY_SENDER[sender][kind][1]
    if len(data) > limit:
        raise FrameTooLarge(f"relay message {kind}: {len(data)} bytes, over the {limit} byte limit")
    return data


def decode_message(data: Any, *, sender: str) -> dict[str, Any]:
    """Check and decode one frame sent by `sender`; raise `RelayProtocolError` on anything off.

    Envelope lists come back as tuples of `Envelope`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RelayProtocolError(f"relay frame: expected binary data, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"relay frame of {len(data)} bytes is over the {MAX_FRAME_BYTES} byte limit")
    try:
        obj = canonical.decode(data, what="relay frame",
                               max_items=_MAX_ITEMS_BY_SENDER.get(sender, canonical.MAX_ITEMS))
    except ChangeSetError as exc:
        raise RelayProtocolError(str(exc)) from None
    if type(obj) is not dict:
        raise _bad("frame", f"expected a map, got {type(obj).__name__}")
    kind = obj.get("t")
    if type(kind) is not str:
        raise _bad("t", "missing or not text")
    if kind == "hello" and sender == CLIENT and obj.get("p") != PROTOCOL_VERSION:
        return _lenient_hello(obj)
    if kind == "refused" and sender == RELAY:
        return _lenient_refused(obj)
    msg = _check_fields(kind, obj, sender)
    limit = _BY_SENDER[sender][kind][1]
    if len(data) > limit:
        raise FrameTooLarge(f"relay message {kind}: {len(data)} bytes, over the {limit} byte limit")
    return msg


def _lenient_hello(obj: dict[Any, Any]) -> dict[str, Any]:
    """A hello of another protocol version: only the frozen keys, so we can refuse it kindly."""
    return {"t": "hello", "p": _int(0, MAX_VERSION)(obj.get("p"), "hello.p"),
            "m": _int(0, MAX_VERSION)(obj.get("m"), "hello.m"),
            "d": _device(obj.get("d"), "hello.d"), "sp": [], "a": ""}


def _lenient_refused(obj: dict[Any, Any]) -> dict[str, Any]:
    return {"t": "refused", "c": _code(obj.get("c"), "refused.c"),
            "r": _reason(obj.get("r"), "refused.r")}


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
