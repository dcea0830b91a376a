"""Invites and the join handshake (docs/design/security.md §6), over an in-memory pipe: two state machines
wired together, no sockets. Used, expired and forged tokens admit nobody, each with its own
sentence; a middleman who never saw the token can neither join nor fake the welcome."""

from __future__ import annotations

import asyncio

import pytest

from mocksync.changes.canonical import decode, encode
from mocksync.space import membership as M
from mocksync.space.errors import (
    InviteError,
    InviteExpiredError,
    JoinRefusedError,
    NoAdminReachableError,
)
from mocksync.space.identity import Identity
from mocksync.space.invite import (
    AdminSession,
    Admission,
    InviteBook,
    InviteToken,
    JoinerSession,
    Refusal,
)
from mocksync.space.keys import new_content_key, open_payload, seal_payload
from mocksync.space.names import names_key
from mocksync.spaceio.join import join_space, run_join, unreachable_sentence

NOW = 1_700_000_000.0


def ident(n: int, member: str) -> Identity:
    return Identity.from_seeds(f"dev{n}", bytes([n]) * 32, bytes([n + 50]) * 32,
                               member_name=member)


ALICE, BOB, CAROL, ALICE2, ALICE3 = (ident(1, "Alice"), ident(2, "Bob"), ident(3, "Carol"),
                                     ident(4, "Alice"), ident(5, "Alice"))


class Space:
    """The admin's side: a log, its keys and the invite book."""

    def __init__(self, kind: str = "team", **genesis) -> None:
        self.entries = [M.new_genesis(ALICE, name="backend", member_name="Alice", kind=kind,
                                      relay="https://relay.example:8765", now_ms=1, **genesis)]
        self.keys = {1: new_content_key()}
        self.book = InviteBook(self.state.space_id)

    @property
    def state(self) -> M.SpaceState:
        # as a member reads it: names the admin sealed into the log opened with the space key
        return M.verify_log(self.entries, names_key(self.entries[0].space, self.keys))

    def invite(self, **kw) -> InviteToken:
        _, token = self.book.issue(self.state, ALICE, now=NOW, **kw)
        return token

    def admin(self) -> AdminSession:
        return AdminSession(ALICE, self.book, self.entries, self.keys)

    def commit(self, session: AdminSession) -> None:
        assert isinstance(session.outcome, Admission)
        self.entries = self.entries + session.outcome.new_entries


def pipe(joiner: JoinerSession, admin: AdminSession, now: float = NOW + 60) -> None:
    """Wire two state machines together until neither has anything to say."""
    to_admin = [joiner.start(now)]
    while to_admin:
        to_joiner = [out for msg in to_admin for out in admin.receive(msg, now)]
        to_admin = [out for msg in to_joiner for out in joiner.receive(msg, now)]


# ---------------------------------------------------------------- tokens


def test_token_roundtrip_is_compact_and_pasteable():
    sp = Space()
    token = sp.invite(role="admin")
    text = token.encode()
    assert text.startswith("mocksync1-") and len(text) < 400
    assert text == text.lower() and text.replace("mocksync1-", "").isalnum()
    assert InviteToken.parse(text) == token
    assert InviteToken.parse("  " + text.upper()[:40] + "\n" + text.upper()[40:] + " ") == token
    assert token.role == "admin" and token.inviter == ALICE.device_id
    assert token.relay == "https://relay.example:8765"
    assert token.secret.hex() not in repr(token)


def test_damaged_and_foreign_tokens_get_clear_errors():
    text = Space().invite().encode()
    with pytest.raises(InviteError, match="should start with mocksync1-"):
        InviteToken.parse("hello")
    with pytest.raises(InviteError, match="damaged"):
        InviteToken.parse(text[:-5])
    swapped = text[:20] + ("a" if text[20] != "a" else "b") + text[21:]
    with pytest.raises(InviteError, match="damaged"):
        InviteToken.parse(swapped)
    with pytest.raises(InviteError, match="damaged"):
        InviteToken.parse(text + "!!")
    with pytest.raises(InviteError, match="too long"):
        InviteToken.parse(text * 10)


