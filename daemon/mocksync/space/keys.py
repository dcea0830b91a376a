"""The space content key, payload encryption, sealed boxes and the mDNS space tag.

Why a symmetric content key per space: every change set's payload is encrypted once and can be
stored by the relay and forwarded to any member; the relay never holds the key (docs/design/security.md §3).
Why generations: removing a device rotates the key (docs/design/security.md §2), but data written before the
rotation must stay readable, so members keep every generation and each payload names the one it
was sealed with.

Formats (all integers big-endian):
- payload: `01 | gen:u32 | nonce:12 | ChaCha20-Poly1305(key[gen], nonce, plaintext, aad=header+aad)`.
  Nonces are random; 96 bits is safe for far more messages than one key generation will see.
- sealed box to a device: `01 | ephemeral X25519 public:32 | ChaCha20-Poly1305(k, 0^12, secret,
  aad=context)` with `k = HKDF-SHA256(X25519(eph, recipient), salt=eph_pub|recipient_pub)`.
  The key is fresh per box, so the fixed nonce is never reused. `context` binds what the secret
  is (space id and generation for a content key) so a box cannot be replayed as another.
- space tag for mDNS (docs/design/security.md §5): HMAC-SHA256 under a key derived from a space secret, over
  the announcing device's nonce, cut to 8 bytes of hex. Without the secret the tag is noise; a
  fresh nonce per announcement keeps tags of one space from being linked across announcements.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..changes.canonical import encode
from .errors import KeyMaterialError, SpaceLimitError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
PAYLOAD_VERSION = 1
SEALED_VERSION = 1
#: Largest plaintext `seal_payload` takes (a 15 MB environment plus headroom).
MAX_PAYLOAD_BYTES = 32 * 1024 * 1024
#: Largest secret a sealed box carries (content keys are 32 bytes).
MAX_SEALED_SECRET_BYTES = 1024
#: Largest key generation number (u32 in the payload header).
MAX_GENERATION = 2**32 - 1
#: Bytes of HMAC kept in an mDNS space tag (hex doubles it).
SPACE_TAG_BYTES = 8
MIN_TAG_NONCE_BYTES = 8
MAX_TAG_NONCE_BYTES = 64

_PAYLOAD_HEADER = struct.Struct(">BI")
_SEALED_OVERHEAD = 1 + 32 + TAG_BYTES
_SEALED_INFO = b"mocksync/sealed-box/v1"
_TAG_INFO = b"mocksync/mdns-space-tag/v1"


def new_content_key() -> bytes:
    """32 fresh random bytes: one generation of a space's content key."""
    return os.urandom(KEY_BYTES)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise KeyMaterialError(f"a content key is {KEY_BYTES} bytes")


def _check_gen(gen: int) -> None:
    if not isinstance(gen, int) or isinstance(gen, bool) or not 1 <= gen <= MAX_GENERATION:
        raise KeyMaterialError(f"key generation must be 1..{MAX_GENERATION}")


# ---------------------------------------------------------------- payloads


