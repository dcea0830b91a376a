"""Issue #6 benchmarks: the relay (loopback only; every loop bounded in count and time).

- relay_catchup_transfer: a device that was offline while 10,000 change sets accumulated on
  the relay fetches them all (index, paged fetch) and opens every envelope (AEAD, change-set
  decode, slot checks). The relay's share of catching up; target < 2 s.
- relay_catchup_device: the same 10,000 change sets into a fresh device end to end: a real
  Agent with RelayTransport, from start until its store holds them all (adds the store's
  verify + chain + apply + one SQLite transaction per change set). Baseline: the store ingest
  alone of the same wires, measured in the same run, so the ratio shows what the relay path
  adds on top of the log.
- relay_fanout: a relay in its own process holds N_DEVICES connected devices (in spaces of
  SPACE_DEVICES, the membership limit is 400 per space); publishers put change sets at a fixed
  rate; every subscriber timestamps each `env` push as it arrives. Reported: p99 latency from
  put to each delivery (target 100 ms), the per-put time until the last subscriber has it,
  connect time and the relay's RSS. Clients all run in this one process (one asyncio loop),
  so their own decoding is part of the measured latency.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Result

N_CHANGESETS = 10_000
N_DEVICES = 1000
SPACE_DEVICES = 250
DEVICES_PER_MEMBER = 16
N_PUTS = 300
PUT_RATE_PER_S = 20.0
FANOUT_BUDGET_S = 60.0
CONNECT_CONCURRENCY = 50


# ------------------------------------------------------------------------------ catch-up


def _catchup_world(root: Path) -> dict[str, Any]:
    """Alice's 10,000 change sets of one environment, sealed and stored in a relay database."""
    from mocksync.devtools.envgen import generate_env
    from mocksync.devtools.pairing import pair
    from mocksync.model import snapshot_ops
    from mocksync.paths import Home
    from mocksync.relay.envelope import Tagger, seal_envelope
    from mocksync.relay.storage import SQLiteStorage
    from mocksync.space.actions import create_space, init_device
    from mocksync.space.store import get_space
    from mocksync.store import Store

    alice = Home(root / "alice")
    ia, _ = init_device(alice, name="alice-laptop", member_name="alice")
    create_space(alice, ia, "team")
    space = get_space(alice, "team").space_id
    doc = generate_env(50_000, seed=1)
    env = doc["uuid"]
    responses = [r["uuid"] for route in doc["routes"] for r in route["responses"]]
    store = Store(alice.log_db)
    now = int(time.time() * 1000)
    store.commit_local(ia.signing_key, space=space, env=env, device=ia.device_id,
                       ops=snapshot_ops(doc), now_ms=now)
    for i in range(N_CHANGESETS - 1):
        store.commit_local(ia.signing_key, space=space, env=env, device=ia.device_id,
                           ops=[("s", responses[i % len(responses)], ("v", "label"), f"l{i}")],
                           now_ms=now + i)
    wires = store.wires_missing(env, {})
    store.close()
    keys = get_space(alice, space).keys
    tag = Tagger(space, keys)(env)
    sealed = [seal_envelope(space, tag, keys, w) for w in wires]
    st = SQLiteStorage(root / "relay")
    entries = get_space(alice, space).entries
    st.append_log(space, [e.wire for e in entries], [e.hash for e in entries])
    for i in range(0, len(sealed), 1000):
        st.put(space, tag, sealed[i:i + 1000], declared_bytes=60_000, uploader=ia.device_id,
               now_ms=now)
    st.close()
    return {"alice": alice, "space": space, "env": env, "tag": tag, "wires": wires,
            "pair": pair, "Home": Home, "init_device": init_device, "device_id": ia.device_id}


def _fresh_device(world: dict[str, Any], root: Path, name: str) -> tuple[Any, Any]:
    home = world["Home"](root / name)
    ident, _ = world["init_device"](home, name=name, member_name=name)
    world["pair"](world["alice"], home, world["space"])
    return home, ident


