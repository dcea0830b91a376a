"""Issue #17 benchmarks: the relay on PostgreSQL, as several instances (loopback only).

Each benchmark starts its own private PostgreSQL server (tests/pgserver.py: Debian's
binaries, a temporary data directory, 127.0.0.1 only, stopped at the end; or uses the one
passed as `pg`) and is skipped with the reason (`BenchSkipped`) when PostgreSQL is not
installed. Every loop is bounded in count and in time.

- relay cluster catch-up 10k: the relay catch-up of bench/relay.py (index, paged fetch over a
  loopback WebSocket, AEAD open of every envelope) with the 10,000 change sets read from
  PostgreSQL instead of SQLite. Target <= 2 s.
- relay cluster fan-out: two `mocksync relay --db` processes on one database hold
  N_DEVICES connected devices, every space split across both instances; publishers (at
  instance 1) put change sets at a fixed rate; each subscriber (bench.relay.BenchDevice: the
  library's RelayClient) timestamps each push. p99 put -> each subscriber, target <= 100 ms;
  the subscribers at instance 2 are reached through NOTIFY + a fetch of the rows, reported
  apart in `extra`.
- relay cluster failover: a device knowing both instances is connected to instance 1, a
  peer to instance 2; instance 1 is killed (-9); measured from the kill until a change set the
  device puts (retrying as a daemon does) has reached the peer. Target <= 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .common import BenchSkipped, Result
from .relay import (
    N_CHANGESETS,
    _build_spaces,
    _catchup_world,
    _count,
    _transfer_once,
    relay_url,
    run_fanout,
    spawn_relay,
    start_relay,
    stop_relay,
)

#: Devices the two instances hold in the fan-out benchmark, and what they do.
N_DEVICES = 2000
N_PUTS = 200
PUT_RATE_PER_S = 20.0
FANOUT_BUDGET_S = 90.0
#: Longest connecting all N_DEVICES may take (twice the devices of bench/relay.py's run).
CONNECT_BUDGET_S = 480.0
#: Failover runs (each kills an instance and starts it again), and the longest one may take.
FAILOVER_RUNS = 3
FAILOVER_BUDGET_S = 30.0
#: Seconds between a device's put attempts while its instance is gone.
RETRY_PUT_S = 0.05

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
    return start_relay(root, name, "--db", db_url, *extra)


_stop = stop_relay


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


@contextlib.contextmanager
def _server(pg: Any) -> Iterator[Any]:
    """`pg` when the caller holds a PostgreSQL server already (the smoke test), else ours."""
    if pg is not None:
        yield pg
        return
    with _postgres() as server:
        yield server


def cluster_catchup(runs: int = 3, n_changesets: int = N_CHANGESETS, *, pg: Any = None
                    ) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="ms-bench-pgcatchup-") as d, _server(pg) as server:
        root = Path(d)
        world = _catchup_world(root, n_changesets)
        url = server.create_db()
        asyncio.run(_copy_to_postgres(world, root, url))
        samples = [asyncio.run(_transfer_once(world, root, n, db_url=url)) for n in range(runs)]
        # The same catch-up from the SQLite relay, in this run: the ratio is PostgreSQL's cost.
        baseline = [asyncio.run(_transfer_once(world, root, runs + n)) for n in range(runs)]
    return [Result(f"relay cluster catch-up {_count(n_changesets)} from PostgreSQL", "s",
                   samples, target=2.0, baseline_name="same from SQLite", baseline=baseline,
                   note="index + paged fetch (rows read from PostgreSQL) over loopback "
                        f"WebSocket + AEAD open of {n_changesets:,} envelopes",
                   extra={"change_sets": n_changesets, "load_avg_1m": os.getloadavg()[0]})]


# ------------------------------------------------------------------------------ fan-out


def cluster_fanout(n_devices: int = N_DEVICES, n_puts: int = N_PUTS, *, pg: Any = None
                   ) -> list[Result]:
    from .relay import DEVICES_PER_MEMBER

    spaces = _build_spaces(n_devices)
    with tempfile.TemporaryDirectory(prefix="ms-bench-pgfanout-") as d, _server(pg) as server:
        root = Path(d)
        url = server.create_db()
        args = ("--max-devices-per-member", str(DEVICES_PER_MEMBER), "--plan", "enterprise")
        # Both instances start at once (each takes a while to import and open the database).
        procs = [spawn_relay(root, name, "--db", url, *args) for name in ("relay1", "relay2")]
        try:
            u1, u2 = (relay_url(p, log) for p, log in procs)
            # Within each space, devices alternate between the instances; the first (the
            # publisher, which uploads the log) is at instance 1.
            out = asyncio.run(run_fanout([u1, u2], spaces, [p.pid for p, _log in procs],
                                         n_puts=n_puts, rate_per_s=PUT_RATE_PER_S,
                                         budget_s=FANOUT_BUDGET_S,
                                         connect_budget_s=CONNECT_BUDGET_S))
        finally:
            for p, _log in procs:
                _stop(p)
    same, other = out["latency_ms"][0], out["latency_ms"][1]
    lat = same + other
    extra = {"devices": n_devices, "spaces": len(spaces), "puts": out["puts"],
             "deliveries": len(lat), "missing": out["missing"], "dropped": out["dropped"],
             "put_errors": out["put_errors"],
             "connect_all_s": round(out["connect_s"], 2),
             "p99_same_instance_ms": round(Result("", "ms", same).p99, 2),
             "p99_other_instance_ms": round(Result("", "ms", other).p99, 2),
             "median_other_instance_ms": round(statistics.median(other), 2) if other else None,
             "relay_rss_mb": [round((k or 0) / 1024, 1) for k in out["rss_connected_kb"]],
             "load_avg_1m": round(os.getloadavg()[0], 2)}
    return [Result("relay cluster fan-out (2 instances): put -> each subscriber", "ms", lat,
                   target=100.0, target_on="p99",
                   note=f"{n_devices} devices on two instances over one PostgreSQL, every "
                        f"space split across both; {out['puts']} puts at {PUT_RATE_PER_S:g}/s "
                        "from instance 1; clients (the library's RelayClient) in one process",
                   extra=extra)]


# ------------------------------------------------------------------------------ failover


async def _failover_once(root: Path, url: str, n: int, space: dict[str, Any],
                         procs: list[subprocess.Popen[bytes]], urls: list[str]) -> float:
    from mocksync.net.errors import RelayError
    from mocksync.net.relay_client import RelayClient, RelayEvents
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


def cluster_failover(runs: int = FAILOVER_RUNS, *, pg: Any = None) -> list[Result]:
    spaces = _build_spaces(2)
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ms-bench-pgfailover-") as d, _server(pg) as server:
        root = Path(d)
        url = server.create_db()
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
