"""Signed change sets: the unit every edit travels and is stored as.

A change set is one device's batch of ops on one environment. Each device numbers its sets
per `(space, env)` 1, 2, 3... and links each to the previous one by hash (`prev_hash`), so a
receiver can tell a complete chain from one with a gap, a fork (equivocation) or a forgery, and
Ed25519 signatures make every set attributable to the device key that wrote it. `deps` is the
author's version vector at the time, which is what lets merge tell a conflict from an ordinary
overwrite.

Bytes, not fields, are what get signed and hashed. The body is canonical CBOR of a map with
short keys, so the same fields give the same bytes on every machine; large op lists ride
zlib-compressed inside the body (a one-property edit stays a few hundred bytes, a whole imported
environment shrinks several-fold). Because zlib builds are free to emit different (equally
valid) streams, a decoded change set keeps the exact body bytes it arrived with: its hash,
signature check and re-encoding all use those bytes, never a recompression. Persist `encode()`
output, not the fields, and the hash chain holds on every device.

What a signature covers is `SIGNING_CONTEXT + body`, so a device signature made for a change
set can never be replayed as one over some other kind of message signed with the same key.

Decoding is strict because its input comes from the network: a size ceiling before parsing,
canonical form only (so no two wire forms mean the same set), every field type and range
checked, a bounded inflate that refuses zip bombs before they are fully expanded, and every
failure a specific `ChangeSetError` subclass with a sentence that names the field. Anything
`encode()` produces, `decode()` accepts and re-encodes to the identical bytes.
"""

from __future__ import annotations

import copy
import hashlib
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..errors import ChangeSetError
from . import canonical
from .errors import (
    ChainError,
    ChangeSetTooLarge,
    MalformedChangeSet,
    SignatureError,
    UnknownFormatVersion,
)

#: Version of the body layout below. A body with another version is refused, not guessed at.
FORMAT_VERSION = 1
#: Op lists whose canonical encoding is longer than this many bytes are stored compressed.
COMPRESS_THRESHOLD = 1024
#: zlib level used when compressing ops (speed and ratio balance; any valid stream decodes).
ZLIB_LEVEL = 6
#: Largest encoded change set (wire bytes) we build or accept.
MAX_CHANGESET_BYTES = 48 * 1024 * 1024
#: Largest canonical encoding of an op list, after decompression.
MAX_OPS_BYTES = 64 * 1024 * 1024
#: Most ops in one change set.
MAX_OPS = 200_000
#: Most entries in a change set's `deps` version vector.
MAX_DEPS = 10_000
#: CBOR items the three layers of a change set may hold (issue 12). Decoding costs time per
#: item, and cbor2 holds the GIL while it builds and re-encodes a value, so the gate's generic
#: cap (16 Mi items) let a member freeze every teammate's daemon for seconds with a 16 KB
#: envelope: compressed ops of 16 million zeros (zlib shrinks them 1000-fold). The wire is
#: exactly [body, signature]; a body is a few fields plus `deps` and at most
#: COMPRESS_THRESHOLD bytes of inline ops.
WIRE_ITEMS = 3
MAX_BODY_ITEMS = 2 * MAX_DEPS + COMPRESS_THRESHOLD + 64
#: Compressed ops may expand to at most OPS_ITEMS_FLOOR + OPS_ITEMS_PER_COMPRESSED_BYTE items
#: per byte of `z`. Honest ops hold one item per register value (its JSON text) and a random
#: uuid per entity: a generated environment measures 1.1 items per compressed byte (1 MB and
#: 15 MB alike), and distinct register keys keep real ones under 3; a bomb reaches 1,000. So a
#: big decode now needs a big upload (the relay's rate and size limits apply to those).
OPS_ITEMS_FLOOR = 16 * 1024
OPS_ITEMS_PER_COMPRESSED_BYTE = 8
#: Deepest nesting of lists/maps inside one op (the CBOR decoder itself stops at 400).
MAX_OP_DEPTH = 64
#: Largest seq / deps value: must fit a signed 64-bit SQLite INTEGER.
MAX_SEQ = (1 << 63) - 1
#: Largest stamp: HLC stamps are unsigned 64-bit.
MAX_HLC = (1 << 64) - 1
#: Largest register-model version number.
MAX_MODEL = 0xFFFF
#: Longest environment id and device id, in characters.
MAX_ENV_CHARS = 64
MAX_DEVICE_CHARS = 64
#: A space id is 128 random bits: 32 lowercase hex characters (16 bytes inside the body).
SPACE_ID_BYTES = 16
#: Sizes fixed by sha256 and Ed25519.
HASH_BYTES = 32
SIG_BYTES = 64
PUBLIC_KEY_BYTES = 32
#: Prefix of every signed message: domain separation from other things a device key signs.
SIGNING_CONTEXT = b"mocksync/changeset/v1\x00"
#: Ops encoded per cbor2 call when a body is made. cbor2 holds the GIL for a whole call: a
#: 15 MB snapshot's ops in one call held it ~300 ms, and the daemon's event loop, waiting for
#: the GIL, stood still as long (issue 15). A definite-length CBOR array is its head followed
#: by its items, so encoding the items in slices gives the very same canonical bytes.
OPS_PER_ENCODE = 64

