"""Per-kind caps on the frames a relay sends a daemon, checked before a frame is decoded.

Why (issue 12): the relay is trusted with ciphertext only, so a relay that is compromised, or
a machine in the middle holding a relay key the device pinned on first use, must not be able
to cost a daemon more than a frame's honest worth. Until now a relay frame was bounded only by
the generic ceilings (MAX_FRAME_BYTES, 20 MiB, and the decoding gate's 16 Mi items), and the
per-kind byte limit was checked after the whole frame had been decoded: a 20 MiB `who` or
`ok` holding millions of tiny items kept the daemon's decoder busy for seconds, on the event
loop for frames under the offload threshold. The relay protects itself the same way from its
clients (`relay.frames`, `protocol.MAX_CLIENT_FRAME_ITEMS`).

So every frame is held to its kind's caps, in time linear in at most `PEEK_ITEMS` items plus
the kind's own item cap, before anything is built:
1. `peek_kind` reads the top-level map's `t` without decoding the rest (canonical CBOR sorts
   keys shortest first, so `t` comes after at most a few one-letter keys; a frame that does not
   say its kind within PEEK_ITEMS items is refused);
2. the frame's size against the kind's byte cap (`RELAY_FRAME_CAPS`);
3. the frame's structure against the kind's item cap: `decode_relay_frame` hands the cap to
   `relay.protocol.decode`, whose decoding gate (`changes.canonical.scan`) stops at it in the
   same pass that proves the frame canonical, before cbor2 builds anything.
Why one pass (issue 17): the gate used to walk every frame here and the decoder walked it
again; per delivered frame that was a third of the daemon's decoding CPU, paid by each of
thousands of subscribers of a fan-out. `check_relay_frame` (the three checks, nothing built)
stays for tools and tests. Every cap is derived from the protocol's own field limits, so the
largest honest frame of each kind passes (tests/test_relay_gate.py builds them); a refusal is
a `RelayProtocolError` (`FrameTooLarge` for a cap) naming the limit, and the client drops the
session as for any unreadable frame.

Pure: bytes in, a kind, a message or a refusal out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..changes.canonical import scan
from ..changes.errors import DecodeLimit, DecodeRefused
from ..relay.errors import FrameTooLarge, RelayProtocolError
from ..relay.frames import MAX_AUTH_FRAME_BYTES
from ..relay.protocol import (
    MAX_BATCH_ITEMS,
    MAX_CONTROL_BYTES,
    MAX_FRAME_BYTES,
    MAX_INDEX_ENVS,
    MAX_SIGNAL_BYTES,
    MAX_SPACES_PER_SESSION,
    MAX_VV_DEVICES,
    MAX_WHO_DEVICES,
    RELAY,
    RelayMessage,
    decode,
)
from ..space.membership import MAX_LOG_ENTRIES

#: Most CBOR items walked to find a frame's kind (honest frames put at most five short
#: scalars, ten items, before `t`).
PEEK_ITEMS = 32
#: Longest kind text (`joinreq` is the longest today).
MAX_KIND_CHARS = 16
#: Items of one envelope on the wire: the list and its four fields.
ENVELOPE_ITEMS = 5
#: Items per space in a `welcome`: key, plan map (five keys, five values), or a refusal pair.
WELCOME_ITEMS_PER_SPACE = 16
#: Items of the frame around its big fields (the map, `t`, ids, flags), for every kind.
FRAME_OVERHEAD_ITEMS = 16
#: Bytes of a frame that carries only ids, a code and a sentence (ok, nack, ack, pong,
#: refused, bye): a reason of MAX_REASON_CHARS characters takes at most 2,000 bytes of UTF-8.
SMALL_FRAME_BYTES = 4 * 1024
#: Entry hashes a challenge may list: as many as entries a device could upload in one auth
#: frame (each entry is a signed document over 64 bytes).
MAX_CHALLENGE_HASHES = MAX_AUTH_FRAME_BYTES // 64
#: Items per environment of an index reply, on average: its tag, its version vector's map
#: and three (device, seq) pairs. The bound is on the whole frame: a space with fewer
#: environments may have more devices in each.
INDEX_ITEMS_PER_ENV = 8


@dataclass(frozen=True)
class FrameCap:
    """The largest frame of one kind a relay may send a daemon: bytes and CBOR items."""

    max_bytes: int
    max_items: int


_SMALL = FrameCap(SMALL_FRAME_BYTES, FRAME_OVERHEAD_ITEMS)
_ENVELOPES = FrameCap(MAX_FRAME_BYTES, ENVELOPE_ITEMS * MAX_BATCH_ITEMS + FRAME_OVERHEAD_ITEMS)
_SIGNAL = FrameCap(MAX_SIGNAL_BYTES + 1024, FRAME_OVERHEAD_ITEMS)

#: Relay -> daemon kind -> its cap. A kind the relay protocol gains needs a line here (a test
#: checks that every relay kind has one); until then it gets `UNKNOWN_KIND_CAP`.
RELAY_FRAME_CAPS: Mapping[str, FrameCap] = MappingProxyType({
    "challenge": FrameCap(MAX_AUTH_FRAME_BYTES,
                          MAX_CHALLENGE_HASHES + 2 * MAX_SPACES_PER_SESSION
                          + FRAME_OVERHEAD_ITEMS),
    "welcome": FrameCap(MAX_CONTROL_BYTES,
                        WELCOME_ITEMS_PER_SPACE * MAX_SPACES_PER_SESSION + FRAME_OVERHEAD_ITEMS),
    "refused": _SMALL,
    "ok": _SMALL,
    "nack": _SMALL,
    "ack": _SMALL,
    "pong": _SMALL,
    "bye": _SMALL,
    "index": FrameCap(MAX_FRAME_BYTES, INDEX_ITEMS_PER_ENV * MAX_INDEX_ENVS + FRAME_OVERHEAD_ITEMS),
    "batch": _ENVELOPES,
    "env": _ENVELOPES,
    "who": FrameCap(MAX_CONTROL_BYTES, 5 * MAX_WHO_DEVICES + FRAME_OVERHEAD_ITEMS),
    "signal": _SIGNAL,
    "joinreq": _SIGNAL,
    "jp": _SIGNAL,
    "entries": FrameCap(MAX_FRAME_BYTES, MAX_LOG_ENTRIES + FRAME_OVERHEAD_ITEMS),
    "snap": FrameCap(MAX_FRAME_BYTES, 4 * MAX_VV_DEVICES + FRAME_OVERHEAD_ITEMS),
})
#: A kind not in the table: small enough that the decoder's "unknown kind" refusal is cheap.
UNKNOWN_KIND_CAP = FrameCap(MAX_CONTROL_BYTES, 64)


def _head(data: bytes, i: int) -> tuple[int, int, int]:
    """(major type, argument, next offset) of the CBOR head at `i`; floats and simple values
    give their byte length as argument 0 and are skipped by the caller."""
    if i >= len(data):
        raise RelayProtocolError("relay frame: truncated before its kind")
    ib = data[i]
    major, info = ib >> 5, ib & 31
    i += 1
    if major == 7:
        width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info, 0)
        return major, 0, i + width
    if info < 24:
        return major, info, i
    if info < 28:
        size = 1 << (info - 24)
        if i + size > len(data):
            raise RelayProtocolError("relay frame: truncated before its kind")
        return major, int.from_bytes(data[i:i + size], "big"), i + size
    raise RelayProtocolError("relay frame: indefinite or reserved CBOR head before its kind")


def peek_kind(data: bytes) -> str:
    """The `t` of a relay frame, read without building anything else; walks at most
    PEEK_ITEMS items. RelayProtocolError when the frame is not a map that names its kind."""
    major, count, i = _head(data, 0)
    if major != 5:
        raise RelayProtocolError("relay frame: not a map with a kind field 't'")
    budget = PEEK_ITEMS
    for _ in range(count):
        major, length, i = _head(data, i)
        budget -= 1
        if major != 3 or i + length > len(data):
            raise RelayProtocolError("relay frame: a key that is not text")
        key = data[i:i + length]
        i += length
        if key == b"t":
            major, length, i = _head(data, i)
            if major != 3 or length > MAX_KIND_CHARS or i + length > len(data):
                raise RelayProtocolError("relay frame: its kind 't' is not a short text")
            try:
                return data[i:i + length].decode("ascii")
            except UnicodeDecodeError:
                raise RelayProtocolError("relay frame: its kind 't' is not ASCII") from None
        # skip the value: walk its items (strings skipped by length), within the budget
        pending = 1
        while pending:
            if budget <= 0:
                raise RelayProtocolError(
                    f"relay frame: does not name its kind within its first {PEEK_ITEMS} items")
            major, arg, i = _head(data, i)
            budget -= 1
            pending -= 1
            if major in (2, 3):
                i += arg
            elif major == 4:
                pending += arg
            elif major == 5:
                pending += 2 * arg
            elif major == 6:
                raise RelayProtocolError("relay frame: a CBOR tag before its kind")
            if i > len(data) or pending > len(data):
                raise RelayProtocolError("relay frame: truncated before its kind")
    raise RelayProtocolError("relay frame: not a map with a kind field 't'")


def cap_of(kind: str) -> FrameCap:
    """The cap a relay frame of `kind` is held to."""
    return RELAY_FRAME_CAPS.get(kind, UNKNOWN_KIND_CAP)


def _kind_and_cap(data: bytes) -> tuple[str, str, FrameCap]:
    """(kind, kind as shown in a refusal, its cap) of a relay frame within its byte cap:
    steps 1 and 2, in O(PEEK_ITEMS)."""
    kind = peek_kind(data)
    cap = cap_of(kind)
    shown = kind if kind.isprintable() else repr(kind)
    if len(data) > cap.max_bytes:
        raise FrameTooLarge(f"relay {shown} frame of {len(data)} bytes is over the "
                            f"{cap.max_bytes} byte limit for its kind")
    return kind, shown, cap


def decode_relay_frame(data: bytes) -> RelayMessage:
    """One frame from the relay, held to its kind's caps and decoded, in one pass of the
    decoding gate: the typed message.

    Raises FrameTooLarge (a RelayProtocolError) for a frame over its kind's byte or item cap,
    RelayProtocolError for a frame whose kind cannot be read or that does not decode."""
    if not isinstance(data, bytes | bytearray):
        raise RelayProtocolError("relay frame: expected bytes")
    data = bytes(data)
    _kind, _shown, cap = _kind_and_cap(data)
    return decode(data, sender=RELAY, max_items=cap.max_items)


def check_relay_frame(data: bytes) -> str:
    """Hold one frame from the relay to its kind's caps without building anything; its kind.
    (The client decodes with `decode_relay_frame`, which holds the same caps in one pass.)

    Raises FrameTooLarge (a RelayProtocolError) naming the kind and the limit, or
    RelayProtocolError for a frame whose kind cannot be read or that is not canonical CBOR."""
    if not isinstance(data, bytes | bytearray):
        raise RelayProtocolError("relay frame: expected bytes")
    data = bytes(data)
    kind, shown, cap = _kind_and_cap(data)
    try:
        scan(data, what=f"relay {shown} frame", max_items=cap.max_items)
    except DecodeLimit:
        raise FrameTooLarge(f"relay {shown} frame holds more than {cap.max_items} items, the "
                            "limit for its kind") from None
    except DecodeRefused as exc:
        raise RelayProtocolError(str(exc)) from None
    return kind


__all__ = [
    "PEEK_ITEMS",
    "RELAY_FRAME_CAPS",
    "UNKNOWN_KIND_CAP",
    "FrameCap",
    "cap_of",
    "check_relay_frame",
    "decode_relay_frame",
    "peek_kind",
]
