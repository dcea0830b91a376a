"""The relay's side of one device connection as a sans-IO state machine.

Why a state machine without sockets: what a session may do next (which message is allowed in
which phase, when the handshake has taken too long, when a device must be slowed down, when a
peer that stopped answering is given up) is a decision, and decisions here are pure so they
can be tested on a virtual clock (docs/design/relay.md "Session life"). The machine is fed
decoded messages (`relay.protocol`) and `now`, and answers with actions; `relay.server` is the
adapter that reads and writes the WebSocket, runs the storage calls the actions ask for and
reports back (`challenged`, `admitted`, `refuse`).

    hello --(Challenge: the adapter loads the spaces, sends the challenge)--> challenged
    challenged --auth--(Admit: the adapter verifies and admits)--> authenticating
    authenticating --admitted--> ready --(requests: Handle, or Send for a ping)--> ...
    any phase --(Close: refused before ready, bye after)--> closed

Liveness: every phase before `ready` has `handshake_s` in total per step; once ready, the
adapter sends a WebSocket ping (`Heartbeat`) whenever the peer has been silent for
`heartbeat_s`, and a peer silent for `stall_s` (no frame, no pong) is reaped: `Close(reap=True)`
tells the adapter to drop the connection at once, without waiting to flush what is queued for
it, since a peer that does not read would hold that flush (and the session's slot, presence and
memory) forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import PROTOCOL_VERSION
from . import policy
from .authbudget import frame_refusal
from .errors import SessionStateError
from .policy import Refusal, TokenBucket
from .protocol import (
    Auth,
    Bye,
    Hello,
    Ping,
    Pong,
    Refused,
    RelayMessage,
    clip_reason,
)

#: Seconds a client has for each handshake step (hello, then auth).
HANDSHAKE_TIMEOUT_S = 10.0
#: Seconds of silence from an admitted peer before the relay sends a WebSocket ping.
HEARTBEAT_S = 20.0
#: Seconds of silence (no frame, no pong) after which an admitted peer is reaped: three
#: heartbeats unanswered.
STALL_TIMEOUT_S = 3 * HEARTBEAT_S

#: Phases of a session.
HELLO, CHALLENGING, CHALLENGED, AUTHENTICATING, READY, CLOSED = (
    "hello", "challenging", "challenged", "authenticating", "ready", "closed")
#: Request kinds an admitted session hands to the adapter (they need storage or other
#: sessions); `ping` is answered by the machine itself.
REQUEST_KINDS = frozenset({"log", "index", "fetch", "put", "presence", "signal", "joinrep"})


# ------------------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class Send:
    """Send `msg` to this session's peer."""

    msg: RelayMessage


