"""mocksync.sync: the sans-IO sync protocol between two daemons.

Pure decision code (h11 is the model): bytes and calls in, events out, no sockets, no store,
no clock (`now_ms` is passed in). `messages` defines and checks every message kind and limit;
`Session` runs the protocol with one peer; `Hub` holds one device's sessions and the
device-wide `Wants` book; `Source` is the two-method view of the local log a session reads
(`StoreSource` adapts the real store). See `session` for how change sets move and `hub` for
a complete I/O adapter.
"""

from .errors import (
    IncompatiblePeer,
    MalformedMessage,
    MessageTooLarge,
    ProtocolError,
    UnexpectedMessage,
    UnknownMessageKind,
)
from .events import Closed, Deliver, Event, Members, Opened, PeerPresence, PresenceNote, Send
from .hub import Hub
from .messages import (
    MAX_CONTROL_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES,
    Ack,
    Bye,
    Cs,
    Have,
    Hello,
    Message,
    MHeads,
    MLog,
    Nack,
    Ping,
    Pong,
    Presence,
    RelayedPresence,
    Want,
    decode_message,
    encode_message,
    peek_changeset,
)
from .session import (
    ANTI_ENTROPY_MS,
    DEAD_AFTER_MS,
    MAX_INFLIGHT_BYTES,
    MAX_INFLIGHT_MESSAGES,
    PING_INTERVAL_MS,
    RESEND_AFTER_MS,
    WANT_WINDOW,
    Config,
    Counts,
    Session,
    Stats,
    check_compatible,
)
from .source import Source, StoreSource
from .wants import Wants

__all__ = [
    "ANTI_ENTROPY_MS", "DEAD_AFTER_MS", "MAX_CONTROL_MESSAGE_BYTES", "MAX_INFLIGHT_BYTES",
    "MAX_INFLIGHT_MESSAGES", "MAX_MESSAGE_BYTES", "PING_INTERVAL_MS", "RESEND_AFTER_MS",
    "WANT_WINDOW", "check_compatible", "Ack", "Bye", "Closed", "Config", "Counts", "Cs", "Deliver", "Event", "Have", "Hello",
    "Members", "MHeads", "MLog",
    "Hub", "IncompatiblePeer", "MalformedMessage", "Message", "MessageTooLarge", "Nack",
    "Opened", "PeerPresence", "PresenceNote", "RelayedPresence", "Ping", "Pong", "Presence", "ProtocolError", "Send", "Session",
    "Source", "Stats", "StoreSource", "UnexpectedMessage", "UnknownMessageKind", "Want",
    "Wants", "decode_message", "encode_message", "peek_changeset",
]
