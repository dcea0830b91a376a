"""Who may even talk to the local web page: this daemon's own user, and a bounded number of
connections at once. Decided per TCP connection, before a byte of the request is read.

Why (red team, issue 19): the page listens on 127.0.0.1, which every local user can reach.
The session cookie and the one-time token were the only fences, and both leak to other users
of the machine: `mocksync open` hands the sign-in address to the browser on its command line
(`xdg-open URL`, `chromium URL`), which any local user reads in `/proc/PID/cmdline` and may
redeem first; and cookies are not isolated by port, so the user's browser sends the page's
session cookie to any server on 127.0.0.1, another user's included. Either way another user
got the whole page: invites, removals, conflicts. So, like the control socket (SO_PEERCRED,
`agent.client`), the page asks the kernel who opened each connection: on Linux the socket
table (`/proc/net/tcp`) names the owner uid of the client's end, and a connection whose
owner is not the daemon's user is answered 403 with a sentence and closed. A same-user
process is trusted as for the control socket (it can read the home anyway).

Where there is no such table (macOS), nothing is refused here: the session stays the fence
(README security table says so). Where the table exists but the connection is not in it (it
closed at once, or an odd kernel), the connection is refused: fail closed.

Bounded: admitted connections (`MAX_CONNECTIONS`, one more is answered 503) and refused
ones waiting to be told why (`MAX_LINGERING_REFUSALS`, `REFUSAL_LINGER_S`; past that they
are closed at once), so no local user can exhaust the daemon's file descriptors through the
page's port. Decisions are pure (`socket_owner`, `refusal`); `peer_owner` and the protocol
wrapper are the thin I/O around them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

#: The kernel's table of IPv4 TCP sockets of this network namespace (Linux).
PROC_NET_TCP = Path("/proc/net/tcp")
#: Lines of the socket table looked at per connection (a machine with more sockets than this
#: is unusual; past it the owner is unknown and the connection refused).
MAX_TABLE_LINES = 200_000
#: Connections to the page admitted at once (a browser opens about 6, plus a live stream per
#: tab); one more is answered 503 and closed.
MAX_CONNECTIONS = 64
#: Refused connections kept open at once, each only until its request arrives or
#: `REFUSAL_LINGER_S` passes, so the refusal's sentence is read; past that: closed at once.
MAX_LINGERING_REFUSALS = 16
#: Seconds a refused connection is kept waiting for its request before it is closed.
REFUSAL_LINGER_S = 1.0
#: Bytes of a refused connection's request read (and dropped) before it is answered anyway.
MAX_REFUSED_REQUEST_BYTES = 16 * 1024


@dataclass(frozen=True)
class Owner:
    """What the kernel says of a connection's client end: `known` is False where this
    platform has no socket table (no check is possible); `uid` is None when the table exists
    but does not hold the connection."""

    known: bool
    uid: int | None


def _hex_address(field: str) -> tuple[str, int]:
    """`0100007F:A5A1` -> ("127.0.0.1", 42401). The address is the kernel's 32-bit value
    printed in the machine's byte order, the port in host order."""
    addr, _, port = field.partition(":")
    raw = struct.pack("=I", int(addr, 16))
    return socket.inet_ntoa(raw), int(port, 16)


def socket_owner(lines: Iterable[str], local: tuple[str, int],
                 remote: tuple[str, int]) -> int | None:
    """The uid owning the socket whose local end is `local` and remote end `remote`, from the
    lines of a `/proc/net/tcp` table (header line included or not); None when absent. Pure."""
    for n, line in enumerate(lines):
        if n > MAX_TABLE_LINES:
            return None
        parts = line.split()
        if len(parts) < 8 or not parts[0].endswith(":"):
            continue  # the header, or a line of another shape
        try:
            if _hex_address(parts[1]) == local and _hex_address(parts[2]) == remote:
                return int(parts[7])
        except (ValueError, struct.error, OSError):
            continue
    return None


def refusal(owner: Owner, me: int) -> str | None:
    """Why a connection whose client end is owned as `owner` is refused by the page of the
    daemon running as uid `me`; None: admitted. Pure."""
    if not owner.known:
        return None
    if owner.uid is None:
        return ("could not tell which local user opened this connection (it is not in the "
                "kernel's socket table), so it is refused; this page serves only the user "
                "running the daemon")
    if owner.uid != me:
        return (f"this page belongs to another user of this machine (uid {me}); your "
                f"connection comes from uid {owner.uid}. Run your own daemon and `mocksync "
                "open` (it picks another port with `ui_port` in config.toml)")
    return None


