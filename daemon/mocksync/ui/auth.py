"""Who may use the local web page: one-time sign-in tokens, sessions, CSRF, Host and Origin.

Why each fence (docs/design/security.md §7 is the control socket's; this is the page's):
- Listening on 127.0.0.1 keeps the network out, but not the other users of this machine nor
  the web pages open in this user's browser. So nothing is served without a session, and a
  session starts only from a token the daemon gives over its owner-only control socket
  (`mocksync open`): whoever can ask the socket may open the page, nobody else.
- The token rides in a URL (so a browser can be pointed at it), hence it is one-time and
  short-lived: redeeming it swaps it for a session cookie (HttpOnly: no script reads it;
  SameSite=Strict: no other site's page sends it) and redirects to a URL without it.
- DNS rebinding (an attacker's name re-pointed at 127.0.0.1) makes the browser send the
  attacker's host name: the Host header must name this machine's loopback and our port.
- A forged cross-site request carries a foreign Origin (refused) and lacks the CSRF token
  every change needs (refused too: two independent fences).

Pure: the clock is passed in (`now`) and randomness is injectable, so every rule is tested
without sockets. Secrets are kept only as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import UiAuthError

#: Seconds a sign-in token from `mocksync open` stays valid (long enough to click it).
TOKEN_TTL_S = 120.0
#: Sign-in tokens waiting to be used at once; minting more forgets the oldest.
MAX_PENDING_TOKENS = 8
#: A session unused this long is over (a new `mocksync open` starts another).
SESSION_IDLE_S = 12 * 3600.0
#: A session ends this long after sign-in, however busy.
SESSION_MAX_S = 7 * 24 * 3600.0
#: Sessions at once (browsers, tabs signed in separately); more ends the least recently used.
MAX_SESSIONS = 16
#: Random bytes in a token, a session id and a CSRF token.
SECRET_BYTES = 32
#: Longest token, cookie or CSRF value looked at (longer ones are refused unread).
MAX_SECRET_CHARS = 128
#: Notices a session keeps for its next page (a result to show once, like an invite token).
MAX_NOTICES = 8
#: Longest notice text kept.
MAX_NOTICE_CHARS = 4000
#: Names this machine's loopback goes by in a browser's address bar.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def _usable(secret: str | None) -> bool:
    return isinstance(secret, str) and 0 < len(secret) <= MAX_SECRET_CHARS


@dataclass
class Notice:
    """A result shown once on the next page: `kind` is "ok" or "error"; `secret` text (an
    invite token) is shown in a box made for copying."""

    kind: str
    text: str
    secret: str | None = None


@dataclass
class Session:
    """One signed-in browser. `csrf` goes into every form; `id` only into the cookie."""

    id: str
    csrf: str
    created: float
    last_seen: float
    notices: list[Notice] = field(default_factory=list)

    def notify(self, kind: str, text: str, secret: str | None = None) -> None:
        """Keep a notice for the next page (the oldest go when more than MAX_NOTICES wait)."""
        self.notices.append(Notice(kind, text[:MAX_NOTICE_CHARS], secret))
        del self.notices[:-MAX_NOTICES]

    def take_notices(self) -> list[Notice]:
        out, self.notices = self.notices, []
        return out


class UiAuth:
    """Tokens and sessions of one page server (in memory: a daemon restart signs out)."""

    def __init__(self, port: int, *,
                 random_secret: Callable[[int], str] = secrets.token_urlsafe) -> None:
        self.port = port
        self._random = random_secret
        self._tokens: dict[bytes, float] = {}  # digest -> expiry
        self._sessions: dict[bytes, Session] = {}  # digest of id -> session

    @property
    def cookie_name(self) -> str:
        """Per port: cookies ignore ports, and two daemons (two homes or two users) on one
        machine must not sign each other's browser out."""
        return f"mocksync_session_{self.port}"

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    # ---- sign-in ------------------------------------------------------------------------

    def mint(self, now: float) -> str:
        """A new one-time sign-in token (what `mocksync open` puts in its URL)."""
        self._tokens = {d: exp for d, exp in self._tokens.items() if exp > now}
        while len(self._tokens) >= MAX_PENDING_TOKENS:
            self._tokens.pop(min(self._tokens, key=self._tokens.__getitem__))
        token = self._random(SECRET_BYTES)
        self._tokens[_digest(token)] = now + TOKEN_TTL_S
        return token

    def redeem(self, token: str | None, now: float) -> Session:
        """Swap a sign-in token for a new session; the token is spent either way."""
        if not _usable(token):
            raise UiAuthError("this address has no valid sign-in token; run `mocksync open` "
                              "to get a fresh one")
        expiry = self._tokens.pop(_digest(token), None)  # type: ignore[arg-type]
        if expiry is None:
            raise UiAuthError("this sign-in link was already used or is unknown to this "
                              "daemon (links end when the daemon restarts); run `mocksync "
                              "open` for a new one")
        if expiry <= now:
            raise UiAuthError(f"this sign-in link expired (links are valid for "
                              f"{int(TOKEN_TTL_S)} s); run `mocksync open` for a new one")
        self._expire(now)
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda d: self._sessions[d].last_seen)
            self._sessions.pop(oldest)
        sid = self._random(SECRET_BYTES)
        session = Session(sid, self._random(SECRET_BYTES), now, now)
        self._sessions[_digest(sid)] = session
        return session

    def session(self, cookie: str | None, now: float) -> Session | None:
        """The live session a cookie names (its idle clock restarts), or None."""
        if not _usable(cookie):
            return None
        key = _digest(cookie)  # type: ignore[arg-type]
        s = self._sessions.get(key)
        if s is None:
            return None
        if now - s.last_seen > SESSION_IDLE_S or now - s.created > SESSION_MAX_S:
            self._sessions.pop(key, None)
            return None
        s.last_seen = now
        return s

    def end(self, session: Session) -> None:
        """Sign out."""
        self._sessions.pop(_digest(session.id), None)

    def _expire(self, now: float) -> None:
        self._sessions = {k: s for k, s in self._sessions.items()
                          if now - s.last_seen <= SESSION_IDLE_S
                          and now - s.created <= SESSION_MAX_S}

    # ---- per request --------------------------------------------------------------------

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        """Does a change request carry this session's CSRF token?"""
        if not _usable(token):
            return False
        return hmac.compare_digest(_digest(session.csrf), _digest(token))  # type: ignore[arg-type]

    def host_problem(self, host: str | None) -> str | None:
        """Why the Host header is refused (None: it names this page). A rebound DNS name
        resolves here but arrives with its own name, so only loopback names pass."""
        return host_problem(host, self.port)

    def origin_problem(self, origin: str | None, *, change: bool) -> str | None:
        """Why the Origin header is refused (None: fine). A change (POST) must carry ours;
        a read may come without one (a typed address, a reload) but never with another."""
        return origin_problem(origin, self.port, change=change)


