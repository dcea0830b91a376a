"""The refusals of `mocksync.changes`, in one place under `mocksync.errors.MocksyncError` (issue 14).

Why one module per package: callers catch `MocksyncError` to tell a refusal from a bug, and
a reader finds every way a package can say no in one file. The modules that raise these
import them from here.
"""

from __future__ import annotations

from ..errors import ChangeSetError, LimitError


class DecodeRefused(ChangeSetError):
    """Bytes the gate refuses: malformed, non-canonical, a tag, or over a structural limit."""


class DecodeLimit(DecodeRefused, LimitError):
    """A document over a named size, depth or item limit."""

    code = "limit"


class MalformedChangeSet(ChangeSetError):
    """Bytes or fields that are not a well-formed change set (truncated, altered, wrong type)."""


class UnknownFormatVersion(MalformedChangeSet):
    """A change set body in a format version this build does not read (a newer peer)."""


class SignatureError(ChangeSetError):
    """A change set is unsigned, or its signature does not verify with the given key."""


class ChainError(ChangeSetError):
    """A change set does not extend its device's chain (gap, fork, or wrong predecessor)."""


class ChangeSetTooLarge(ChangeSetError, LimitError):
    """A change set, or its decompressed ops, is over a named size limit."""

    code = "limit"


class ChunkError(ChangeSetError):
    """A frame is malformed or contradicts earlier frames of the same message."""


class ChunkLimitError(ChunkError, LimitError):
    """A frame would exceed a named limit (message size, messages in flight, buffered bytes)."""

    code = "limit"


class InvalidHLC(ChangeSetError, ValueError):
    """A stamp or clock input is out of range (negative, too big, not an int)."""


class ClockDriftError(ChangeSetError):
    """A remote stamp is further in the future than the allowed clock drift."""
