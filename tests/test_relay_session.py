"""The relay session as a sans-IO state machine (`relay.session`), on a virtual clock, and the
one thing only a real socket shows: a device that stalls is reaped, not left holding its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import aiohttp
import pytest

from mocksync import PROTOCOL_VERSION
from mocksync.relay.auth import relay_origin, sign_challenge
from mocksync.relay.authbudget import MAX_AUTH_ENTRIES
from mocksync.relay.envelope import Envelope
from mocksync.relay.errors import SessionStateError
from mocksync.relay.policy import Refusal, TokenBucket
from mocksync.relay.protocol import (
    CLIENT,
    RELAY,
    Auth,
    Bye,
    Fetch,
    Hello,
    Ping,
    Pong,
    Presence,
    Put,
    Refused,
    Welcome,
    decode,
    encode_message,
)
from mocksync.relay.session import (
    AUTHENTICATING,
    CHALLENGED,
    CHALLENGING,
    CLOSED,
    HELLO,
    READY,
    Admit,
    Challenge,
    Close,
    Delay,
    Handle,
    Heartbeat,
    RelaySession,
    Send,
)
from mocksync.space.keys import new_content_key, seal_payload

from helpers.devices import logs_of
from helpers.relaylab import Lab, raw_client, settle, team_of, until

SPACE = "ab" * 16
OTHER = "ef" * 16
TAG = "cd" * 16
DEV = "0A1B2-C3D4E-F5G6H-J7K8M"
HELLO_MSG = Hello(PROTOCOL_VERSION, 1, DEV, [SPACE, SPACE], "test")
AUTH_MSG = Auth(b"s" * 64, "http://127.0.0.1:1", {SPACE: [b"entry"]})


def _ready(now: float = 0.0, **kw: float) -> RelaySession:
    sm = RelaySession(now, handshake_s=10, heartbeat_s=20, stall_s=60, **kw)
    assert sm.receive(HELLO_MSG, now) == [Challenge(HELLO_MSG, (SPACE,))]
    sm.challenged(now)
    assert sm.receive(AUTH_MSG, now) == [Admit(HELLO_MSG, AUTH_MSG, (SPACE,))]
    sm.admitted(DEV, TokenBucket(10, 3, now), now)
    assert sm.phase == READY and sm.device == DEV
    return sm


def _closed_with(actions: list, kind: type, code: str, reap: bool = False) -> str:
    assert len(actions) == 1 and isinstance(actions[0], Close), actions
    msg = actions[0].msg
    assert isinstance(msg, kind) and msg.code == code, msg
    assert actions[0].reap is reap
    return msg.reason


# ------------------------------------------------------------------------------ handshake


def test_the_handshake_in_order() -> None:
    sm = RelaySession(0.0)
    assert sm.phase == HELLO and sm.deadline() == 10.0
    acts = sm.receive(HELLO_MSG, 1.0)
    assert acts == [Challenge(HELLO_MSG, (SPACE,))]  # the spaces once each
    assert sm.phase == CHALLENGING and sm.deadline() is None  # the adapter is working
    sm.challenged(2.0)
    assert sm.phase == CHALLENGED and sm.deadline() == 12.0  # the auth step's own clock
    assert sm.receive(AUTH_MSG, 3.0) == [Admit(HELLO_MSG, AUTH_MSG, (SPACE,))]
    assert sm.phase == AUTHENTICATING
    assert sm.tick(100.0) == []  # admission is the adapter's (its own slots and timeouts)
    sm.admitted(DEV, TokenBucket(10, 3, 4.0), 4.0)
    assert sm.phase == READY


@pytest.mark.parametrize(("first", "code", "words"), [
    (Ping(1), "bad_message", "first message must be hello"),
    (Hello(PROTOCOL_VERSION + 1, 1, DEV, [], ""), "incompatible_version", "update"),
    (Hello(PROTOCOL_VERSION - 1, 1, DEV, [], ""), "incompatible_version", "protocol"),
])
def test_a_wrong_opening_is_refused(first: object, code: str, words: str) -> None:
    sm = RelaySession(0.0)
    reason = _closed_with(sm.receive(first, 0.0), Refused, code)  # type: ignore[arg-type]
    assert words in reason
    assert sm.phase == CLOSED and sm.closed_by == (code, reason)
    assert sm.receive(HELLO_MSG, 1.0) == [] and sm.tick(99.0) == []  # closed: nothing more


@pytest.mark.parametrize(("answer", "words"), [
    (Ping(1), "answer to a challenge must be auth"),
    (Auth(b"s" * 64, "u", {OTHER: []}), "space the hello did not name"),
    (Auth(b"s" * 64, "u", {SPACE: [b"e"] * (MAX_AUTH_ENTRIES + 1)}), "entries"),
])
def test_a_wrong_answer_to_the_challenge_is_refused(answer: object, words: str) -> None:
    sm = RelaySession(0.0)
    sm.receive(HELLO_MSG, 0.0)
    sm.challenged(0.0)
    reason = _closed_with(sm.receive(answer, 1.0), Refused, "bad_message")  # type: ignore[arg-type]
    assert words in reason


def test_each_handshake_step_has_its_time() -> None:
    sm = RelaySession(0.0, handshake_s=10)
    assert sm.tick(9.9) == []
    assert "longer than 10 s" in _closed_with(sm.tick(10.0), Refused, "timeout")
    sm = RelaySession(0.0, handshake_s=10)
    sm.receive(HELLO_MSG, 5.0)
    sm.challenged(9.0)  # the slot wait and storage took 4 s: the auth step starts now
    assert sm.tick(18.9) == []
    _closed_with(sm.tick(19.0), Refused, "timeout")


def test_a_frame_before_the_relay_answered_is_a_protocol_error() -> None:
    sm = RelaySession(0.0)
    sm.receive(HELLO_MSG, 0.0)
    _closed_with(sm.receive(AUTH_MSG, 0.1), Refused, "bad_message")


def test_a_bad_frame_and_an_adapter_refusal_close_with_the_phase_s_word() -> None:
    sm = RelaySession(0.0)
    assert _closed_with(sm.bad_frame("relay message put.x: nope"), Refused,
                        "bad_message") == "relay message put.x: nope"
    sm = _ready()
    _closed_with(sm.refuse(Refusal("revoked", "revoked: gone")), Bye, "revoked")
    assert sm.refuse(Refusal("revoked", "again")) == []  # once


def test_adapter_mistakes_are_caught() -> None:
    sm = RelaySession(0.0)
    with pytest.raises(SessionStateError):
        sm.challenged(0.0)
    with pytest.raises(SessionStateError):
        sm.admitted(DEV, TokenBucket(1, 1, 0.0), 0.0)
    with pytest.raises(ValueError):
        RelaySession(0.0, heartbeat_s=10, stall_s=5)


# ------------------------------------------------------------------------------ requests


def test_requests_are_handed_over_and_pings_answered_here() -> None:
    sm = _ready()
    fetch = Fetch(1, SPACE, TAG, {})
    assert sm.receive(fetch, 1.0) == [Handle(fetch)]
    assert sm.receive(Ping(9), 1.0) == [Send(Pong(9))]
    presence = Presence(SPACE, None, None)
    assert sm.receive(presence, 1.0) == [Handle(presence)]


def test_a_device_over_its_rate_is_slowed_not_dropped() -> None:
    sm = _ready()  # 10 messages a second, burst 3
    for _ in range(3):
        assert sm.receive(Ping(1), 0.0) == [Send(Pong(1))]
    acts = sm.receive(Ping(2), 0.0)
    assert isinstance(acts[0], Delay) and acts[0].seconds == pytest.approx(0.1)
    assert acts[1] == Send(Pong(2))


def test_handshake_kinds_after_the_handshake_end_the_session() -> None:
    sm = _ready()
    assert "hello message is not expected" in _closed_with(sm.receive(HELLO_MSG, 1.0), Bye,
                                                          "bad_message")


def test_only_the_adapter_s_request_kinds_pass() -> None:
    sm = RelaySession(0.0, requests=frozenset({"fetch"}))
    sm.receive(HELLO_MSG, 0.0)
    sm.challenged(0.0)
    sm.receive(AUTH_MSG, 0.0)
    sm.admitted(DEV, TokenBucket(10, 10, 0.0), 0.0)
    put = Put(1, SPACE, TAG, 1, (Envelope(DEV, 1, 1, b"c"),))
    _closed_with(sm.receive(put, 1.0), Bye, "bad_message")


# ------------------------------------------------------------------------------ liveness


def test_heartbeats_when_silent_and_reaping_when_stalled() -> None:
    sm = _ready(0.0)  # heartbeat 20 s, stall 60 s
    assert sm.deadline() == 20.0
    assert sm.tick(19.9) == []
    assert sm.tick(20.0) == [Heartbeat()]
    assert sm.tick(25.0) == []  # one ping per heartbeat
    assert sm.deadline() == 40.0
    assert sm.tick(40.0) == [Heartbeat()]
    sm.heard(45.0)  # the pong (or any frame) came back
    assert sm.deadline() == 65.0
    assert sm.tick(64.9) == []
    assert sm.tick(65.0) == [Heartbeat()]
    assert sm.tick(85.0) == [Heartbeat()]
    assert sm.tick(104.9) == []
    reason = _closed_with(sm.tick(105.0), Bye, "timeout", reap=True)
    assert "answered nothing" in reason
    assert sm.closed and sm.deadline() is None


def test_traffic_keeps_a_session_alive_without_pings() -> None:
    sm = _ready(0.0)
    for t in range(1, 200, 10):
        assert sm.receive(Ping(t), float(t))[-1] == Send(Pong(t))
        assert sm.tick(float(t) + 5) == []
    assert sm.phase == READY


# ------------------------------------------------------------------------------ a real relay


async def test_a_stalled_device_is_reaped_not_left_holding_its_slot(lab: Lab) -> None:
    """Bob authenticates, asks for far more than his socket takes, fills his reply queue and
    then reads nothing and answers no ping. The relay must drop him within its stall timeout
    (its writer is stuck on a full socket, so a polite close would wait forever)."""
    alice, bob, space = team_of(lab)
    relay = await lab.start_relay(heartbeat_s=0.25, stall_timeout_s=1.0)
    a = await raw_client(lab, alice.identity, logs_of(alice, space))
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(relay.url.replace("http", "ws") + "/v1/ws", autoping=False,
                               heartbeat=None, max_msg_size=0)
    try:
        assert await settle(a) == "connected"
        key = new_content_key()
        aid = alice.identity.device_id
        for seq in range(1, 9):
            ct = seal_payload(key, 1, os.urandom(1_000_000))
            assert await a.put(space, TAG, [Envelope(aid, seq, 1, ct)], declared_bytes=1000) == 1
        await ws.send_bytes(encode_message({"t": "hello", "p": PROTOCOL_VERSION, "m": 1,
                                            "d": bob.identity.device_id, "sp": [space],
                                            "a": "test"}, sender=CLIENT))
        ch = decode((await ws.receive(timeout=5)).data, sender=RELAY)
        origin = relay_origin(relay.url)
        await ws.send_bytes(encode_message({"t": "auth", "u": origin, "sig": sign_challenge(
            bob.identity, ch.nonce, ch.key, origin), "logs": {space: []}}, sender=CLIENT))  # type: ignore[attr-defined]
        assert isinstance(decode((await ws.receive(timeout=5)).data, sender=RELAY), Welcome)

        def bobs() -> list:
            return [s for s in relay.sessions if s.device == bob.identity.device_id]

        assert bobs()
        await asyncio.sleep(0.3)  # the presence flush of bob's arrival has been pushed
        fetch = encode_message({"t": "fetch", "i": 1, "s": space, "e": TAG, "vv": {}},
                               sender=CLIENT)
        ping = encode_message({"t": "ping", "n": 1}, sender=CLIENT)
        for _ in range(12):  # ~48 MB of batches: the socket fills, the writer blocks
            await ws.send_bytes(fetch)
        for _ in range(1100):  # more replies than the session's queue holds
            await ws.send_bytes(ping)
        await until(lambda: not bobs(), 15.0, "the stalled session to be reaped")
        assert relay.stats["reaped"] >= 1
        assert a.connected  # alice was never held up
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2.0)
        await http.close()
        await a.stop()
