"""Issue #6 benchmarks: the relay (loopback only; every loop bounded in count and time).

- relay_catchup_transfer: a device that was offline while 10,000 change sets accumulated on
  the relay fetches them all (index, paged fetch) and opens every envelope (AEAD, change-set
  decode, slot checks). The relay's share of catching up; target < 2 s.
- relay_catchup_device: the same 10,000 change sets into a fresh device end to end: a real
  Agent with RelayTransport, from start until its store holds them all (adds the store's
  verify + chain + apply + one SQLite transaction per relay page). Baseline: the store ingest
  alone of the same wires in the same pages (`Store.ingest_batch`, as the device does),
  measured in the same run, so the ratio shows what the relay path adds on top of the log.
- relay_fanout: a relay in its own process holds N_DEVICES connected devices (in spaces of
  SPACE_DEVICES, the membership limit is 400 per space); publishers put change sets at a fixed
  rate; every subscriber timestamps each `env` push as it arrives. Reported: p99 latency from
  put to each delivery (target 100 ms), the per-put time until the last subscriber has it,
  connect time and the relay's RSS. Every device is the library's own `RelayClient` (the
  daemon's handshake and requests: `BenchDevice`), all in this one process (one asyncio
  loop), so their own decoding is part of the measured latency.

Sizes are parameters (`relay_catchup(n_changesets=...)`, `relay_fanout(n_devices=...,
n_puts=...)`) so tests/test_bench_smoke.py runs tiny versions against the current protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
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
#: Longest connecting every device may take (each is admitted with a signed handshake and
#: is sent its space's membership log: about 70 s for 700 devices at load average 15 on 2
#: cores, a few seconds unloaded).
FANOUT_CONNECT_BUDGET_S = 240.0
CONNECT_CONCURRENCY = 50
#: Seconds, after the last put, the fan-out waits for deliveries still on their way.
FANOUT_SETTLE_S = 10.0
#: What each fan-out put carries: the env tag, the declared env size, the plaintext bytes.
FANOUT_TAG = "ab" * 16
FANOUT_DECLARED_BYTES = 1000
FANOUT_BODY_BYTES = 400
#: Each handshake step of a benchmark device (the daemon's 10 s is tight for 50 handshakes
#: at once on a loaded 2-core machine), and its whole admission (reconnects included).
DEVICE_CONNECT_TIMEOUT_S = 30.0
DEVICE_ADMIT_TIMEOUT_S = 60.0
#: Longest a relay process may take to say it listens.
RELAY_START_S = 30.0


# ------------------------------------------------------------------------------ catch-up


def _count(n: int) -> str:
    """How a row names its size: "10k" for 10,000 (the rows' names in results.json)."""
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}"


def _catchup_world(root: Path, n: int = N_CHANGESETS) -> dict[str, Any]:
    """Alice's `n` change sets of one environment, sealed and stored in a relay database."""
    from mocksync.devtools.envgen import generate_env
    from mocksync.devtools.pairing import pair
    from mocksync.model import snapshot_ops
    from mocksync.paths import Home
    from mocksync.relay.envelope import Tagger, seal_envelope
    from mocksync.relay.storage import SQLiteStorage
    from mocksync.spaceio.actions import create_space, init_device
    from mocksync.spaceio.store import get_space
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
    for i in range(n - 1):
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
    return {"alice": alice, "space": space, "env": env, "tag": tag, "wires": wires, "n": n,
            "pair": pair, "Home": Home, "init_device": init_device, "device_id": ia.device_id}


def _fresh_device(world: dict[str, Any], root: Path, name: str) -> tuple[Any, Any]:
    home = world["Home"](root / name)
    ident, _ = world["init_device"](home, name=name, member_name=name)
    world["pair"](world["alice"], home, world["space"])
    return home, ident


async def _transfer_once(world: dict[str, Any], root: Path, n: int,
                         db_url: str | None = None) -> float:
    """One catch-up of the world's change sets by a fresh device, from a relay on SQLite
    (`root/relay`) or, with `db_url`, on that PostgreSQL database (bench/relay_cluster.py)."""
    from mocksync.net.relay_client import RelayClient
    from mocksync.relay.envelope import Tagger, open_envelope
    from mocksync.relay.server import RelayConfig, RelayServer
    from mocksync.spaceio.store import get_space

    home, ident = _fresh_device(world, root, f"{'pg' if db_url else 't'}{n}")
    stored = get_space(home, world["space"])
    config = (RelayConfig(data_dir=root / "relay", port=0) if db_url is None else
              RelayConfig(data_dir=root / "unused", port=0, db_url=db_url))
    relay = RelayServer(config)
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
        assert opened == world["n"] and index[tag] == {world["device_id"]: world["n"]}, \
            (opened, index)
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
        assert ok and vv == {world["device_id"]: world["n"]}, (ok, vv)
        return elapsed
    finally:
        await agent.stop()
        await relay.stop()


