"""Deterministic bytes for everything that is signed or hashed.

Signatures must verify on every device, so the bytes they cover cannot depend on dict order,
float formatting or library version. We use canonical CBOR (RFC 8949 section 4.2.1 "core
deterministic encoding": shortest lengths, map keys sorted by their encoded bytes, shortest
float that keeps the value) as implemented by cbor2, and refuse to decode anything that would
not re-encode to the same bytes, so a verifier and a signer can never disagree.
"""

from __future__ import annotations

from typing import Any

import cbor2

from ..errors import ChangeSetError

#: Hard ceiling on any canonical document we decode (a change set chunk is far smaller).
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


def encode(obj: Any) -> bytes:
    """Canonical CBOR of `obj` (dicts, lists, str, bytes, int, float, bool, None)."""
    return cbor2.dumps(obj, canonical=True)


def decode(data: bytes, *, what: str = "document") -> Any:
    """Decode canonical CBOR; refuse non-canonical or malformed bytes with a clear error."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ChangeSetError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ChangeSetError(f"{what}: {len(data)} bytes is over the {MAX_DOCUMENT_BYTES} byte limit")
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise ChangeSetError(f"{what}: not valid CBOR ({exc.__class__.__name__}: {exc})") from None
    try:
        again = encode(obj)
    except Exception as exc:
        raise ChangeSetError(f"{what}: holds values that cannot be encoded ({exc})") from None
    if again != data:
        raise ChangeSetError(f"{what}: not in canonical form (truncated, padded or re-encoded)")
    return obj
