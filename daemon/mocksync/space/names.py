"""Names in a membership log, sealed so the relay cannot read them (issue 12).

Why: the relay must verify every space's membership log (who may connect and write), so it
stores the entries; before, they carried the space's name, each member's name and each
device's name in the clear, so whoever runs the relay (or reads its disk) learned who works
with whom on what. Now an entry of format 2 carries each name as a sealed blob; the
signature covers the blob, so the relay still verifies the whole log, it just cannot read
the names. Members open them for display.

Key: every member must read every name, including names written before it joined and
before any key rotation, so the key is derived from content-key generation 1 (which the join
handshake seals to every joiner, and which rotations never replace; the relay env tags use
it the same way):

    names_key = HKDF-SHA256(ikm = content key generation 1, salt = space id (16 bytes),
                            info = "mocksync/member-names/v1")
    sealed    = nonce (12 random bytes) | ChaCha20-Poly1305(names_key, nonce, UTF-8 name,
                aad = canonical CBOR ["mocksync/sealed-name/v1", space id, role, id])

`role` is "space", "member" or "device" and `id` the member or device id ("" for the space),
so a sealed name cannot be moved onto another person. A removed device still holds generation
1 and can read names it already knew; it learns no content written after its removal.

Compatibility: entries of format 1 (names in the clear, written by earlier versions) are still
read, so existing spaces keep working; the relay already holds those names and sealing new
entries cannot take them back. Every entry made from now on that carries a name is format 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..changes.canonical import encode
from .errors import MembershipError
from .fields import MAX_NAME_CHARS, name_problem

NAMES_INFO = b"mocksync/member-names/v1"
NAME_CONTEXT = "mocksync/sealed-name/v1"
#: The content key generation the names key derives from (see the module docstring).
NAMES_KEY_GENERATION = 1
NONCE_BYTES = 12
AEAD_TAG_BYTES = 16
#: Smallest and largest sealed name: a 1-byte name, and MAX_NAME_CHARS of 4-byte UTF-8.
MIN_SEALED_NAME_BYTES = NONCE_BYTES + 1 + AEAD_TAG_BYTES
MAX_SEALED_NAME_BYTES = NONCE_BYTES + 4 * MAX_NAME_CHARS + AEAD_TAG_BYTES
ROLES = ("space", "member", "device")
KEY_BYTES = 32


def names_key(space_id: bytes, keys_by_gen: Mapping[int, bytes]) -> bytes | None:
    """The space's names key, or None when generation 1 of its content key is not held."""
    key = keys_by_gen.get(NAMES_KEY_GENERATION)
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        return None
    return HKDF(hashes.SHA256(), KEY_BYTES, space_id, NAMES_INFO).derive(key)


def _aad(space_id: bytes, role: str, ident: str) -> bytes:
    if role not in ROLES:
        raise ValueError(f"a sealed name belongs to a space, member or device, not {role!r}")
    return encode([NAME_CONTEXT, space_id, role, ident])


def seal_name(key: bytes, space_id: bytes, role: str, ident: str, name: str) -> bytes:
    """`name` sealed for the members of the space (checked as a display name first)."""
    problem = name_problem(name)
    if problem:
        raise MembershipError(f"{role} name {problem}")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, name.encode("utf-8"),
                                                 _aad(space_id, role, ident))


def sealed_name_problem(blob: object) -> str | None:
    """Why `blob` cannot be a sealed name (its shape only: anyone, the relay included, can
    check it), or None."""
    if not isinstance(blob, bytes):
        return "must be a sealed name (bytes)"
    if not MIN_SEALED_NAME_BYTES <= len(blob) <= MAX_SEALED_NAME_BYTES:
        return (f"is a sealed name of {len(blob)} bytes, outside "
                f"{MIN_SEALED_NAME_BYTES}..{MAX_SEALED_NAME_BYTES}")
    return None


def open_name(key: bytes | None, space_id: bytes, role: str, ident: str, blob: bytes
              ) -> str | None:
    """The name sealed in `blob`, or None when it cannot be read (no key, altered, moved to
    another person, or not a valid display name once opened)."""
    if key is None or sealed_name_problem(blob) is not None:
        return None
    try:
        raw = ChaCha20Poly1305(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                            _aad(space_id, role, ident))
        name = raw.decode("utf-8")
    except (InvalidTag, UnicodeDecodeError):
        return None
    return None if name_problem(name) else name


def placeholder(role: str, ident: str, space_id: bytes) -> str:
    """What stands for a name that cannot be read: ids only (what the relay shows)."""
    if role == "space":
        return f"space {space_id.hex()[:12]}"
    if role == "member":
        return f"member {ident[:8]}"
    return f"device {ident}"


__all__ = [
    "MAX_SEALED_NAME_BYTES",
    "MIN_SEALED_NAME_BYTES",
    "NAMES_INFO",
    "names_key",
    "open_name",
    "placeholder",
    "seal_name",
    "sealed_name_problem",
]
