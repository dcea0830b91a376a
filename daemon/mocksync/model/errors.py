"""The refusals of `mocksync.model`, in one place under `mocksync.errors.MocksyncError` (issue 14).

Why one module per package: callers catch `MocksyncError` to tell a refusal from a bug, and
a reader finds every way a package can say no in one file. The modules that raise these
import them from here.
"""

from __future__ import annotations

from ..errors import MocksyncError, ValidationError


class LinkedFileError(ValidationError):
    """A linked file that cannot be synced or written (a sentence naming the file and why)."""

    code = "linked_file"


class DuplicateUuidError(ValidationError):
    def __init__(self, dupes: dict[str, list[str]]) -> None:
        shown = "; ".join(f"{u} at {', '.join(paths)}" for u, paths in list(dupes.items())[:5])
        more = f" (and {len(dupes) - 5} more)" if len(dupes) > 5 else ""
        super().__init__(f"duplicate uuids in the file (copy-paste?): {shown}{more}")
        self.dupes = dupes


class NotAnEnvironmentError(ValidationError):
    def __init__(self, why: str) -> None:
        super().__init__(f"not a Mockoon environment: {why}")


class JSONSyntaxError(ValidationError):
    """The text is not JSON; carries 1-based line and column."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"file is not valid JSON at line {line}, column {column}: {message}")
        self.line = line
        self.column = column


class BadOpError(ValidationError):
    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"op {index} is malformed: {why}")
        self.index = index  # so a local save can name the place in the file


class NoFreeNameError(MocksyncError, ValueError):
    """Every candidate name is taken (only in a folder holding thousands of clashes)."""


class PatchError(ValidationError):
    """The old text cannot be patched (it is not JSON the scanner reads)."""


class MigrationTooNewError(ValidationError):
    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"environment uses Mockoon migration {found}, newer than the {supported} this device "
            "is set to write (setting mockoon_max_migration); update Mockoon and mocksync"
        )
        self.found = found
        self.supported = supported
