"""Issue #17 benchmarks: the relay on PostgreSQL, as several instances (loopback only).

Each benchmark starts its own private PostgreSQL server (tests/pgserver.py: Debian's
binaries, a temporary data directory, 127.0.0.1 only, stopped at the end) and is skipped with
the reason when PostgreSQL is not installed. Every loop is bounded in count and in time.

- relay cluster catch-up 10k: the relay catch-up of bench/relay.py (index, paged fetch over a
  loopback WebSocket, AEAD open of every envelope) with the 10,000 change sets read from
  PostgreSQL instead of SQLite. Target <= 2 s.
- relay cluster fan-out: two `mocksync relay --db` processes on one database hold
  N_DEVICES connected devices, every space split across both instances; publishers (at
  instance 1) put change sets at a fixed rate; each subscriber timestamps each push. p99 put ->
  each subscriber, target <= 100 ms; the subscribers at instance 2 are reached through
  NOTIFY + a fetch of the rows, reported apart in `extra`.
- relay cluster failover: a device knowing both instances is connected to instance 1, a
  peer to instance 2; instance 1 is killed (-9); measured from the kill until a change set the
  device puts (retrying as a daemon does) has reached the peer. Target <= 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .common import BenchSkipped, Result
from .relay import (
    N_CHANGESETS,
    _BenchClient,
    _build_spaces,
    _catchup_world,
    _rss_kb,
    _transfer_once,
)

#: Devices the two instances hold in the fan-out benchmark, and what they do.
N_DEVICES = 2000
N_PUTS = 200
PUT_RATE_PER_S = 20.0
FANOUT_BUDGET_S = 90.0
CONNECT_CONCURRENCY = 50
#: Failover runs (each kills an instance and starts it again), and the longest one may take.
FAILOVER_RUNS = 3
FAILOVER_BUDGET_S = 30.0
#: Seconds between a device's put attempts while its instance is gone.
RETRY_PUT_S = 0.05
#: Longest a relay process may take to print that it listens.
RELAY_START_S = 30.0

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"


@contextlib.contextmanager
def _postgres() -> Iterator[Any]:
    """A private PostgreSQL server (tests/pgserver.py), or BenchSkipped saying why none.

    tests/ stays on sys.path while the server runs: pgserver imports `helpers.ports` (the
    port picker) when it picks the port, not when it is imported."""
    sys.path.insert(0, str(TESTS_DIR))
    try:
        from pgserver import running_server

        with running_server() as server:
            if isinstance(server, str):
                raise BenchSkipped(server)
            yield server
    finally:
        sys.path.remove(str(TESTS_DIR))


def _relay(root: Path, name: str, db_url: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A `mocksync relay --db` process on 127.0.0.1 at a free port; (process, url)."""
    log_path = root / f"{name}.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from mocksync.cli import main; main()", "--home",
             str(root / f"{name}-home"), "relay", "--host", "127.0.0.1", "--port", "0",
             "--db", db_url, *extra], stderr=log_file, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + RELAY_START_S
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if "mocksync relay: listening on " in line:
                return proc, line.split("listening on ", 1)[1].split(",", 1)[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"relay {name} did not start: {log_path.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ catch-up


async def _copy_to_postgres(world: dict[str, Any], root: Path, url: str) -> None:
    """The world's relay state (SQLite, made by bench/relay.py) into PostgreSQL."""
    from mocksync.relay.engine import OnLoop
    from mocksync.relay.pgstorage import PgStorage
    from mocksync.relay.storage import SQLiteStorage

    async def ignore(_ev: Any) -> None:
        return None

    src = OnLoop(SQLiteStorage(root / "relay"))
    dst = PgStorage(url)
    await dst.open(ignore)
    try:
        space, tag = world["space"], world["tag"]
        entries = await src.log_entries(space)
        import hashlib

        await dst.append_log(space, entries, [hashlib.sha256(w).digest() for w in entries])
        have: dict[str, int] = {}
        while True:
            items, more = await src.fetch(space, tag, have, max_items=1000, max_bytes=1 << 30)
            await dst.put(space, tag, items, declared_bytes=60_000, uploader=world["device_id"],
                          now_ms=1, check=lambda _u, _c: None)
            for e in items:
                have[e.device] = max(have.get(e.device, 0), e.seq)
            if not more:
                break
    finally:
        await dst.close()
        await src.close()


async def _pg_transfer_once(world: dict[str, Any], root: Path, n: int, url: str) -> float:
    from mocksync.net.relay_client import RelayClient
    from mocksync.relay.envelope import Tagger, open_envelope
    from mocksync.relay.server import RelayConfig, RelayServer
    from mocksync.space.store import get_space

    from .relay import _fresh_device

    home, ident = _fresh_device(world, root, f"pg{n}")
    stored = get_space(home, world["space"])
    relay = RelayServer(RelayConfig(data_dir=root / "unused", port=0, db_url=url))
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


def cluster_catchup(runs: int = 3) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="ms-bench-pgcatchup-") as d, _postgres() as pg:
        root = Path(d)
        world = _catchup_world(root)
        url = pg.create_db()
        asyncio.run(_copy_to_postgres(world, root, url))
        samples = [asyncio.run(_pg_transfer_once(world, root, n, url)) for n in range(runs)]
        # The same catch-up from the SQLite relay, in this run: the ratio is PostgreSQL's cost.
        baseline = [asyncio.run(_transfer_once(world, root, runs + n)) for n in range(runs)]
    return [Result("relay cluster catch-up 10k from PostgreSQL", "s", samples, target=2.0,
                   baseline_name="same from SQLite", baseline=baseline,
                   note="index + paged fetch (rows read from PostgreSQL) over loopback "
                        "WebSocket + AEAD open of 10,000 envelopes",
                   extra={"change_sets": N_CHANGESETS, "load_avg_1m": os.getloadavg()[0]})]


