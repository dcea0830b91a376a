"""Signed challenge (device -> relay) and signed signaling payloads (device -> device).

Why challenge-response with the device key: the relay already holds, from each space's signed
membership log, every member device's Ed25519 public key, so a device proves who it is by
signing a fresh relay nonce; no password, token or account exists for anyone to steal. The
signed bytes carry a domain-separation prefix so a device signature made here can never be
replayed as a change set, a membership entry or a signal, and they include the device id so
one signature cannot be claimed for another device id.

Why signals are signed end to end: the relay forwards WebRTC offers/answers between devices on
different networks and must not be able to sit in the middle (SECURITY.md 4). The sender signs
`[space, from, to, body]` with its device key; the receiver verifies it against the key in its
own copy of the space's membership log, so the relay can only drop signals, not forge or
redirect them. The relay checks nothing but that both devices are online members of the space.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..changes.canonical import decode, encode
from ..errors import ChangeSetError, ValidationError
from ..space.identity import verify_signature

AUTH_DOMAIN = b"mocksync/relay-auth/v1\x00"
SIGNAL_DOMAIN = b"mocksync/relay-signal/v1\x00"


class SignalError(ValidationError):
    """A signaling payload that is malformed, not for us, or not signed by its sender."""

    code = "signal"


def auth_bytes(nonce: bytes, device: str) -> bytes:
    """What a device signs to answer the relay's challenge."""
    return AUTH_DOMAIN + nonce + device.encode("ascii")


def sign_challenge(identity, nonce: bytes) -> bytes:
    return identity.sign(auth_bytes(nonce, identity.device_id))


def verify_challenge(sign_key: bytes, nonce: bytes, device: str, sig: bytes) -> bool:
    return verify_signature(sign_key, auth_bytes(nonce, device), sig)


def _signal_signed(space: str, sender: str, to: str, body: bytes) -> bytes:
    return SIGNAL_DOMAIN + encode([space, sender, to, body])


def seal_signal(identity, space: str, to: str, body: bytes) -> bytes:
    """A signaling payload for device `to`, signed by this device."""
    sig = identity.sign(_signal_signed(space, identity.device_id, to, body))
    return encode({"b": body, "sig": sig})


def open_signal(sign_keys: Mapping[str, bytes], space: str, sender: str, me: str,
                payload: bytes) -> bytes:
    """The body of a signal from `sender`, after checking its signature against the sender's
    key in our copy of the space's membership (`sign_keys`: device id -> public key)."""
    try:
        obj = decode(payload, what="signal payload")
    except ChangeSetError as exc:
        raise SignalError(str(exc)) from None
    if type(obj) is not dict or set(obj) != {"b", "sig"} or type(obj["b"]) is not bytes \
            or type(obj["sig"]) is not bytes:
        raise SignalError("signal payload: expected {b: body bytes, sig: signature bytes}")
    key = sign_keys.get(sender)
    if key is None:
        raise SignalError(f"signal from {sender}, which is not a device of this space: ignored")
    if not verify_signature(key, _signal_signed(space, sender, me, obj["b"]), obj["sig"]):
        raise SignalError(f"signal claiming to be from {sender} is not signed by it: ignored")
    return obj["b"]


__all__ = [
    "AUTH_DOMAIN",
    "SIGNAL_DOMAIN",
    "SignalError",
    "auth_bytes",
    "open_signal",
    "seal_signal",
    "sign_challenge",
    "verify_challenge",
]
