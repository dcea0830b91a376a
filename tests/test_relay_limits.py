"""Issue 11 items 4, 5 and 11: the relay's plan reaches the daemon, quotas hold on every
upload, and a relay that is down reads as such (pure decisions first, then in-process agents
on a loopback relay).

Why these exist: the daemon judged saves by a default plan the relay did not run and
declared sizes measured up to 10 s earlier, so an environment grown past the relay's
`--max-env-bytes` read `synced` and reached other devices; a relay refusal never reached the
environment's state; and a stopped relay showed aiohttp's own text, no next retry, and peers
still "online via relay".
"""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from mocksync.agent.daemon import compact_size
from mocksync.agent.errors import QuotaError
from mocksync.agent.spacedir import SpaceDirectory
from mocksync.cli.daemoncmds import relay_text
from mocksync.devtools.pairing import pair
from mocksync.errors import ValidationError
from mocksync.net.errors import RelayUnavailable
from mocksync.net.relay_client import unreachable_reason
from mocksync.net.relay_gate import decode_relay_frame
from mocksync.relay.envelope import Envelope
from mocksync.relay.policy import check_put, counted_env
from mocksync.relay.protocol import CODECS, RELAY, Limits, PlanInfo, Welcome
from mocksync.relay.storage import SQLiteStorage
from mocksync.space.keys import new_content_key, seal_payload
from mocksync.space.quotas import PLANS, Plan, get_plan, plan_from_relay
from mocksync.spaceio.actions import create_space

from envfactory import small_env
from helpers.devices import Device
from helpers.relaylab import Lab, rendered, save, until

URL = "http://127.0.0.1:8765"


# ------------------------------------------------------------------------------ pure


def _info(plan: Any = "team", envs: Any = 2, max_bytes: Any = 20_000, devs: Any = 2) -> PlanInfo:
    return PlanInfo(model=1, plan=plan, envs=envs, max_bytes=max_bytes, devs=devs)


def test_plan_from_relay_takes_the_relays_numbers() -> None:
    """Issue 14: the typed `welcome` entry reaches the plan, no short-key map in between."""
    plan = plan_from_relay(_info())
    assert plan == Plan("team", 2, 20_000, 2)
    # A plan this daemon does not know by name is still held to its numbers.
    assert plan_from_relay(_info("custom", 7, 1000, 3)) == Plan("custom", 7, 1000, 3)
    welcome = Welcome(ok={"ab" * 16: _info()}, no={}, limits=Limits(frame=1, items=1, rate=1))
    decoded = decode_relay_frame(CODECS[RELAY].encode(welcome))  # as the relay client reads it
    assert isinstance(decoded, Welcome)
    assert plan_from_relay(decoded.ok["ab" * 16]) == Plan("team", 2, 20_000, 2)


@pytest.mark.parametrize("info", [
    _info(envs=0),
    _info(max_bytes=-1),
    _info(max_bytes="20000"),
    _info(devs=None),
    _info(plan=""),
    _info(plan="x" * 33),
    SimpleNamespace(plan="team", envs=2, max_bytes=20_000),  # devs missing
    {"plan": "team", "envs": 2, "bytes": 20_000, "devs": 2},  # the old short-key map
    ["team", 2, 20_000, 2],
])
def test_plan_from_relay_refuses_numbers_it_cannot_hold_to(info: Any) -> None:
    with pytest.raises(ValidationError):
        plan_from_relay(info)


def test_learned_plan_is_kept_and_judges_saves(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    dev = lab.device("alice")
    space = create_space(dev.home, dev.identity, "team").space_id
    spaces = SpaceDirectory(dev.home)
    assert spaces.plan(space) == PLANS["team"]
    learned = get_plan("team", max_envs=2, max_env_bytes=20_000)
    assert spaces.learn_plan(space, learned) is True
    assert spaces.learn_plan(space, learned) is False  # unchanged: nothing written
    again = SpaceDirectory(dev.home)  # a restarted daemon, relay still down
    assert again.plan(space) == learned
    assert again.check_size(space, 20_000) is None
    assert again.check_size(space, 27_685) == (
        "quota exceeded: team plan allows environments up to 20 kB; this one is 27.7 kB")
    assert again.check_share(space, 2, 100) == (
        "quota exceeded: team plan allows 2 environments and the space already has 2")


def _refused() -> OSError:
    return ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 8765)")


