"""mocksync.changes: the pure vocabulary of sync — clocks, signed change sets, version vectors,
and framing for transports with a message-size limit.

Nothing in this package touches sockets, files or clocks; callers pass `now_ms` and keys in.
Import from here rather than from the submodules so the modules can be reorganised freely.
"""

from . import canonical, changeset, chunks, hlc, vv
from .changeset import (
    COMPRESS_THRESHOLD,
    FORMAT_VERSION,
    MAX_CHANGESET_BYTES,
    MAX_DEPS,
    MAX_OP_DEPTH,
    MAX_OPS,
    MAX_OPS_BYTES,
    SIGNING_CONTEXT,
    ChangeSet,
    make_changeset,
    verify_chain,
)
from .chunks import (
    CHUNK_SIZE,
    HEADER_SIZE,
    MAX_MESSAGE_BYTES,
    MAX_PENDING_MESSAGES,
    Reassembler,
    split,
)
from .errors import (
    ChainError,
    ChangeSetTooLarge,
    ChunkError,
    ChunkLimitError,
    ClockDriftError,
    InvalidHLC,
    MalformedChangeSet,
    SignatureError,
    UnknownFormatVersion,
)
from .hlc import MAX_DRIFT_MS, Clock, pack, physical_ms, too_far_in_future, unpack

__all__ = [
    "CHUNK_SIZE",
    "COMPRESS_THRESHOLD",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAX_CHANGESET_BYTES",
    "MAX_DEPS",
    "MAX_DRIFT_MS",
    "MAX_MESSAGE_BYTES",
    "MAX_OPS",
    "MAX_OPS_BYTES",
    "MAX_OP_DEPTH",
    "MAX_PENDING_MESSAGES",
    "SIGNING_CONTEXT",
    "ChainError",
    "ChangeSet",
    "ChangeSetTooLarge",
    "ChunkError",
    "ChunkLimitError",
    "Clock",
    "ClockDriftError",
    "InvalidHLC",
    "MalformedChangeSet",
    "Reassembler",
    "SignatureError",
    "UnknownFormatVersion",
    "canonical",
    "changeset",
    "chunks",
    "hlc",
    "make_changeset",
    "pack",
    "physical_ms",
    "split",
    "too_far_in_future",
    "unpack",
    "verify_chain",
    "vv",
]
