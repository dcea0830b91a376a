"""Attack: a relay passes another relay's challenge through to log in there as a device.

Before issue 12 a device signed only `nonce + device id`: a relay a device was pointed at
(an old relay of the space, a malicious one) could forward the challenge of the real relay,
hand the device's answer back to it and be admitted as that device. Now the answer is bound
to the relay's own key (announced and proven in each challenge, pinned per space on first use)
and to the address the device dialled, so the answer is worthless anywhere else.

Everything runs on 127.0.0.1: real `RelayServer`s, the real `RelayClient`, and an attacker
relay built as a small aiohttp WebSocket server that forwards frames.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.relay.auth import (
    RELAY_KEY_FILE,
    check_relay_proof,
    fingerprint,
    load_relay_key,
    origin_accepted,
    pin_refusal,
    prove_relay,
    relay_origin,
    relay_public,
    sign_challenge,
    verify_challenge,
)
from mocksync.relay.errors import RelayKeyError
from mocksync.relay.protocol import CLIENT, RELAY, decode_message, encode_message
from mocksync.relay.server import RelayConfig, RelayServer
from mocksync.spaceio.store import relay_pin, set_relay_pin

from helpers.devices import logs_of
from helpers.fakerelay import serve_ws
from helpers.relaylab import Lab, raw_client, settle, team_of, until

SPACE = "ab" * 16


# ------------------------------------------------------------------------------ pure parts


def test_origin_is_normalised() -> None:
    assert relay_origin("http://127.0.0.1:8765") == "http://127.0.0.1:8765"
    assert relay_origin("HTTP://Relay.Example.com:8765/") == "http://relay.example.com:8765"
    assert relay_origin("https://relay.example.com") == "https://relay.example.com:443"
    assert relay_origin("wss://relay.example.com/v1/ws") == "https://relay.example.com:443"
    assert relay_origin("ws://[::1]:9000") == "http://[::1]:9000"
    for bad in ("relay.example.com", "ftp://x:1", "http://:80", "http://x:99999"):
        with pytest.raises(Exception, match="relay address"):
            relay_origin(bad)


def test_origin_must_name_this_relay() -> None:
    o = "http://127.0.0.1:8765"
    assert origin_accepted(o, "127.0.0.1:8765")
    assert not origin_accepted(o, "127.0.0.1:9999")  # another port: another relay
    assert not origin_accepted(o, "10.0.0.1:8765")
    assert not origin_accepted(o, None)
    assert origin_accepted("https://relay.example.com:443", "Relay.Example.com")  # default port
    assert not origin_accepted("http://relay.example.com:8765", "relay.example.com")
    # configured public URLs are authoritative: the Host header no longer decides
    pub = ("https://relay.example.com",)
    assert origin_accepted("https://relay.example.com:443", "evil:1", pub)
    assert not origin_accepted("http://127.0.0.1:8765", "127.0.0.1:8765", pub)


def test_answer_is_bound_to_relay_key_and_origin() -> None:
    from mocksync.space.identity import Identity

    dev = Identity.generate("laptop", now=0)
    n, k1, k2 = os.urandom(32), os.urandom(32), os.urandom(32)
    sig = sign_challenge(dev, n, k1, "http://a:1")
    assert verify_challenge(dev.sign_public, n, dev.device_id, k1, "http://a:1", sig)
    assert not verify_challenge(dev.sign_public, n, dev.device_id, k2, "http://a:1", sig)
    assert not verify_challenge(dev.sign_public, n, dev.device_id, k1, "http://b:1", sig)


def test_relay_proof() -> None:
    key = Ed25519PrivateKey.generate()
    pub, n = relay_public(key), os.urandom(32)
    proof = prove_relay(key, n, "DEV")
    assert check_relay_proof(pub, n, "DEV", proof)
    assert not check_relay_proof(pub, n, "OTHER", proof)
    assert not check_relay_proof(pub, os.urandom(32), "DEV", proof)
    assert not check_relay_proof(relay_public(Ed25519PrivateKey.generate()), n, "DEV", proof)


def test_pin_refusal_decides_before_signing() -> None:
    k1, k2 = b"1" * 32, b"2" * 32
    assert pin_refusal({SPACE: None}, {SPACE: "team"}, k1, "http://r:1") is None  # TOFU
    assert pin_refusal({SPACE: k1}, {SPACE: "team"}, k1, "http://r:1") is None
    why = pin_refusal({SPACE: k1, "cd" * 16: None}, {SPACE: "team"}, k2, "http://r:1")
    assert why is not None and "'team'" in why and "http://r:1" in why
    assert "mocksync space unpin-relay team" in why


def test_relay_key_is_persistent_and_private(tmp_path: Path) -> None:
    k = load_relay_key(tmp_path / "r")
    path = tmp_path / "r" / RELAY_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert relay_public(load_relay_key(tmp_path / "r")) == relay_public(k)
    path.write_bytes(b"short")
    with pytest.raises(RelayKeyError, match="damaged"):
        load_relay_key(tmp_path / "r")


# ------------------------------------------------------------------------------ the attack


class ForwardingRelay:
    """The attacker: a WebSocket endpoint that passes the victim's handshake through to the
    real relay, optionally replacing the real relay's key and proof by its own."""

    def __init__(self, target_url: str, *, own_key: bool, host_header: str | None = None
                 ) -> None:
        self.target_url = target_url
        self.own_key = own_key
        self.host_header = host_header
        self.key = Ed25519PrivateKey.generate()
        self.verdict: dict[str, Any] | None = None
        self.got_auth = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        self.runner, self.url = await serve_ws(self.handle)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        victim = web.WebSocketResponse()
        await victim.prepare(request)
        headers = {"Host": self.host_header} if self.host_header else None
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(self.target_url + "/v1/ws", headers=headers) as real:
            hello = await victim.receive()
            await real.send_bytes(hello.data)
            challenge = decode_message((await real.receive()).data, sender=RELAY)
            if self.own_key:  # a genuine relay key: its own proof over the real nonce
                device = decode_message(hello.data, sender=CLIENT)["d"]
                challenge["k"] = relay_public(self.key)
                challenge["ks"] = prove_relay(self.key, challenge["n"], device)
            await victim.send_bytes(encode_message(challenge, sender=RELAY))
            answer = await victim.receive()
            if answer.type != aiohttp.WSMsgType.BINARY:
                return victim
            self.got_auth.set()
            await real.send_bytes(answer.data)
            self.verdict = decode_message((await real.receive()).data, sender=RELAY)
        await victim.close()
        return victim


