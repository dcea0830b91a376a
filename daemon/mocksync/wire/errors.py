"""The refusals of `mocksync.wire`, in one place under `mocksync.errors.MocksyncError`.

Why here: every wire format (relay, sync, space) builds its own refusals on these, and
`FieldError` (what a checker raises before the codec names the format) must itself be a
`MocksyncError`, so a checker used on its own never escapes a caller that catches refusals.
"""

from __future__ import annotations

from ..errors import LimitError, ValidationError


class FieldError(ValidationError):
    """One refused value: `where` it sits (`put.x[3] seq`), what is wrong, and whether it is a
    named limit that was exceeded (a `LimitError` for the caller) or a malformed value.

    The codec of each format turns it into that format's own class; `where` is relative while
    it travels up through nested checkers (`[3]`, ` seq`, `.k`) and absolute once it leaves."""

    code = "bad_message"

    def __init__(self, where: str, problem: str, *, limit: bool = False) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem
        self.limit = limit


class WireError(ValidationError):
    """Bytes or a value that are not a well-formed message of a wire format."""

    code = "bad_message"


class WireLimit(WireError, LimitError):
    """A frame, or one of its fields, over its named limit."""

    code = "bad_message"


__all__ = ["FieldError", "WireError", "WireLimit"]
