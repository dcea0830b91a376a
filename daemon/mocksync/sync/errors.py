"""Refusals of the sync protocol.

Everything a peer sends is untrusted input, so every way it can be wrong has its own class
here, all under `ProtocolError` (itself a `MocksyncError`): the session and the fuzz tests can
then promise that decoding a message raises one of these and nothing else, and `str(e)` is the
sentence shown in `status` when a session is closed because of it.
"""

from __future__ import annotations

from ..errors import LimitError, MocksyncError


class ProtocolError(MocksyncError):
    """A peer broke the sync protocol (bad bytes, unknown kind, a message out of place)."""

    code = "protocol"


class MalformedMessage(ProtocolError):
    """Bytes that are not a well-formed sync message: not canonical CBOR, wrong keys or types."""


class UnknownMessageKind(ProtocolError):
    """A message whose kind `t` this build does not know (a newer peer must bump the version)."""


class MessageTooLarge(ProtocolError, LimitError):
    """A message, or one of its fields, is over its named size limit."""

    code = "limit"


class IncompatiblePeer(ProtocolError):
    """The peer speaks another protocol or register-model version: the session cannot go on."""

    code = "incompatible"


class UnexpectedMessage(ProtocolError):
    """A well-formed message the session cannot accept now (e.g. for an env that is not shared)."""
