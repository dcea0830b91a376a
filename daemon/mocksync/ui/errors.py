"""The refusals of `mocksync.ui`, in one place under `mocksync.errors.MocksyncError` (issue 14).

Why one module per package: callers catch `MocksyncError` to tell a refusal from a bug, and
a reader finds every way a package can say no in one file. The modules that raise these
import them from here.
"""

from __future__ import annotations

from ..errors import MocksyncError


class UiAuthError(MocksyncError):
    """A sign-in or request the page refuses; the sentence says what to do instead."""

    code = "ui_auth"


class UiOff(MocksyncError):
    """`mocksync open` while the page is not served; the sentence says why and what to do."""

    code = "ui_off"