async def _transfer_once(world: dict[str, Any], root: Path, n: int) -> float:
    from mocksync.net.relay_client import RelayClient
    from mocksync.relay.envelope import Tagger, open_envelope
    from mocksync.relay.server import RelayConfig, RelayServer
    from mocksync.space.store import get_space

    home, ident = _fresh_device(world, root, f"t{n}")
    stored = get_space(home, world["space"])
    relay = RelayServer(RelayConfig(data_dir=root / "relay", port=0))
    await relay.start()
    client = RelayClient(relay.url, ident, lambda: {world["space"]: [e.wire for e in
                                                                     stored.entries]})
    try:
        await client.start()
        assert await client.wait_connected(10)
        space, tag = world["space"], world["tag"]
        tagger = Tagger(space, stored.keys)
        t0 = time.perf_counter()
        index = await client.index(space)
        have: dict[str, int] = {}
        opened = 0
        while True:
            items, more = await client.fetch(space, tag, have)
            for e in items:
                open_envelope(space, tag, stored.keys, e, tagger)
                have[e.device] = max(have.get(e.device, 0), e.seq)
            opened += len(items)
            if not more:
                break
        elapsed = time.perf_counter() - t0
        assert opened == N_CHANGESETS and index[tag] == {world["device_id"]: N_CHANGESETS}
        return elapsed
    finally:
        await client.stop()
        await relay.stop()


async def _device_once(world: dict[str, Any], root: Path, n: int) -> float:
    from mocksync.agent.daemon import Agent
    from mocksync.agent.settings import Settings
    from mocksync.agent.spacedir import SpaceDirectory
    from mocksync.net.relay_transport import RelayTransport
    from mocksync.relay.server import RelayConfig, RelayServer

    home, ident = _fresh_device(world, root, f"d{n}")
    relay = RelayServer(RelayConfig(data_dir=root / "relay", port=0))
    await relay.start()
    transport = RelayTransport(relay.url, spaces=[world["space"]])
    agent = Agent(home, Settings(folder=root / f"d{n}" / "envs", blind_window_s=0, mdns=False),
                  ident, SpaceDirectory(home), transport=transport)
    try:
        t0 = time.perf_counter()
        await agent.start()
        ok = await transport.wait_synced(1, timeout=120)
        elapsed = time.perf_counter() - t0
        vv = agent.store.version_vector(world["env"])
        assert ok and vv == {world["device_id"]: N_CHANGESETS}, (ok, vv)
        return elapsed
    finally:
        await agent.stop()
        await relay.stop()


def _store_baseline(world: dict[str, Any], root: Path, n: int) -> float:
    from mocksync.space.store import get_space
    from mocksync.store import Store

    key = get_space(world["alice"], world["space"]).state.devices[world["device_id"]].sign_key
    s = Store(root / f"baseline{n}.db")
    t0 = time.perf_counter()
    for w in world["wires"]:
        s.ingest(w, key, int(time.time() * 1000) + 10**7)
    elapsed = time.perf_counter() - t0
    s.close()
    return elapsed


def relay_catchup(runs: int = 3) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="ms-bench-relay-") as d:
        root = Path(d)
        t0 = time.perf_counter()
        world = _catchup_world(root)
        setup_s = time.perf_counter() - t0
        transfer = [asyncio.run(_transfer_once(world, root, n)) for n in range(runs)]
        device = [asyncio.run(_device_once(world, root, n)) for n in range(runs)]
        baseline = [_store_baseline(world, root, n) for n in range(runs)]
        ct_bytes = sum(len(w) for w in world["wires"])
    return [
        Result("relay catch-up 10k: transfer + open", "s", transfer, target=2.0,
               note="index + paged fetch over loopback WebSocket + AEAD open + change-set "
                    "decode/slot check of 10,000 envelopes",
               extra={"change_sets": N_CHANGESETS, "wire_bytes": ct_bytes,
                      "setup_s": round(setup_s, 1)}),
        Result("relay catch-up 10k into a fresh device", "s", device, target=2.0,
               baseline_name="store ingest alone", baseline=baseline,
               note="real Agent + RelayTransport from start to all 10,000 applied; the store's "
                    "per-change-set verify+apply+commit is the baseline"),
    ]


# ------------------------------------------------------------------------------ fan-out


class _Signer:
    """Duck-typed state for `membership.sign_entry`: a straight chain of entries."""

    def __init__(self, space: bytes) -> None:
        self.space_id_bytes = space
        self.heads: tuple[bytes, ...] = ()
        self.next_counter = 1

    def after(self, entry: Any) -> None:
        self.heads = (entry.hash,)
        self.next_counter = entry.counter + 1