def _store_baseline(world: dict[str, Any], root: Path, n: int) -> float:
    """The store's own share of the catch-up: decode, verify, chain, apply and commit the same
    wires, a page at a time (one transaction per relay page, as the device ingests them:
    `agent.ingest` -> `Store.ingest_batch`), with no relay, envelopes or agent around it."""
    from mocksync.changes import ChangeSet
    from mocksync.relay.protocol import MAX_BATCH_ITEMS
    from mocksync.spaceio.store import get_space
    from mocksync.store import Store

    key = get_space(world["alice"], world["space"]).state.devices[world["device_id"]].sign_key
    s = Store(root / f"baseline{n}.db")
    wires = world["wires"]
    t0 = time.perf_counter()
    for i in range(0, len(wires), MAX_BATCH_ITEMS):
        s.ingest_batch([(ChangeSet.decode(w), key) for w in wires[i:i + MAX_BATCH_ITEMS]],
                       int(time.time() * 1000) + 10**7)
    elapsed = time.perf_counter() - t0
    assert s.version_vector(world["env"]) == {world["device_id"]: world["n"]}
    s.close()
    return elapsed


def relay_catchup(runs: int = 3, n_changesets: int = N_CHANGESETS) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="ms-bench-relay-") as d:
        root = Path(d)
        t0 = time.perf_counter()
        world = _catchup_world(root, n_changesets)
        setup_s = time.perf_counter() - t0
        transfer = [asyncio.run(_transfer_once(world, root, n)) for n in range(runs)]
        device = [asyncio.run(_device_once(world, root, n)) for n in range(runs)]
        baseline = [_store_baseline(world, root, n) for n in range(runs)]
        ct_bytes = sum(len(w) for w in world["wires"])
    return [
        Result(f"relay catch-up {_count(n_changesets)}: transfer + open", "s", transfer,
               target=2.0,
               note="index + paged fetch over loopback WebSocket + AEAD open + change-set "
                    f"decode/slot check of {n_changesets:,} envelopes",
               extra={"change_sets": n_changesets, "wire_bytes": ct_bytes,
                      "setup_s": round(setup_s, 1)}),
        Result(f"relay catch-up {_count(n_changesets)} into a fresh device", "s", device,
               target=2.0, baseline_name="store ingest alone", baseline=baseline,
               note=f"real Agent + RelayTransport from start to all {n_changesets:,} applied; "
                    "baseline: the store's decode+verify+apply+commit of the same change sets "
                    "in the same pages, alone"),
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


@functools.cache
def _listener() -> Any:
    """The events class of a benchmark device (made once, on first use: importing the relay
    client costs aiohttp, which the rows without a relay never need)."""
    from mocksync.net.relay_client import CONNECTED, REFUSED, RelayEvents

    class Listener(RelayEvents):
        """What one benchmark device hears: when each live push reached it, every time the
        relay dropped its session (by the relay's code, e.g. `slow_consumer`), and whether
        the relay has answered its first handshake (`decided`: admitted, or refused)."""

        def __init__(self) -> None:
            self.got: dict[int, float] = {}
            self.drops: Counter[str] = Counter()
            self.decided = asyncio.Event()
            self._up = False

        def on_envelopes(self, space: str, tag: str, items: Any) -> None:
            t = time.perf_counter()
            for e in items:
                self.got.setdefault(e.seq, t)

        def on_state(self, client: Any) -> None:
            if client.state in (CONNECTED, REFUSED):
                self.decided.set()
            if client.state == CONNECTED:
                self._up = True
            elif self._up:
                self._up = False
                self.drops[client.code or client.reason or "closed"] += 1

    return Listener


class BenchDevice:
    """One device of a relay benchmark, on the library's own `RelayClient`: the daemon's
    handshake, requests and push handling, so a protocol change can never leave the
    benchmark speaking an old dialect (it did once: a hand-rolled hello of protocol 1)."""

    def __init__(self, ident: Any, space: str, wires: list[bytes], url: str) -> None:
        from mocksync.net.relay_client import RelayClient

        self.ident, self.space, self.url = ident, space, url
        self.events = _listener()()
        logs = {space: list(wires)}
        self.client = RelayClient(url, ident, lambda: logs, self.events,
                                  connect_timeout_s=DEVICE_CONNECT_TIMEOUT_S)

    @property
    def got(self) -> dict[int, float]:
        return self.events.got

    async def connect(self, timeout: float = DEVICE_ADMIT_TIMEOUT_S) -> None:
        """Start the client and wait until the relay admitted it to its space. A refusal
        (an incompatible protocol, a bad signature) fails at once with the relay's sentence;
        connection trouble is retried by the client itself until `timeout`."""
        from mocksync.net.relay_client import CONNECTED

        await self.client.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.events.decided.wait(), timeout)
        if self.client.state != CONNECTED:
            why = self.client.reason or self.client.state
            raise RuntimeError(f"benchmark device {self.ident.device_id} was not admitted by "
                               f"the relay at {self.url}: {why}")
        if self.space not in self.client.accepted:
            raise RuntimeError(f"the relay at {self.url} refused space {self.space}: "
                               f"{self.client.space_refusals.get(self.space)}")

    async def put(self, seq: int, ciphertext: bytes) -> int:
        """Put one envelope (seq `seq`) in this device's space; waits for the relay's ack."""
        from mocksync.relay.envelope import Envelope

        return await self.client.put(self.space, FANOUT_TAG, [Envelope(
            self.ident.device_id, seq, 1, ciphertext)], FANOUT_DECLARED_BYTES)

    async def stop(self) -> None:
        await self.client.stop()


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def run_fanout(urls: list[str], spaces: list[dict[str, Any]], pids: list[int], *,
                     n_puts: int = N_PUTS, rate_per_s: float = PUT_RATE_PER_S,
                     budget_s: float = FANOUT_BUDGET_S,
                     connect_budget_s: float = FANOUT_CONNECT_BUDGET_S) -> dict[str, Any]:
    """Connect every device of `spaces` (device i of a space to `urls[i % len(urls)]`, so
    the publisher, device 0, is at the first relay), then put `n_puts` change sets at
    `rate_per_s` from the publishers and time each delivery. Latencies are grouped by the
    relay (index in `urls`) the receiving device is connected to."""
    placed = [(BenchDevice(ident, s["id"], s["wires"], urls[i % len(urls)]), i % len(urls))
              for s in spaces for i, ident in enumerate(s["idents"])]
    where = {id(d): k for d, k in placed}
    devices = [d for d, _k in placed]
    firsts = {s["id"]: next(d for d in devices if d.space == s["id"]) for s in spaces}
    try:
        # The first device of each space uploads its membership log; then everyone connects.
        t0 = time.perf_counter()
        for d in firsts.values():
            await d.connect()
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(d: BenchDevice) -> None:
            async with sem:
                await d.connect()

        rest = [d for d in devices if d not in firsts.values()]
        await asyncio.wait_for(asyncio.gather(*(connect(d) for d in rest)), connect_budget_s)
        connect_s = time.perf_counter() - t0
        rss_connected = [_rss_kb(p) for p in pids]
        # The harness (all devices on one loop) must not add its own pauses to what is
        # measured: move everything alive now out of the collector's reach.
        gc.collect()
        gc.freeze()
        from mocksync.space.keys import new_content_key, seal_payload

        key = new_content_key()
        body = os.urandom(FANOUT_BODY_BYTES)
        publishers = list(firsts.values())
        sent: dict[int, tuple[float, str]] = {}
        put_errors: Counter[str] = Counter()

        async def put(pub: BenchDevice, seq: int, ct: bytes) -> None:
            sent[seq] = (time.perf_counter(), pub.space)
            try:
                await pub.put(seq, ct)
            except Exception as exc:  # counted: a refused or lost put is part of the result
                sent.pop(seq, None)
                put_errors[type(exc).__name__] += 1

        puts: list[asyncio.Task[None]] = []
        deadline = time.monotonic() + budget_s
        for n in range(1, n_puts + 1):  # bounded in count ...
            if time.monotonic() > deadline:  # ... and in time
                break
            pub = publishers[n % len(publishers)]
            # At a fixed rate: a put does not wait for the previous one's ack.
            puts.append(asyncio.create_task(put(pub, n, seal_payload(key, 1, body))))
            await asyncio.sleep(1 / rate_per_s)
        await asyncio.wait_for(asyncio.gather(*puts), budget_s)
        expected = {sp: sum(1 for d in devices if d.space == sp) - 1 for sp in firsts}
        settle = time.monotonic() + FANOUT_SETTLE_S
        while time.monotonic() < settle:
            if all(sum(1 for d in devices if n in d.got) >= expected[sp]
                   for n, (_t, sp) in sent.items()):
                break
            await asyncio.sleep(0.05)
        rss_loaded = [_rss_kb(p) for p in pids]
        lat: dict[int, list[float]] = {k: [] for k in range(len(urls))}
        last: list[float] = []
        missing = 0
        for n, (t_sent, sp) in sent.items():
            times = []
            for d in devices:
                if d.space == sp and d is not firsts[sp]:
                    if n in d.got:
                        times.append(d.got[n] - t_sent)
                        lat[where[id(d)]].append((d.got[n] - t_sent) * 1000)
                    else:
                        missing += 1
            if times:
                last.append(max(times) * 1000)
        drops: Counter[str] = Counter()
        for d in devices:
            drops.update(d.events.drops)
    finally:
        await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)
        gc.unfreeze()
    return {"latency_ms": lat, "last_ms": last, "connect_s": connect_s, "missing": missing,
            "puts": len(sent), "put_errors": dict(put_errors), "dropped": dict(drops),
            "rss_connected_kb": rss_connected, "rss_loaded_kb": rss_loaded}