_SPACE_RE = re.compile(r"[0-9a-f]{32}")
_DEVICE_RE = re.compile(rf"[A-Za-z0-9-]{{1,{MAX_DEVICE_CHARS}}}")
# Body map keys: v version, s space, e env, d device, n seq, h hlc, deps, p prev_hash,
# m model, and exactly one of o (inline ops) / z (zlib-compressed canonical ops).
_BODY_KEYS = frozenset({"v", "s", "e", "d", "n", "h", "deps", "p", "m"})
_SCALARS = (str, bytes, int, float, bool, type(None))
_KEY_TYPES = (str, int, bytes)


def _array_head(n: int) -> bytes:
    """The CBOR head of a definite-length array of `n` items, in its shortest form (the one
    canonical encoding writes)."""
    if n < 24:
        return bytes((0x80 | n,))
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes((0x80 | info,)) + n.to_bytes(width, "big")
    raise ValueError(f"an array of {n} items has no CBOR head")


def encode_ops(ops: list[Any]) -> bytes:
    """`canonical.encode(ops)`, byte for byte, made `OPS_PER_ENCODE` ops per cbor2 call so
    the GIL is let go between slices (see `OPS_PER_ENCODE`)."""
    if len(ops) <= OPS_PER_ENCODE:
        return canonical.encode(ops)
    parts = [_array_head(len(ops))]
    for i in range(0, len(ops), OPS_PER_ENCODE):
        piece = ops[i:i + OPS_PER_ENCODE]
        parts.append(canonical.encode(piece)[len(_array_head(len(piece))):])
    return b"".join(parts)


def _bad(name: str, problem: str) -> MalformedChangeSet:
    return MalformedChangeSet(f"change set field {name}: {problem}")