@pytest.mark.parametrize("own_key", [True, False], ids=["own-key", "forwarded-key"])
async def test_answer_given_to_one_relay_does_not_open_another(lab: Lab, own_key: bool) -> None:
    alice, _bob, space = team_of(lab)
    await lab.start_relay()
    a = await raw_client(lab, alice.identity, logs_of(alice, space))
    assert await settle(a) == "connected"  # the real relay knows the space
    await a.stop()
    mitm = ForwardingRelay(lab.relay.url, own_key=own_key)
    await mitm.start()
    if own_key:  # the Host header passes too: only the key binding stands in the way
        mitm.host_header = mitm.url.split("://", 1)[1]
    victim = None
    try:
        from mocksync.net.relay_client import RelayClient

        victim = RelayClient(mitm.url, alice.identity, lambda: logs_of(alice, space),
                             backoff_min_s=5, refused_retry_s=30)
        await victim.start()
        await until(lambda: mitm.verdict is not None, what="the real relay's verdict")
        assert mitm.verdict["t"] == "refused" and mitm.verdict["c"] == "auth_refused"
        assert not any(s.device == alice.identity.device_id for s in lab.relay.sessions)
        why = mitm.verdict["r"]
        assert ("another relay" in why) if own_key else ("not this relay's address" in why)
    finally:
        if victim is not None:
            await victim.stop()
        await mitm.stop()


