"""Several relays per space (issue 17): the genesis and the invite token list them, the old
single-relay form still reads (and is still what a one-relay space writes), the limits are
enforced with a sentence and refuse before anything changes, and a joiner tries every relay
the token lists."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest

import mocksync.space.membership as M
from mocksync.changes.canonical import decode, encode
from mocksync.net.relay_join import RelayJoinTransport
from mocksync.space.errors import InviteError, MembershipError, NoAdminReachableError
from mocksync.space.fields import MAX_SPACE_RELAYS, MAX_URL_CHARS
from mocksync.space.identity import Identity
from mocksync.space.invite import (
    _CHECK_DOMAIN,
    CHECKSUM_BYTES,
    MAX_TOKEN_CHARS,
    TOKEN_PREFIX,
    InviteToken,
    JoinerSession,
)
from mocksync.spaceio.actions import create_space, issue_invite, record_join
from mocksync.spaceio.join import join_space, split_transports
from mocksync.spaceio.store import get_space, list_spaces

from helpers.relaylab import Lab, until

A, B, C = ("https://a.example:8765", "https://b.example:8765", "http://127.0.0.1:9")
ALICE = Identity.from_seeds("dev1", b"\x01" * 32, b"\x33" * 32, member_name="Alice")


def _token(**kw: object) -> InviteToken:
    base: dict[str, object] = dict(space=b"\x05" * 16, name="backend", relay=A,
                                   inviter=ALICE.device_id, secret=b"\x07" * 16,
                                   expires=2_000_000_000, role="editor", member=None)
    return InviteToken(**{**base, **kw})  # type: ignore[arg-type]


def _raw_token(cbor: dict[str, object]) -> str:
    """Token text for an arbitrary map (what an old version, or a forger, would send)."""
    payload = encode(cbor)
    blob = payload + hashlib.sha256(_CHECK_DOMAIN + payload).digest()[:CHECKSUM_BYTES]
    return TOKEN_PREFIX + base64.b32encode(blob).decode().rstrip("=").lower()


# ---------------------------------------------------------------- tokens


def test_single_relay_token_keeps_the_old_wire_form() -> None:
    token = _token()
    assert token.to_cbor()["relay"] == A  # text, as before issue 17: old joiners read it
    old_text = _raw_token({**token.to_cbor(), "relay": A})
    assert old_text == token.encode()
    parsed = InviteToken.parse(old_text)
    assert parsed.relays == (A,) and parsed.relay == A and parsed.relay_more == ()


def test_token_with_several_relays_round_trips_in_order() -> None:
    token = _token(relay=B, relay_more=(A, C))
    assert token.to_cbor()["relay"] == [B, A, C]
    parsed = InviteToken.parse(token.encode())
    assert parsed.relays == (B, A, C)
    assert parsed == token


def test_token_without_relay_reads_as_none() -> None:
    parsed = InviteToken.parse(_token(relay=None).encode())
    assert parsed.relay is None and parsed.relays == ()


def test_longest_token_fits_the_token_limit() -> None:
    """Every field at its longest, relays included: still a token `join` accepts."""
    tails = [f"{i}.x:65535" for i in range(MAX_SPACE_RELAYS)]
    urls = ["https://" + "r" * (MAX_URL_CHARS - len("https://") - len(t)) + t for t in tails]
    assert all(len(u) == MAX_URL_CHARS for u in urls)
    token = _token(name="\U0001F600" * 64, relay=urls[0], relay_more=tuple(urls[1:]),
                   member="0123456789abcdef")
    text = token.encode()
    assert len(text) <= MAX_TOKEN_CHARS
    assert InviteToken.parse(text).relays == tuple(urls)


@pytest.mark.parametrize("relay, problem", [
    ([A, B, C, "https://d.example:1", "https://e.example:1"], "2..4 relays"),
    ([A], "2..4 relays"),
    ([A, A], "the same relay twice"),
    ([A, 7], "relay URLs"),
    ([A, "ftp://x.example:21"], "must start with http"),
    ({"url": A}, "a relay URL or a list"),
])
def test_bad_relay_lists_in_a_token_are_refused(relay: object, problem: str) -> None:
    text = _raw_token({**_token().to_cbor(), "relay": relay})
    with pytest.raises(InviteError, match=problem):
        InviteToken.parse(text)


# ---------------------------------------------------------------- genesis


def test_genesis_lists_several_relays_and_one_relay_stays_text() -> None:
    many = M.new_genesis(ALICE, name="backend", member_name="Alice", relay=[A, B], now_ms=1)
    one = M.new_genesis(ALICE, name="backend", member_name="Alice", relay=A, now_ms=1)
    assert decode(decode(many.wire)["body"])["data"]["relay"] == [A, B]
    assert decode(decode(one.wire)["body"])["data"]["relay"] == A
    assert M.verify_log([many]).relays == (A, B)
    assert M.verify_log([many]).relay == A
    assert M.verify_log([one]).relays == (A,)
    none = M.new_genesis(ALICE, name="backend", member_name="Alice", now_ms=1)
    assert M.verify_log([none]).relays == () and M.verify_log([none]).relay is None


def test_genesis_over_the_relay_limit_is_refused() -> None:
    urls = [f"https://r{i}.example:8765" for i in range(MAX_SPACE_RELAYS + 1)]
    with pytest.raises(MembershipError, match=f"over the limit of {MAX_SPACE_RELAYS}"):
        M.new_genesis(ALICE, name="backend", member_name="Alice", relay=urls, now_ms=1)


def test_create_space_refuses_bad_relays_and_stores_nothing(tmp_path) -> None:
    from mocksync.paths import Home
    from mocksync.spaceio.actions import init_device

    home = Home(tmp_path / "h")
    ident, _personal = init_device(home, name="laptop", member_name="Alice")
    before = [s.name for s in list_spaces(home)]
    for bad in ([A, A], [A, "https://b.example"],
                [f"https://r{i}.example:1" for i in range(MAX_SPACE_RELAYS + 1)]):
        with pytest.raises(MembershipError):
            create_space(home, ident, "team", relay=bad)
    assert [s.name for s in list_spaces(home)] == before
    sp = create_space(home, ident, "team", relay=[B, A])
    assert get_space(home, "team").state.relays == (B, A) == sp.state.relays


def test_invite_lists_the_space_relays_else_the_daemon_ones(tmp_path) -> None:
    from mocksync.paths import Home
    from mocksync.spaceio.actions import init_device

    home = Home(tmp_path / "h")
    ident, _personal = init_device(home, name="laptop", member_name="Alice")
    create_space(home, ident, "team", relay=[A, B])
    _rec, token = issue_invite(home, ident, "team", relay=[C])
    assert InviteToken.parse(token.encode()).relays == (A, B)  # the space's own win
    _rec, token = issue_invite(home, ident, "personal", relay=[C, A])
    assert InviteToken.parse(token.encode()).relays == (C, A)
    with pytest.raises(InviteError, match="the same relay twice"):
        issue_invite(home, ident, "personal", relay=[C, C])


# ---------------------------------------------------------------- joining


def test_relay_transport_splits_into_one_per_relay() -> None:
    token = _token(relay=A, relay_more=(B, C))
    parts = split_transports([RelayJoinTransport()], token)
    assert [p.name for p in parts] == [f"relay {A}", f"relay {B}", f"relay {C}"]
    one = split_transports([RelayJoinTransport()], _token())
    assert [p.name for p in one] == ["relay"]


async def test_join_reaches_the_inviter_through_the_second_relay(lab: Lab) -> None:
    """The token's first relay is down: the joiner is admitted through the second."""
    alice, bob = lab.device("alice"), lab.device("bob")
    await lab.start_relay()
    create_space(alice.home, alice.identity, "team", relay=[C, lab.relay.url])
    _a, t = await lab.agent(alice)
    await until(lambda: t.status()["relay"]["state"] == "connected", what="alice connected")
    _rec, token = issue_invite(alice.home, alice.identity, "team")
    token = InviteToken.parse(token.encode())
    assert token.relays == (C, lab.relay.url)
    result = await asyncio.wait_for(
        join_space(JoinerSession(token, bob.identity), [RelayJoinTransport()], timeout=15), 30)
    record_join(bob.home, result)
    assert get_space(bob.home, "team").state.relays == (C, lab.relay.url)
    assert get_space(bob.home, "team").state.is_member(bob.identity.device_id)


async def test_every_relay_down_names_each_in_the_sentence(lab: Lab) -> None:
    alice, bob = lab.device("alice"), lab.device("bob")
    dead = "http://127.0.0.1:10"
    create_space(alice.home, alice.identity, "team", relay=[C, dead])
    _rec, token = issue_invite(alice.home, alice.identity, "team")
    with pytest.raises(NoAdminReachableError) as err:
        await asyncio.wait_for(join_space(JoinerSession(token, bob.identity),
                                          [RelayJoinTransport()], timeout=5), 15)
    assert f"relay {C}" in str(err.value) and f"relay {dead}" in str(err.value)
