"""The project's own errors.

Every refusal the user or a peer can trigger is one of these, with a sentence a person can act
on. Tests (and fuzzers) assert that nothing else escapes the decision code.
"""

import os


class MocksyncError(Exception):
    """Base class: a clear, specific refusal. `str(e)` is the sentence shown to people."""

    code = "error"


class ValidationError(MocksyncError):
    """Input is not something we can accept (bad JSON, not an environment, duplicate uuids...)."""

    code = "invalid"


class ChangeSetError(MocksyncError):
    """A change set was refused: bad signature, truncated, tampered, replayed, equivocation."""

    code = "changeset"


class LimitError(MocksyncError):
    """A named limit (message size, file size, counts) was exceeded."""

    code = "limit"


class FolderSyncError(MocksyncError, OSError):
    """The new content is in place, but the folder holding it could not be flushed to disk:
    the rename may be lost if the machine loses power now. An OSError too, so a caller that
    treats every I/O failure alike needs no second clause."""

    code = "folder_sync_failed"
    #: The fstat of the file put in place (`fsatomic.put_in_dir`): it did land.
    written: os.stat_result | None = None


class PrivateDirError(MocksyncError):
    """A directory that must be private to this user (the home, the socket folder) is not,
    and cannot be made so: another user's, a symlink, not a directory."""

    code = "not_private"
