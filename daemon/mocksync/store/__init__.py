"""mocksync.store: the durable log and state (SQLite, WAL) and small documents (TinyDB)."""

from .errors import EquivocationError, UnknownDeviceError
from .log import APPLIED, PENDING, QUARANTINED, IngestResult, Store

__all__ = ["APPLIED", "PENDING", "QUARANTINED", "EquivocationError", "IngestResult", "Store",
           "UnknownDeviceError"]
