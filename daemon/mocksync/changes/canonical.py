"""Deterministic bytes for everything that is signed or hashed, and the one gate untrusted
bytes pass through to become values.

Signatures must verify on every device, so the bytes they cover cannot depend on dict order,
float formatting or library version. We use canonical CBOR as cbor2 writes it with
`canonical=True`: shortest heads, definite lengths, map keys sorted shortest encoding first and
then bytewise (the "length-first" order of RFC 7049 section 3.9, which is what cbor2 does, not
RFC 8949's plain bytewise order), and each float in the narrowest of half/single/double that
keeps its value exactly, every NaN as 0xf97e00. `decode()` accepts exactly the bytes that
`encode()` of the decoded value would give back, so a verifier and a signer never disagree.

Why a gate of our own in front of cbor2 (issue 12): every byte string a peer, the relay or a
joiner sends us (relay frames before and after auth, LAN signaling bodies, join messages,
invite tokens, change sets, membership entries, and our own stored data read back) is decoded
here, so this is where a hostile input must stop. A general CBOR decoder honours semantic tags:
value sharing (tags 28/29) lets 159 bytes describe a value of 2^40 nodes, a rational (tag 30)
of two 400 KB integers costs seconds of gcd, and every new tag a library learns is new attack
surface. Our format uses none of them, so `scan()` walks the raw bytes first, without building
anything, and refuses:

- any semantic tag (major type 6), at its head, before its content is looked at;
- indefinite lengths, reserved and non-shortest heads, simple values other than
  false/true/null;
- floats not in their shortest exact form (a NaN other than 0xf97e00 included);
- map keys out of canonical order, and a key equal to the one before it (a duplicate);
- a declared length beyond the bytes that remain (a 5-byte head claiming 4 GiB is refused in
  O(1), never allocated);
- nesting deeper than `MAX_DEPTH` and more than the caller's item cap (`MAX_ITEMS` by default);
- anything but exactly one item (trailing bytes).

Every check is O(1) per item (a map key is compared once with the key before it) and each item
is at least one byte, so the scan is linear in the input and the refusal of a bad input is
immediate. Only then does cbor2 build the value, with its own strict options on: duplicate
keys by value (1, 1.0 and true are one key to Python) and invalid UTF-8 are refused there.

Why the scan proves canonical form itself (issues 15 and 17): the gate used to re-encode every
decoded value and compare, which cost as much as the decode and ran on every frame a daemon
receives. The scan's checks are the same statement made on the bytes: tests/test_canonical_scan.py
keeps the old decode-then-re-encode gate as an oracle and shows with hypothesis that both accept
the same inputs. The one difference is on purpose: two NaN map keys (equal bytes, but NaN is
not equal to itself, so cbor2 kept both) were accepted, and are now a refused duplicate.
Integers are 64-bit on the wire: `encode()` refuses larger ones rather than writing a bignum
tag that `decode()` would refuse.
"""

from __future__ import annotations

import io
import struct
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
#: A document longer than this is not built by one cbor2 call: every array or map whose
#: encoding is longer is built element by element, each element by its own call (or, if it is
#: itself that long, the same way), so no single call holds the GIL for more than about this
#: many bytes of containers (issue 15: one 15 MB op list in one call held it ~760 ms). 64 KiB
#: is a few milliseconds of cbor2; strings and byte strings are one call whatever their size
#: (a copy, not a build).
SLICE_BYTES = 64 * 1024
#: Most bytes cbor2 reads ahead per call when it builds the elements of a sliced container.
_READ_SIZE = 4096

#: Simple values the format uses: false, true, null (undefined and the rest are refused).
_SIMPLE_OK = frozenset((20, 21, 22))
#: IEEE 754 half precision: exponent bits, mantissa bits, and the one NaN `encode()` writes
#: (cbor2 writes every NaN, whatever its sign or payload, as 0xf97e00).
_HALF_EXPONENT = 0x7C00
_HALF_MANTISSA = 0x03FF
_HALF_NAN = 0x7E00
_HALF = struct.Struct(">e")
_SINGLE = struct.Struct(">f")
_DOUBLE = struct.Struct(">d")
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


def _fits(fmt: struct.Struct, value: float) -> bool:
    """Does `value` survive a round trip through the narrower float format `fmt`?"""
    try:
        narrow: float = fmt.unpack(fmt.pack(value))[0]
    except OverflowError:
        return False
    return narrow == value


