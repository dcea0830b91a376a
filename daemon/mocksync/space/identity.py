"""This device's identity: an Ed25519 signing key, an X25519 key for sealed secrets, and a
typeable device id derived from the public signing key.

Why the id is a hash of the key (Syncthing's idea): nobody can claim an id without holding the
matching private key, so the id alone is enough to pin a device when a person types it. The id
is 19 Crockford base32 symbols (95 bits of SHA-256, far beyond any second-preimage search) plus
one check symbol, shown as four groups of five: `ABCDE-FGHIJ-KLMNP-QRSTV`.

Why this check symbol: the 20 symbols, read as elements of GF(32), must satisfy
sum(c_i * a^i) = 0 for a primitive element `a`. Changing one symbol by e != 0 changes the sum by
e * a^i != 0, and swapping two symbols at positions i != j changes it by
(c_i - c_j)(a^i - a^j) != 0 because a^i != a^j for i, j < 31. So every single typo and every
transposition (adjacent or not) is caught, which a Luhn mod-32 check does not quite achieve.

Pure: the key files (PKCS#8 PEM under `Home.keys`) and the metadata in the home's documents
are read and written by `mocksync.spaceio.identityfiles` (issue 14: space does no file I/O).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..errors import MocksyncError
from .errors import DeviceIdError, IdentityError
from .fields import check_name, exact_map, get_bytes, get_name, get_str

#: Crockford base32: no I, L, O, U (I/L read as 1, O as 0 when parsing).
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Symbols of hash in a device id, and the total with the check symbol.
ID_DATA_SYMBOLS = 19
ID_SYMBOLS = ID_DATA_SYMBOLS + 1
ID_GROUP = 5
#: Length of a formatted id (20 symbols + 3 dashes).
ID_TEXT_CHARS = ID_SYMBOLS + ID_SYMBOLS // ID_GROUP - 1
#: Longest input `parse_device_id` looks at (spaces and dashes included).
MAX_ID_INPUT_CHARS = 64

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

SIGN_KEY_FILE = "device-ed25519.pem"
BOX_KEY_FILE = "device-x25519.pem"
IDENTITY_TABLE = "identity"

_ID_DOMAIN = b"mocksync/device-id/v1\x00"
_GF_POLY = 0b100101  # x^5 + x^2 + 1, primitive over GF(2)
_ALIASES = {"I": "1", "L": "1", "O": "0"}


# ---------------------------------------------------------------- device ids (pure)


def _gf_mul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if a & 0b100000:
            a ^= _GF_POLY
    return r


def _gf_pow(a: int, n: int) -> int:
    r = 1
    for _ in range(n % 31):
        r = _gf_mul(r, a)
    return r


_WEIGHTS = [_gf_pow(2, i) for i in range(ID_SYMBOLS)]
_INV_LAST = _gf_pow(2, 31 - (ID_SYMBOLS - 1))


def _syndrome(values: list[int]) -> int:
    s = 0
    for v, w in zip(values, _WEIGHTS, strict=False):
        s ^= _gf_mul(v, w)
    return s


def _check_symbol(data: list[int]) -> int:
    return _gf_mul(_syndrome(data), _INV_LAST)


def _format(values: list[int]) -> str:
    text = "".join(ALPHABET[v] for v in values)
    return "-".join(text[i : i + ID_GROUP] for i in range(0, len(text), ID_GROUP))


def device_id_for(sign_public: bytes) -> str:
    """The device id of an Ed25519 public key (32 raw bytes)."""
    if not isinstance(sign_public, bytes) or len(sign_public) != PUBLIC_KEY_BYTES:
        raise DeviceIdError("a device id is made from a 32-byte Ed25519 public key")
    digest = hashlib.sha256(_ID_DOMAIN + sign_public).digest()
    n = int.from_bytes(digest[:12], "big") >> (96 - 5 * ID_DATA_SYMBOLS)
    data = [(n >> (5 * (ID_DATA_SYMBOLS - 1 - i))) & 31 for i in range(ID_DATA_SYMBOLS)]
    return _format(data + [_check_symbol(data)])


def parse_device_id(text: str) -> str:
    """Normalise a typed device id (any case, dashes or spaces anywhere, I/L for 1, O for 0)
    to its canonical `XXXXX-XXXXX-XXXXX-XXXXX` form, or raise DeviceIdError saying why."""
    if not isinstance(text, str):
        raise DeviceIdError("a device id must be text")
    if len(text) > MAX_ID_INPUT_CHARS:
        raise DeviceIdError(f"a device id has {ID_SYMBOLS} characters; this is {len(text)} long")
    raw = "".join(ch for ch in text.upper() if ch not in "- \t")
    raw = "".join(_ALIASES.get(ch, ch) for ch in raw)
    bad = sorted({ch for ch in raw if ch not in ALPHABET})
    if bad:
        raise DeviceIdError(
            f"device id {text.strip()!r} contains {bad[0]!r}, which is not a device id character "
            f"(0-9 and A-Z without I, L, O, U)"
        )
    if len(raw) != ID_SYMBOLS:
        raise DeviceIdError(
            f"device id {text.strip()!r} has {len(raw)} characters, expected {ID_SYMBOLS} "
            f"(like ABCDE-FGHIJ-KLMNP-QRSTV)"
        )
    values = [ALPHABET.index(ch) for ch in raw]
    if _syndrome(values) != 0:
        raise DeviceIdError(
            f"device id {text.strip()!r} has a typo: its check character does not match; "
            "copy it again from the other device's `mocksync init` output"
        )
    return _format(values)


def is_device_id(text: Any) -> TypeGuard[str]:
    """True for a canonical (already formatted) device id with a valid check character."""
    if not isinstance(text, str) or len(text) != ID_TEXT_CHARS:
        return False
    try:
        return parse_device_id(text) == text
    except DeviceIdError:
        return False


# ---------------------------------------------------------------- keys and signatures (pure)


def verify_signature(sign_public: bytes, data: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `data` by `sign_public`."""
    if not (isinstance(sign_public, bytes) and len(sign_public) == PUBLIC_KEY_BYTES):
        return False
    if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_BYTES):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(sign_public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def _raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class DevicePublic:
    """What other devices know about a device: its id, name and two public keys."""

    device_id: str
    name: str
    sign_key: bytes
    box_key: bytes

    def to_cbor(self) -> dict[str, Any]:
        return {"id": self.device_id, "name": self.name, "sign": self.sign_key, "box": self.box_key}

    @classmethod
    def from_cbor(cls, obj: Any, what: str, err: type[MocksyncError]) -> DevicePublic:
        """Validate a device record from another device: exact fields, sizes, and the id must be
        the hash of the signing key (so a record cannot pair someone's id with another key)."""
        d = exact_map(obj, {"id", "name", "sign", "box"}, what, err)
        device_id = get_str(d, "id", what, err, max_chars=ID_TEXT_CHARS)
        name = get_name(d, "name", what, err)
        sign = get_bytes(d, "sign", what, err, length=PUBLIC_KEY_BYTES)
        box = get_bytes(d, "box", what, err, length=PUBLIC_KEY_BYTES)
        if device_id_for(sign) != device_id:
            raise err(f"{what}: device id {device_id[:30]!r} is not the hash of its signing key")
        return cls(device_id, name, sign, box)


class Identity:
    """A device's private keys and metadata. Holds secrets: never log or print it."""

    def __init__(self, name: str, signing_key: Ed25519PrivateKey, box_key: X25519PrivateKey,
                 created: float, member_name: str | None = None) -> None:
        self.name = check_name(name, "device name", IdentityError)
        self.signing_key = signing_key
        self.box_key = box_key
        self.created = float(created)
        self.member_name = check_name(member_name or name, "member name", IdentityError)
        self.sign_public = _raw_public(signing_key)
        self.box_public = _raw_public(box_key)
        self.device_id = device_id_for(self.sign_public)

    @classmethod
    def generate(cls, name: str, *, now: float, member_name: str | None = None) -> Identity:
        return cls(name, Ed25519PrivateKey.generate(), X25519PrivateKey.generate(), now, member_name)

    @classmethod
    def from_seeds(cls, name: str, sign_seed: bytes, box_seed: bytes, *, now: float = 0.0,
                   member_name: str | None = None) -> Identity:
        """Deterministic identity from two 32-byte seeds (tests and fuzzers)."""
        return cls(name, Ed25519PrivateKey.from_private_bytes(sign_seed),
                   X25519PrivateKey.from_private_bytes(box_seed), now, member_name)

    @property
    def public(self) -> DevicePublic:
        return DevicePublic(self.device_id, self.name, self.sign_public, self.box_public)

    def sign(self, data: bytes) -> bytes:
        return self.signing_key.sign(data)

    def metadata(self) -> dict[str, Any]:
        """Public metadata as stored in the documents database (no secrets)."""
        return {
            "name": self.name,
            "member_name": self.member_name,
            "device_id": self.device_id,
            "sign_public": self.sign_public.hex(),
            "box_public": self.box_public.hex(),
            "created": self.created,
        }

    def __repr__(self) -> str:  # never show key material
        return f"Identity(name={self.name!r}, device_id={self.device_id!r})"


__all__ = [
    "ALPHABET",
    "BOX_KEY_FILE",
    "DevicePublic",
    "ID_SYMBOLS",
    "Identity",
    "SIGN_KEY_FILE",
    "device_id_for",
    "is_device_id",
    "parse_device_id",
    "verify_signature",
]
