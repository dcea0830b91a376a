"""Who the relay lets in and what it refuses, as people see it (loopback only).

Unknown, forged and revoked devices; the model-version gate after `migrate`; protocol
mismatch; quotas (environments, declared size, stored history) and the device limit, each
reaching `status` as a sentence; connection limits, malformed frames and handshake timeouts;
signaling between members (signed end to end); TLS; the `mocksync relay` command and its clean
stop on SIGTERM; `daemon --relay` wiring.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mocksync import PROTOCOL_VERSION
from mocksync.agent.daemon import compact_size
from mocksync.agent.errors import QuotaError
from mocksync.agent.settings import Settings
from mocksync.devtools.pairing import pair
from mocksync.net.errors import RelayRefused
from mocksync.net.relay_transport import RelayTransport
from mocksync.relay.auth import seal_signal
from mocksync.relay.envelope import Envelope
from mocksync.relay.policy import STORED_BYTES_FACTOR
from mocksync.relay.protocol import CLIENT, encode_message
from mocksync.space.identity import Identity
from mocksync.space.keys import new_content_key, seal_payload
from mocksync.space.membership import migrate
from mocksync.space.quotas import get_plan
from mocksync.spaceio.actions import create_space, remove
from mocksync.spaceio.store import append_entries, get_space

from envfactory import small_env
from helpers.devices import logs_of
from helpers.fakeagent import FakeAgent, FakeSpaces
from helpers.relaylab import Lab, raw_client, save, settle, share, team_of, until


class Impostor:
    """Claims another device's id but holds a different key."""

    def __init__(self, claimed: str) -> None:
        self.real = Identity.generate("mallory", now=0)
        self.device_id = claimed

    def sign(self, data: bytes) -> bytes:
        return self.real.sign(data)


# ------------------------------------------------------------------------------ who gets in


