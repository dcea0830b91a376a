"""The wire schema: typed messages and the one codec that maps them to canonical CBOR.

Why a package of its own, just above `changes`: every layer that puts bytes on a wire (sync,
relay, space) declares its messages here the same way, and it needs nothing but the canonical
gate and the error hierarchy, so it sits below all of them (see docs/design/architecture.md).
"""

from .codec import (
    KIND_KEY,
    Codec,
    Message,
    Record,
    derived,
    keys_of,
    record_from_map,
    record_to_map,
    spec,
    to_legacy,
    wire,
)
from .errors import FieldError, WireError, WireLimit
from .fields import (
    Bool,
    Bytes,
    Check,
    Ident,
    Int,
    ListOf,
    MapOf,
    Nullable,
    RecordCheck,
    Struct,
    Text,
)

__all__ = [
    "KIND_KEY",
    "Bool",
    "Bytes",
    "Check",
    "Codec",
    "FieldError",
    "Ident",
    "Int",
    "ListOf",
    "MapOf",
    "Message",
    "Nullable",
    "Record",
    "RecordCheck",
    "Struct",
    "Text",
    "WireError",
    "WireLimit",
    "derived",
    "keys_of",
    "record_from_map",
    "record_to_map",
    "spec",
    "to_legacy",
    "wire",
]
