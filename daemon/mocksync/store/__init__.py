"""mocksync.store: the durable log and state (SQLite, WAL) and small documents (TinyDB)."""

from .log import (
    APPLIED,
    PENDING,
    QUARANTINED,
    EquivocationError,
    IngestResult,
    Store,
    UnknownDeviceError,
)

__all__ = ["APPLIED", "PENDING", "QUARANTINED", "EquivocationError", "IngestResult", "Store",
           "UnknownDeviceError"]