async def test_unknown_and_forged_devices_are_refused(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a = await raw_client(lab, alice.identity, logs_of(alice, space))
    assert await settle(a) == "connected"
    # A device no space on this relay knows.
    carol = lab.device("carol")
    c = await raw_client(lab, carol.identity, {space: []})
    try:
        assert await settle(c) == "refused"
        assert c.code == "auth_refused"
        assert c.reason.startswith("auth refused:") and carol.identity.device_id in c.reason
        assert c.next_retry_s is not None and c.next_retry_s > 5  # slow retry after refusal
    finally:
        await c.stop()
    # Carol claiming to be bob (whose key the log holds) cannot sign for him.
    m = await raw_client(lab, Impostor(bob.identity.device_id), {space: []})
    try:
        assert await settle(m) == "refused"
        assert m.code == "auth_refused" and "does not verify" in m.reason
    finally:
        await m.stop()
    # Carol uploading a log of her own for alice's space id is refused too.
    create_space(carol.home, carol.identity, "fake-team")
    fake = get_space(carol.home, "fake-team")
    f = await raw_client(lab, carol.identity, {space: [e.wire for e in fake.entries]})
    try:
        assert await settle(f) == "refused" and f.code == "auth_refused"
    finally:
        await f.stop()
    # still alice's space (the relay cannot read its name: it is sealed for members)
    assert lab.relay.state(space).creator == alice.identity.device_id
    await a.stop()


async def test_revoked_device_is_dropped_and_refused(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    b, tb = await lab.agent(bob, spaces=[space])
    assert await ta.wait_synced(1) and await tb.wait_synced(1)
    remove(alice.home, alice.identity, space, bob.identity.device_id)
    await ta.push_logs()  # (the transport also checks every log_check_s)
    await until(lambda: tb.status()["relay"]["state"] == "refused", what="bob refused")
    st = tb.status()["relay"]
    assert st["code"] == "revoked"
    # the relay names the space by id: it cannot read its name (sealed for members)
    assert st["reason"].startswith(f"revoked: this device was removed from space {space[:12]}")
    # His other spaces still work: with them, the session is admitted and says why not team.
    await lab.stop_agent(b)
    b, tb = await lab.agent(bob)
    assert await tb.wait_synced(1)
    st = tb.status()["relay"]
    assert st["state"] == "connected" and space not in st["spaces"]
    assert "revoked" in st["refused_spaces"][space] and "revoked" in st["reason"]


async def test_old_model_refused_after_migration(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    b, tb = await lab.agent(bob, spaces=[space])  # model 1, fine so far
    assert await tb.wait_synced(1)
    stored = get_space(alice.home, space)
    entry = migrate(alice.identity, stored.state, model=2, now_ms=int(time.time() * 1000))
    append_entries(alice.home, space, [entry])
    a, ta = await lab.agent(alice, model_version=2, spaces=[space])
    assert await ta.wait_synced(1)
    assert lab.relay.state(space).model == 2
    want = "incompatible version: this space was migrated to model 2; update mocksync"
    await until(lambda: tb.status()["relay"]["state"] == "refused", what="bob refused")
    assert tb.status()["relay"]["reason"] == want
    assert tb.status()["relay"]["code"] == "incompatible_version"
    # A fresh connection of the old version is refused at once, the same way.
    c = await raw_client(lab, bob.identity, logs_of(bob, space))
    try:
        assert await settle(c) == "refused" and c.reason == want
    finally:
        await c.stop()


async def test_other_protocol_version_refused_with_sentence(lab: Lab) -> None:
    alice, _bob, space = team_of(lab)
    await lab.start_relay()
    from mocksync import PROTOCOL_VERSION as P

    c = await raw_client(lab, alice.identity, logs_of(alice, space), protocol_version=P + 1)
    try:
        assert await settle(c) == "refused"
        assert c.code == "incompatible_version"
        assert c.reason.startswith(f"incompatible version: the relay speaks protocol {P} and "
                                   f"this device {P + 1}")
    finally:
        await c.stop()


# ------------------------------------------------------------------------------ quotas


async def test_quota_on_environment_count_reaches_status(lab: Lab) -> None:
    alice, _bob, space = team_of(lab)
    await lab.start_relay(plan=get_plan("team", max_envs=1))
    a, ta = await lab.agent(alice)
    # Shared before the relay's welcome (no await since the start): the daemon still holds
    # the space to the default plan, so it is the relay that refuses the second one.
    one = small_env()
    share(a, one, space, "one.json")
    two = small_env()
    two["uuid"] = "e0000000-0000-4000-8000-000000000002"
    share(a, two, space, "two.json")
    await until(lambda: bool(ta.status()["relay"]["quota"]), what="a quota refusal")
    st = a.status()["relay"]
    assert st["state"] == "connected"
    assert st["reason"] == ("quota exceeded: team plan allows 1 environments and the space "
                            "already has 1")
    assert st["quota"] == [{"space": space, "env": two["uuid"], "reason": st["reason"]}]
    assert lab.relay.storage.env_count(space) == 1
    env = next(e for e in a.status()["environments"] if e["uuid"] == two["uuid"])
    assert env["state"] == "held" and env["reason"].startswith(st["reason"])
    # Now the daemon knows the relay's plan: a third share is refused at once, changing nothing.
    three = small_env()
    three["uuid"] = "e0000000-0000-4000-8000-000000000003"
    p = save(a, three, "three.json")
    with pytest.raises(QuotaError, match="team plan allows 1 environments"):
        a.share(str(p), space)
    assert three["uuid"] not in a.envs


async def test_quota_on_environment_size_reaches_status(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    doc = small_env()
    size = compact_size(doc)
    await lab.start_relay(plan=get_plan("solo", max_env_bytes=size - 1))
    a, ta = await lab.agent(alice)
    share(a, doc, space)  # before the welcome: the relay refuses it
    await until(lambda: bool(ta.status()["relay"]["quota"]), what="a quota refusal")
    reason = a.status()["relay"]["reason"]
    assert reason.startswith("quota exceeded: solo plan allows environments up to")
    assert lab.relay.storage.env_count(space) == 0
    assert a.status()["environments"][0]["state"] == "held"


async def test_quota_on_stored_history(lab: Lab) -> None:
    alice, _bob, space = team_of(lab)
    await lab.start_relay(plan=get_plan("team", max_env_bytes=100_000))
    c = await raw_client(lab, alice.identity, logs_of(alice, space))
    try:
        assert await settle(c) == "connected"
        key = new_content_key()
        aid = alice.identity.device_id
        tag = "ab" * 16
        stored = 0
        with pytest.raises(RelayRefused) as err:
            for seq in range(1, 50):
                ct = seal_payload(key, 1, os.urandom(150_000))
                await c.put(space, tag, [Envelope(aid, seq, 1, ct)], declared_bytes=90_000)
                stored += len(ct)
        assert err.value.code == "quota_bytes"
        assert stored <= STORED_BYTES_FACTOR * 100_000 < stored + 150_100
        assert str(err.value).startswith("quota exceeded: the relay holds")
    finally:
        await c.stop()


async def test_device_limit_per_member_reaches_status(lab: Lab) -> None:
    alice = lab.device("alice")
    phone = lab.device("alice-phone")
    personal = pair(alice.home, phone.home, "personal")  # a second device of the same member
    await lab.start_relay(plan=get_plan("team", max_devices_per_member=1))
    a, ta = await lab.agent(alice, spaces=[personal])
    assert await ta.wait_synced(1)
    p, tp = await lab.agent(phone, spaces=[personal])
    await until(lambda: tp.status()["relay"]["state"] == "refused", what="the phone refused")
    st = tp.status()["relay"]
    assert st["code"] == "too_many_devices"
    assert st["reason"].startswith("device limit reached: team plan allows 1 simultaneous "
                                   "devices per member and 1 are online")
    assert st["next_retry_s"] is not None and st["next_retry_s"] < 5  # not a persistent refusal
    await lab.stop_agent(a)
    assert await tp.wait_synced(1, timeout=10)
    assert tp.status()["relay"]["state"] == "connected"


async def test_connections_per_device_limited(lab: Lab) -> None:
    alice, _bob, space = team_of(lab)
    await lab.start_relay(max_connections_per_device=2)
    clients = [await raw_client(lab, alice.identity, logs_of(alice, space)) for _ in range(2)]
    try:
        for c in clients:
            assert await settle(c) == "connected"
        extra = await raw_client(lab, alice.identity, logs_of(alice, space))
        clients.append(extra)
        assert await settle(extra) == "refused"
        assert extra.code == "too_many_connections"
    finally:
        for c in clients:
            await c.stop()


# ------------------------------------------------------------------------------ bad input


async def _raw_ws(lab: Lab) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(lab.relay.url.replace("http", "ws") + "/v1/ws")
    return http, ws


async def _closing_words(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    from mocksync.relay.protocol import RELAY, decode_message

    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    out = decode_message(msg.data, sender=RELAY)
    end = await ws.receive(timeout=5)
    assert end.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    return out


@pytest.mark.parametrize("frame", [b"\xff\x00garbage", "text, not binary",
                                   encode_message({"t": "ping", "n": 1}, sender=CLIENT)])
async def test_malformed_or_misplaced_first_frames_refused(lab: Lab, frame: Any) -> None:
    await lab.start_relay()
    http, ws = await _raw_ws(lab)
    try:
        if isinstance(frame, str):
            await ws.send_str(frame)
        else:
            await ws.send_bytes(frame)
        words = await _closing_words(ws)
        assert words["t"] == "refused" and words["c"] == "bad_message" and words["r"]
    finally:
        await ws.close()
        await http.close()
    assert not lab.relay.sessions or all(s.closing for s in lab.relay.sessions)


async def test_handshake_timeout(lab: Lab) -> None:
    await lab.start_relay(auth_timeout_s=0.2)
    http, ws = await _raw_ws(lab)
    try:
        words = await _closing_words(ws)
        assert words == {"t": "refused", "c": "timeout",
                         "r": "the handshake took longer than 0.2 s"}
    finally:
        await ws.close()
        await http.close()


async def test_request_for_a_space_not_admitted_is_refused(lab: Lab) -> None:
    alice, _bob, space = team_of(lab)
    personal = get_space(alice.home, "personal").space_id
    await lab.start_relay()
    c = await raw_client(lab, alice.identity, logs_of(alice, space))
    try:
        assert await settle(c) == "connected"
        with pytest.raises(RelayRefused) as err:
            await c.index(personal)
        assert err.value.code == "not_member"
        with pytest.raises(RelayRefused) as err:
            await c.put(space, "cd" * 16, [Envelope("ABCDE-FGHJK-MNPQR-STVWX", 1, 1,
                                                    seal_payload(new_content_key(), 1, b"x"))],
                        declared_bytes=10)
        assert err.value.code == "bad_envelope"
        assert c.connected  # a refused request does not end the session
    finally:
        await c.stop()


async def test_slow_consumer_is_disconnected_not_waited_for(lab: Lab) -> None:
    """A device that stops reading must not hold up a fan-out or grow the relay's memory."""
    alice, bob, space = team_of(lab)
    await lab.start_relay(max_queued_bytes=1_000_000)
    a = await raw_client(lab, alice.identity, logs_of(alice, space))
    http, ws = await _raw_ws(lab)
    try:
        assert await settle(a) == "connected"
        # Bob authenticates by hand, then never reads again.
        from mocksync.relay.auth import relay_origin, sign_challenge
        from mocksync.relay.protocol import RELAY, decode_message

        await ws.send_bytes(encode_message({"t": "hello", "p": PROTOCOL_VERSION, "m": 1,
                                            "d": bob.identity.device_id, "sp": [space],
                                            "a": "test"}, sender=CLIENT))
        ch = decode_message((await ws.receive(timeout=5)).data, sender=RELAY)
        origin = relay_origin(lab.relay.url)
        await ws.send_bytes(encode_message({"t": "auth", "u": origin, "sig": sign_challenge(
            bob.identity, ch["n"], ch["k"], origin), "logs": {space: []}}, sender=CLIENT))
        assert decode_message((await ws.receive(timeout=5)).data, sender=RELAY)["t"] == "welcome"
        key = new_content_key()
        aid = alice.identity.device_id

        def bobs() -> list:
            return [s for s in lab.relay.sessions if s.device == bob.identity.device_id
                    and not s.closing]

        assert bobs()
        for seq in range(1, 200):
            ct = seal_payload(key, 1, os.urandom(200_000))
            await a.put(space, "ab" * 16, [Envelope(aid, seq, 1, ct)], declared_bytes=1000)
            if not bobs():
                break
        assert not bobs(), "a device that does not read must be dropped"
        assert a.connected  # the writer never waited for bob
    finally:
        await ws.close()
        await http.close()
        await a.stop()


# ------------------------------------------------------------------------------ signaling


async def test_signals_between_members_are_signed_end_to_end(lab: Lab) -> None:
    alice, bob, space = team_of(lab)
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    b, tb = await lab.agent(bob)
    assert await ta.wait_synced(1) and await tb.wait_synced(1)
    await ta.send_signal(space, bob.identity.device_id, b"v=0 offer with dtls fingerprint")
    await until(lambda: bool(tb.signals), what="the signal at bob")
    assert list(tb.signals) == [{"space": space, "from": alice.identity.device_id,
                                 "body": b"v=0 offer with dtls fingerprint"}]
    # A payload not signed by its claimed sender is dropped at the receiver, not delivered.
    mallory = Identity.generate("mallory", now=0)
    forged = seal_signal(mallory, space, bob.identity.device_id, b"evil offer")
    await ta.client._request({"t": "signal", "s": space, "to": bob.identity.device_id,
                              "p": forged}, reply_kind="ok")
    await until(lambda: any("signal from" in p["what"] for p in tb.status()["relay"]["problems"]),
                what="the forged signal to be refused")
    assert len(tb.signals) == 1
    # A recipient who is not online gets nothing, and the sender hears why.
    await lab.stop_agent(b)
    await until(lambda: not [p for p in ta.who() if p["device"] == bob.identity.device_id],
                what="bob offline")
    with pytest.raises(RelayRefused) as err:
        await ta.send_signal(space, bob.identity.device_id, b"anyone?")
    assert err.value.code == "not_online"


# ------------------------------------------------------------------------------ TLS, CLI, wiring


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mocksync test relay")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cp, kp = tmp / "cert.pem", tmp / "key.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp


async def test_tls_relay(lab: Lab) -> None:
    from mocksync.relay.server import tls_context

    alice, bob, space = team_of(lab)
    cert, key = _self_signed(lab.tmp)
    relay = await lab.start_relay(ssl=tls_context(cert, key))
    assert relay.url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=str(cert))
    a, ta = await lab.agent(alice, ssl=trust)
    b, tb = await lab.agent(bob, ssl=trust)
    assert await ta.wait_synced(1) and await tb.wait_synced(1)
    doc = small_env()
    share(a, doc, space)
    await until(lambda: b.store.has_env(doc["uuid"]), what="a change set over TLS")
    # A client that does not trust the certificate never gets in.
    untrusting = await raw_client(lab, alice.identity, logs_of(alice, space))
    try:
        assert await settle(untrusting) == "offline"
        assert "certificate" in untrusting.reason.lower()
    finally:
        await untrusting.stop()


def test_relay_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "mocksync"
    proc = subprocess.Popen([str(exe), "--home", str(tmp_path / "home"), "relay", "--port", "0",
                             "--data", str(tmp_path / "data"), "--plan", "solo"],
                            stderr=subprocess.PIPE, text=True)
    try:
        # Awaited: the relay's own events (its banner, its exit), not a guess of how fast
        # the machine is. Under a loaded `pytest -n` run its start took 15 s of wall time
        # for 0.6 s of CPU, and the 20 s deadline this loop had made the test flaky. A
        # relay that dies ends the loop at once (EOF, its lines in the failure); one that
        # hangs is cut by the suite's per-test timeout.
        url = None
        lines = []
        while url is None:
            line = proc.stderr.readline()
            if not line:
                break  # the relay exited before its banner
            lines.append(line)
            if "mocksync relay: listening on " in line:
                url = line.split("listening on ", 1)[1].split(",", 1)[0]
        assert url and url.startswith("http://127.0.0.1:"), (proc.poll(), lines)
        with urllib.request.urlopen(url + "/v1/health", timeout=5) as r:
            health = json.loads(r.read())
        assert health["ok"] is True and health["plan"] == "solo"
        assert health["protocol"] == PROTOCOL_VERSION
        proc.send_signal(signal.SIGTERM)
        assert proc.wait() == 0
        assert "mocksync relay: stopped" in proc.stderr.read()
        assert (tmp_path / "data" / "relay.sqlite3").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_relay_command_refuses_half_tls(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mocksync.cli import main

    cert, _key = _self_signed(tmp_path)
    r = CliRunner().invoke(main, ["--home", str(tmp_path), "relay", "--tls-cert", str(cert)])
    assert r.exit_code == 2 and "--tls-key" in r.output


def test_daemon_relay_setting_builds_a_relay_transport() -> None:
    """The daemon's relays are a fleet: the configured ones for spaces naming none, and
    (without any configured) still one, for the relays the spaces name (issue 11/17)."""
    from mocksync.agent.runner import build_transport
    from mocksync.net.relay_fleet import RelayFleet

    t = build_transport(Settings(relay="http://127.0.0.1:9", mdns=False))
    assert isinstance(t, RelayFleet) and t.configured == ("http://127.0.0.1:9",)
    bare = build_transport(Settings(relay=None, mdns=False))
    assert isinstance(bare, RelayFleet) and bare.configured == ()


async def test_status_before_and_while_offline(lab: Lab) -> None:
    alice, _bob, space = team_of(lab)
    await lab.start_relay()
    url = lab.relay.url
    await lab.stop_relay()  # nobody listens on that port now
    t = RelayTransport(url, backoff_min_s=0.5, backoff_max_s=1.0)
    assert t.status()["relay"]["state"] == "offline"

    await t.start(FakeAgent(device=alice.identity.device_id, identity=alice.identity,
                            home=alice.home,
                            spaces=FakeSpaces([get_space(alice.home, space)])))
    try:
        await until(lambda: t.status()["relay"]["state"] == "offline"
                    and f"the relay at {url} is not running (connection refused)"
                    in (t.status()["relay"]["reason"] or ""),
                    what="offline with a reason")
        st = t.status()["relay"]
        assert st["url"] == url and st["next_retry_s"] is not None and st["next_retry_s"] <= 1.2
    finally:
        await t.stop()
