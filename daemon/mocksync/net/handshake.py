"""Signed WebRTC offers and answers for LAN signaling (pure: no sockets, `now_ms` passed in).

Why signed (docs/design/security.md §4): whoever carries the SDP could swap the DTLS fingerprint in it and
sit in the middle of the data channel. So each offer and answer is signed by the device key,
names sender and recipient, and lists the DTLS fingerprints explicitly; the receiver checks
the signature against the key the verified membership log holds for that device, and that the
fingerprints in the SDP are exactly the signed ones (aiortc then refuses a DTLS peer whose
certificate does not match the SDP). An answer carries the hash of the offer it answers, so it
cannot be replayed for another offer; an offer carries a timestamp and a random nonce, and
`ReplayGuard` refuses any (device, nonce) seen within the allowed clock skew.

Wire: canonical CBOR `[body, signature]`; the signature covers `SIGNING_CONTEXT + body` (domain
separation: a device signature over a change set or a membership entry can never pass as a
signaling message, nor the reverse). Body keys:

| key  | meaning                                                     |
| ---- | ----------------------------------------------------------- |
| k    | "offer" or "answer"                                         |
| v    | signaling format version (SIGNAL_VERSION)                   |
| p    | the sender's sync protocol version                          |
| f, r | sender and recipient device ids                             |
| ts   | sender's clock, ms since the epoch                          |
| n    | 16 random bytes                                             |
| sdp  | the session description (text)                              |
| fp   | DTLS fingerprints in the SDP, as ["sha-256 AB:CD:..", ...]  |
| re   | answer only: sha256 of the offer's wire bytes               |
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .. import PROTOCOL_VERSION
from ..changes import canonical
from ..errors import ChangeSetError
from ..space.identity import is_device_id, verify_signature
from .errors import IncompatibleSignal, NotAMember, SignalError, SignalTooLarge

#: Domain-separation prefix of every signaling signature.
SIGNING_CONTEXT = b"mocksync/lan-signal/v1\x00"
#: Version of this message format.
SIGNAL_VERSION = 1
#: Largest signaling message on the wire (an SDP with a few candidates is ~1-2 KB).
MAX_SIGNAL_BYTES = 32 * 1024
#: Longest SDP accepted, in characters.
MAX_SDP_CHARS = 24 * 1024
#: Most fingerprint lines in one SDP.
MAX_FINGERPRINTS = 8
#: Longest fingerprint line value ("sha-512 " + 64 hex pairs).
MAX_FINGERPRINT_CHARS = 8 + 64 * 3
#: Accepted difference between the sender's clock and ours.
MAX_CLOCK_SKEW_MS = 120_000
#: Nonce length.
NONCE_BYTES = 16
#: Most (device, nonce) pairs remembered; when full, new offers are refused until some expire.
MAX_REMEMBERED_NONCES = 10_000

OFFER = "offer"
ANSWER = "answer"
_KEYS = {"k", "v", "p", "f", "r", "ts", "n", "sdp", "fp"}
_FP_LINE = re.compile(r"^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$", re.M)
_FP_VALUE = re.compile(r"^(sha-1|sha-224|sha-256|sha-384|sha-512) ([0-9A-F]{2}(:[0-9A-F]{2})+)$")


@dataclass(frozen=True)
class Signal:
    """A verified offer or answer."""

    kind: str
    sender: str
    recipient: str
    ts_ms: int
    nonce: bytes
    sdp: str
    fingerprints: tuple[str, ...]
    protocol: int
    answers: bytes | None
    wire: bytes

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.wire).digest()


def sdp_fingerprints(sdp: str) -> tuple[str, ...]:
    """The DTLS fingerprints an SDP declares, normalised ("sha-256 AB:..."), sorted, unique."""
    found = {f"{alg.lower()} {value.upper()}" for alg, value in _FP_LINE.findall(sdp)}
    return tuple(sorted(found))


def _check_fingerprints(fps: tuple[str, ...], what: str) -> None:
    if not fps:
        raise SignalError(f"{what}: the SDP declares no DTLS fingerprint")
    if len(fps) > MAX_FINGERPRINTS:
        raise SignalTooLarge(f"{what}: more than {MAX_FINGERPRINTS} DTLS fingerprints")
    for fp in fps:
        if len(fp) > MAX_FINGERPRINT_CHARS or not _FP_VALUE.match(fp):
            raise SignalError(f"{what}: malformed DTLS fingerprint {fp[:40]!r}")
    if not any(fp.startswith(("sha-256 ", "sha-384 ", "sha-512 ")) for fp in fps):
        raise SignalError(f"{what}: no SHA-2 DTLS fingerprint (sha-1 alone is not accepted)")


def build(
    sign: Callable[[bytes], bytes],
    *,
    kind: str,
    sender: str,
    recipient: str,
    sdp: str,
    now_ms: int,
    answers: bytes | None = None,
    nonce: bytes | None = None,
    protocol: int = PROTOCOL_VERSION,
) -> bytes:
    """Signed wire bytes of an offer (answers=None) or an answer (answers=offer hash)."""
    if kind not in (OFFER, ANSWER) or (kind == ANSWER) != (answers is not None):
        raise SignalError("an answer names the offer it answers; an offer names none")
    if len(sdp) > MAX_SDP_CHARS:
        raise SignalTooLarge(f"SDP of {len(sdp)} characters is over the {MAX_SDP_CHARS} limit")
    fps = sdp_fingerprints(sdp)
    _check_fingerprints(fps, f"our {kind}")
    body = {
        "k": kind, "v": SIGNAL_VERSION, "p": protocol, "f": sender, "r": recipient,
        "ts": int(now_ms), "n": nonce if nonce is not None else os.urandom(NONCE_BYTES),
        "sdp": sdp, "fp": list(fps),
    }
    if answers is not None:
        body["re"] = bytes(answers)
    body_bytes = canonical.encode(body)
    wire = canonical.encode([body_bytes, sign(SIGNING_CONTEXT + body_bytes)])
    if len(wire) > MAX_SIGNAL_BYTES:
        raise SignalTooLarge(f"signaling message of {len(wire)} bytes is over the limit")
    return wire


def peek_sender(wire: bytes) -> str:
    """The claimed sender of a message (unverified: only to look up its key)."""
    body = _body(wire)[0]
    sender = body.get("f")
    if not is_device_id(sender):
        raise SignalError("signaling message: field f is not a device id")
    return sender


def _body(wire: bytes) -> tuple[dict, bytes, bytes]:
    if not isinstance(wire, bytes | bytearray):
        raise SignalError("signaling message must be bytes")
    if len(wire) > MAX_SIGNAL_BYTES:
        raise SignalTooLarge(
            f"signaling message of {len(wire)} bytes is over the {MAX_SIGNAL_BYTES} byte limit"
        )
    try:
        outer = canonical.decode(bytes(wire), what="signaling message")
        if (type(outer) is not list or len(outer) != 2 or type(outer[0]) is not bytes
                or type(outer[1]) is not bytes):
            raise SignalError("signaling message: expected [body, signature]")
        body = canonical.decode(outer[0], what="signaling message body")
    except ChangeSetError as exc:
        raise SignalError(str(exc)) from None
    if type(body) is not dict:
        raise SignalError("signaling message: body is not a map")
    return body, outer[0], outer[1]


def verify(
    wire: bytes,
    *,
    me: str,
    key_of: Callable[[str], bytes | None],
    now_ms: int,
    expect_kind: str,
    expect_sender: str | None = None,
    answers: bytes | None = None,
    guard: ReplayGuard | None = None,
    protocol: int = PROTOCOL_VERSION,
) -> Signal:
    """Check everything about a received offer/answer; return it, or raise a `SignalError`.

    `key_of(device)` returns the device's signing key if it is an active member of a space
    we share with it (from the verified membership log), else None.
    """
    body, body_bytes, sig = _body(wire)
    kind = body.get("k")
    keys = _KEYS | ({"re"} if kind == ANSWER else set())
    if kind != expect_kind:
        raise SignalError(f"signaling message: expected an {expect_kind}, got {str(kind)[:20]!r}")
    if body.get("v") != SIGNAL_VERSION:
        raise IncompatibleSignal(
            f"peer uses signaling format {body.get('v')!r}, this device {SIGNAL_VERSION}; "
            "update mocksync on the older device"
        )
    if set(body) != keys:
        raise SignalError(
            f"signaling {kind}: fields {sorted(map(str, body))} are not the expected {sorted(keys)}"
        )
    sender, recipient = body["f"], body["r"]
    if not is_device_id(sender) or not is_device_id(recipient):
        raise SignalError(f"signaling {kind}: sender or recipient is not a device id")
    if recipient != me:
        raise SignalError(f"signaling {kind} is addressed to device {recipient}, not this one")
    if sender == me:
        raise SignalError(f"signaling {kind} claims to come from this device itself")
    if expect_sender is not None and sender != expect_sender:
        raise SignalError(
            f"the {kind} came from device {sender}, but device {expect_sender} was dialled"
        )
    theirs, ts, nonce, sdp, fps = body["p"], body["ts"], body["n"], body["sdp"], body["fp"]
    if type(theirs) is not int or type(ts) is not int:
        raise SignalError(f"signaling {kind}: p and ts must be integers")
    if type(nonce) is not bytes or len(nonce) != NONCE_BYTES:
        raise SignalError(f"signaling {kind}: nonce must be {NONCE_BYTES} bytes")
    if type(sdp) is not str or len(sdp) > MAX_SDP_CHARS:
        raise SignalError(f"signaling {kind}: sdp must be text of at most {MAX_SDP_CHARS} chars")
    if (type(fps) is not list or len(fps) > MAX_FINGERPRINTS
            or not all(type(f) is str for f in fps)):
        raise SignalError(f"signaling {kind}: fp must be a list of fingerprints")
    if abs(ts - now_ms) > MAX_CLOCK_SKEW_MS:
        raise SignalError(
            f"signaling {kind} from {sender} is stamped {abs(ts - now_ms) / 1000:.0f} s away "
            f"from this device's clock (limit {MAX_CLOCK_SKEW_MS // 1000} s): set both clocks "
            "right (NTP), or it is a replay"
        )
    key = key_of(sender)
    if key is None:
        raise NotAMember(
            f"device {sender} is not a member of any space this device shares with it"
        )
    if not verify_signature(key, SIGNING_CONTEXT + body_bytes, sig):
        raise SignalError(f"signaling {kind} from {sender}: signature does not verify")
    if theirs != protocol:
        where = "this device" if theirs > protocol else f"device {sender}"
        raise IncompatibleSignal(
            f"incompatible version: peer {sender} speaks protocol {theirs}, this device "
            f"{protocol}; update mocksync on {where}"
        )
    declared = tuple(sorted(fps))
    in_sdp = sdp_fingerprints(sdp)
    _check_fingerprints(declared, f"{kind} from {sender}")
    if declared != in_sdp:
        raise SignalError(
            f"{kind} from {sender}: the DTLS fingerprint in the SDP is not the signed one "
            "(someone altered the session description in transit)"
        )
    if kind == ANSWER:
        re_ = body["re"]
        if type(re_) is not bytes or answers is None or re_ != answers:
            raise SignalError(f"answer from {sender} does not answer the offer this device sent")
    if guard is not None:
        guard.check_and_remember(sender, nonce, now_ms)
    return Signal(kind, sender, recipient, ts, nonce, sdp, declared, theirs,
                  body.get("re"), bytes(wire))


class ReplayGuard:
    """Remembers (device, nonce) of accepted offers for twice the allowed clock skew."""

    def __init__(self, *, hold_ms: int = 2 * MAX_CLOCK_SKEW_MS,
                 capacity: int = MAX_REMEMBERED_NONCES) -> None:
        self.hold_ms = hold_ms
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, bytes], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, device: str, nonce: bytes, now_ms: int) -> None:
        while self._seen:
            key, at = next(iter(self._seen.items()))
            if now_ms - at < self.hold_ms:
                break
            del self._seen[key]
        key = (device, bytes(nonce))
        if key in self._seen:
            raise SignalError(f"offer from {device} was already used (replayed message)")
        if len(self._seen) >= self.capacity:
            raise SignalTooLarge("too many recent offers; try again in a few minutes")
        self._seen[key] = now_ms
