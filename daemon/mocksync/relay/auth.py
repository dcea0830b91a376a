"""Signed challenge (device -> relay) and signed signaling payloads (device -> device).

Why challenge-response with the device key: the relay already holds, from each space's signed
membership log, every member device's Ed25519 public key, so a device proves who it is by
signing a fresh relay nonce; no password, token or account exists for anyone to steal. The
signed bytes carry a domain-separation prefix so a device signature made here can never be
replayed as a change set, a membership entry or a signal, and they include the device id so
one signature cannot be claimed for another device id.

Why signals are signed end to end: the relay forwards WebRTC offers/answers between devices on
different networks and must not be able to sit in the middle (docs/design/security.md §4). The sender signs
`[space, from, to, body]` with its device key; the receiver verifies it against the key in its
own copy of the space's membership log, so the relay can only drop signals, not forge or
redirect them. The relay checks nothing but that both devices are online members of the space.

Why the challenge names the relay (issue 12): a signature over a bare nonce proves "device D
answered this nonce" to whoever holds the nonce, so a relay a device was pointed at (an old
one, a malicious one) could pass another relay's challenge through and log in there as that
device. Each relay therefore has its own persistent Ed25519 key (`RELAY_KEY_FILE` in its data
dir, mode 0600) and signs every challenge it issues (`prove_relay`: the nonce and the device it
is talking to), and the device signs `[nonce, device, relay key, origin]` where origin is the
relay's address exactly as the device dialled it. A relay accepts an answer only when the key
is its own and the origin is one of its addresses (its configured public URLs, else the Host
the client sent). The device pins the relay key per space and relay address the first time
that relay admits it (TOFU, stored with the space; issue 17: a space may name several
independent relays) and refuses to answer a relay announcing another key at that address: a
signature given to one relay is worthless at any other.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..changes.canonical import decode, encode
from ..errors import ChangeSetError, ValidationError
from ..fsatomic import put_file
from ..space.identity import verify_signature
from .errors import RelayKeyError, SignalError

AUTH_DOMAIN = b"mocksync/relay-auth/v2\x00"
SIGNAL_DOMAIN = b"mocksync/relay-signal/v1\x00"
#: What a relay signs to prove it holds the key it announces (never a device message).
RELAY_PROOF_DOMAIN = b"mocksync/relay-proof/v1\x00"
#: The relay's private key, raw 32 bytes, in its data dir (mode 0600).
RELAY_KEY_FILE = "relay_key"
RELAY_KEY_BYTES = 32
#: Longest relay origin (`scheme://host:port`) a device may name in its answer.
MAX_ORIGIN_CHARS = 300
#: Spaces a wrong-relay sentence names (the rest are counted).
MAX_NAMED_SPACES = 5
#: Characters of a relay key fingerprint shown to people.
FINGERPRINT_CHARS = 16
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMES = {"http": "http", "ws": "http", "https": "https", "wss": "https"}


def relay_origin(url: str) -> str:
    """`scheme://host:port` of a relay URL as a device dials it: the scheme as http/https (ws
    and wss are the same servers), host lowercased, the port always written out, no path.
    The same relay reached by two spellings of one address gets one origin."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"relay address {url[:80]!r} is not a URL: {exc}") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    host = (parts.hostname or "").lower()
    if scheme is None or not host:
        raise ValidationError(
            f"relay address {url[:80]!r} must look like http://host:port or https://host:port")
    if ":" in host:
        host = f"[{host}]"
    origin = f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"
    if len(origin) > MAX_ORIGIN_CHARS:
        raise ValidationError(f"relay address is over {MAX_ORIGIN_CHARS} characters")
    return origin


def origin_accepted(origin: str, host_header: str | None, public_urls: Iterable[str] = ()
                    ) -> bool:
    """Does a device's `origin` name this relay? With public URLs configured, only those do
    (a relay behind a proxy knows its names; a forwarder's name is not one of them). Without,
    the Host header of the request must name the same host and port (HTTP carries what the
    client dialled; the port defaults to the origin scheme's when the header omits it)."""
    try:
        mine = {relay_origin(u) for u in public_urls}
    except ValidationError:
        return False
    if mine:
        return origin in mine
    if not host_header:
        return False
    try:
        scheme = origin.split("://", 1)[0]
        claimed = urlsplit(origin)
        told = urlsplit(f"{scheme}://{host_header.strip()}")
        told_port = told.port or _DEFAULT_PORTS.get(scheme)
        return (claimed.hostname or "") == (told.hostname or "").lower() \
            and claimed.port == told_port
    except ValueError:
        return False


