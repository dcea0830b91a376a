"""Relay -> daemon frames are held to per-kind caps before they are decoded (issue 12).

A hostile relay (or a machine in the middle holding a key the device pinned) must not be able
to make a daemon build millions of items: each frame's kind is read without decoding it, then
its bytes and its CBOR items are held to that kind's cap (`net.relay_gate`). The largest
honest frame of each kind still passes; the refusal names the kind and the limit; and a real
`RelayClient` talking to a fake relay drops the session on such a frame without decoding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import cbor2
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync import MODEL_VERSION, PROTOCOL_VERSION
from mocksync.changes.canonical import MAX_DEPTH, encode
from mocksync.net import relay_client as client_mod
from mocksync.net.relay_gate import (
    PEEK_ITEMS,
    RELAY_FRAME_CAPS,
    UNKNOWN_KIND_CAP,
    cap_of,
    check_relay_frame,
    decode_relay_frame,
    peek_kind,
)
from mocksync.relay.auth import prove_relay, relay_public
from mocksync.relay.errors import FrameTooLarge, RelayProtocolError
from mocksync.relay.frames import MAX_AUTH_FRAME_BYTES
from mocksync.relay.protocol import (
    CLIENT,
    MAX_BATCH_ITEMS,
    MAX_SPACES_PER_SESSION,
    MAX_WHO_DEVICES,
    RELAY,
    RELAY_KINDS,
    Batch,
    decode_message,
)
from mocksync.space.membership import MAX_LOG_ENTRIES
from mocksync.spaceio.actions import create_space
from mocksync.spaceio.store import get_space

from helpers.fakerelay import serve_ws
from helpers.relaylab import Lab, until

SPACE = "ab" * 16
TAG = "cd" * 16
DEV = "ABCDE-FGHJK-MNPQR-STVWX"


def dev(n: int) -> str:
    """A distinct, well-formed device id."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    digits = "".join(alphabet[(n >> (5 * i)) & 31] for i in range(20))
    return "-".join(digits[i:i + 5] for i in range(0, 20, 5))


# ---------------------------------------------------------------- the table


def test_every_relay_kind_has_a_deliberate_cap() -> None:
    assert set(RELAY_KINDS) <= set(RELAY_FRAME_CAPS)
    assert cap_of("no-such-kind") == UNKNOWN_KIND_CAP


def test_kind_is_read_without_decoding_the_rest() -> None:
    frame = encode({"t": "batch", "i": 7, "s": SPACE, "e": TAG, "x": [], "more": False})
    assert peek_kind(frame) == "batch"
    # Keys before `t` (canonical order: shortest first) may hold small values only.
    junk = encode({"a": list(range(PEEK_ITEMS * 2)), "t": "ok"})
    with pytest.raises(RelayProtocolError, match=f"first {PEEK_ITEMS} items"):
        peek_kind(junk)
    for bad in (encode([1, 2]), encode({"t": 5}), encode({"u": 1}), b"\xa1", b""):
        with pytest.raises(RelayProtocolError):
            peek_kind(bad)


# ---------------------------------------------------------------- honest frames pass


def _honest(frame: dict[str, Any]) -> bytes:
    data = encode(frame)
    decode_message(data, sender=RELAY)  # really a frame an honest relay may send
    return data


def test_largest_honest_frames_pass() -> None:
    envelopes = [[dev(i), i + 1, 1, b"x"] for i in range(MAX_BATCH_ITEMS)]
    frames = [
        {"t": "batch", "i": 1, "s": SPACE, "e": TAG, "x": envelopes, "more": True},
        {"t": "env", "s": SPACE, "e": TAG, "x": envelopes},
        {"t": "who", "s": SPACE,
         "ds": [[dev(i), TAG, "e" * 64] for i in range(MAX_WHO_DEVICES)],
         "off": [dev(i + MAX_WHO_DEVICES) for i in range(MAX_WHO_DEVICES)]},
        {"t": "welcome", "lim": {"frame": 1, "items": 1, "rate": 1},
         "ok": {f"{i:032x}": {"m": MODEL_VERSION, "plan": "enterprise", "envs": 2**39,
                              "bytes": 2**49, "devs": 2**19}
                for i in range(MAX_SPACES_PER_SESSION)},
         "no": {}},
        {"t": "entries", "s": SPACE, "w": [b"e" * 70] * MAX_LOG_ENTRIES},
        {"t": "refused", "c": "bad_message", "r": "\U0001F600" * 500},
    ]
    for frame in frames:
        assert check_relay_frame(_honest(frame)) == frame["t"]


