"""The refusals of `mocksync.net`, in one place under `mocksync.errors.MocksyncError` (issue 14).

Why one module per package: callers catch `MocksyncError` to tell a refusal from a bug, and
a reader finds every way a package can say no in one file. The modules that raise these
import them from here.
"""

from __future__ import annotations

from ..errors import LimitError, MocksyncError


class SignalError(MocksyncError):
    """A signaling message was refused (malformed, wrong signature, replayed, stale...)."""

    code = "signal"


class NotAMember(SignalError):
    """The sender is not an active member of any space this device shares with it."""

    code = "forbidden"


class IncompatibleSignal(SignalError):
    """The sender speaks another signaling or sync protocol version."""

    code = "incompatible"


class SignalTooLarge(SignalError, LimitError):
    code = "limit"


class PeerUnreachable(MocksyncError):
    """The peer's signaling endpoint did not answer."""

    code = "unreachable"


class PeerRefused(SignalError):
    """The peer answered our offer with a refusal; `code` is its reason code."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Glare(SignalError):
    """Both devices dialled each other at once; the one with the smaller id wins."""

    code = "glare"


class Superseded(MocksyncError):
    """Another connection to the same peer won (glare, or the peer dialled again)."""


class AnnouncementError(MocksyncError, ValueError):
    """A TXT record that is not a well-formed mocksync announcement (ignored, logged)."""


class LinkError(MocksyncError):
    """The WebRTC connection could not be set up, or broke."""

    code = "link"


class FrameError(LinkError):
    """A received frame is not a valid mocksync data-channel frame."""
