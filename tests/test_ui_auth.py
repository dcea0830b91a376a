"""The web page's sign-in and request fences (mocksync.ui.auth), without sockets or clocks.

Why: the page acts on the user's environments and spaces with the daemon's authority, from a
browser that also runs every other site's scripts. Each rule here is one fence: a token works
once and briefly, sessions end, CSRF tokens are per session, and only loopback names with our
port pass Host and Origin (DNS rebinding, cross-site requests).
"""

from __future__ import annotations

import itertools

import pytest

from mocksync.ui.auth import (
    MAX_NOTICES,
    MAX_PENDING_TOKENS,
    MAX_SESSIONS,
    SESSION_IDLE_S,
    SESSION_MAX_S,
    TOKEN_TTL_S,
    UiAuth,
    host_problem,
    origin_problem,
)
from mocksync.ui.errors import UiAuthError

PORT = 8385


def counter_secrets():
    n = itertools.count()
    return lambda nbytes: f"secret{next(n)}"


def make() -> UiAuth:
    return UiAuth(PORT, random_secret=counter_secrets())


def test_a_token_signs_in_once() -> None:
    auth = make()
    token = auth.mint(now=0)
    s = auth.redeem(token, now=1)
    assert auth.session(s.id, now=2) is s
    with pytest.raises(UiAuthError, match="already used"):
        auth.redeem(token, now=3)
    assert auth.session_count == 1


def test_a_token_expires() -> None:
    auth = make()
    token = auth.mint(now=0)
    with pytest.raises(UiAuthError, match="expired"):
        auth.redeem(token, now=TOKEN_TTL_S + 0.1)
    with pytest.raises(UiAuthError, match="already used"):  # spent by the failed try too
        auth.redeem(token, now=1)
    assert auth.session_count == 0


@pytest.mark.parametrize("bad", [None, "", "x" * 500, "unknown"])
def test_bad_tokens_are_refused_and_change_nothing(bad) -> None:
    auth = make()
    good = auth.mint(now=0)
    with pytest.raises(UiAuthError, match="mocksync open"):
        auth.redeem(bad, now=1)
    assert auth.session_count == 0
    auth.redeem(good, now=1)  # the good one still works


def test_pending_tokens_are_bounded_oldest_forgotten() -> None:
    auth = make()
    tokens = [auth.mint(now=i) for i in range(MAX_PENDING_TOKENS + 2)]
    with pytest.raises(UiAuthError):
        auth.redeem(tokens[0], now=20)
    auth.redeem(tokens[-1], now=20)
    assert len(auth._tokens) == MAX_PENDING_TOKENS - 1


def test_sessions_end_when_idle_or_old_and_on_sign_out() -> None:
    auth = make()
    s = auth.redeem(auth.mint(0), 0)
    assert auth.session(s.id, SESSION_IDLE_S - 1) is s
    assert auth.session(s.id, 2 * SESSION_IDLE_S - 2) is s  # use keeps it alive
    assert auth.session(s.id, 3 * SESSION_IDLE_S) is None  # idle too long
    busy = auth.redeem(auth.mint(0), 0)
    t = 0.0
    while t < SESSION_MAX_S:
        assert auth.session(busy.id, t) is busy
        t += SESSION_IDLE_S / 2
    assert auth.session(busy.id, SESSION_MAX_S + 1) is None  # however busy
    last = auth.redeem(auth.mint(0), 0)
    auth.end(last)
    assert auth.session(last.id, 1) is None


def test_sessions_are_bounded_least_recently_used_goes() -> None:
    auth = make()
    sessions = [auth.redeem(auth.mint(i), i) for i in range(MAX_SESSIONS)]
    assert auth.session(sessions[0].id, 100) is sessions[0]  # used: not the oldest any more
    extra = auth.redeem(auth.mint(101), 101)
    assert auth.session_count == MAX_SESSIONS
    assert auth.session(sessions[1].id, 102) is None
    assert auth.session(sessions[0].id, 102) is sessions[0]
    assert auth.session(extra.id, 102) is extra


def test_csrf_is_per_session() -> None:
    auth = make()
    a = auth.redeem(auth.mint(0), 0)
    b = auth.redeem(auth.mint(0), 0)
    assert auth.csrf_ok(a, a.csrf)
    assert not auth.csrf_ok(a, b.csrf)
    assert not auth.csrf_ok(a, None)
    assert not auth.csrf_ok(a, "")
    assert not auth.csrf_ok(a, a.id)  # the cookie is not the CSRF token


def test_cookie_name_carries_the_port() -> None:
    assert UiAuth(8385).cookie_name != UiAuth(8386).cookie_name


def test_secrets_are_kept_as_digests_only() -> None:
    auth = make()
    token = auth.mint(0)
    s = auth.redeem(token, 0)
    held = repr(auth._tokens) + repr(list(auth._sessions))
    assert token not in held and s.id not in held


@pytest.mark.parametrize("host", ["127.0.0.1:8385", "localhost:8385", "LOCALHOST:8385",
                                  "[::1]:8385"])
def test_loopback_hosts_pass(host) -> None:
    assert host_problem(host, PORT) is None


@pytest.mark.parametrize("host", [None, "", "evil.example:8385", "127.0.0.1:8386", "127.0.0.1",
                                  "127.0.0.1.evil.example:8385", "192.168.1.2:8385",
                                  "localhost:8385@evil"])
def test_other_hosts_are_refused_as_rebinding(host) -> None:
    assert host_problem(host, PORT) is not None


@pytest.mark.parametrize("origin", ["http://127.0.0.1:8385", "http://localhost:8385",
                                    "http://[::1]:8385"])
def test_our_origin_passes(origin) -> None:
    assert origin_problem(origin, PORT, change=True) is None


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:8386",
                                    "https://127.0.0.1:8385", "null", "http://127.0.0.1",
                                    "http://127.0.0.1:8385/x", "http://127.0.0.1:99999",
                                    "http://evil.example:8385"])
def test_foreign_origins_are_refused(origin) -> None:
    assert origin_problem(origin, PORT, change=False) is not None
    assert origin_problem(origin, PORT, change=True) is not None


def test_a_change_needs_an_origin_a_read_does_not() -> None:
    assert origin_problem(None, PORT, change=False) is None
    assert "Origin" in (origin_problem(None, PORT, change=True) or "")


def test_notices_are_bounded_and_shown_once() -> None:
    auth = make()
    s = auth.redeem(auth.mint(0), 0)
    for i in range(MAX_NOTICES + 3):
        s.notify("ok", f"n{i}")
    shown = s.take_notices()
    assert [n.text for n in shown][-1] == f"n{MAX_NOTICES + 2}" and len(shown) == MAX_NOTICES
    assert s.take_notices() == []
