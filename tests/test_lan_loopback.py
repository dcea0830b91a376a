"""LAN sync end to end on one host (bind 127.0.0.1, no root): real mDNS, signed signaling,
WebRTC data channels and the sync protocol between in-process Agents.

Network rule: every transport here is bound to 127.0.0.1 (mDNS sockets, signaling endpoint,
ICE candidates); nothing is sent anywhere else.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mocksync.agent import api
from mocksync.agent.control import ControlServer
from mocksync.cli import main
from mocksync.devtools.envgen import generate_env
from mocksync.devtools.pairing import pair
from mocksync.net import handshake
from mocksync.net.errors import PeerRefused
from mocksync.net.lan_signaling import send_offer
from mocksync.net.mdns import SERVICE_TYPE
from mocksync.net.webrtc import PeerLink

from helpers.agents import LAN_WAIT_S as WAIT
from helpers.agents import LOOP, connected, lan_agent, peer_of, running
from helpers.devices import Device, make_device, share_log, team_space
from helpers.files import editor_save, read_json
from helpers.polling import wait_until
from helpers.procs import short_tmp


def only_file(folder: Path) -> Path | None:
    files = [p for p in folder.glob("*.json") if not p.name.startswith(".")]
    return files[0] if len(files) == 1 else None


def small_env(name: str = "Orders API", seed: int = 3) -> dict[str, Any]:
    env = generate_env(20_000, seed=seed, name=name)
    env["hostname"] = "127.0.0.1"
    return env


def first_response(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["routes"][0]["responses"][0]


async def test_two_devices_find_each_other_and_sync_over_webrtc() -> None:
    with short_tmp() as root:
        a, b = make_device(root, "a"), make_device(root, "b")
        space = team_space(a, b, share_logs=True)
        aa, ab = lan_agent(a), lan_agent(b)
        async with running(aa, ab):
            await wait_until(lambda: connected(aa, b.id) and connected(ab, a.id),
                             "the two devices to connect over the LAN", WAIT)
            path = a.folder / "orders.json"
            editor_save(path, small_env())
            await wait_until(lambda: aa.local.get(path.resolve()), "A to see the file", WAIT)
            aa.share(str(path), space)
            got = await wait_until(lambda: only_file(b.folder), "B to receive the env", WAIT)
            await wait_until(lambda: read_json(got) == read_json(path), "identical JSON on B", WAIT)

            # An edit on B travels back to A.
            doc = read_json(got)
            first_response(doc)["label"] = "edited on B"
            editor_save(got, doc)
            await wait_until(lambda: first_response(read_json(path))["label"] == "edited on B",
                             "B's edit on A", WAIT)

            pa = peer_of(aa, b.id)
            assert pa["via"] == "lan" and pa["member"] == "b-user" and pa["spaces"] == ["team"]
            assert pa["address"] == "127.0.0.1"
            assert pa["link"]["wire_bytes_out"] > 0 and pa["link"]["wire_bytes_in"] > 0
            await wait_until(lambda: peer_of(aa, b.id)["rtt_ms"] is not None,
                             "a heartbeat round trip", WAIT)
            # Each change crossed once: nothing was refused or sent twice.
            stats = peer_of(aa, b.id)["session"]["stats"]
            assert stats["cs_sent"] >= 1 and stats["refused_by_peer"] == 0
            assert stats["cs_redundant"] == 0
            assert aa.store.version_vector(doc["uuid"]) == ab.store.version_vector(doc["uuid"])


async def test_late_joiner_catches_up_from_a_peer() -> None:
    with short_tmp() as root:
        a, b = make_device(root, "a"), make_device(root, "b")
        space = team_space(a, b, share_logs=True)
        aa, ab = lan_agent(a), lan_agent(b)
        async with running(aa, ab):
            await wait_until(lambda: connected(aa, b.id), "A and B to connect", WAIT)
            path = a.folder / "orders.json"
            editor_save(path, small_env())
            await wait_until(lambda: aa.local.get(path.resolve()), "A to see the file", WAIT)
            aa.share(str(path), space)
            got = await wait_until(lambda: only_file(b.folder), "B to receive the env", WAIT)
            uuid = read_json(path)["uuid"]
            for i in range(5):  # a history to catch up on, written on both devices
                src = path if i % 2 == 0 else got
                await wait_until(lambda src=src: read_json(src) is not None, "a file", WAIT)
                doc = read_json(src)
                doc["routes"][i % len(doc["routes"])]["documentation"] = f"edit {i}"
                editor_save(src, doc)
                await wait_until(lambda n=i + 2: aa.store.version_vector(uuid) ==
                                 ab.store.version_vector(uuid) and
                                 sum(aa.store.version_vector(uuid).values()) >= n,
                                 f"edit {i} on both", WAIT)
            await aa.stop()  # the admin goes away: C can only catch up from B

            c = make_device(root, "c")
            assert pair(a.home, c.home, space) == space
            share_log(a, b, space)  # B learns of C (log gossip is not part of the LAN transport)
            ac = lan_agent(c)
            async with running(ac):
                await wait_until(lambda: connected(ac, b.id), "C to connect to B", WAIT)
                gotc = await wait_until(lambda: only_file(c.folder), "C to receive the env", WAIT)
                await wait_until(lambda: read_json(gotc) == read_json(got),
                                 "C's copy to equal B's", WAIT)
                assert ac.store.version_vector(uuid) == ab.store.version_vector(uuid)
                assert read_json(gotc)["routes"][0]["documentation"] == "edit 0"
                assert peer_of(ac, a.id) is None or peer_of(ac, a.id)["state"] != "connected"


async def test_a_stranger_gets_nothing_and_learns_no_names() -> None:
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    with short_tmp() as root:
        a, b, s = make_device(root, "alice"), make_device(root, "bob"), make_device(root, "eve")
        space = team_space(a, b, name="Secret Project", share_logs=True)
        aa, ab, ae = lan_agent(a), lan_agent(b), lan_agent(s)
        # Eve listens to everything announced on the (loopback) LAN.
        seen: dict[str, dict[bytes, bytes | None]] = {}
        azc = AsyncZeroconf(interfaces=list(LOOP), ip_version=IPVersion.V4Only)

        async def resolve(name: str) -> None:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(azc.zeroconf, 3000):
                seen[name] = dict(info.properties)

        tasks: list[asyncio.Task[Any]] = []

        def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
            if state_change is not ServiceStateChange.Removed:
                tasks.append(asyncio.ensure_future(resolve(name)))

        browser = AsyncServiceBrowser(azc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
        try:
            async with running(aa, ab, ae):
                path = a.folder / "secret-orders.json"
                env = small_env(name="Secret Orders API")
                editor_save(path, env)
                await wait_until(lambda: aa.local.get(path.resolve()), "A to see the file", WAIT)
                aa.share(str(path), space)
                await wait_until(lambda: only_file(b.folder), "B to receive the env", WAIT)
                await wait_until(lambda: len(seen) >= 3, "all three announcements", WAIT)
                await asyncio.sleep(1.0)  # give Eve every chance to connect

                # Eve received nothing and is connected to nobody.
                assert list(s.folder.glob("*.json")) == []
                assert ae.store.envs() == []
                assert ae.status()["peers"] == []
                assert peer_of(aa, s.id) is None and peer_of(ab, s.id) is None

                # What mDNS told Eve: ids, versions, nonces and opaque tags, nothing named.
                props = seen[f"{a.id}.{SERVICE_TYPE}"]
                keys = {k.decode() for k in props}
                assert {"id", "v", "n"} <= keys and keys - {"id", "v", "n"} <= {"t0", "t1"}
                raw = json.dumps({k.decode(): (v or b"").decode() for k, v in props.items()})
                for secret in ("Secret", "secret", "Project", "alice", "bob", "Orders",
                               env["uuid"], space, "team", "personal"):
                    assert secret not in raw, f"mDNS leaked {secret!r}"

                # Eve dialling Alice directly, with a properly signed offer, is refused.
                link = PeerLink(a.id, bind=LOOP, ice_servers=(), outgoing=True,
                                on_frame=lambda *_: None, on_closed=lambda *_: None)
                try:
                    sdp = await link.offer()
                    offer = handshake.build(s.identity.sign, kind="offer", sender=s.id,
                                            recipient=a.id, sdp=sdp,
                                            now_ms=int(time.time() * 1000))
                    port = aa.transport.port  # type: ignore[union-attr]
                    with pytest.raises(PeerRefused) as info:
                        await send_offer("127.0.0.1", port, offer, bind=LOOP)
                    assert info.value.status == 403 and "Secret" not in str(info.value)
                finally:
                    await link.close()
                assert peer_of(aa, s.id) is None
        finally:
            await browser.async_cancel()
            for t in tasks:
                t.cancel()
            await azc.async_close()


async def test_incompatible_version_is_shown_with_a_reason() -> None:
    with short_tmp() as root:
        a, b = make_device(root, "a"), make_device(root, "b")
        team_space(a, b, share_logs=True)
        aa, ab = lan_agent(a), lan_agent(b, model=2)  # b plays a build with a newer model
        async with running(aa, ab):
            p = await wait_until(lambda: (q := peer_of(aa, b.id)) and q["state"] == "incompatible"
                                 and q, "A to report B as incompatible", WAIT)
            assert "register model 2" in p["reason"] and "update mocksync" in p["reason"]


async def test_peers_who_and_presence_through_the_control_api() -> None:
    with short_tmp() as root:
        a, b = make_device(root, "a"), make_device(root, "b")
        space = team_space(a, b, share_logs=True)
        aa, ab = lan_agent(a), lan_agent(b)
        servers = []
        try:
            async with running(aa, ab):
                for agent, dev in ((aa, a), (ab, b)):
                    server = ControlServer(dev.home.socket)
                    api.register(server, agent)
                    await server.start()
                    servers.append(server)
                await wait_until(lambda: connected(aa, b.id) and connected(ab, a.id),
                                 "A and B to connect", WAIT)
                path = a.folder / "orders.json"
                env = small_env()
                editor_save(path, env)
                await wait_until(lambda: aa.local.get(path.resolve()), "A to see the file", WAIT)
                aa.share(str(path), space)
                await wait_until(lambda: only_file(b.folder), "B to receive the env", WAIT)
                route = env["routes"][0]

                runner = CliRunner()

                def cli(dev: Device, *args: str) -> Any:
                    res = runner.invoke(main, ["--home", str(dev.home.root), *args],
                                        env={"COLUMNS": "200"})
                    assert res.exit_code == 0, res.output
                    return res.output

                # The editor on A says what its user looks at.
                from mocksync.agent.client import ControlClient

                client = ControlClient(a.home.socket, timeout=10)
                out = await asyncio.to_thread(client.call, "presence", env=str(path),
                                              entity=route["uuid"], editor="mockoon")
                assert out["presence"]["env"] == env["uuid"]

                def b_sees_a() -> Any:
                    rows = json.loads(cli(b, "who", "--json"))
                    mine = [r for r in rows if r["device"] == a.id]
                    return mine and mine[0]["env"] == env["uuid"] and mine[0]

                row = None
                deadline = time.monotonic() + WAIT
                while True:
                    row = await asyncio.to_thread(b_sees_a)
                    if row or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
                assert row, "B's `who` never showed what A is editing"
                assert row["member"] == "a-user" and row["via"] == "lan"
                assert row["env_name"] == env["name"] and row["entity"] == route["uuid"]
                assert row["entity_name"].startswith("route ")

                peers = json.loads(await asyncio.to_thread(cli, a, "peers", "--json"))
                assert [p["device"] for p in peers] == [b.id]
                assert peers[0]["state"] == "connected" and peers[0]["via"] == "lan"
                human = await asyncio.to_thread(cli, a, "peers")
                assert b.id in human and "lan" in human
                human_who = await asyncio.to_thread(cli, b, "who")
                assert "a-user" in human_who and "(you)" in human_who

                # A bad presence call changes nothing and says why.
                from mocksync.agent.errors import ControlError

                with pytest.raises(ControlError) as info:
                    await asyncio.to_thread(client.call, "presence", entity="x")
                assert "needs its env" in str(info.value.message)
        finally:
            for server in servers:
                await server.stop()


async def test_a_restarted_peer_is_reconnected_and_catches_up() -> None:
    with short_tmp() as root:
        a, b = make_device(root, "a"), make_device(root, "b")
        space = team_space(a, b, share_logs=True)
        aa = lan_agent(a)
        async with running(aa):
            ab = lan_agent(b)
            async with running(ab):
                await wait_until(lambda: connected(aa, b.id), "A and B to connect", WAIT)
                path = a.folder / "orders.json"
                editor_save(path, small_env())
                await wait_until(lambda: aa.local.get(path.resolve()), "A to see the file", WAIT)
                aa.share(str(path), space)
                got = await wait_until(lambda: only_file(b.folder), "B to receive the env", WAIT)
                b_link = ab.transport.links[a.id]  # type: ignore[union-attr]
            assert b_link.pc.connectionState == "closed"  # stop closes its connections
            # B stopped cleanly: bye and mDNS goodbye, so A stops dialling it.
            await wait_until(lambda: peer_of(aa, b.id)["state"] in ("offline", "closed"),
                             "A to notice B left", WAIT)
            assert "shutting down" in (peer_of(aa, b.id)["reason"] or "") or \
                peer_of(aa, b.id)["state"] == "offline"
            doc = read_json(path)
            first_response(doc)["label"] = "edited while B was away"
            editor_save(path, doc)
            uuid = doc["uuid"]
            await wait_until(lambda: sum(aa.store.version_vector(uuid).values()) >= 2,
                             "A to commit the edit", WAIT)
            ab2 = lan_agent(b)
            async with running(ab2):
                await wait_until(lambda: connected(aa, b.id), "A and B to reconnect", WAIT)
                await wait_until(lambda: first_response(read_json(got))["label"] ==
                                 "edited while B was away", "B to catch up", WAIT)


async def test_a_silent_peer_is_declared_dead_by_the_heartbeat() -> None:
    from mocksync.sync import Config

    fast = Config(ping_interval_ms=200, dead_after_ms=1_500)
    with short_tmp() as root:
        a, b = make_device(root, "a"), make_device(root, "b")
        team_space(a, b, share_logs=True)
        aa, ab = lan_agent(a, session_config=fast), lan_agent(b, session_config=fast)
        async with running(aa, ab):
            await wait_until(lambda: connected(aa, b.id) and connected(ab, a.id),
                             "A and B to connect", WAIT)
            link = ab.transport.links[a.id]  # type: ignore[union-attr]
            link.send = lambda frame: None  # B goes silent (a hung process, a dead cable)
            p = await wait_until(lambda: (q := peer_of(aa, b.id)) and q["state"] != "connected"
                                 and q, "A to give up on B", 10)
            assert "went silent" in p["reason"]


async def test_in_a_mesh_each_change_reaches_each_device_once() -> None:
    with short_tmp() as root:
        a, b, c = make_device(root, "a"), make_device(root, "b"), make_device(root, "c")
        space = team_space(a, b, c, share_logs=True)
        agents = aa, ab, ac = lan_agent(a), lan_agent(b), lan_agent(c)
        async with running(*agents):
            await wait_until(lambda: all(connected(x, d.id) for x, devs in
                                         ((aa, (b, c)), (ab, (a, c)), (ac, (a, b)))
                                         for d in devs), "a full mesh", WAIT)
            path = a.folder / "orders.json"
            editor_save(path, small_env())
            await wait_until(lambda: aa.local.get(path.resolve()), "A to see the file", WAIT)
            aa.share(str(path), space)
            uuid = read_json(path)["uuid"]
            files = {x: await wait_until(lambda d=d: only_file(d.folder), "the env", WAIT)
                     for x, d in ((ab, b), (ac, c))}
            for i in range(6):
                agent = (aa, ab)[i % 2]
                f = path if agent is aa else files[ab]
                doc = read_json(f)
                doc["routes"][i % 2]["documentation"] = f"mesh {i}"
                editor_save(f, doc)
                await wait_until(lambda n=i + 2: all(
                     sum(x.store.version_vector(uuid).values()) >= n for x in agents),
                     f"edit {i} everywhere", WAIT)
            await wait_until(lambda: read_json(files[ac]) == read_json(path) ==
                             read_json(files[ab]), "identical files", WAIT)
            total = sum(ac.store.version_vector(uuid).values())  # all by A and B
            received = redundant = 0
            for dev in (a, b):
                st = peer_of(ac, dev.id)["session"]["stats"]
                received += st["cs_received"]
                redundant += st["cs_redundant"]
            assert received == total and redundant == 0