def _check_int(value: object, name: str, low: int, high: int) -> int:
    if type(value) is not int:
        raise _bad(name, f"expected an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise _bad(name, f"{value} is outside the allowed range {low}..{high}")
    return value


#: Ids that passed their pattern check, per pattern (device ids, space ids): the same few ids
#: are in every one of a catch-up's 10,000 change sets, and a regex match of each cost as much
#: as the rest of the header checks together. Each set starts over past this many ids.
MAX_IDS_KEPT = 4096
_DEVICES_OK: set[str] = set()
_SPACES_OK: set[str] = set()


def _matches(value: object, pattern: re.Pattern[str], kept: set[str]) -> TypeGuard[str]:
    """Is `value` a str that `pattern` matches whole? (`kept`: the ones that did before.)"""
    if type(value) is not str:
        return False
    if value in kept:
        return True
    if pattern.fullmatch(value) is None:
        return False
    if len(kept) >= MAX_IDS_KEPT:
        kept.clear()
    kept.add(value)
    return True


def _check_device(value: object, name: str) -> str:
    if not _matches(value, _DEVICE_RE, _DEVICES_OK):
        raise _bad(
            name,
            f"expected a device id of 1..{MAX_DEVICE_CHARS} characters A-Z, a-z, 0-9 or '-', "
            f"got {value!r:.80}",
        )
    return value


def _check_op_value(value: Any, depth: int, where: str) -> None:
    if depth > MAX_OP_DEPTH:
        raise _bad(where, f"nested deeper than {MAX_OP_DEPTH} levels")
    kind = type(value)
    if kind is int and not canonical.MIN_INT <= value <= canonical.MAX_INT:
        # CBOR would need a bignum tag, which the decoding gate refuses on every device.
        raise _bad(where, f"integer {str(value)[:40]} is outside the 64-bit range the format carries")
    if kind in _SCALARS:
        return
    # A string one level down is within the depth limit here and needs no call: ops are
    # mostly strings (register ids, JSON texts), 1.5 million items in a 15 MB snapshot.
    shallow = depth < MAX_OP_DEPTH
    if kind is list or kind is tuple:
        for item in value:
            if not shallow or type(item) is not str:
                _check_op_value(item, depth + 1, where)
    elif kind is dict:
        for key, item in value.items():
            if type(key) not in _KEY_TYPES:
                raise _bad(where, f"map key of type {type(key).__name__} is not allowed")
            if not shallow or type(item) is not str:
                _check_op_value(item, depth + 1, where)
    else:
        raise _bad(where, f"holds a {kind.__name__}, which a change set cannot carry")


def _normalise_ops(ops: object) -> tuple[list, ...]:
    # (a list or tuple, what decode and the store pass, skips the slower ABC checks)
    if type(ops) is not list and type(ops) is not tuple and (
            isinstance(ops, str | bytes | Mapping) or not isinstance(ops, Iterable)):
        raise _bad("ops", f"expected a list of ops, got {type(ops).__name__}")
    out = []
    for index, op in enumerate(ops):
        if index >= MAX_OPS:
            raise ChangeSetTooLarge(f"change set has more than {MAX_OPS} ops; split the edit")
        if type(op) is tuple:
            op = list(op)
        elif type(op) is not list:
            raise _bad(f"ops[{index}]", f"expected an op (a list), got {type(op).__name__}")
        _check_op_value(op, 1, f"ops[{index}]")
        out.append(op)
    return tuple(out)


#: The wire's last bytes: the CBOR head of a 64-byte byte string (the signature).
_SIG_HEAD = bytes((0x58, SIG_BYTES))


def _split_wire(wire: bytes) -> list[bytes] | None:
    """`[body, sig]` when `wire` is exactly the canonical CBOR of a two-item array of a byte
    string and a SIG_BYTES byte string (what `canonical.decode` would return for it), else
    None and the caller runs the full decoding gate, which refuses it or reads another shape.

    Why: that outer layer is three items, and the generic gate's scan and cbor2 call cost
    a tenth of decoding a small change set; the body inside still goes through the gate.
    Shortest heads only, as the gate requires: a length under 24 in the head byte, then
    1, 2 or 4 length bytes each only for lengths too big for the shorter form."""
    n = len(wire)
    sig_at = n - SIG_BYTES
    if n < 4 + SIG_BYTES or wire[0] != 0x82 or wire[sig_at - 2:sig_at] != _SIG_HEAD:
        return None
    head = wire[1]
    if 0x40 <= head < 0x58:
        size, at, least = head - 0x40, 2, 0
    elif head == 0x58:
        size, at, least = wire[2], 3, 24
    elif head == 0x59:
        size, at, least = int.from_bytes(wire[2:4], "big"), 4, 1 << 8
    elif head == 0x5A:
        size, at, least = int.from_bytes(wire[2:6], "big"), 6, 1 << 16
    else:
        return None
    if size < least or at + size != sig_at - 2:
        return None
    return [wire[at:at + size], wire[sig_at:]]


def _canonical(data: bytes, what: str, max_items: int = canonical.MAX_ITEMS) -> Any:
    try:
        return canonical.decode(data, what=what, max_items=max_items)
    except MalformedChangeSet:
        raise
    except ChangeSetError as exc:
        raise MalformedChangeSet(str(exc)) from None


@dataclass(frozen=True)
class ChangeSet:
    """One device's signed batch of ops on one environment. Treat as immutable."""

    space: str
    env: str
    device: str
    seq: int
    hlc: int
    deps: Mapping[str, int]
    prev_hash: bytes
    ops: tuple = field(repr=False)
    model: int = 1
    sig: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if not _matches(self.space, _SPACE_RE, _SPACES_OK):
            raise _bad("space", f"expected 32 lowercase hex characters, got {self.space!r:.80}")
        env = self.env
        if type(env) is not str or not 1 <= len(env) <= MAX_ENV_CHARS or not env.isprintable():
            raise _bad("env", f"expected 1..{MAX_ENV_CHARS} printable characters, got {env!r:.80}")
        _check_device(self.device, "device")
        _check_int(self.seq, "seq", 1, MAX_SEQ)
        _check_int(self.hlc, "hlc", 0, MAX_HLC)
        _check_int(self.model, "model", 1, MAX_MODEL)

        if type(self.deps) is not dict and not isinstance(self.deps, Mapping):
            raise _bad(
                "deps", f"expected a map of device id to seq, got {type(self.deps).__name__}"
            )
        if len(self.deps) > MAX_DEPS:
            raise ChangeSetTooLarge(
                f"change set deps lists {len(self.deps)} devices, over the {MAX_DEPS} limit"
            )
        deps: dict[str, int] = {}
        for device, seq in self.deps.items():
            _check_device(device, "deps")
            deps[device] = _check_int(seq, f"deps[{device}]", 1, MAX_SEQ)
        if deps.get(self.device, 0) >= self.seq:
            raise _bad(
                "deps",
                f"claims the author had seen its own seq {deps[self.device]} before writing "
                f"seq {self.seq}",
            )
        object.__setattr__(self, "deps", MappingProxyType(deps))

        prev = self.prev_hash
        if type(prev) is not bytes and not isinstance(prev, bytes | bytearray | memoryview):
            raise _bad("prev_hash", f"expected bytes, got {type(prev).__name__}")
        prev = bytes(prev)
        if self.seq == 1 and prev:
            raise _bad("prev_hash", "must be empty for the first change set of a chain (seq 1)")
        if self.seq > 1 and len(prev) != HASH_BYTES:
            raise _bad(
                "prev_hash",
                f"expected the {HASH_BYTES}-byte sha256 of seq {self.seq - 1}, got {len(prev)} bytes",
            )
        object.__setattr__(self, "prev_hash", prev)

        sig = self.sig
        if type(sig) is not bytes and not isinstance(sig, bytes | bytearray | memoryview):
            raise _bad("sig", f"expected bytes, got {type(sig).__name__}")
        sig = bytes(sig)
        if sig and len(sig) != SIG_BYTES:
            raise _bad(
                "sig", f"expected a {SIG_BYTES}-byte Ed25519 signature, got {len(sig)} bytes"
            )
        object.__setattr__(self, "sig", sig)

        object.__setattr__(self, "ops", _normalise_ops(self.ops))

    def __hash__(self) -> int:
        return hash((self.space, self.env, self.device, self.seq, self.hlc, self.sig))

    # -- identity -------------------------------------------------------------------------

    @property
    def key(self) -> tuple[str, int]:
        """`(device, seq)`: unique within one `(space, env)` unless the device equivocates."""
        return (self.device, self.seq)

    @property
    def hash(self) -> bytes:
        """sha256 of the body bytes: what the next set in the chain names as `prev_hash`."""
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hashlib.sha256(self.body_bytes()).digest()
            self.__dict__["_hash"] = cached
        return cached

    def _label(self) -> str:
        return f"change set {self.device}#{self.seq} of environment {self.env}"

    # -- bytes ----------------------------------------------------------------------------

    def body_bytes(self) -> bytes:
        """The canonical CBOR body: everything but the signature. What is signed and hashed."""
        cached = self.__dict__.get("_body")
        if cached is not None:
            return cached
        try:
            ops_bytes = encode_ops(list(self.ops))
        except Exception as exc:  # e.g. a str holding a lone surrogate
            raise _bad("ops", f"cannot be encoded as CBOR ({exc})") from None
        if len(ops_bytes) > MAX_OPS_BYTES:
            raise ChangeSetTooLarge(
                f"{self._label()}: ops encode to {len(ops_bytes)} bytes, over the "
                f"{MAX_OPS_BYTES} byte limit; split the edit"
            )
        body: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "s": bytes.fromhex(self.space),
            "e": self.env,
            "d": self.device,
            "n": self.seq,
            "h": self.hlc,
            "deps": dict(self.deps),
            "p": self.prev_hash,
            "m": self.model,
        }
        if len(ops_bytes) > COMPRESS_THRESHOLD:
            body["z"] = zlib.compress(ops_bytes, ZLIB_LEVEL)
        else:
            body["o"] = list(self.ops)
        data = canonical.encode(body)
        if len(data) > MAX_CHANGESET_BYTES:
            raise ChangeSetTooLarge(
                f"{self._label()}: {len(data)} bytes even compressed, over the "
                f"{MAX_CHANGESET_BYTES} byte limit; split the edit"
            )
        self.__dict__["_body"] = data
        return data

    def encode(self) -> bytes:
        """The wire form: canonical CBOR of `[body_bytes, sig]`. The set must be signed."""
        cached = self.__dict__.get("_wire")
        if cached is not None:  # decoded: these very bytes (canonical, checked on the way in)
            return cached
        if not self.sig:
            raise SignatureError(f"{self._label()} is unsigned: sign it before encoding")
        wire = canonical.encode([self.body_bytes(), self.sig])
        if len(wire) > MAX_CHANGESET_BYTES:
            raise ChangeSetTooLarge(
                f"{self._label()}: {len(wire)} bytes, over the {MAX_CHANGESET_BYTES} byte limit"
            )
        return wire

    @classmethod
    def decode(cls, wire: bytes) -> ChangeSet:
        """Parse and check a wire-form change set. Does not verify the signature."""
        if type(wire) is not bytes and not isinstance(wire, bytes | bytearray | memoryview):
            raise MalformedChangeSet(f"change set: expected bytes, got {type(wire).__name__}")
        wire = bytes(wire)
        if len(wire) > MAX_CHANGESET_BYTES:
            raise ChangeSetTooLarge(
                f"change set of {len(wire)} bytes is over the {MAX_CHANGESET_BYTES} byte limit"
            )
        outer = _split_wire(wire)
        if outer is None:  # not the one shape a valid change set has: the gate says why
            outer = _canonical(wire, "change set", WIRE_ITEMS)
        return cls.from_outer(wire, outer)

    @classmethod
    def from_outer(cls, wire: bytes, outer: Any,
                   body_map: dict[Any, Any] | None = None) -> ChangeSet:
        """`decode`, for a caller that already passed `wire` through the decoding gate (with
        at most WIRE_ITEMS items: `outer`) and, optionally, its body too (with at most
        MAX_BODY_ITEMS items: `body_map`), so the same bytes are not decoded twice (the relay
        envelope check reads the slot from the body first, issue 17)."""
        if (
            type(outer) is not list
            or len(outer) != 2
            or type(outer[0]) is not bytes
            or type(outer[1]) is not bytes
        ):
            raise MalformedChangeSet("change set: expected [body bytes, signature bytes]")
        body, sig = outer
        if len(sig) != SIG_BYTES:
            raise _bad(
                "sig", f"expected a {SIG_BYTES}-byte Ed25519 signature, got {len(sig)} bytes"
            )
        cs = cls(**_parse_body(body, body_map), sig=sig)
        cs.__dict__["_body"] = body  # hash and verify use the bytes that were signed
        cs.__dict__["_wire"] = wire  # and encode() gives back the bytes that came
        return cs

    # -- signatures -----------------------------------------------------------------------

    def sign(self, private_key: Ed25519PrivateKey) -> ChangeSet:
        """A copy of this change set signed with the device's Ed25519 private key."""
        if not isinstance(private_key, Ed25519PrivateKey):
            raise SignatureError(
                f"signing needs an Ed25519 private key, got {type(private_key).__name__}"
            )
        sig = private_key.sign(SIGNING_CONTEXT + self.body_bytes())
        signed = copy.copy(self)  # keeps the cached body; fields were checked already
        signed.__dict__.pop("_wire", None)  # (the wire bytes hold the old signature)
        object.__setattr__(signed, "sig", sig)
        return signed

    def verify(self, public_key: bytes | Ed25519PublicKey) -> None:
        """Raise `SignatureError` unless `sig` is this body signed by `public_key`."""
        if type(public_key) is bytes and len(public_key) == PUBLIC_KEY_BYTES:
            key = _public_key(public_key)  # (the store's case, first: ABC checks are slow)
        elif isinstance(public_key, Ed25519PublicKey):
            key = public_key
        elif isinstance(public_key, bytes | bytearray | memoryview):
            if len(public_key) != PUBLIC_KEY_BYTES:
                raise SignatureError(
                    f"device public key must be {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}"
                )
            key = _public_key(bytes(public_key))
        else:
            raise SignatureError(
                f"device public key must be bytes or Ed25519PublicKey, got {type(public_key).__name__}"
            )
        if not self.sig:
            raise SignatureError(f"{self._label()} is unsigned")
        try:
            key.verify(self.sig, SIGNING_CONTEXT + self.body_bytes())
        except InvalidSignature:
            raise SignatureError(
                f"signature on {self._label()} does not verify with device {self.device}'s key: "
                "the change set was altered or signed by another key"
            ) from None