def test_expired_token_is_refused_locally_before_any_network():
    token = Space().invite(lifetime_s=3600)
    token.check_fresh(NOW + 3599)
    with pytest.raises(InviteExpiredError, match="expired"):
        token.check_fresh(NOW + 3600)
    joiner = JoinerSession(token, BOB)
    with pytest.raises(InviteExpiredError):
        joiner.start(NOW + 7200)
    assert joiner.state == "failed"


def test_only_admins_issue_invites_and_lifetimes_are_bounded():
    sp = Space()
    j = JoinerSession(sp.invite(), BOB)
    adm = sp.admin()
    pipe(j, adm)
    sp.commit(adm)
    with pytest.raises(InviteError, match="only an admin"):
        sp.book.issue(sp.state, BOB, now=NOW)
    with pytest.raises(InviteError, match="between"):
        sp.book.issue(sp.state, ALICE, now=NOW, lifetime_s=31 * 86400)


# ---------------------------------------------------------------- the handshake


def test_join_over_an_in_memory_pipe_admits_and_shares_the_key():
    sp = Space()
    token = InviteToken.parse(sp.invite(role="editor").encode())
    joiner, admin = JoinerSession(token, BOB), sp.admin()
    pipe(joiner, admin)
    assert joiner.state == "joined" and isinstance(admin.outcome, Admission)
    res = joiner.result
    assert res is not None
    assert res.state.is_member(BOB.device_id) and res.state.role_of(BOB.device_id) == "editor"
    assert res.state.members[res.member_id].name == "Bob"
    assert res.keys == sp.keys
    # the joiner can read what members encrypt, and the log the admin keeps agrees
    blob = seal_payload(sp.keys[1], 1, b"env content")
    assert open_payload(res.keys, blob) == b"env content"
    sp.commit(admin)
    assert sp.state == res.state
    assert sp.state.sealed_key_for(BOB.device_id, 1) is not None
    assert sp.book.get(token.invite_id).used_by == BOB.device_id


def test_replayed_invite_admits_nobody():
    sp = Space()
    token = sp.invite()
    first, admin = JoinerSession(token, BOB), sp.admin()
    pipe(first, admin)
    sp.commit(admin)
    second, admin2 = JoinerSession(token, CAROL), sp.admin()
    with pytest.raises(JoinRefusedError, match="already used"):
        pipe(second, admin2)
    assert isinstance(admin2.outcome, Refusal)
    assert not sp.state.is_member(CAROL.device_id)


def test_expired_invite_admits_nobody_even_if_the_token_is_edited():
    sp = Space()
    token = sp.invite(lifetime_s=600)
    # the joiner edits the expiry in its copy: the admin trusts only its own record
    edited = InviteToken(token.space, token.name, token.relay, token.inviter, token.secret,
                         token.expires + 10**6, token.role, token.member)
    joiner, admin = JoinerSession(edited, BOB), sp.admin()
    with pytest.raises(JoinRefusedError, match="expired"):
        pipe(joiner, admin, now=NOW + 601)
    assert isinstance(admin.outcome, Refusal) and "expired" in admin.outcome.reason


def test_forged_token_admits_nobody():
    sp = Space()
    real = sp.invite()
    # a made-up secret: unknown to the inviter
    forged = InviteToken(real.space, real.name, real.relay, real.inviter, b"\x01" * 16,
                         real.expires, "admin", None)
    joiner, admin = JoinerSession(forged, CAROL), sp.admin()
    with pytest.raises(JoinRefusedError, match="unknown to the inviting device"):
        pipe(joiner, admin)
    assert not isinstance(admin.outcome, Admission)


def test_editing_the_role_in_a_token_changes_nothing():
    sp = Space()
    real = sp.invite(role="editor")
    upgraded = InviteToken(real.space, real.name, real.relay, real.inviter, real.secret,
                           real.expires, "admin", None)
    joiner, admin = JoinerSession(upgraded, BOB), sp.admin()
    pipe(joiner, admin)
    assert joiner.result.state.role_of(BOB.device_id) == "editor"