def _shortest_float(info: int, raw: bytes) -> bool:
    """Is the float `raw` (half, single or double by the head's `info`) the form `encode()`
    writes for its value: the narrowest width that keeps it exactly, NaN only as 0xf97e00?"""
    if info == 25:
        h = int.from_bytes(raw, "big")
        return (h & _HALF_EXPONENT) != _HALF_EXPONENT or not h & _HALF_MANTISSA \
            or h == _HALF_NAN
    if info == 26:
        v: float = _SINGLE.unpack(raw)[0]
        return v == v and not _fits(_HALF, v)
    v = _DOUBLE.unpack(raw)[0]
    return v == v and not _fits(_SINGLE, v)


def scan(data: bytes, *, what: str = "document", max_items: int = MAX_ITEMS,
         max_depth: int = MAX_DEPTH, spans: dict[int, int] | None = None,
         span_bytes: int = SLICE_BYTES) -> int:
    """Check that `data` is exactly one item of canonical CBOR, without building it; the item
    count.

    Proves the form `encode()` writes (see the module docstring for the list), so `decode()`
    needs no re-encode. Raises DecodeRefused (DecodeLimit for limits) naming the byte offset
    of the problem. With `spans`, also fills it with start offset -> end offset of every
    non-empty array or map longer than `span_bytes` (what the sliced decode splits); on a
    refusal its content means nothing."""
    n = len(data)
    i = 0
    items = 0
    remaining = 1  # items still expected in the innermost open container (or at top level)
    in_map = False  # is the innermost open container a map?
    key_at = 0  # where the current key of that map starts
    prev_key: bytes | None = None  # that map's previous key, as encoded
    opened = 0  # where the innermost open container starts
    # the enclosing containers' state
    stack: list[tuple[int, bool, int, bytes | None, int]] = []
    while True:
        if remaining == 0:
            if not stack:
                break
            if spans is not None and i - opened > span_bytes:
                spans[opened] = i
            remaining, in_map, key_at, prev_key, opened = stack.pop()
            continue
        if i >= n:
            raise DecodeRefused(f"{what}: truncated (ends inside an item at byte {n})")
        at = i
        if in_map:
            if remaining & 1:  # a value starts, so its key is data[key_at:at]
                key = data[key_at:at]
                if prev_key is not None:
                    lk, lp = len(key), len(prev_key)
                    if lk < lp or (lk == lp and key <= prev_key):
                        raise DecodeRefused(
                            f"{what}: map key at byte {key_at} "
                            + ("repeats the key before it" if key == prev_key else
                               "is out of canonical order (shorter keys first, then bytewise)")
                            + " (not canonical)")
                prev_key = key
            else:
                key_at = at
        ib = data[i]
        major = ib >> 5
        info = ib & 31
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
                end = i + (1 << (info - 24))  # half, single, double float
                if end > n:
                    raise DecodeRefused(f"{what}: truncated float at byte {at}")
                if not _shortest_float(info, data[i:end]):
                    raise DecodeRefused(f"{what}: float at byte {at} is not in its shortest "
                                        "exact form (not canonical)")
                i = end
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
            stack.append((remaining, in_map, key_at, prev_key, opened))
            if len(stack) > max_depth:
                raise DecodeLimit(f"{what}: nested deeper than {max_depth} levels (at byte {at})")
            remaining = count
            in_map = major == 5
            prev_key = None
            opened = at
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

    The size is checked before anything else, and `scan()` (which proves the canonical form
    and holds the item and depth caps) before any value is built; cbor2 then builds it with
    its own strict options (no duplicate keys, valid UTF-8); past `SLICE_BYTES`, each long
    array or map element by element (same value, see `_SlicedDecode`). Every refusal is a
    DecodeRefused (a ChangeSetError)."""
    if type(data) is not bytes and not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeRefused(f"{what}: expected bytes, got {type(data).__name__}")
    limit = min(max_bytes, MAX_DOCUMENT_BYTES)
    if len(data) > limit:
        raise DecodeLimit(f"{what}: {len(data)} bytes is over the {limit} byte limit")
    data = bytes(data)
    slice_bytes = SLICE_BYTES
    spans: dict[int, int] | None = {} if len(data) > slice_bytes else None
    scan(data, what=what, max_items=max_items, spans=spans, span_bytes=slice_bytes)
    try:
        if not spans:
            return cbor2.loads(data, tag_hook=_refuse_tag, semantic_decoders=_NO_TAGS,
                               max_depth=MAX_DEPTH + 1, allow_indefinite=False,
                               allow_duplicate_keys=False)
        return _SlicedDecode(data, spans, what).item(0)  # the root is in `spans`
    except DecodeRefused:
        raise
    except Exception as exc:  # cbor2 raises several types for malformed input (bad UTF-8...)
        raise DecodeRefused(f"{what}: not valid CBOR ({exc.__class__.__name__}: {exc})") from None


def _container_head(data: bytes, at: int) -> tuple[bool, int, int]:
    """(is a map, entry count, offset after the head) of the array/map `scan()` accepted
    at `at`."""
    ib = data[at]
    info = ib & 31
    if info < 24:
        return ib >> 5 == 5, info, at + 1
    size = 1 << (info - 24)
    return ib >> 5 == 5, int.from_bytes(data[at + 1:at + 1 + size], "big"), at + 1 + size


class _SlicedDecode:
    """The value of `data` (already accepted by `scan()`), built with one cbor2 call per
    element of each container listed in `spans` and one call for every other item, so the GIL
    is let go between calls. Gives what `cbor2.loads(data)` with the gate's options gives: the
    same values and types, map keys in the same order, a map key that is an array or map as
    the immutable value cbor2 makes of it, a key equal by value to one before it refused."""

    def __init__(self, data: bytes, spans: dict[int, int], what: str) -> None:
        self.data = data
        self.spans = spans
        self.what = what
        self.fp = io.BytesIO(data)

    def make_decoder(self, read_size: int) -> Any:
        """A cbor2 decoder on the stream (its `decode()` leaves the stream just after the item
        it read, whatever `read_size`, the bytes it buffers per call)."""
        return cbor2.CBORDecoder(
            self.fp, tag_hook=_refuse_tag, semantic_decoders=_NO_TAGS,
            max_depth=MAX_DEPTH + 1, allow_indefinite=False, allow_duplicate_keys=False,
            read_size=read_size)

    def item(self, at: int, decoder: Any = None) -> Any:
        """The item at `at`, where the stream stands (read by `decoder` unless it is a long
        container); leaves the stream just after it."""
        end = self.spans.get(at)
        if end is None:
            return decoder.decode()
        is_map, count, i = _container_head(self.data, at)
        fp, item = self.fp, self.item
        fp.seek(i)
        # cbor2 buffers `read_size` bytes per call: about one element's worth, so an array of
        # tiny items does not copy 4 KiB per item and one of big items is not read bytewise
        child = self.make_decoder(max(1, min(_READ_SIZE, (end - i) // count)))
        out: Any
        if not is_map:
            out = [item(fp.tell(), child) for _ in range(count)]
        else:
            out = {}
            for _ in range(count):
                key = self.key(fp.tell(), child)
                value = item(fp.tell(), child)
                if key in out:
                    raise DecodeRefused(f"{self.what}: map at byte {at} repeats a key by value "
                                        "(not canonical)")
                out[key] = value
        if fp.tell() != end:  # scan() and cbor2 disagree on where the item ends: refuse
            raise DecodeRefused(f"{self.what}: item at byte {at} did not end where it was "
                                "scanned to")
        return out

    def key(self, at: int, decoder: Any) -> Any:
        """The map key at `at`, where the stream stands: an array or map key is built inside a
        one-entry map, as cbor2 builds keys (a tuple, a frozen dict), not as a value."""
        key = decoder.decode()
        if self.data[at] >> 5 in (4, 5):
            key = next(iter(cbor2.loads(b"\xa1" + self.data[at:self.fp.tell()] + b"\xf6",
                                        tag_hook=_refuse_tag, semantic_decoders=_NO_TAGS,
                                        max_depth=MAX_DEPTH + 2, allow_indefinite=False,
                                        allow_duplicate_keys=False)))
        return key


__all__ = [
    "DecodeLimit",
    "DecodeRefused",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_ITEMS",
    "SLICE_BYTES",
    "decode",
    "encode",
    "scan",
]
