"""The refusals of `mocksync.relay`, in one place under `mocksync.errors.MocksyncError` (issue 14).

Why one module per package: callers catch `MocksyncError` to tell a refusal from a bug, and
a reader finds every way a package can say no in one file. The modules that raise these
import them from here.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ChangeSetError, LimitError, MocksyncError, ValidationError
from ..wire import WireError, WireLimit


class RelayKeyError(MocksyncError):
    """The relay's key file is unreadable, or a relay is not the one a space pinned."""

    code = "relay_key"


class SignalError(ValidationError):
    """A signaling payload that is malformed, not for us, or not signed by its sender."""

    code = "signal"


class EnvelopeMismatch(ChangeSetError):
    """An envelope opened fine but holds a change set for another slot (mislabelled upload)."""


class FrameLimitUnavailable(MocksyncError, RuntimeError):
    """This aiohttp build does not expose what `set_frame_limit` needs (see its docstring)."""


class RelayProtocolError(WireError):
    """Bytes from the other side that are not a well-formed relay message."""

    code = "bad_message"


class UnknownKind(RelayProtocolError):
    """A message kind this build does not know, or one the sender's side may not send."""


class FrameTooLarge(RelayProtocolError, WireLimit):
    """A frame, or one of its fields, over its named limit."""

    code = "bad_message"


class SessionStateError(MocksyncError, RuntimeError):
    """The adapter reported something the relay session's phase does not allow (a bug in
    the adapter, never a peer's doing: `relay.session`)."""


class AuthBudgetExceeded(LimitError):
    """A frame that asks the relay to decode or verify more than its named budget."""

    code = "limit"


class SnapshotError(ChangeSetError):
    """A snapshot that is malformed, not signed by a member, or does not match its slot."""

    code = "bad_snapshot"


class SnapshotTooLarge(SnapshotError, LimitError):
    code = "bad_snapshot"


class StorageError(MocksyncError):
    code = "storage"


class Compacted(StorageError):
    """A fetch reaches below change sets the relay dropped: start from the snapshot."""

    code = "compacted"

    def __init__(self, floors: Mapping[str, int]) -> None:
        super().__init__("the relay dropped change sets this catch-up needs (they are covered "
                         "by the environment's snapshot): fetch the snapshot first")
        self.floors = dict(floors)