async def test_rewritten_host_is_refused_when_public_url_is_set(lab: Lab) -> None:
    """A forwarder that also fakes the Host header still fails at a relay that knows its
    public address."""
    alice, _bob, space = team_of(lab)
    relay = await lab.start_relay(public_urls=("https://relay.example.com",))
    mitm = ForwardingRelay(relay.url, own_key=False)
    await mitm.start()
    mitm.host_header = mitm.url.split("://", 1)[1]  # what the victim dialled
    from mocksync.net.relay_client import RelayClient

    victim = RelayClient(mitm.url, alice.identity, lambda: logs_of(alice, space),
                         backoff_min_s=5, refused_retry_s=30)
    try:
        await victim.start()
        await until(lambda: mitm.verdict is not None, what="the real relay's verdict")
        assert mitm.verdict["t"] == "refused" and "not this relay's address" in mitm.verdict["r"]
    finally:
        await victim.stop()
        await mitm.stop()


async def test_space_pins_its_relay_and_refuses_another(lab: Lab) -> None:
    """TOFU: the first relay that admits a daemon is pinned with the space; a relay with
    another key on the same address gets nothing signed, and the refusal says what to do."""
    alice, _bob, space = team_of(lab)
    relay = await lab.start_relay()
    a, ta = await lab.agent(alice)
    await until(lambda: ta.status()["relay"]["state"] == "connected", what="connected")
    assert relay_pin(alice.home, space) == relay.public_key
    assert ta.status()["relay"]["relay_key"] == fingerprint(relay.public_key)
    async with aiohttp.ClientSession() as http, http.get(relay.url + "/v1/health") as r:
        assert (await r.json())["key"] == fingerprint(relay.public_key)  # what operators see
    # The same relay restarted (same data dir, same key): still trusted.
    await lab.stop_relay()
    relay = await lab.start_relay()
    await until(lambda: ta.status()["relay"]["state"] == "connected", what="reconnected")
    # Another relay (fresh data dir, new key) on the same port: refused before signing.
    await lab.stop_relay()
    lab.relay = RelayServer(RelayConfig(data_dir=lab.tmp / "other-relay", port=lab.port))
    await lab.relay.start()
    other = lab.relay
    await until(lambda: ta.status()["relay"]["state"] == "refused", what="refused")
    st = ta.status()["relay"]
    assert st["code"] == "relay_key_changed"
    assert "pinned key" in st["reason"] and "mocksync space unpin-relay " in st["reason"]
    assert "team" in st["reason"].rsplit("unpin-relay", 1)[1]
    assert not any(s.device == alice.identity.device_id for s in other.sessions)
    # The person forgets the pins on purpose: the new relay is trusted on first use.
    for sp in list(logs_of_all(alice)):
        set_relay_pin(alice.home, sp, None)
    await ta.client.reconnect()
    await until(lambda: ta.status()["relay"]["state"] == "connected", what="re-pinned")
    assert relay_pin(alice.home, space) == other.public_key


def logs_of_all(dev: Any) -> list[str]:
    from mocksync.spaceio.store import list_spaces

    return [s.space_id for s in list_spaces(dev.home)]


def test_unpin_relay_command(tmp_path: Path) -> None:
    """`mocksync space unpin-relay SPACE...` forgets the pins (every name checked first)."""
    from click.testing import CliRunner

    from mocksync.cli.common import main_group
    from mocksync.paths import Home
    from mocksync.relay.auth import fingerprint
    from mocksync.spaceio.actions import create_space, init_device

    home = Home(tmp_path / "h")
    ident, _ = init_device(home, name="laptop", member_name="alice")
    sp = create_space(home, ident, "team")
    key = os.urandom(32)
    set_relay_pin(home, sp.space_id, key)
    run = CliRunner().invoke
    res = run(main_group, ["--home", str(home.root), "space", "unpin-relay", "team", "nope"])
    assert res.exit_code != 0 and relay_pin(home, sp.space_id) == key  # nothing changed
    res = run(main_group, ["--home", str(home.root), "space", "unpin-relay", "team"])
    assert res.exit_code == 0, res.output
    assert fingerprint(key) in res.output and relay_pin(home, sp.space_id) is None