@pytest.mark.parametrize(("exc", "expected"), [
    (_refused(), "the relay at http://127.0.0.1:8765 is not running (connection refused); "
                 "it may be stopped or restarting"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
     "the relay at http://127.0.0.1:8765 cannot be found (its host name does not resolve); "
     "check the URL"),
    (TimeoutError(), "the relay at http://127.0.0.1:8765 did not answer in time; it or the "
                     "network may be overloaded"),
    (RelayUnavailable("the relay closed the connection"),
     "the relay at http://127.0.0.1:8765 closed the connection; it may be restarting"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"),
     "the relay at http://127.0.0.1:8765 is out of reach: this device has no network route "
     "to it"),
    (OSError(errno.EPERM, "Operation not permitted"),
     "the relay at http://127.0.0.1:8765 cannot be reached (Operation not permitted)"),
])
def test_unreachable_reason_is_a_sentence_not_aiohttps_text(exc: BaseException,
                                                            expected: str) -> None:
    assert unreachable_reason(URL, exc) == expected


def test_unreachable_reason_sees_through_aiohttps_connector_error() -> None:
    key = type("Key", (), {"host": "127.0.0.1", "port": 8765, "ssl": True})()
    exc = aiohttp.ClientConnectorError(key, _refused())  # type: ignore[arg-type]
    assert "Connect call failed" in str(exc)  # what used to be shown
    assert unreachable_reason(URL, exc).endswith("is not running (connection refused); it may "
                                                 "be stopped or restarting")


def test_unreachable_reason_names_a_server_that_is_no_relay() -> None:
    exc = aiohttp.WSServerHandshakeError(None, (), status=404,  # type: ignore[arg-type]
                                         message="Invalid response status")
    assert unreachable_reason(URL, exc) == (
        "the relay at http://127.0.0.1:8765 answered HTTP 404 instead of a mocksync relay "
        "connection; check the --relay URL")


def test_status_relay_line_says_why_and_when_next() -> None:
    reason = unreachable_reason(URL, _refused())
    text = relay_text({"url": URL, "state": "offline", "reason": reason, "next_retry_s": 3.6})
    assert text == (
        f"relay   offline: {reason}\n"
        "        next try in 4 s by itself (`mocksync reconnect` tries now); edits made "
        "meanwhile are kept on this device and sent when it is back")
    assert "next try in under a second" in relay_text(
        {"url": URL, "state": "offline", "reason": reason, "next_retry_s": 0.2})
    assert "next try in 5 min" in relay_text(
        {"url": URL, "state": "refused", "reason": "revoked: ...", "next_retry_s": 300})
    assert relay_text({"url": URL, "state": "connected", "reason": None,
                       "next_retry_s": None}) == f"relay   connected {URL}"


# ------------------------------------------------------------------------------ in process


async def team(lab: Lab, **limits: Any) -> tuple[Device, Device, str]:
    """alice (admin) and bob in space `team`, whose log names the lab's relay."""
    await lab.start_relay(plan=get_plan("team", **limits))
    assert lab.relay is not None
    a, b = lab.device("alice"), lab.device("bob")
    create_space(a.home, a.identity, "team", relay=lab.relay.url)
    return a, b, pair(a.home, b.home, "team")


def grow(doc: dict[str, Any], to_bytes: int) -> dict[str, Any]:
    """`doc` with a response body padded so its compact JSON is about `to_bytes`."""
    out = dict(doc, routes=[dict(r) for r in doc["routes"]])
    resp = dict(out["routes"][0]["responses"][0])
    out["routes"][0] = dict(out["routes"][0], responses=[resp, *out["routes"][0]["responses"][1:]])
    resp["body"] = ""
    resp["body"] = "x" * max(0, to_bytes - compact_size(out))
    return out


def relay_vv(lab: Lab, space: str) -> dict[str, dict[str, int]]:
    assert lab.relay is not None
    return lab.relay.storage.index(space)


async def test_a_save_past_the_relays_size_quota_is_held_and_resumes_when_it_fits(
        lab: Lab) -> None:
    alice, bob, space = await team(lab, max_env_bytes=20_000)
    a, ta = await lab.agent(alice)
    b, tb = await lab.agent(bob)
    assert await ta.wait_synced(1) and await tb.wait_synced(1)
    doc = grow(small_env(), 19_700)
    p = save(a, doc, "big.json")
    a.share(str(p), space)
    env = doc["uuid"]
    await until(lambda: env in b.envs and rendered(b, env) == doc, what="bob to get it")
    held_at = relay_vv(lab, space)

    too_big = grow(doc, 27_700)
    save(a, too_big, "big.json")
    st = next(e for e in a.status()["environments"] if e["uuid"] == env)
    assert st["state"] == "held"
    assert st["reason"].startswith("quota exceeded: team plan allows environments up to 20 kB; "
                                   "this one is 27.7 kB")
    await asyncio.sleep(0.3)
    assert relay_vv(lab, space) == held_at  # nothing sent past the quota
    assert rendered(b, env) == doc

    fits = grow(doc, 19_900)
    save(a, fits, "big.json")  # shrunk back: syncs by itself
    st = next(e for e in a.status()["environments"] if e["uuid"] == env)
    assert (st["state"], st["reason"]) == ("synced", None)
    await until(lambda: rendered(b, env) == fits, what="bob to get the shrunk version")