# ------------------------------------------------------------------------------ fan-out


class _ClusterClient(_BenchClient):
    """bench/relay.py's timestamping client, with the handshake devices speak today
    (protocol and model versions, the origin-bound challenge answer)."""

    async def connect(self, http: Any, url: str) -> None:
        import hashlib

        from mocksync import MODEL_VERSION, PROTOCOL_VERSION
        from mocksync.relay.auth import relay_origin, sign_challenge
        from mocksync.relay.protocol import CLIENT, RELAY, decode_message, encode_message

        origin = relay_origin(url.replace("ws://", "http://").removesuffix("/v1/ws"))
        self.ws = await http.ws_connect(url, max_msg_size=32 * 1024 * 1024)
        await self.ws.send_bytes(encode_message({
            "t": "hello", "p": PROTOCOL_VERSION, "m": MODEL_VERSION, "d": self.ident.device_id,
            "sp": [self.space], "a": "bench"}, sender=CLIENT))
        ch = decode_message((await self.ws.receive(timeout=60)).data, sender=RELAY)
        assert ch["t"] == "challenge", ch
        have = set(ch["have"].get(self.space, ()))
        up = [w for w in self.wires if hashlib.sha256(w).digest() not in have]
        await self.ws.send_bytes(encode_message({
            "t": "auth", "u": origin, "logs": {self.space: up},
            "sig": sign_challenge(self.ident, ch["n"], ch["k"], origin)}, sender=CLIENT))
        welcome = decode_message((await self.ws.receive(timeout=60)).data, sender=RELAY)
        assert welcome["t"] == "welcome" and self.space in welcome["ok"], welcome

    async def read(self) -> None:
        from mocksync.relay.protocol import RELAY, decode_message

        self.bye: str | None = None
        async for msg in self.ws:
            t = time.perf_counter()
            if msg.type.name != "BINARY":
                break
            m = decode_message(msg.data, sender=RELAY)
            if m["t"] == "env":
                for e in m["x"]:
                    self.got[e.seq] = t
            elif m["t"] == "bye":
                self.bye = m["c"]