def _build_spaces(n_devices: int) -> list[dict[str, Any]]:
    """Spaces of SPACE_DEVICES devices each (DEVICES_PER_MEMBER per member), signed logs."""
    from mocksync.space import membership as m
    from mocksync.space.identity import Identity

    spaces = []
    made = 0
    while made < n_devices:
        count = min(SPACE_DEVICES, n_devices - made)
        idents = [Identity.generate(f"d{made + i}", now=0) for i in range(count)]
        admin = idents[0]
        g = m.new_genesis(admin, name=f"bench{len(spaces)}", member_name="m0", now_ms=1,
                          device_limit=DEVICES_PER_MEMBER)
        entries = [g]
        chain = _Signer(g.space)
        chain.after(g)
        member_of_first = g.data["member"]["id"]
        members = [member_of_first]
        for i, ident in enumerate(idents[1:], start=1):
            slot = i // DEVICES_PER_MEMBER
            if slot >= len(members):
                mid = m.new_member_id()
                e = m.add_member(admin, chain, member_id=mid, name=f"m{slot}", role="editor",
                                 now_ms=2)
                entries.append(e)
                chain.after(e)
                members.append(mid)
            e = m.add_device(admin, chain, member_id=members[slot], device=ident.public,
                             sealed_key=None, now_ms=3)
            entries.append(e)
            chain.after(e)
        state = m.verify_log(entries)
        assert len(state.devices) == count and not state.void, state.void
        spaces.append({"id": state.space_id, "idents": idents,
                       "wires": [e.wire for e in entries]})
        made += count
    return spaces


class _BenchClient:
    """A minimal relay client (one shared aiohttp session) that timestamps every push."""

    def __init__(self, ident: Any, space: str, wires: list[bytes]) -> None:
        self.ident, self.space, self.wires = ident, space, wires
        self.ws: Any = None
        self.got: dict[int, float] = {}

    async def connect(self, http: Any, url: str) -> None:
        import hashlib

        from mocksync.relay.auth import sign_challenge
        from mocksync.relay.protocol import CLIENT, RELAY, decode_message, encode_message

        self.ws = await http.ws_connect(url, max_msg_size=32 * 1024 * 1024)
        await self.ws.send_bytes(encode_message({"t": "hello", "p": 1, "m": 1,
                                                 "d": self.ident.device_id, "sp": [self.space],
                                                 "a": "bench"}, sender=CLIENT))
        ch = decode_message((await self.ws.receive(timeout=30)).data, sender=RELAY)
        have = set(ch["have"].get(self.space, ()))
        up = [w for w in self.wires if hashlib.sha256(w).digest() not in have]
        await self.ws.send_bytes(encode_message({"t": "auth", "sig": sign_challenge(
            self.ident, ch["n"]), "logs": {self.space: up}}, sender=CLIENT))
        welcome = decode_message((await self.ws.receive(timeout=30)).data, sender=RELAY)
        assert welcome["t"] == "welcome" and self.space in welcome["ok"], welcome

    async def read(self) -> None:
        from mocksync.relay.protocol import RELAY, decode_message

        async for msg in self.ws:
            t = time.perf_counter()
            if msg.type.name != "BINARY":
                break
            m = decode_message(msg.data, sender=RELAY)
            if m["t"] == "env":
                for e in m["x"]:
                    self.got[e.seq] = t


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def _fanout(url: str, spaces: list[dict[str, Any]], relay_pid: int) -> dict[str, Any]:
    import aiohttp

    from mocksync.relay.envelope import Envelope
    from mocksync.relay.protocol import CLIENT, encode_message
    from mocksync.space.keys import new_content_key, seal_payload

    ws_url = url.replace("http://", "ws://") + "/v1/ws"
    connector = aiohttp.TCPConnector(limit=0)
    http = aiohttp.ClientSession(connector=connector)
    clients = [_BenchClient(ident, s["id"], s["wires"]) for s in spaces for ident in s["idents"]]
    # The first client of each space uploads its log; then everyone connects.
    t0 = time.perf_counter()
    firsts = {s["id"]: c for s in spaces for c in clients if c.space == s["id"]}
    for c in firsts.values():
        await c.connect(http, ws_url)
    rest = [c for c in clients if c not in firsts.values()]
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(c: _BenchClient) -> None:
        async with sem:
            await c.connect(http, ws_url)

    await asyncio.wait_for(asyncio.gather(*(one(c) for c in rest)), FANOUT_BUDGET_S)
    connect_s = time.perf_counter() - t0
    readers = [asyncio.create_task(c.read()) for c in clients]
    rss_connected = _rss_kb(relay_pid)
    # The harness (1000 clients on one loop) must not add its own pauses to what is measured:
    # move everything alive now out of the collector's reach (the relay process is untouched).
    gc.collect()
    gc.freeze()
    key = new_content_key()
    publishers = list(firsts.values())
    sent: dict[int, tuple[float, str]] = {}
    deadline = time.monotonic() + FANOUT_BUDGET_S
    body = os.urandom(400)
    for n in range(1, N_PUTS + 1):  # bounded in count ...
        if time.monotonic() > deadline:  # ... and in time
            break
        pub = publishers[n % len(publishers)]
        ct = seal_payload(key, 1, body)
        frame = encode_message({"t": "put", "i": n, "s": pub.space, "e": "ab" * 16, "z": 1000,
                                "x": [Envelope(pub.ident.device_id, n, 1, ct)]}, sender=CLIENT)
        sent[n] = (time.perf_counter(), pub.space)
        await pub.ws.send_bytes(frame)
        await asyncio.sleep(1 / PUT_RATE_PER_S)
    settle = time.monotonic() + 5
    expected = {sp: sum(1 for c in clients if c.space == sp) - 1 for sp in firsts}
    while time.monotonic() < settle:
        if all(sum(1 for c in clients if n in c.got) >= expected[sp]
               for n, (_t, sp) in sent.items()):
            break
        await asyncio.sleep(0.05)
    rss_loaded = _rss_kb(relay_pid)
    lat: list[float] = []
    last: list[float] = []
    missing = 0
    for n, (t_sent, sp) in sent.items():
        times = [c.got[n] - t_sent for c in clients if c.space == sp and c is not firsts[sp]
                 and n in c.got]
        missing += expected[sp] - len(times)
        lat += [t * 1000 for t in times]
        if times:
            last.append(max(times) * 1000)
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for c in clients:
        await c.ws.close()
    await http.close()
    gc.unfreeze()
    return {"latency_ms": lat, "last_ms": last, "connect_s": connect_s, "missing": missing,
            "puts": len(sent), "rss_connected_kb": rss_connected, "rss_loaded_kb": rss_loaded}