def auth_bytes(nonce: bytes, device: str, relay_key: bytes, origin: str) -> bytes:
    """What a device signs to answer a relay's challenge: bound to that relay's key and the
    address the device dialled, so the signature opens no other relay."""
    return AUTH_DOMAIN + encode([nonce, device, relay_key, origin])


def sign_challenge(identity, nonce: bytes, relay_key: bytes, origin: str) -> bytes:
    return identity.sign(auth_bytes(nonce, identity.device_id, relay_key, origin))


def verify_challenge(sign_key: bytes, nonce: bytes, device: str, relay_key: bytes, origin: str,
                     sig: bytes) -> bool:
    return verify_signature(sign_key, auth_bytes(nonce, device, relay_key, origin), sig)


def proof_bytes(nonce: bytes, device: str, relay_key: bytes) -> bytes:
    """What a relay signs with its own key in each challenge it sends to `device`."""
    return RELAY_PROOF_DOMAIN + encode([nonce, device, relay_key])


def relay_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def prove_relay(key: Ed25519PrivateKey, nonce: bytes, device: str) -> bytes:
    return key.sign(proof_bytes(nonce, device, relay_public(key)))


def check_relay_proof(relay_key: bytes, nonce: bytes, device: str, proof: bytes) -> bool:
    return verify_signature(relay_key, proof_bytes(nonce, device, relay_key), proof)


def fingerprint(relay_key: bytes) -> str:
    """A short, readable name of a relay key (for sentences and `status`)."""
    digest = hashlib.sha256(b"mocksync/relay-key-fp\x00" + relay_key).digest()
    return base64.b32encode(digest).decode("ascii")[:FINGERPRINT_CHARS]


def pin_refusal(pins: Mapping[str, bytes | None], names: Mapping[str, str], announced: bytes,
                url: str) -> str | None:
    """The sentence refusing a relay whose key differs from one a space pinned, or None.

    `pins`: space id -> the relay key pinned for it (None: none yet); `names`: space id ->
    its name for the sentence. Pure: the client decides before it signs anything."""
    wrong = sorted(s for s, k in pins.items() if k is not None and k != announced)
    if not wrong:
        return None
    labels = [names.get(s) or s[:12] for s in wrong]
    shown = labels[:MAX_NAMED_SPACES]
    more = f" (and {len(wrong) - len(shown)} more)" if len(wrong) > len(shown) else ""
    which = ("space " + repr(shown[0])) if len(wrong) == 1 else \
        ("spaces " + ", ".join(repr(x) for x in shown) + more)
    return (f"the relay at {url} presents key {fingerprint(announced)}, but {which} pinned key "
            f"{fingerprint(pins[wrong[0]] or b'')} the first time it synced: this is not the "
            "relay the space uses (or its key was replaced); nothing was sent. If the relay was "
            f"reinstalled on purpose, run `mocksync space unpin-relay {' '.join(shown)}`")


def load_relay_key(data_dir: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The relay's persistent key, made on first start (raw 32 bytes, mode 0600)."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / RELAY_KEY_FILE
    if not path.exists():
        raw = Ed25519PrivateKey.generate().private_bytes_raw()
        # Exclusive: never replaces a key another process made meanwhile.
        with contextlib.suppress(FileExistsError):
            put_file(path, raw, 0o600, exclusive=True)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RelayKeyError(f"cannot read the relay key {path}: {exc.strerror or exc}") from None
    if len(raw) != RELAY_KEY_BYTES:
        raise RelayKeyError(
            f"the relay key {path} holds {len(raw)} bytes, not {RELAY_KEY_BYTES}: it is damaged; "
            "restore it from a backup (a new key makes every device refuse this relay)")
    return Ed25519PrivateKey.from_private_bytes(raw)


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
    "MAX_NAMED_SPACES",
    "RELAY_KEY_FILE",
    "RELAY_PROOF_DOMAIN",
    "SIGNAL_DOMAIN",
    "RelayKeyError",
    "SignalError",
    "auth_bytes",
    "check_relay_proof",
    "fingerprint",
    "load_relay_key",
    "origin_accepted",
    "pin_refusal",
    "proof_bytes",
    "prove_relay",
    "relay_origin",
    "relay_public",
    "open_signal",
    "seal_signal",
    "sign_challenge",
    "verify_challenge",
]