async def _cluster_fanout(urls: list[str], spaces: list[dict[str, Any]], pids: list[int]
                          ) -> dict[str, Any]:
    import aiohttp

    from mocksync.relay.envelope import Envelope
    from mocksync.relay.protocol import CLIENT, encode_message
    from mocksync.space.keys import new_content_key, seal_payload

    ws = [u.replace("http://", "ws://") + "/v1/ws" for u in urls]
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    # Within each space, devices alternate between the instances; the first (the publisher,
    # which uploads the log) is at instance 1.
    placed = [(_ClusterClient(ident, s["id"], s["wires"]), i % 2)
              for s in spaces for i, ident in enumerate(s["idents"])]
    where = {id(c): k for c, k in placed}
    clients = [c for c, _k in placed]
    firsts = {s["id"]: next(c for c in clients if c.space == s["id"]) for s in spaces}
    # Each client reads from the moment it is admitted (pings, presence): connecting 2,000
    # takes a while, and a silent client would be dropped as dead or too slow.
    readers: list[asyncio.Task[None]] = []
    t0 = time.perf_counter()
    for c in firsts.values():
        await c.connect(http, ws[0])
        readers.append(asyncio.create_task(c.read()))
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(c: _ClusterClient) -> None:
        async with sem:
            await c.connect(http, ws[where[id(c)]])
            readers.append(asyncio.create_task(c.read()))

    rest = [c for c in clients if c not in firsts.values()]
    await asyncio.wait_for(asyncio.gather(*(one(c) for c in rest)), FANOUT_BUDGET_S)
    connect_s = time.perf_counter() - t0
    rss = [_rss_kb(p) for p in pids]
    gc.collect()
    gc.freeze()  # the 2,000 clients on this loop must not add collector pauses
    key = new_content_key()
    publishers = list(firsts.values())
    sent: dict[int, tuple[float, str]] = {}
    deadline = time.monotonic() + FANOUT_BUDGET_S
    body = os.urandom(400)
    for n in range(1, N_PUTS + 1):  # bounded in count and in time
        if time.monotonic() > deadline:
            break
        pub = publishers[n % len(publishers)]
        ct = seal_payload(key, 1, body)
        frame = encode_message({"t": "put", "i": n, "s": pub.space, "e": "ab" * 16, "z": 1000,
                                "x": [Envelope(pub.ident.device_id, n, 1, ct)]}, sender=CLIENT)
        if pub.ws.closed:
            continue  # dropped by the relay (counted in `dropped`)
        sent[n] = (time.perf_counter(), pub.space)
        await pub.ws.send_bytes(frame)
        await asyncio.sleep(1 / PUT_RATE_PER_S)
    expected = {sp: sum(1 for c in clients if c.space == sp) - 1 for sp in firsts}
    settle = time.monotonic() + 10
    while time.monotonic() < settle:
        if all(sum(1 for c in clients if n in c.got) >= expected[sp]
               for n, (_t, sp) in sent.items()):
            break
        await asyncio.sleep(0.05)
    lat: dict[int, list[float]] = {0: [], 1: []}
    missing = 0
    for n, (t_sent, sp) in sent.items():
        for c in clients:
            if c.space == sp and c is not firsts[sp]:
                if n in c.got:
                    lat[where[id(c)]].append((c.got[n] - t_sent) * 1000)
                else:
                    missing += 1
    byes = Counter(getattr(c, "bye", None) for c in clients)
    byes.pop(None, None)
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for c in clients:
        await c.ws.close()
    await http.close()
    gc.unfreeze()
    return {"same": lat[0], "other": lat[1], "connect_s": connect_s, "missing": missing,
            "byes": dict(byes),
            "puts": len(sent), "rss_kb": rss}


def cluster_fanout(n_devices: int = N_DEVICES) -> list[Result]:
    from .relay import DEVICES_PER_MEMBER

    spaces = _build_spaces(n_devices)
    with tempfile.TemporaryDirectory(prefix="ms-bench-pgfanout-") as d, _postgres() as pg:
        root = Path(d)
        url = pg.create_db()
        args = ("--max-devices-per-member", str(DEVICES_PER_MEMBER), "--plan", "enterprise")
        p1, u1 = _relay(root, "relay1", url, *args)
        try:
            p2, u2 = _relay(root, "relay2", url, *args)
            try:
                out = asyncio.run(_cluster_fanout([u1, u2], spaces, [p1.pid, p2.pid]))
            finally:
                _stop(p2)
        finally:
            _stop(p1)
    lat = out["same"] + out["other"]
    extra = {"devices": n_devices, "spaces": len(spaces), "puts": out["puts"],
             "deliveries": len(lat), "missing": out["missing"], "dropped": out["byes"],
             "connect_all_s": round(out["connect_s"], 2),
             "p99_same_instance_ms": round(Result("", "ms", out["same"]).p99, 2),
             "p99_other_instance_ms": round(Result("", "ms", out["other"]).p99, 2),
             "median_other_instance_ms": round(statistics.median(out["other"]), 2)
             if out["other"] else None,
             "relay_rss_mb": [round((k or 0) / 1024, 1) for k in out["rss_kb"]]}
    return [Result("relay cluster fan-out (2 instances): put -> each subscriber", "ms", lat,
                   target=100.0, target_on="p99",
                   note=f"{n_devices} devices on two instances over one PostgreSQL, every "
                        f"space split across both; {out['puts']} puts at {PUT_RATE_PER_S:g}/s "
                        "from instance 1; clients in one process", extra=extra)]