#: Device public keys kept parsed (`_public_key`): a catch-up verifies thousands of change
#: sets by the same few authors, and parsing the 32 bytes each time cost a fifth as much as
#: the signature check itself. Past this many distinct keys the memo starts over.
MAX_PUBLIC_KEYS_KEPT = 1024
_PUBLIC_KEYS: dict[bytes, Ed25519PublicKey] = {}


def _public_key(raw: bytes) -> Ed25519PublicKey:
    """The Ed25519 public key of `raw` (PUBLIC_KEY_BYTES long), parsed once per process."""
    key = _PUBLIC_KEYS.get(raw)
    if key is None:
        try:
            key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:  # not remembered: a refusal costs nothing later
            raise SignatureError(f"device public key is not a valid Ed25519 key ({exc})") from None
        if len(_PUBLIC_KEYS) >= MAX_PUBLIC_KEYS_KEPT:
            _PUBLIC_KEYS.clear()
        _PUBLIC_KEYS[raw] = key
    return key


def ops_item_cap(compressed_bytes: int) -> int:
    """Most CBOR items compressed ops of `compressed_bytes` may decode to (see
    OPS_ITEMS_PER_COMPRESSED_BYTE), never above the gate's own cap."""
    return min(canonical.MAX_ITEMS,
               OPS_ITEMS_FLOOR + OPS_ITEMS_PER_COMPRESSED_BYTE * compressed_bytes)