def peer_owner(peer: tuple[str, int], ours: tuple[str, int],
               table: Path = PROC_NET_TCP) -> Owner:
    """Ask the kernel who owns the client end `peer` of a connection to `ours`."""
    try:
        with open(table, encoding="ascii", errors="replace") as f:
            return Owner(True, socket_owner(f, peer, ours))
    except FileNotFoundError:
        return Owner(False, None)
    except OSError:
        return Owner(True, None)  # the table is there but unreadable: fail closed


def refusal_response(status: int, reason: str, sentence: str,
                     headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 answer written before the request is read (then the connection
    closes)."""
    body = (sentence + "\n").encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}", "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Gate:
    """Counts and admits the page's connections (one per daemon's page server)."""

    def __init__(self, headers: dict[str, str], *,
                 owner_of: Callable[[tuple[str, int], tuple[str, int]], Owner] = peer_owner,
                 me: int | None = None, max_connections: int = MAX_CONNECTIONS) -> None:
        self.headers = headers
        self.owner_of = owner_of
        self.me = os.getuid() if me is None else me
        self.max_connections = max_connections
        self.open = 0
        self.lingering = 0
        self.refused = 0

    def verdict(self, transport: asyncio.BaseTransport) -> tuple[int, str, str] | None:
        """(status, reason, sentence) refusing this new connection, or None to admit it."""
        peer = transport.get_extra_info("peername")
        ours = transport.get_extra_info("sockname")
        if not (isinstance(peer, tuple) and isinstance(ours, tuple)):
            return (403, "Forbidden", "this page is served only over TCP on 127.0.0.1")
        problem = refusal(self.owner_of((peer[0], peer[1]), (ours[0], ours[1])), self.me)
        if problem is not None:
            return (403, "Forbidden", problem)
        if self.open >= self.max_connections:
            return (503, "Service Unavailable",
                    f"the page has {self.max_connections} connections open already (its "
                    "limit); close some tabs and reload")
        return None

    def protocol(self, make_inner: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        """A protocol for one new connection: the real server's, once admitted."""
        return _GatedProtocol(self, make_inner)


class _GatedProtocol(asyncio.Protocol):
    """Decides at `connection_made`; an admitted connection is handed, untouched, to the real
    HTTP protocol (every later callback is forwarded to it)."""

    def __init__(self, gate: Gate, make_inner: Callable[[], asyncio.Protocol]) -> None:
        self.gate = gate
        self.make_inner = make_inner
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.answer: bytes | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.lingering = False
        self._seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        verdict = self.gate.verdict(transport)
        if verdict is None:
            self.gate.open += 1
            self.inner = self.make_inner()
            self.inner.connection_made(transport)
            return
        self.gate.refused += 1
        self.answer = refusal_response(*verdict, self.gate.headers)
        if self.gate.lingering >= MAX_LINGERING_REFUSALS:
            # Too many waiting already: no sentence, no descriptor held.
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            else:
                transport.close()
            return
        self.gate.lingering += 1
        self.lingering = True
        self.timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, self._refuse)

    def _refuse(self) -> None:
        """Tell the refused client why, once its request arrived (so it reads the answer
        instead of a reset), then close."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None and self.answer is not None \
                and not self.transport.is_closing():
            self.transport.write(self.answer)
            self.transport.close()
        self.answer = None

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)
        elif self.answer is not None:
            # Answer once the request's headers ended (else at the linger time, `_refuse`).
            self._seen += len(data)
            if b"\r\n\r\n" in data or self._seen > MAX_REFUSED_REQUEST_BYTES:
                self._refuse()

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return self.inner.eof_received()
        self._refuse()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.gate.open -= 1
            self.inner.connection_lost(exc)
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.lingering:
            self.gate.lingering -= 1
            self.lingering = False

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


__all__ = [
    "MAX_CONNECTIONS",
    "MAX_LINGERING_REFUSALS",
    "PROC_NET_TCP",
    "REFUSAL_LINGER_S",
    "Gate",
    "Owner",
    "peer_owner",
    "refusal",
    "refusal_response",
    "socket_owner",
]
