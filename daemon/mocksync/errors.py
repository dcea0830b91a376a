"""The project's own errors.

Every refusal the user or a peer can trigger is one of these, with a sentence a person can act
on. Tests (and fuzzers) assert that nothing else escapes the decision code.
"""


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
