"""The refusals of `mocksync.store`, in one place under `mocksync.errors.MocksyncError` (issue 14).

Why one module per package: callers catch `MocksyncError` to tell a refusal from a bug, and
a reader finds every way a package can say no in one file. The modules that raise these
import them from here.
"""

from __future__ import annotations

from ..errors import ChangeSetError, ValidationError


class BaseDeltaError(ValidationError):
    """A stored delta is damaged, or its anchor is not the one it was made against."""


class EquivocationError(ChangeSetError):
    """Same (device, seq) with different content: a forked chain. Rejected and logged."""


class BadOpsError(ChangeSetError):
    """A well-signed change set whose ops do not make sense: refused whole."""


class UnknownDeviceError(ChangeSetError):
    """No public key for the author: not a member of the space (or not yet known)."""
