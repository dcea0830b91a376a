"""Join a device to a space without a network: the real handshake, run in one process.

For tests and local tooling: both homes are on this machine, so the join messages are handed
from one state machine to the other directly. It is the same `JoinerSession`/`AdminSession`
exchange the LAN and relay transports carry, with the same checks (one-time, expiring token,
proof of the secret, signed log entries, sealed content key).
"""

from __future__ import annotations

import time

from ..paths import Home
from ..space.errors import MembershipError
from ..space.invite import JoinerSession
from ..spaceio.actions import admin_session, issue_invite, record_admission, record_join
from ..spaceio.identityfiles import load_identity

#: A handshake is a few messages; anything longer is a bug, not a slow network.
MAX_ROUNDS = 16


def pair(admin_home: Home, joiner_home: Home, space: str, *, role: str = "editor") -> str:
    """Invite `joiner_home`'s device into `space` of `admin_home` and admit it. Returns space id."""
    admin = load_identity(admin_home)
    joiner = load_identity(joiner_home)
    now = time.time()
    _rec, token = issue_invite(admin_home, admin, space, role=role, now=now)
    js = JoinerSession(token, joiner)
    adm = admin_session(admin_home, admin, space)
    to_admin = [js.start(now)]
    for _ in range(MAX_ROUNDS):
        to_joiner: list[bytes] = []
        for m in to_admin:
            to_joiner += adm.receive(m, now)
        to_admin = []
        for m in to_joiner:
            to_admin += js.receive(m, now)
        if js.result is not None:
            break
        if not to_admin:
            break
    if js.result is None:
        raise MembershipError(f"the join handshake did not complete: {js.error or adm.outcome}")
    record_admission(admin_home, adm)
    stored = record_join(joiner_home, js.result)
    return stored.space_id
