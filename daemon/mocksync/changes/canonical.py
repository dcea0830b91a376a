"""Deterministic bytes for everything that is signed or hashed, and the one gate untrusted
bytes pass through to become values.

Signatures must verify on every device, so the bytes they cover cannot depend on dict order,
float formatting or library version. We use canonical CBOR (RFC 8949 section 4.2.1 "core
deterministic encoding": shortest lengths, map keys sorted by their encoded bytes, shortest
float that keeps the value) as implemented by cbor2, and refuse to decode anything that would
not re-encode to the same bytes, so a verifier and a signer can never disagree.

Why a gate of our own in front of cbor2 (issue 12): every byte string a peer, the relay or a
joiner sends us (relay frames before and after auth, LAN signaling bodies, join messages,
invite tokens, change sets, membership entries, and our own stored data read back) is decoded
here, so this is where a hostile input must stop. A general CBOR decoder honours semantic tags:
value sharing (tags 28/29) lets 159 bytes describe a value of 2^40 nodes that the canonical
re-encode then expands, a rational (tag 30) of two 400 KB integers costs seconds of gcd, and
every new tag a library learns is new attack surface. Our format uses none of them, so
`scan()` walks the raw bytes first, without building anything, and refuses:

- any semantic tag (major type 6), at its head, before its content is looked at;
- indefinite lengths, reserved and non-shortest heads, simple values other than
  false/true/null (and floats, which the format uses);
- a declared length beyond the bytes that remain (a 5-byte head claiming 4 GiB is refused in
  O(1), never allocated);
- nesting deeper than `MAX_DEPTH` and more than the caller's item cap (`MAX_ITEMS` by default);
- anything but exactly one item (trailing bytes).

Every check is O(1) per item and each item is at least one byte, so the scan is linear in the
input and the refusal of a bad input is immediate. Only then does cbor2 build the value (with
its own defences on too), and the canonical re-encode check runs on a value whose size is
bounded by the input. Integers are 64-bit on the wire: `encode()` refuses larger ones rather
than writing a bignum tag that `decode()` would refuse.
"""

from __future__ import annotations

from typing import Any

import cbor2

from ..errors import ChangeSetError
from .errors import DecodeLimit, DecodeRefused

#: Hard ceiling on any canonical document we decode (a change set chunk is far smaller).
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
#: Deepest nesting of arrays/maps in any document (a change set op may nest 64 levels, inside a
#: body, an op list and an op: 100 leaves room and stops stack-depth attacks long before 400).
MAX_DEPTH = 100
#: Most CBOR items (every scalar, string, array, map, key and value counts) in one document,
#: unless the caller passes a tighter cap. Each item takes at least one byte, so this also
#: bounds how much a document of MAX_DOCUMENT_BYTES can make us build.
MAX_ITEMS = 16 * 1024 * 1024
#: Integers travel as CBOR major types 0/1: -2^64 .. 2^64-1 (no bignum tags).
MIN_INT = -(1 << 64)
MAX_INT = (1 << 64) - 1

#: Simple values the format uses: false, true, null (undefined and the rest are refused).
_SIMPLE_OK = frozenset((20, 21, 22))
#: Well-known tags, only to name them in a refusal.
_TAG_NAMES = {
    0: "date/time string", 1: "epoch date/time", 2: "positive bignum", 3: "negative bignum",
    4: "decimal fraction", 5: "bigfloat", 24: "embedded CBOR", 25: "string reference",
    28: "shareable value", 29: "shared reference", 30: "rational number", 256: "string-ref "
    "namespace", 258: "set", 55799: "self-described CBOR",
}