def relay_fanout(n_devices: int = N_DEVICES) -> list[Result]:
    spaces = _build_spaces(n_devices)
    with tempfile.TemporaryDirectory(prefix="ms-bench-fanout-") as d:
        log_path = Path(d) / "relay.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from mocksync.cli import main; main()", "--home",
                 str(Path(d) / "home"), "relay", "--port", "0", "--data", str(Path(d) / "data"),
                 "--max-devices-per-member", str(DEVICES_PER_MEMBER), "--plan", "enterprise"],
                stderr=log_file, stdout=subprocess.DEVNULL)
        try:
            url = None
            deadline = time.monotonic() + 30
            while url is None and time.monotonic() < deadline:
                for line in log_path.read_text().splitlines():
                    if "mocksync relay: listening on " in line:
                        url = line.split("listening on ", 1)[1].split(",", 1)[0]
                time.sleep(0.05)
            if url is None:
                raise RuntimeError(f"relay did not start: {log_path.read_text()[-2000:]}")
            out = asyncio.run(_fanout(url, spaces, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    lat = out["latency_ms"]
    per_space = min(SPACE_DEVICES, n_devices) - 1
    extra = {"devices": n_devices, "spaces": len(spaces), "subscribers_per_put": per_space,
             "puts": out["puts"], "deliveries": len(lat), "missing": out["missing"],
             "connect_all_s": round(out["connect_s"], 2),
             "relay_rss_mb_connected": round((out["rss_connected_kb"] or 0) / 1024, 1),
             "relay_rss_mb_loaded": round((out["rss_loaded_kb"] or 0) / 1024, 1),
             "median_ms": round(statistics.median(lat), 2) if lat else None}
    note = (f"{n_devices} devices connected, {len(spaces)} spaces x {per_space} subscribers; "
            f"{out['puts']} puts at {PUT_RATE_PER_S:g}/s; clients in one process")
    return [
        Result("relay fan-out: put -> each subscriber", "ms", lat, target=100.0, target_on="p99",
               note=note, extra=extra),
        Result("relay fan-out: put -> last subscriber", "ms", out["last_ms"], target=100.0,
               target_on="p99", note="per put, until every subscriber of its space has it",
               extra={"connect_all_s": extra["connect_all_s"]}),
    ]


BENCHMARKS = [relay_catchup, relay_fanout]


if __name__ == "__main__":  # python -m bench.relay [fanout|catchup]
    which = sys.argv[1:] or ["catchup", "fanout"]
    for name in which:
        fn = {"catchup": relay_catchup, "fanout": relay_fanout}[name]
        for r in fn():
            print(json.dumps({k: v for k, v in r.to_json().items() if k != "samples"}))