def test_challenge_listing_a_full_auth_frame_of_hashes_passes() -> None:
    per = (MAX_AUTH_FRAME_BYTES // 64) // MAX_SPACES_PER_SESSION
    have = {f"{i:032x}": [os.urandom(32) for _ in range(per)]
            for i in range(MAX_SPACES_PER_SESSION)}
    frame = encode({"t": "challenge", "p": PROTOCOL_VERSION, "n": b"n" * 32, "k": b"k" * 32,
                    "ks": b"s" * 64, "have": have})
    assert check_relay_frame(frame) == "challenge"


# ---------------------------------------------------------------- hostile frames refused


@pytest.mark.parametrize("kind", ["ok", "pong", "refused", "bye", "nack", "ack"])
def test_small_kinds_are_refused_by_size_before_anything_is_walked(kind: str) -> None:
    """16 Mi one-byte items in an `ok`: refused from its length alone."""
    n = 16 * 1024 * 1024  # the list's head, then its items, written out (encoding is slow)
    frame = (b"\xa2" + encode("t") + encode(kind) + encode("x")
             + b"\x9a" + n.to_bytes(4, "big") + b"\x00" * n)
    with pytest.raises(FrameTooLarge, match=f"relay {kind} frame of .* byte limit"):
        check_relay_frame(frame)


@pytest.mark.parametrize("kind, extra", [
    ("who", {"s": SPACE, "ds": [0] * 900_000, "off": []}),
    ("batch", {"i": 1, "s": SPACE, "e": TAG, "x": [0] * 3_000_000, "more": False}),
    ("welcome", {"ok": {"z": [0] * 900_000}, "no": {}}),
    ("signal", {"s": SPACE, "from": [0] * 30_000}),
])
def test_item_heavy_frames_stop_at_their_kind_cap(kind: str, extra: dict[str, Any]) -> None:
    """Under the kind's byte cap but full of tiny items: the walk stops at the item cap (the
    refusal says so), long before the generic 16 Mi items a frame could hold before."""
    frame = encode({"t": kind, **extra})
    cap = RELAY_FRAME_CAPS[kind]
    assert len(frame) <= cap.max_bytes
    with pytest.raises(FrameTooLarge, match=f"more than {cap.max_items} items"):
        check_relay_frame(frame)


def test_unknown_kind_is_held_to_the_small_cap() -> None:
    with pytest.raises(FrameTooLarge):
        check_relay_frame(encode({"t": "zzz", "x": [0] * 1000}))


# ---------------------------------------------------------------- one pass: decode_relay_frame


def test_the_client_path_decodes_the_largest_honest_frames() -> None:
    envelopes = [[dev(i), i + 1, 1, b"x"] for i in range(MAX_BATCH_ITEMS)]
    frame = _honest({"t": "batch", "i": 1, "s": SPACE, "e": TAG, "x": envelopes, "more": True})
    msg = decode_relay_frame(frame)
    assert isinstance(msg, Batch) and len(msg.items) == MAX_BATCH_ITEMS


@pytest.mark.parametrize("kind, extra", [
    ("who", {"s": SPACE, "ds": [0] * 900_000, "off": []}),
    ("batch", {"i": 1, "s": SPACE, "e": TAG, "x": [0] * 3_000_000, "more": False}),
    ("welcome", {"ok": {"z": [0] * 900_000}, "no": {}}),
    ("signal", {"s": SPACE, "from": [0] * 30_000}),
    ("zzz", {"x": [0] * 1000}),
])
def test_one_pass_holds_each_kinds_item_cap_before_building(
        kind: str, extra: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-kind item cap is held by the decoding gate's own scan (no second walk), and
    the frame is refused before cbor2 builds anything, exactly at the kind's cap."""
    frame = encode({"t": kind, **extra})
    cap = cap_of(kind)
    monkeypatch.setattr(cbor2, "loads", lambda *_a, **_k: pytest.fail("built a capped frame"))
    with pytest.raises(FrameTooLarge, match=f"more than {cap.max_items} items"):
        decode_relay_frame(frame)


def test_one_pass_keeps_the_byte_caps_and_the_depth_cap() -> None:
    n = 1 << 20
    small = b"\xa2" + encode("t") + encode("ok") + encode("x") + b"\x5a" + n.to_bytes(4, "big") \
        + b"\x00" * n
    with pytest.raises(FrameTooLarge, match="relay ok frame of .* byte limit"):
        decode_relay_frame(small)
    deep = encode({"t": "batch", "x": 0})[:-1] + b"\x81" * (MAX_DEPTH + 2) + b"\x00"
    with pytest.raises(FrameTooLarge, match="deeper than"):
        decode_relay_frame(deep)
    with pytest.raises(RelayProtocolError, match="not canonical"):
        decode_relay_frame(b"\xa2\x61t\x62ok\x61a\x00")  # 'a' after 't': out of order


# ---------------------------------------------------------------- a fake relay, end to end


class HostileRelay:
    """A relay with its own key (a device trusts a new relay on first use) that admits the
    device, then sends `attack` frames."""

    def __init__(self, space: str, attack: list[bytes]) -> None:
        self.space = space
        self.attack = attack
        self.key = Ed25519PrivateKey.generate()
        self.sent = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        self.runner, self.url = await serve_ws(self.handle)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        hello = decode_message((await ws.receive()).data, sender=CLIENT)
        nonce = os.urandom(32)
        await ws.send_bytes(encode({"t": "challenge", "p": PROTOCOL_VERSION, "n": nonce,
                                    "k": relay_public(self.key),
                                    "ks": prove_relay(self.key, nonce, hello["d"]),
                                    "have": {}}))
        await ws.receive()  # the auth frame: whatever it says, "welcome"
        await ws.send_bytes(encode({
            "t": "welcome", "lim": {"frame": 1 << 20, "items": 1000, "rate": 100},
            "ok": {self.space: {"m": MODEL_VERSION, "plan": "team", "envs": 50,
                                "bytes": 1 << 20, "devs": 5}}, "no": {}}))
        for frame in self.attack:
            await ws.send_bytes(frame)
        self.sent.set()
        with_timeout = asyncio.timeout(10)
        async with with_timeout:
            async for _msg in ws:  # until the client hangs up
                pass
        return ws


async def test_a_client_drops_a_relay_that_sends_an_item_heavy_frame(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = lab.device("alice")
    space = create_space(alice.home, alice.identity, "team").space_id
    built: list[str] = []  # the kind of every frame cbor2 was asked to build
    real_loads = cbor2.loads

    def spy(data: Any, *args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(RelayProtocolError):
            built.append(peek_kind(bytes(data)))
        return real_loads(data, *args, **kwargs)

    monkeypatch.setattr(cbor2, "loads", spy)
    bomb = encode({"t": "who", "s": space, "ds": [0] * 200_000, "off": []})
    relay = HostileRelay(space, [bomb])
    await relay.start()
    client = client_mod.RelayClient(
        relay.url, alice.identity,
        lambda: {space: [e.wire for e in get_space(alice.home, space).entries]},
        backoff_min_s=30, refused_retry_s=30)
    try:
        cpu = time.process_time()
        await client.start()
        await asyncio.wait_for(relay.sent.wait(), 15)
        cap = RELAY_FRAME_CAPS["who"].max_items
        await until(lambda: f"more than {cap} items" in (client.status()["reason"] or ""),
                    what="the client refusing the relay's who frame")
        print(f"CPU spent by the test process on the session: "
              f"{time.process_time() - cpu:.3f} s")
        assert client.status()["state"] == "offline"
        assert "who" not in built  # refused by the gate's scan, before cbor2 built it
        assert {"challenge", "welcome"} <= set(built)
    finally:
        await client.stop()
        await relay.stop()


# ---------------------------------------------------------------- undecodable change sets


async def test_an_undecodable_change_set_from_the_relay_is_listed_as_refused(lab: Lab) -> None:
    """Bob (a member, in his own slot) puts an envelope that opens with the space key but
    holds no decodable change set: Alice's `status` lists it under the environment's
    `refused`, not only in a log line, and her environment is otherwise untouched."""
    from mocksync.relay.envelope import seal_envelope

    from envfactory import small_env
    from helpers.devices import logs_of
    from helpers.relaylab import edits, raw_client, settle, share, team_of

    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    doc = small_env()
    share(a, doc, space)
    await edits(a, doc, 1)
    env = doc["uuid"]
    tag = ta._tagger(space)(env)
    before = a.store.version_vector(env)
    bob_id = bob.identity.device_id
    body = encode({"s": bytes.fromhex(space), "e": env, "d": bob_id, "n": 1, "junk": True})
    sealed = seal_envelope(space, tag, get_space(bob.home, space).keys,
                           encode([body, b"not a signature"]))
    m = await raw_client(lab, bob.identity, logs_of(bob, space))
    try:
        assert await settle(m) == "connected"
        assert await m.put(space, tag, [sealed], declared_bytes=1000) == 1
    finally:
        await m.stop()

    def listed() -> list[dict[str, Any]]:
        entry = next(e for e in a.status()["environments"] if e["uuid"] == env)
        return [r for r in entry["refused"] if r["device"] == bob_id and r["seq"] == 1]

    await until(lambda: listed(), what="the undecodable change set in alice's status")
    assert listed()[0]["reason"].startswith("undecodable change set: ")
    assert a.store.version_vector(env) == before