def encode(obj: Any) -> bytes:
    """Canonical CBOR of `obj` (dicts, lists, str, bytes, int, float, bool, None).

    Integers must lie in MIN_INT..MAX_INT: cbor2 would write larger ones as bignum tags, which
    `decode()` refuses; the modules that build documents from outside values (change set ops)
    check that range before they get here."""
    try:
        return cbor2.dumps(obj, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ChangeSetError(f"cannot encode value: {exc}") from None


def scan(data: bytes, *, what: str = "document", max_items: int = MAX_ITEMS,
         max_depth: int = MAX_DEPTH) -> int:
    """Check the structure of one CBOR item in `data` without building it; the item count.

    Raises DecodeRefused (DecodeLimit for limits) naming the byte offset of the problem."""
    n = len(data)
    i = 0
    items = 0
    remaining = 1  # items still expected in the innermost open container (or at top level)
    stack: list[int] = []  # `remaining` of each enclosing container
    while True:
        if remaining == 0:
            if not stack:
                break
            remaining = stack.pop()
            continue
        if i >= n:
            raise DecodeRefused(f"{what}: truncated (ends inside an item at byte {n})")
        ib = data[i]
        major = ib >> 5
        info = ib & 31
        at = i
        i += 1
        remaining -= 1
        items += 1
        if items > max_items:
            raise DecodeLimit(f"{what}: more than {max_items} items")
        if major == 7:
            if info < 24:
                if info not in _SIMPLE_OK:
                    raise DecodeRefused(f"{what}: simple value {info} at byte {at} is not used "
                                        "by the format (only false, true and null are)")
                continue
            if info == 25 or info == 26 or info == 27:
                i += 1 << (info - 24)  # half, single, double float
                if i > n:
                    raise DecodeRefused(f"{what}: truncated float at byte {at}")
                continue
            raise DecodeRefused(f"{what}: simple/break byte 0x{ib:02x} at byte {at} is not "
                                "allowed (no simple values, no indefinite lengths)")
        if info < 24:
            arg = info
        elif info < 28:
            size = 1 << (info - 24)
            if i + size > n:
                raise DecodeRefused(f"{what}: truncated head at byte {at}")
            arg = int.from_bytes(data[i:i + size], "big")
            i += size
            if arg < (24 if size == 1 else 1 << (4 * size)):
                raise DecodeRefused(f"{what}: non-shortest length/value head at byte {at} "
                                    "(not canonical)")
        elif info == 31:
            raise DecodeRefused(f"{what}: indefinite-length item at byte {at} (not canonical)")
        else:
            raise DecodeRefused(f"{what}: reserved head 0x{ib:02x} at byte {at}")
        if major <= 1:
            continue
        if major <= 3:  # byte / text string: the declared length must be present already
            if arg > n - i:
                raise DecodeRefused(
                    f"{what}: a string at byte {at} declares {arg} bytes but only {n - i} "
                    "remain")
            i += arg
            continue
        if major == 6:
            name = _TAG_NAMES.get(arg)
            label = f"tag {arg}" + (f" ({name})" if name else "")
            raise DecodeRefused(f"{what}: CBOR semantic {label} at byte {at} is not used by "
                                "the format: refused")
        count = arg if major == 4 else 2 * arg
        if count > n - i:  # every item takes at least one byte
            raise DecodeRefused(
                f"{what}: a {'list' if major == 4 else 'map'} at byte {at} declares {arg} "
                f"entries but only {n - i} bytes remain")
        if count:
            stack.append(remaining)
            if len(stack) > max_depth:
                raise DecodeLimit(f"{what}: nested deeper than {max_depth} levels (at byte {at})")
            remaining = count
    if i != n:
        raise DecodeRefused(f"{what}: {n - i} trailing bytes after the item (not canonical)")
    return items


def _refuse_tag(*_args: Any) -> Any:
    raise DecodeRefused("CBOR semantic tags are not used by the format")


#: cbor2's built-in tag decoders, all replaced by a refusal (the scan already refused any tag;
#: this is the second lock, should the two ever disagree).
_NO_TAGS = {t: _refuse_tag for t in (0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 35, 36, 37, 100,
                                      256, 258, 260, 261, 270, 1004, 55799)}


def decode(data: bytes, *, what: str = "document", max_bytes: int = MAX_DOCUMENT_BYTES,
           max_items: int = MAX_ITEMS) -> Any:
    """Decode canonical CBOR; refuse non-canonical, tagged, oversized or malformed bytes.

    The size is checked before anything else, `scan()` before any value is built, and the
    canonical re-encode last. Every refusal is a DecodeRefused (a ChangeSetError)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeRefused(f"{what}: expected bytes, got {type(data).__name__}")
    limit = min(max_bytes, MAX_DOCUMENT_BYTES)
    if len(data) > limit:
        raise DecodeLimit(f"{what}: {len(data)} bytes is over the {limit} byte limit")
    data = bytes(data)
    scan(data, what=what, max_items=max_items)
    try:
        obj = cbor2.loads(data, tag_hook=_refuse_tag, semantic_decoders=_NO_TAGS,
                          max_depth=MAX_DEPTH + 1, allow_indefinite=False,
                          allow_duplicate_keys=False)
    except DecodeRefused:
        raise
    except Exception as exc:  # cbor2 raises several types for malformed input (bad UTF-8...)
        raise DecodeRefused(f"{what}: not valid CBOR ({exc.__class__.__name__}: {exc})") from None
    try:
        again = encode(obj)
    except Exception as exc:
        raise DecodeRefused(f"{what}: holds values that cannot be encoded ({exc})") from None
    if again != data:
        raise DecodeRefused(f"{what}: not in canonical form (truncated, padded or re-encoded)")
    return obj


__all__ = [
    "DecodeLimit",
    "DecodeRefused",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_ITEMS",
    "decode",
    "encode",
    "scan",
]