# ------------------------------------------------------------------------------ failover


async def _failover_once(root: Path, url: str, n: int, space: dict[str, Any],
                         procs: list[subprocess.Popen[bytes]], urls: list[str]) -> float:
    from mocksync.net.relay_client import RelayClient, RelayError, RelayEvents
    from mocksync.relay.envelope import Envelope
    from mocksync.space.keys import new_content_key, seal_payload

    arrived: dict[int, float] = {}

    class Peer(RelayEvents):
        def on_envelopes(self, _space: str, _tag: str, items: Any) -> None:
            for e in items:
                arrived.setdefault(e.seq, time.perf_counter())

    sid = space["id"]
    alice_ident, bob_ident = space["idents"][0], space["idents"][1]
    logs = {sid: space["wires"]}
    alice = RelayClient(urls, alice_ident, lambda: logs)  # the daemon's defaults
    bob = RelayClient([urls[1]], bob_ident, lambda: logs, Peer())
    key = new_content_key()
    tag = "cd" * 16
    seq = n * 100_000
    try:
        await alice.start()
        await bob.start()
        assert await alice.wait_connected(20) and await bob.wait_connected(20)
        assert alice.url == urls[0], alice.url
        seq += 1
        await alice.put(sid, tag, [Envelope(alice_ident.device_id, seq, 1,
                                            seal_payload(key, 1, b"before"))], 100)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        killed = time.perf_counter()
        deadline = time.monotonic() + FAILOVER_BUDGET_S
        seq += 1
        while time.monotonic() < deadline:  # a daemon's edit waits for the relay, then goes
            try:
                await asyncio.wait_for(alice.put(sid, tag, [Envelope(
                    alice_ident.device_id, seq, 1, seal_payload(key, 1, b"after"))], 100), 2)
                break
            except (RelayError, TimeoutError, ConnectionError):
                await asyncio.sleep(RETRY_PUT_S)
        while seq not in arrived and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if seq not in arrived:
            raise RuntimeError(f"no edit reached the peer within {FAILOVER_BUDGET_S:g} s")
        return arrived[seq] - killed
    finally:
        await alice.stop()
        await bob.stop()


def cluster_failover(runs: int = FAILOVER_RUNS) -> list[Result]:
    spaces = _build_spaces(2)
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ms-bench-pgfailover-") as d, _postgres() as pg:
        root = Path(d)
        url = pg.create_db()
        p2, u2 = _relay(root, "relay2", url)
        try:
            for n in range(runs):
                p1, u1 = _relay(root, f"relay1-{n}", url)
                try:
                    samples.append(asyncio.run(_failover_once(root, url, n + 1, spaces[0],
                                                              [p1, p2], [u1, u2])))
                finally:
                    _stop(p1)
        finally:
            _stop(p2)
    return [Result("relay cluster failover: kill -9 -> edits flowing", "s", samples,
                   target=5.0, note="kill -9 of the instance a device is on, until a change "
                                    "set it puts has reached a peer on the other instance "
                                    "(client defaults: next address at once)",
                   extra={"runs": len(samples)})]


BENCHMARKS = [cluster_catchup, cluster_fanout, cluster_failover]


if __name__ == "__main__":  # python -m bench.relay_cluster [catchup|fanout|failover]
    import json

    which = sys.argv[1:] or ["catchup", "fanout", "failover"]
    for name in which:
        fn = {"catchup": cluster_catchup, "fanout": cluster_fanout,
              "failover": cluster_failover}[name]
        for r in fn():
            print(json.dumps({k: v for k, v in r.to_json().items() if k != "samples"}))