def spawn_relay(root: Path, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a `mocksync relay` process on 127.0.0.1 at a free port, its log in root/NAME.log;
    `args`: more relay options (`--db URL`, limits). `relay_url` waits until it listens."""
    log_path = root / f"{name}.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from mocksync.cli import main; main()", "--home",
             str(root / f"{name}-home"), "relay", "--host", "127.0.0.1", "--port", "0", *args],
            stderr=log_file, stdout=subprocess.DEVNULL)
    return proc, log_path


def relay_url(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    """The URL a spawned relay says it listens on (killed, and RuntimeError, if it does not
    within RELAY_START_S)."""
    deadline = time.monotonic() + RELAY_START_S
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if "mocksync relay: listening on " in line:
                return line.split("listening on ", 1)[1].split(",", 1)[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"relay {log_path.stem} did not start: {log_path.read_text()[-2000:]}")


def start_relay(root: Path, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """`spawn_relay` and wait for it: (process, url)."""
    proc, log_path = spawn_relay(root, name, *args)
    return proc, relay_url(proc, log_path)


def stop_relay(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def relay_fanout(n_devices: int = N_DEVICES, n_puts: int = N_PUTS) -> list[Result]:
    spaces = _build_spaces(n_devices)
    with tempfile.TemporaryDirectory(prefix="ms-bench-fanout-") as d:
        proc, url = start_relay(Path(d), "relay", "--data", str(Path(d) / "data"),
                                "--max-devices-per-member", str(DEVICES_PER_MEMBER),
                                "--plan", "enterprise")
        try:
            out = asyncio.run(run_fanout([url], spaces, [proc.pid], n_puts=n_puts))
        finally:
            stop_relay(proc)
    lat = out["latency_ms"][0]
    per_space = min(SPACE_DEVICES, n_devices) - 1
    extra = {"devices": n_devices, "spaces": len(spaces), "subscribers_per_put": per_space,
             "puts": out["puts"], "deliveries": len(lat), "missing": out["missing"],
             "put_errors": out["put_errors"], "dropped": out["dropped"],
             "connect_all_s": round(out["connect_s"], 2),
             "relay_rss_mb_connected": round((out["rss_connected_kb"][0] or 0) / 1024, 1),
             "relay_rss_mb_loaded": round((out["rss_loaded_kb"][0] or 0) / 1024, 1),
             "median_ms": round(statistics.median(lat), 2) if lat else None,
             "load_avg_1m": round(os.getloadavg()[0], 2)}
    note = (f"{n_devices} devices connected, {len(spaces)} spaces x {per_space} subscribers; "
            f"{out['puts']} puts at {PUT_RATE_PER_S:g}/s; clients (the library's RelayClient) "
            "in one process")
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
