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


#: How each relay refusal code reads at the head of its sentence (`sentence`).
_LABELS = {
    "auth_refused": "auth refused",
    "revoked": "revoked",
    "incompatible_version": "incompatible version",
    "quota_envs": "quota exceeded",
    "quota_bytes": "quota exceeded",
    "too_many_devices": "device limit reached",
    "too_many_connections": "too many connections",
    "server_full": "relay full",
    "not_member": "not admitted",
    "not_online": "not online",
    "bad_message": "protocol error",
    "bad_envelope": "refused envelope",
    "slow_consumer": "disconnected",
    "shutting_down": "relay restarting",
    "timeout": "handshake timed out",
    "relay_key_changed": "wrong relay",
}


def sentence(code: str, reason: str) -> str:
    """The sentence shown for a relay refusal: always led by what kind of refusal it is."""
    label = _LABELS.get(code, code.replace("_", " "))
    reason = (reason or "").strip()
    if not reason:
        return f"{label} (the relay gave no reason)"
    if reason.lower().startswith(label):
        return reason
    return f"{label}: {reason}"


class RelayError(MocksyncError):
    code = "relay"


class RelayUnavailable(RelayError):
    """Not connected to the relay (yet, or any more)."""


class RelayRefused(RelayError):
    """The relay refused this device or one request; `code` is the relay's reason code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(sentence(code, reason))
        self.code = code
        self.relay_reason = reason