def _inflate(z: bytes) -> bytes:
    """Decompress ops, stopping as soon as the output passes `MAX_OPS_BYTES`."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(z, MAX_OPS_BYTES + 1)
    except zlib.error as exc:
        raise _bad("z", f"compressed ops are corrupt ({exc})") from None
    if len(out) > MAX_OPS_BYTES:
        raise ChangeSetTooLarge(
            f"change set ops inflate past the {MAX_OPS_BYTES} byte limit; refused unread"
        )
    if not inflater.eof:
        raise _bad("z", "compressed ops are truncated")
    if inflater.unused_data:
        raise _bad("z", "trailing bytes after the compressed ops")
    return out


def _parse_body(body: bytes, m: Any = None) -> dict[str, Any]:
    """Fields of a canonical body map (`m`: `body` already through the gate with at most
    MAX_BODY_ITEMS items, or None to decode it here); the ChangeSet constructor checks their
    values."""
    if m is None:
        m = _canonical(body, "change set body", MAX_BODY_ITEMS)
    if type(m) is not dict:
        raise MalformedChangeSet("change set body: expected a map")
    version = m.get("v")
    if type(version) is not int:
        raise _bad("v", "format version missing or not an int")
    if version != FORMAT_VERSION:
        raise UnknownFormatVersion(
            f"change set format version {version} is not readable by this mocksync (it reads "
            f"version {FORMAT_VERSION}); upgrade mocksync on the older device"
        )
    has_o, has_z = "o" in m, "z" in m
    if has_o == has_z:
        raise MalformedChangeSet(
            "change set body: needs exactly one of o (ops) or z (compressed ops)"
        )
    expected = _BODY_KEYS | {"o" if has_o else "z"}
    if set(m) != expected:
        extra = sorted(repr(k) for k in set(m) - expected)
        absent = sorted(repr(k) for k in expected - set(m))
        raise MalformedChangeSet(
            f"change set body: unexpected keys {extra or 'none'}, missing keys {absent or 'none'}"
        )
    space = m["s"]
    if type(space) is not bytes or len(space) != SPACE_ID_BYTES:
        raise _bad("s", f"expected a {SPACE_ID_BYTES}-byte space id")
    if type(m["p"]) is not bytes:
        raise _bad("prev_hash", f"expected bytes, got {type(m['p']).__name__}")
    if has_o:
        ops = m["o"]
        if type(ops) is not list:
            raise _bad("o", f"expected a list of ops, got {type(ops).__name__}")
        # The gate proved `body` canonical, so the ops' encoding is a part of it: a body of
        # at most COMPRESS_THRESHOLD bytes needs no re-encode to know its ops fit inline.
        if len(body) > COMPRESS_THRESHOLD and len(encode_ops(ops)) > COMPRESS_THRESHOLD:
            raise _bad("o", f"ops over {COMPRESS_THRESHOLD} bytes must be sent compressed (z)")
    else:
        z = m["z"]
        if type(z) is not bytes:
            raise _bad("z", f"expected compressed bytes, got {type(z).__name__}")
        ops_bytes = _inflate(z)
        if len(ops_bytes) <= COMPRESS_THRESHOLD:
            raise _bad("z", f"ops of {COMPRESS_THRESHOLD} bytes or less must be sent inline (o)")
        ops = _canonical(ops_bytes, "change set ops", ops_item_cap(len(z)))
        if type(ops) is not list:
            raise _bad("z", f"expected a list of ops, got {type(ops).__name__}")
    return {
        "space": space.hex(),
        "env": m["e"],
        "device": m["d"],
        "seq": m["n"],
        "hlc": m["h"],
        "deps": m["deps"],
        "prev_hash": m["p"],
        "ops": ops,
        "model": m["m"],
    }


def verify_chain(prev: ChangeSet | None, cs: ChangeSet) -> None:
    """Raise `ChainError` unless `cs` directly extends `prev` (or starts a chain if None)."""
    if prev is None:
        if cs.seq != 1 or cs.prev_hash:
            raise ChainError(
                f"{cs._label()} needs its predecessor #{cs.seq - 1}, which is not available"
            )
        return
    if (prev.space, prev.env, prev.device) != (cs.space, cs.env, cs.device):
        raise ChainError(
            f"{cs._label()} is not in the same chain as {prev._label()} "
            "(space, environment or device differ)"
        )
    if cs.seq != prev.seq + 1:
        raise ChainError(f"{cs._label()} does not follow #{prev.seq}: expected seq {prev.seq + 1}")
    if cs.prev_hash != prev.hash:
        raise ChainError(
            f"{cs._label()} does not link to #{prev.seq}: its prev_hash names another "
            "predecessor (a forked or altered chain)"
        )


def make_changeset(
    private_key: Ed25519PrivateKey,
    *,
    space: str,
    env: str,
    device: str,
    hlc: int,
    ops: Iterable[list],
    deps: Mapping[str, int] | None = None,
    prev: ChangeSet | None = None,
    model: int = 1,
) -> ChangeSet:
    """Build and sign the next change set of a chain (`prev` None starts it at seq 1)."""
    cs = ChangeSet(
        space=space,
        env=env,
        device=device,
        seq=1 if prev is None else prev.seq + 1,
        hlc=hlc,
        deps=dict(deps or {}),
        prev_hash=b"" if prev is None else prev.hash,
        ops=tuple(ops),
        model=model,
    )
    verify_chain(prev, cs)
    return cs.sign(private_key)