@dataclass(frozen=True, slots=True)
class Challenge:
    """Load the spaces `hello` names and send the challenge; then call `challenged(now)`."""

    hello: Hello
    spaces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Admit:
    """Verify `auth` and admit the device to its spaces; then `admitted(...)` or `refuse(...)`."""

    hello: Hello
    auth: Auth
    spaces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Handle:
    """A request of an admitted device for the adapter (storage, other sessions)."""

    msg: RelayMessage


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait this long before acting on what follows (the device is over its message rate)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Send a WebSocket ping: the peer has been silent for a heartbeat."""


@dataclass(frozen=True, slots=True)
class Close:
    """Send `msg` (if any) and close. `reap`: drop the connection now, do not wait to flush."""

    msg: Refused | Bye | None
    reap: bool = False


Action = Send | Challenge | Admit | Handle | Delay | Heartbeat | Close


# ------------------------------------------------------------------------------ the machine


class RelaySession:
    """One connection, from its first frame to its close. Pure: no I/O, `now` passed in."""

    def __init__(self, now: float, *, handshake_s: float = HANDSHAKE_TIMEOUT_S,
                 heartbeat_s: float = HEARTBEAT_S, stall_s: float = STALL_TIMEOUT_S,
                 protocol: int = PROTOCOL_VERSION,
                 requests: frozenset[str] = REQUEST_KINDS) -> None:
        if heartbeat_s <= 0 or stall_s < heartbeat_s or handshake_s <= 0:
            raise ValueError("a session needs handshake_s > 0 and stall_s >= heartbeat_s > 0")
        self.handshake_s = handshake_s
        self.heartbeat_s = heartbeat_s
        self.stall_s = stall_s
        self.protocol = protocol
        #: Kinds an admitted device may send as requests (the adapter has a handler for each).
        self.requests = requests
        self.phase = HELLO
        self.phase_since = now
        self.last_heard = now
        self.last_ping: float | None = None
        self.hello: Hello | None = None
        self.device: str | None = None
        self._bucket: TokenBucket | None = None
        #: Why the session closed (code, reason), once it has.
        self.closed_by: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"RelaySession({self.device or '?'}, {self.phase})"

    # ----------------------------------------------------------------- inputs
    def heard(self, now: float) -> None:
        """Any frame from the peer arrived (a message, a ping or a pong)."""
        self.last_heard = max(self.last_heard, now)

    def receive(self, msg: RelayMessage, now: float) -> list[Action]:
        """One decoded message from the peer."""
        self.heard(now)
        if self.phase == CLOSED:
            return []
        if self.phase == HELLO:
            return self._on_hello(msg, now)
        if self.phase == CHALLENGED:
            return self._on_auth(msg, now)
        if self.phase == READY:
            return self._on_request(msg, now)
        # A frame while the adapter is still working on the last step: the honest client
        # waits for our answer, so this is a protocol error.
        return self._close("bad_message", f"a {msg.KIND} message came before the relay "
                                          "answered the last one")

    def bad_frame(self, reason: str) -> list[Action]:
        """The peer sent a frame that does not decode (`RelayProtocolError`'s sentence)."""
        return self._close("bad_message", reason)

    def challenged(self, now: float) -> None:
        """The adapter sent the challenge; the auth step's clock starts."""
        self._expect(CHALLENGING)
        self._enter(CHALLENGED, now)

    def admitted(self, device: str, bucket: TokenBucket, now: float) -> None:
        """The adapter admitted the device (and sends the welcome): requests may come."""
        self._expect(AUTHENTICATING)
        self.device = device
        self._bucket = bucket
        self.last_heard = max(self.last_heard, now)
        self._enter(READY, now)

    def refuse(self, refusal: Refusal) -> list[Action]:
        """The adapter refuses the session (handshake) or ends it (revoked, slow consumer...)."""
        return self._close(refusal.code, refusal.reason)

    def tick(self, now: float) -> list[Action]:
        """Time passed: a handshake step that took too long, a heartbeat due, a stalled peer."""
        if self.phase in (HELLO, CHALLENGED) and now - self.phase_since >= self.handshake_s:
            return self._close("timeout", f"the handshake took longer than {self.handshake_s:g} s")
        if self.phase != READY:
            return []
        silent = now - self.last_heard
        if silent >= self.stall_s:
            return self._close("timeout", (
                f"the device answered nothing, not even a heartbeat, for {silent:.0f} s; the "
                "relay dropped the connection (it catches up on reconnect)"), reap=True)
        if silent >= self.heartbeat_s and (self.last_ping is None
                                           or now - self.last_ping >= self.heartbeat_s):
            self.last_ping = now
            return [Heartbeat()]
        return []

    def deadline(self) -> float | None:
        """When `tick` may next have something to do (None: nothing is timed now)."""
        if self.phase in (HELLO, CHALLENGED):
            return self.phase_since + self.handshake_s
        if self.phase != READY:
            return None
        stall = self.last_heard + self.stall_s
        beat = self.last_heard + self.heartbeat_s
        if self.last_ping is not None and self.last_ping >= self.last_heard:
            beat = self.last_ping + self.heartbeat_s
        return min(stall, beat)

    @property
    def closed(self) -> bool:
        return self.phase == CLOSED

    # ----------------------------------------------------------------- phases
    def _enter(self, phase: str, now: float) -> None:
        self.phase = phase
        self.phase_since = now

    def _expect(self, phase: str) -> None:
        if self.phase != phase:
            raise SessionStateError(f"session in phase {self.phase}, expected {phase}")

    def _close(self, code: str, reason: str, *, reap: bool = False) -> list[Action]:
        if self.phase == CLOSED:
            return []
        reason = clip_reason(reason)
        msg: Refused | Bye = Bye(code, reason) if self.phase == READY else Refused(code, reason)
        self.phase = CLOSED
        self.closed_by = (code, reason)
        return [Close(msg, reap=reap)]

    def _on_hello(self, msg: RelayMessage, now: float) -> list[Action]:
        if not isinstance(msg, Hello):
            return self._close("bad_message", "the first message must be hello")
        r = policy.protocol_refusal(self.protocol, msg.protocol)
        if r is not None:
            return self._close(r.code, r.reason)
        self.hello = msg
        self._enter(CHALLENGING, now)
        return [Challenge(msg, tuple(dict.fromkeys(msg.spaces)))]

    def _on_auth(self, msg: RelayMessage, now: float) -> list[Action]:
        hello = self.hello
        assert hello is not None
        if not isinstance(msg, Auth):
            return self._close("bad_message", "the answer to a challenge must be auth")
        if set(msg.logs) - set(hello.spaces):
            return self._close("bad_message",
                               "auth carries a log for a space the hello did not name")
        # Before anything is decoded: how much the frame asks the relay to verify
        # (relay.authbudget; issue 12).
        too_much = frame_refusal(msg.logs)
        if too_much is not None:
            return self._close("bad_message", too_much)
        self._enter(AUTHENTICATING, now)
        return [Admit(hello, msg, tuple(dict.fromkeys(hello.spaces)))]

    def _on_request(self, msg: RelayMessage, now: float) -> list[Action]:
        if msg.KIND not in self.requests and not isinstance(msg, Ping):
            return self._close("bad_message",
                               f"a {msg.KIND} message is not expected after the handshake")
        out: list[Action] = []
        if self._bucket is not None:
            wait = self._bucket.take(now)
            if wait > 0:
                out.append(Delay(wait))
        out.append(Send(Pong(msg.nonce)) if isinstance(msg, Ping) else Handle(msg))
        return out


__all__ = [
    "AUTHENTICATING",
    "Action",
    "Admit",
    "CHALLENGED",
    "CHALLENGING",
    "CLOSED",
    "Challenge",
    "Close",
    "Delay",
    "HANDSHAKE_TIMEOUT_S",
    "HEARTBEAT_S",
    "HELLO",
    "Handle",
    "Heartbeat",
    "READY",
    "REQUEST_KINDS",
    "RelaySession",
    "STALL_TIMEOUT_S",
    "Send",
    "SessionStateError",
]