async def test_share_past_the_relays_count_quota_fails_and_changes_nothing(lab: Lab) -> None:
    alice, _bob, space = await team(lab, max_envs=1)
    a, ta = await lab.agent(alice)
    assert await ta.wait_synced(1)
    one = small_env()
    a.share(str(save(a, one, "one.json")), space)
    two = small_env()
    two["uuid"] = "e0000000-0000-4000-8000-000000000002"
    p = save(a, two, "two.json")
    before = a.status()["environments"]
    with pytest.raises(QuotaError) as err:
        a.share(str(p), space)
    assert str(err.value) == ("quota exceeded: team plan allows 1 environments and the space "
                              "already has 1")
    assert a.status()["environments"] == before
    assert two["uuid"] not in a.envs and not a.store.has_env(two["uuid"])


async def test_a_relay_refusal_is_held_never_synced_and_leaves_no_gap(lab: Lab) -> None:
    alice, bob, space = await team(lab, max_env_bytes=20_000)
    a, ta = await lab.agent(alice)
    # Before the relay's welcome (no await since the start) the daemon still judges by the
    # default team plan: only the relay can refuse this one.
    doc = grow(small_env(), 25_000)
    env = doc["uuid"]
    a.share(str(save(a, doc, "big.json")), space)
    await until(lambda: ta.env_refusals, what="the relay's refusal")

    def entry() -> dict[str, Any]:
        return next(e for e in a.status()["environments"] if e["uuid"] == env)

    assert entry()["state"] == "held"
    assert entry()["reason"].startswith("quota exceeded: team plan allows environments up to "
                                        "20 kB; this one is 25 kB")
    assert relay_vv(lab, space) == {}
    fits = grow(doc, 19_000)
    save(a, fits, "big.json")
    await until(lambda: entry()["state"] == "synced", what="the upload to be accepted")
    assert entry()["reason"] is None
    b, _tb = await lab.agent(bob)
    # Every change set reached the relay (the refused share too), so bob applies all of them.
    await until(lambda: env in b.envs and rendered(b, env) == fits, what="bob to get it")
    assert b.store.version_vector(env) == a.store.version_vector(env)


async def test_peers_are_not_online_via_a_relay_that_is_down(lab: Lab) -> None:
    alice, bob, _space = await team(lab)
    a, ta = await lab.agent(alice)
    _b, _tb = await lab.agent(bob)
    await until(lambda: any(p["via"] == "relay" for p in a.status()["peers"]),
                what="bob online via the relay")
    await lab.stop_relay()
    await until(lambda: a.status()["relay"]["state"] == "offline", what="alice offline")
    assert a.status()["peers"] == []
    await until(lambda: "connection refused" in (a.status()["relay"]["reason"] or ""),
                what="a reconnect attempt")
    relay = a.status()["relay"]
    assert relay["reason"].startswith(f"the relay at {ta.url} is not running")
    assert isinstance(relay["next_retry_s"], float)


# ------------------------------------------------------------------------------ relay count


@pytest.mark.parametrize(("held", "declared", "counted"), [
    (None, 1000, False),   # a new environment: judged as a share
    (1000, 2000, True),    # a live one growing: size only
    (0, 0, True),          # a tombstone's late edit: needs no slot
    (None, 0, True),       # a tombstone first seen: needs no slot
    (0, 1000, False),      # live again after its tombstone: a new share
])
def test_counted_env(held: int | None, declared: int, counted: bool) -> None:
    assert counted_env(held, declared) is counted


def test_a_tombstoned_environment_frees_its_slot(tmp_path: Path) -> None:
    store = SQLiteStorage(tmp_path)
    try:
        key = new_content_key()
        for i, tag in enumerate(("aa" * 16, "bb" * 16), start=1):
            ct = seal_payload(key, 1, b"x" * 10)
            store.put("s1", tag, [Envelope("D1", i, 1, ct)], declared_bytes=500,
                      uploader="D1", now_ms=0)
        plan = get_plan("team", max_envs=2)
        usage = store.env_usage("s1", "cc" * 16)
        refusal = check_put(plan, env_count=store.env_count("s1"),
                            known_env=counted_env(None, 500), declared_bytes=500,
                            stored_bytes=0, adding_bytes=10)
        assert usage is None and refusal is not None and refusal.code == "quota_envs"
        ct = seal_payload(key, 1, b"tombstone")
        store.put("s1", "aa" * 16, [Envelope("D1", 3, 1, ct)], declared_bytes=0,
                  uploader="D1", now_ms=0)
        assert store.env_count("s1") == 1
        assert check_put(plan, env_count=store.env_count("s1"),
                         known_env=counted_env(None, 500), declared_bytes=500,
                         stored_bytes=0, adding_bytes=10) is None
    finally:
        store.close()
