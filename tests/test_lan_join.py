"""`mocksync join` over the LAN (issue 16): join tags only the token holder recognises, the
inviter's endpoint (bounded, refusing bad input with a sentence), and the joiner's transport
running the real handshake against it on 127.0.0.1 (mDNS replaced by a stand-in that reports
the inviter, so the test needs no multicast)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from mocksync.changes.canonical import decode, encode
from mocksync.errors import LimitError
from mocksync.net.errors import AnnouncementError
from mocksync.net.lan_join import (
    InviterResponder,
    LanJoinTransport,
    announces_invite,
    join_tag,
    newest_invite_secrets,
    peek_space,
    tag_matches_invite,
)
from mocksync.net.lan_signaling import MAX_CONCURRENT_JOINS, SignalingServer
from mocksync.net.mdns import MAX_ADVERTISED_INVITES, Announcement, Discovered
from mocksync.space.errors import InviteError, JoinRefusedError, NoAdminReachableError
from mocksync.space.invite import MAX_MESSAGE_BYTES, InviteBook, InviteToken, JoinerSession
from mocksync.spaceio import actions
from mocksync.spaceio.join import join_space
from mocksync.spaceio.store import get_space

from helpers.devices import make_device
from helpers.procs import short_tmp

NONCE = b"\x07" * 16
SECRET, OTHER = b"\x01" * 16, b"\x02" * 16


def test_only_the_token_holder_recognises_a_join_tag() -> None:
    tag = join_tag(SECRET, NONCE)
    assert tag_matches_invite(SECRET, NONCE, tag)
    assert not tag_matches_invite(OTHER, NONCE, tag)
    assert join_tag(SECRET, b"\x08" * 16) != tag  # a fresh nonce: unlinkable announcements


def test_an_announcement_with_invites_round_trips_and_names_no_space() -> None:
    with short_tmp("mslj-") as root:
        dev = make_device(root, "ana")
        ann = Announcement.make(dev.id, 4242, [], invites=[SECRET, OTHER])
        props = ann.properties()
        assert set(props) == {"id", "v", "n", "j"}
        assert Announcement.parse(props, 4242) == ann
        token = InviteToken(b"\x00" * 16, "team", None, dev.id, SECRET, 2**31, "editor", None)
        assert announces_invite(ann, token)
        other = make_device(root, "ben")
        assert not announces_invite(Announcement.make(other.id, 1, [], invites=[SECRET]), token)
        with pytest.raises(LimitError, match="only"):
            Announcement.make(dev.id, 1, [], invites=[bytes([i]) * 16
                                                       for i in range(MAX_ADVERTISED_INVITES + 1)])
        bad = dict(props, j="zz")
        with pytest.raises(AnnouncementError, match="join tag"):
            Announcement.parse(bad, 4242)


def test_the_newest_unused_invites_are_announced() -> None:
    class Rec:
        def __init__(self, created: float, secret: bytes) -> None:
            self.created, self.invite_id, self.secret = created, secret.hex(), secret

    class Book:
        def __init__(self, recs: list[Rec]) -> None:
            self.recs = recs

        def outstanding(self, now: float) -> list[Rec]:
            return self.recs

    books = [Book([Rec(1, b"a" * 16), Rec(3, b"c" * 16)]), Book([Rec(2, b"b" * 16)])]
    assert newest_invite_secrets(books, 0, 2) == [b"c" * 16, b"b" * 16]
    assert newest_invite_secrets([InviteBook("x")], 0, 5) == []


def test_the_first_message_must_name_a_space_through_the_gate() -> None:
    assert peek_space(encode({"t": "join-hello", "space": b"\x05" * 16})) == "05" * 16
    with pytest.raises(InviteError, match="byte limit"):
        peek_space(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(InviteError):
        peek_space(b"\xff\xff")
    with pytest.raises(InviteError, match="naming a space"):
        peek_space(encode({"t": "join-hello", "space": "not bytes"}))


class FoundAt:
    """Stands in for MdnsService: reports the inviter at 127.0.0.1:port once started."""

    def __init__(self, ann: Announcement) -> None:
        self.ann = ann
        self.stopped = False

    def __call__(self, bind: Any, networks: Any, *, on_peer: Any, on_gone: Any) -> FoundAt:
        self.on_peer = on_peer
        return self

    async def start(self, ann: Any) -> None:
        assert ann is None  # the joiner announces nothing
        asyncio.get_running_loop().call_soon(self.on_peer, Discovered(self.ann, ("127.0.0.1",)))

    async def stop(self) -> None:
        self.stopped = True


async def test_join_over_the_lan_endpoint_admits_once_then_refuses_a_replay() -> None:
    with short_tmp("mslj-") as root:
        ana, ben, cy = (make_device(root, n) for n in ("ana", "ben", "cy"))
        space = actions.create_space(ana.home, ana.identity, "team").space_id
        _, token = actions.issue_invite(ana.home, ana.identity, space)
        admitted: list[str] = []
        server = SignalingServer(["127.0.0.1"], 0, handler=_no_offers,
                                 join=lambda: InviterResponder(ana.home, ana.identity,
                                                               admitted.append))
        port = await server.start()
        try:
            ann = Announcement.make(ana.id, port, [], invites=[token.secret])
            mdns = FoundAt(ann)
            lan = LanJoinTransport(["127.0.0.1"], mdns_factory=mdns)
            said: list[str] = []
            result = await join_space(JoinerSession(token, ben.identity), [lan], timeout=10,
                                      progress=said.append)
            assert result.state.is_member(ben.id)
            assert admitted == [space] and mdns.stopped
            assert said[0].startswith("looking on the LAN (127.0.0.1)") and said[-1] == "admitted"
            assert get_space(ana.home, space).state.is_member(ben.id)
            # The same token again (another device): the inviter says it was used.
            with pytest.raises(JoinRefusedError, match="already used"):
                await join_space(JoinerSession(token, cy.identity),
                                 [LanJoinTransport(["127.0.0.1"], mdns_factory=FoundAt(ann))],
                                 timeout=10)
            assert not get_space(ana.home, space).state.is_member(cy.id)
        finally:
            await server.stop()


async def test_the_inviter_refuses_bad_input_with_a_sentence_and_changes_nothing() -> None:
    with short_tmp("mslj-") as root:
        ana = make_device(root, "ana")
        space = actions.create_space(ana.home, ana.identity, "team").space_id
        before = get_space(ana.home, space).entries
        for first in (b"\xff", encode({"t": "join-hello", "space": b"\x09" * 16,
                                       "invite": b"\x00" * 8, "nonce": b"\x00" * 16})):
            r = InviterResponder(ana.home, ana.identity, lambda _s: None)
            (reply,) = r.receive(first)
            assert decode(reply)["t"] == "join-refused" and decode(reply)["reason"]
            assert r.done and r.receive(first) == []
        assert get_space(ana.home, space).entries == before


async def test_the_endpoint_bounds_concurrent_joins() -> None:
    import aiohttp

    class Slow:
        done = False

        def receive(self, data: bytes) -> list[bytes]:
            return []

    server = SignalingServer(["127.0.0.1"], 0, handler=_no_offers, join=Slow)
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            held = [await http.ws_connect(f"http://127.0.0.1:{port}/mocksync/lan/v1/join")
                    for _ in range(MAX_CONCURRENT_JOINS)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(f"http://127.0.0.1:{port}/mocksync/lan/v1/join")
            assert info.value.status == 503
            for ws in held:
                await ws.close()
    finally:
        await server.stop()


async def test_join_tries_lan_and_relay_at_once_and_names_each_real_reason() -> None:
    with short_tmp("mslj-") as root:
        ana, ben = make_device(root, "ana"), make_device(root, "ben")
        space = actions.create_space(ana.home, ana.identity, "team").space_id
        _, token = actions.issue_invite(ana.home, ana.identity, space)

        class Nobody:
            def __init__(self, *a: Any, **kw: Any) -> None:
                pass

            async def start(self, ann: Any) -> None:
                pass

            async def stop(self) -> None:
                pass

        from mocksync.net.relay_join import RelayJoinTransport

        lan = LanJoinTransport(["127.0.0.1"], mdns_factory=Nobody)
        with pytest.raises(NoAdminReachableError) as info:
            await join_space(JoinerSession(token, ben.identity), [lan, RelayJoinTransport()],
                             timeout=0.5)
        text = str(info.value)
        assert "relay: the invite for space 'team' names no relay" in text
        assert re.search(r"LAN: the inviting device was not found on the LAN within 0\.[5-9] s",
                         text), text
        assert "60 s" not in text


async def _no_offers(body: bytes, remote: str | None) -> bytes:
    raise AssertionError("no offers in these tests")