def test_wrong_proof_is_refused_and_does_not_consume_the_invite():
    sp = Space()
    token = sp.invite()
    joiner, admin = JoinerSession(token, BOB), sp.admin()
    challenge = admin.receive(joiner.start(NOW), NOW)[0]
    proof = decode(joiner.receive(challenge, NOW)[0])
    proof["proof"] = bytes(32)
    reply = admin.receive(encode(proof), NOW)
    assert decode(reply[0])["t"] == "join-refused"
    assert "does not match the invite's secret" in admin.outcome.reason
    assert sp.book.usable(token.invite_id, NOW)  # still usable by its rightful holder


def test_joiner_must_hold_its_signing_key():
    sp = Space()
    token = sp.invite()
    joiner, admin = JoinerSession(token, BOB), sp.admin()
    challenge = admin.receive(joiner.start(NOW), NOW)[0]
    proof = decode(joiner.receive(challenge, NOW)[0])
    proof["sig"] = bytes(64)
    admin.receive(encode(proof), NOW)
    assert "signing key" in admin.outcome.reason


def test_a_middleman_without_the_secret_cannot_fake_the_welcome():
    sp = Space()
    token = sp.invite()
    joiner, admin = JoinerSession(token, BOB), sp.admin()
    challenge = admin.receive(joiner.start(NOW), NOW)[0]
    proof = joiner.receive(challenge, NOW)[0]
    welcome = decode(admin.receive(proof, NOW)[0])
    welcome["mac"] = bytes(32)
    with pytest.raises(InviteError, match="did not come from the inviting device"):
        joiner.receive(encode(welcome), NOW)
    assert joiner.result is None and joiner.state == "failed"


def test_removed_device_joins_again_with_a_fresh_invite_as_its_old_member():
    sp = Space()
    j, a = JoinerSession(sp.invite(), BOB), sp.admin()
    pipe(j, a)
    sp.commit(a)
    bob_member = j.result.member_id
    sp.entries = sp.entries + [M.remove_device(ALICE, sp.state, device_id=BOB.device_id,
                                               covers={}, now_ms=2)]
    assert not sp.state.is_member(BOB.device_id)
    j2, a2 = JoinerSession(sp.invite(), BOB), sp.admin()
    pipe(j2, a2)
    sp.commit(a2)
    assert sp.state.is_member(BOB.device_id) and BOB.device_id not in sp.state.removed_devices
    # back in its old member, not a second "Bob"
    assert j2.result.member_id == bob_member and len(sp.state.members) == 2
    # and an active device cannot use a second invite
    j3, a3 = JoinerSession(sp.invite(), BOB), sp.admin()
    with pytest.raises(JoinRefusedError, match="already a member"):
        pipe(j3, a3)


def test_removed_member_device_joins_again_as_a_new_member():
    sp = Space()
    j, a = JoinerSession(sp.invite(), BOB), sp.admin()
    pipe(j, a)
    sp.commit(a)
    old = j.result.member_id
    sp.entries = sp.entries + [M.remove_member(ALICE, sp.state, member_id=old,
                                               covers={BOB.device_id: {}}, now_ms=2)]
    j2, a2 = JoinerSession(sp.invite(), BOB), sp.admin()
    pipe(j2, a2)
    sp.commit(a2)
    assert sp.state.is_member(BOB.device_id) and j2.result.member_id != old


def test_a_member_may_register_more_devices_than_may_be_online_at_once():
    """The plan's "2 simultaneous devices" is the relay's connection limit, not a cap on the
    devices a member owns: a third device of Alice is admitted to the space."""
    sp = Space(kind="personal")
    for dev in (ALICE2, ALICE3):
        j, a = JoinerSession(sp.invite(), dev), sp.admin()
        pipe(j, a)
        sp.commit(a)
    assert len(sp.state.members[sp.state.member_of(ALICE.device_id).id].devices) == 3


