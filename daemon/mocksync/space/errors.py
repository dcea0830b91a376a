"""Refusals raised by the space package.

Each is a subclass of the project's `MocksyncError` family so that callers (CLI, daemon,
relay, fuzzers) can treat "the input was refused, here is why" uniformly, and `str(e)` is a
sentence a person can act on.
"""

from __future__ import annotations

from ..errors import LimitError, MocksyncError, ValidationError


class DeviceIdError(ValidationError):
    """A device id that does not parse or whose check character does not match."""

    code = "device-id"


class IdentityError(MocksyncError):
    """This device's identity is missing, incomplete, duplicated or unsafe on disk."""

    code = "identity"


class NotInitialisedError(IdentityError):
    """No identity yet: `mocksync init` was never run for this home."""

    code = "not-initialised"


class MembershipError(ValidationError):
    """A membership log (or one entry of it) was refused."""

    code = "membership"


class KeyMaterialError(ValidationError):
    """A sealed payload or sealed key could not be opened (tampered, wrong key, unknown generation)."""

    code = "keys"


class InviteError(ValidationError):
    """An invite token or a join handshake message was refused."""

    code = "invite"


class InviteExpiredError(InviteError):
    code = "invite-expired"


class InviteUsedError(InviteError):
    code = "invite-used"


class JoinRefusedError(InviteError):
    """The admin device refused to admit this device (the reason is the admin's sentence)."""

    code = "join-refused"


class NoAdminReachableError(MocksyncError):
    """Joining needs an admin device of the space online; none could be reached."""

    code = "no-admin"


class SpaceNotFoundError(MocksyncError):
    code = "no-space"


class SpaceLimitError(LimitError):
    """A named limit of the space package was exceeded."""


__all__ = [
    "DeviceIdError",
    "IdentityError",
    "InviteError",
    "InviteExpiredError",
    "InviteUsedError",
    "JoinRefusedError",
    "KeyMaterialError",
    "MembershipError",
    "NoAdminReachableError",
    "NotInitialisedError",
    "SpaceLimitError",
    "SpaceNotFoundError",
]