def allowed_hosts(port: int) -> tuple[str, ...]:
    """Every Host header value this page answers to."""
    return tuple(f"{h}:{port}" for h in LOOPBACK_HOSTS)


def host_problem(host: str | None, port: int) -> str | None:
    """See `UiAuth.host_problem`."""
    if not host:
        return "the request names no Host"
    if host.lower() not in allowed_hosts(port):
        return (f"Host {host[:100]!r} is not this machine's page (expected "
                f"127.0.0.1:{port}); refused to keep other sites out (DNS rebinding)")
    return None


def origin_problem(origin: str | None, port: int, *, change: bool) -> str | None:
    """See `UiAuth.origin_problem`."""
    if origin is None:
        return ("a change must come from the page itself (no Origin header was sent)"
                if change else None)
    try:
        parts = urlsplit(origin)
        host = parts.hostname or ""  # lowercased; an IPv6 address without its brackets
        shown = f"[{host}]" if ":" in host else host
        ok = (parts.scheme == "http" and parts.port == port and parts.path == ""
              and not parts.query and f"{shown}:{port}" in allowed_hosts(port))
    except ValueError:  # a malformed port
        ok = False
    if not ok:
        return f"Origin {origin[:100]!r} is not this page; refused (another site's request)"
    return None


__all__ = [
    "LOOPBACK_HOSTS",
    "MAX_PENDING_TOKENS",
    "MAX_SESSIONS",
    "SESSION_IDLE_S",
    "SESSION_MAX_S",
    "TOKEN_TTL_S",
    "Notice",
    "Session",
    "UiAuth",
    "UiAuthError",
    "allowed_hosts",
    "host_problem",
    "origin_problem",
]
