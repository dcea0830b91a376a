"""`mocksync join` through the relay: the invite handshake with the inviting daemon, end to end.

docs/design/security.md §6: one-time, expiring tokens; the joiner proves the secret to the inviter; the
relay only forwards opaque handshake bytes and never admits anyone itself.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mocksync.net.relay_join import RelayJoinTransport
from mocksync.space.errors import InviteError, NoAdminReachableError
from mocksync.space.invite import InviteToken, JoinerSession
from mocksync.spaceio.actions import create_space, issue_invite, record_join
from mocksync.spaceio.join import join_space
from mocksync.spaceio.store import get_space, list_spaces

from helpers.relaylab import Lab, until


async def _join(lab: Lab, joiner, token: InviteToken, timeout: float = 10.0):
    session = JoinerSession(token, joiner.identity)
    return await join_space(session, [RelayJoinTransport()], timeout=timeout)


async def test_join_through_relay_admits_the_device(lab: Lab) -> None:
    alice, bob = lab.device("alice"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    await lab.start_relay()
    a, t = await lab.agent(alice)
    await until(lambda: t.status()["relay"]["state"] == "connected", what="alice connected")
    _rec, token = issue_invite(alice.home, alice.identity, "team")
    token = InviteToken.parse(token.encode())
    token = InviteToken(**{**token.__dict__, "relay": lab.relay.url})
    result = await _join(lab, bob, token)
    record_join(bob.home, result)
    space = get_space(bob.home, "team")
    assert space.state.is_member(bob.identity.device_id)
    assert get_space(alice.home, "team").state.is_member(bob.identity.device_id)
    # The relay learns the new member from the inviter's log upload: bob can now connect.
    b, tb = await lab.agent(bob)
    await until(lambda: tb.status()["relay"]["state"] == "connected", what="bob connected")
    assert space.space_id in tb.client.accepted


async def test_used_token_admits_nobody_the_second_time(lab: Lab) -> None:
    alice, bob, carol = lab.device("alice"), lab.device("bob"), lab.device("carol")
    create_space(alice.home, alice.identity, "team")
    await lab.start_relay()
    _a, t = await lab.agent(alice)
    await until(lambda: t.status()["relay"]["state"] == "connected", what="alice connected")
    _rec, token = issue_invite(alice.home, alice.identity, "team")
    token = InviteToken(**{**token.__dict__, "relay": lab.relay.url})
    record_join(bob.home, await _join(lab, bob, token))
    with pytest.raises(InviteError):
        await _join(lab, carol, token)
    assert [s.name for s in list_spaces(carol.home)] == ["personal"]
    assert not get_space(alice.home, "team").state.is_member(carol.identity.device_id)


async def test_inviter_offline_gives_a_sentence(lab: Lab) -> None:
    alice, bob = lab.device("alice"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    await lab.start_relay()
    _rec, token = issue_invite(alice.home, alice.identity, "team")
    token = InviteToken(**{**token.__dict__, "relay": lab.relay.url})
    with pytest.raises(NoAdminReachableError, match="no admin device of space 'team' is reachable"):
        await _join(lab, bob, token, timeout=5)


async def test_expired_token_admits_nobody(lab: Lab) -> None:
    alice, bob = lab.device("alice"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    await lab.start_relay()
    _a, t = await lab.agent(alice)
    await until(lambda: t.status()["relay"]["state"] == "connected", what="alice connected")
    _rec, token = issue_invite(alice.home, alice.identity, "team", lifetime_s=60,
                               now=time.time() - 3600)
    with pytest.raises(InviteError, match="expired"):
        await _join(lab, bob, InviteToken(**{**token.__dict__, "relay": lab.relay.url}))
    assert not get_space(alice.home, "team").state.is_member(bob.identity.device_id)


async def test_unreachable_relay_gives_a_sentence(lab: Lab) -> None:
    alice, bob = lab.device("alice"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    _rec, token = issue_invite(alice.home, alice.identity, "team")
    with pytest.raises(NoAdminReachableError):
        await asyncio.wait_for(
            _join(lab, bob, InviteToken(**{**token.__dict__, "relay": "http://127.0.0.1:9"})), 10)