def test_device_over_the_member_limit_cannot_join():
    sp = Space(kind="personal", device_limit=2)
    j, a = JoinerSession(sp.invite(), ALICE2), sp.admin()
    pipe(j, a)
    sp.commit(a)
    assert j.result.state.is_admin(ALICE2.device_id)  # own device: same member, admin
    # Alice now has 2 devices, this space's limit: a third is refused at issue and at admission
    with pytest.raises(InviteError, match="already has 2 devices"):
        sp.invite()
    sp2 = Space(kind="personal", device_limit=2)
    early = sp2.invite()
    late = sp2.invite()
    j, a = JoinerSession(early, ALICE2), sp2.admin()
    pipe(j, a)
    sp2.commit(a)
    j3, a3 = JoinerSession(late, ALICE3), sp2.admin()
    with pytest.raises(JoinRefusedError, match="already has 2 devices"):
        pipe(j3, a3)
    assert not sp2.state.is_member(ALICE3.device_id)


def test_out_of_order_messages_are_refused():
    sp = Space()
    admin = sp.admin()
    out = admin.receive(encode({"t": "join-proof"}), NOW)
    assert decode(out[0])["t"] == "join-refused"
    assert admin.receive(b"anything", NOW) == []  # done: ignores the rest
    joiner = JoinerSession(sp.invite(), BOB)
    with pytest.raises(InviteError):
        joiner.receive(encode({"t": "join-challenge", "nonce": bytes(16)}), NOW)  # not started


# ---------------------------------------------------------------- the async driver


class MemoryChannel:
    """A JoinChannel whose far end is an AdminSession in the same process."""

    def __init__(self, admin: AdminSession, now: float) -> None:
        self.admin, self.now = admin, now
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = False

    async def send(self, message: bytes) -> None:
        for out in self.admin.receive(message, self.now):
            self.inbox.put_nowait(out)

    async def receive(self) -> bytes:
        return await self.inbox.get()

    async def close(self) -> None:
        self.closed = True


class MemoryTransport:
    name = "memory"

    def __init__(self, channel) -> None:
        self.channel = channel

    async def connect(self, token):
        if self.channel is None:
            raise NoAdminReachableError("nobody home")
        return self.channel


async def test_run_join_drives_the_handshake_over_a_channel():
    sp = Space()
    channel = MemoryChannel(sp.admin(), NOW)
    result = await run_join(JoinerSession(sp.invite(), BOB), channel, clock=lambda: NOW)
    assert result.state.is_member(BOB.device_id)


async def test_join_space_fails_clearly_without_a_reachable_admin():
    sp = Space()
    with pytest.raises(NoAdminReachableError, match="no admin device of space 'backend' is reachable"):
        await join_space(JoinerSession(sp.invite(), BOB), [], timeout=1, clock=lambda: NOW)
    with pytest.raises(NoAdminReachableError, match="memory: nobody home") as exc:
        await join_space(JoinerSession(sp.invite(), BOB), [MemoryTransport(None)], timeout=30,
                         clock=lambda: NOW)
    # it failed at once: the sentence must not claim it waited the whole timeout
    assert "30 s" not in str(exc.value) and "within" not in str(exc.value)


def test_unreachable_sentence_names_each_reason_and_only_real_waits():
    text = unreachable_sentence("team", "AAAAA", [("relay", "the relay X is unreachable", None),
                                                  ("lan", "", 12.4)])
    assert "relay: the relay X is unreachable" in text
    assert "lan: no answer within 12 s" in text
    assert "AAAAA" in text and "'team'" in text


async def test_join_space_times_out_when_the_admin_never_answers():
    sp = Space()

    class Silent:
        async def send(self, message):
            pass

        async def receive(self):
            await asyncio.sleep(3600)

        async def close(self):
            pass

    with pytest.raises(NoAdminReachableError, match=r"memory: no answer within 0\.[2-9] s"):
        await join_space(JoinerSession(sp.invite(), BOB), [MemoryTransport(Silent())],
                         timeout=0.2, clock=lambda: NOW)