def seal_payload(key: bytes, gen: int, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Encrypt and authenticate `plaintext` under content key generation `gen`.

    `aad` is authenticated but not stored: the opener must pass the same bytes (e.g. the
    change set header), which ties the ciphertext to its context."""
    _check_key(key)
    _check_gen(gen)
    if len(plaintext) > MAX_PAYLOAD_BYTES:
        raise SpaceLimitError(
            f"payload of {len(plaintext)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit"
        )
    header = _PAYLOAD_HEADER.pack(PAYLOAD_VERSION, gen)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + ChaCha20Poly1305(key).encrypt(nonce, bytes(plaintext), header + aad)


def payload_generation(blob: bytes) -> int:
    """The key generation a sealed payload names (without opening it)."""
    if not isinstance(blob, bytes) or len(blob) < _PAYLOAD_HEADER.size + NONCE_BYTES + TAG_BYTES:
        raise KeyMaterialError("encrypted payload is truncated")
    version, gen = _PAYLOAD_HEADER.unpack_from(blob)
    if version != PAYLOAD_VERSION:
        raise KeyMaterialError(
            f"encrypted payload has format version {version}; this build reads {PAYLOAD_VERSION}"
        )
    return gen


def open_payload(keys_by_gen: Mapping[int, bytes], blob: bytes, aad: bytes = b"") -> bytes:
    """Decrypt a payload sealed by `seal_payload`, picking the key by its generation."""
    gen = payload_generation(blob)
    if len(blob) > MAX_PAYLOAD_BYTES + 64:
        raise SpaceLimitError(f"encrypted payload of {len(blob)} bytes is over the limit")
    key = keys_by_gen.get(gen)
    if key is None:
        raise KeyMaterialError(
            f"payload is encrypted with key generation {gen}, which this device does not have "
            "(it was rotated before this device joined, or this device was removed)"
        )
    _check_key(key)
    header = blob[: _PAYLOAD_HEADER.size]
    nonce = blob[_PAYLOAD_HEADER.size : _PAYLOAD_HEADER.size + NONCE_BYTES]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, blob[_PAYLOAD_HEADER.size + NONCE_BYTES :],
                                             header + aad)
    except InvalidTag:
        raise KeyMaterialError(
            "encrypted payload failed authentication: it was altered, or belongs to another context"
        ) from None


# ---------------------------------------------------------------- sealed boxes


def _box_key(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, eph_pub + recipient_pub, _SEALED_INFO).derive(shared)


def seal_to(recipient_box_public: bytes, secret: bytes, context: bytes) -> bytes:
    """Encrypt `secret` so only the holder of the X25519 private key can read it."""
    if not isinstance(recipient_box_public, bytes) or len(recipient_box_public) != 32:
        raise KeyMaterialError("a device's sealing key is a 32-byte X25519 public key")
    if len(secret) > MAX_SEALED_SECRET_BYTES:
        raise SpaceLimitError(f"sealed secrets are limited to {MAX_SEALED_SECRET_BYTES} bytes")
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_box_public))
    except ValueError:
        raise KeyMaterialError("the device's sealing key is not a usable X25519 key") from None
    key = _box_key(shared, eph_pub, recipient_box_public)
    return bytes([SEALED_VERSION]) + eph_pub + ChaCha20Poly1305(key).encrypt(
        b"\x00" * NONCE_BYTES, secret, context)


def open_sealed(box_private: X25519PrivateKey, blob: bytes, context: bytes) -> bytes:
    """Open a box made by `seal_to` for this device; KeyMaterialError if it is not for us."""
    if not isinstance(blob, bytes) or len(blob) < _SEALED_OVERHEAD:
        raise KeyMaterialError("sealed secret is truncated")
    if len(blob) > _SEALED_OVERHEAD + MAX_SEALED_SECRET_BYTES:
        raise SpaceLimitError("sealed secret is over the size limit")
    if blob[0] != SEALED_VERSION:
        raise KeyMaterialError(f"sealed secret has format version {blob[0]}; expected {SEALED_VERSION}")
    eph_pub = blob[1:33]
    own_pub = box_private.public_key().public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)
    try:
        shared = box_private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        key = _box_key(shared, eph_pub, own_pub)
        return ChaCha20Poly1305(key).decrypt(b"\x00" * NONCE_BYTES, blob[33:], context)
    except (InvalidTag, ValueError):
        raise KeyMaterialError(
            "sealed secret could not be opened: it is for another device, another context, or altered"
        ) from None


def content_key_context(space_id: bytes, gen: int) -> bytes:
    """What a sealed content key is bound to: this space and this generation."""
    return encode(["mocksync/content-key/v1", bytes(space_id), gen])


def seal_content_key(recipient_box_public: bytes, space_id: bytes, gen: int, key: bytes) -> bytes:
    _check_key(key)
    _check_gen(gen)
    return seal_to(recipient_box_public, key, content_key_context(space_id, gen))


def open_content_key(box_private: X25519PrivateKey, space_id: bytes, gen: int, blob: bytes) -> bytes:
    key = open_sealed(box_private, blob, content_key_context(space_id, gen))
    _check_key(key)
    return key


# ---------------------------------------------------------------- rotation


@dataclass(frozen=True)
class Rotation:
    """A new key generation: the key itself (kept by the rotating device) and one sealed copy
    per remaining device (published in the `rotate_key` membership entry)."""

    generation: int
    key: bytes
    sealed: dict[str, bytes]


def rotate(keys_by_gen: Mapping[int, bytes], space_id: bytes,
           recipients: Mapping[str, bytes]) -> Rotation:
    """Make the next generation and seal it to each recipient (device id -> X25519 public).

    Old generations are untouched: the caller keeps them to read data sealed before."""
    gen = max(keys_by_gen, default=0) + 1
    _check_gen(gen)
    if not recipients:
        raise KeyMaterialError("a key rotation needs at least one remaining device")
    key = new_content_key()
    sealed = {dev: seal_content_key(pub, space_id, gen, key) for dev, pub in sorted(recipients.items())}
    return Rotation(gen, key, sealed)


# ---------------------------------------------------------------- mDNS space tag


def _tag_key(secret: bytes) -> bytes:
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise KeyMaterialError("a space tag needs a secret of at least 16 bytes")
    return HKDF(hashes.SHA256(), 32, None, _TAG_INFO).derive(secret)


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes) or not MIN_TAG_NONCE_BYTES <= len(nonce) <= MAX_TAG_NONCE_BYTES:
        raise KeyMaterialError(
            f"a device nonce for space tags is {MIN_TAG_NONCE_BYTES}..{MAX_TAG_NONCE_BYTES} bytes"
        )


def space_tag(secret: bytes, device_nonce: bytes) -> str:
    """Short hex tag announcing membership of a space on mDNS, recognisable only by holders of
    `secret` (the space's content key of a generation)."""
    _check_nonce(device_nonce)
    mac = hmac.new(_tag_key(secret), b"tag\x00" + device_nonce, sha256).digest()
    return mac[:SPACE_TAG_BYTES].hex()


def tag_matches(secret: bytes, device_nonce: bytes, tag: str) -> bool:
    """True iff `tag` was made by `space_tag(secret, device_nonce)` (constant-time compare)."""
    if not isinstance(tag, str) or len(tag) != 2 * SPACE_TAG_BYTES:
        return False
    try:
        expected = space_tag(secret, device_nonce)
    except KeyMaterialError:
        return False
    return hmac.compare_digest(expected.encode(), tag.lower().encode("utf-8", "replace"))


__all__ = [
    "KEY_BYTES",
    "MAX_PAYLOAD_BYTES",
    "Rotation",
    "content_key_context",
    "new_content_key",
    "open_content_key",
    "open_payload",
    "open_sealed",
    "payload_generation",
    "rotate",
    "seal_content_key",
    "seal_payload",
    "seal_to",
    "space_tag",
    "tag_matches",
]
