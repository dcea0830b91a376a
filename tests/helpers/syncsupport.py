"""A network simulator for the sans-IO sync protocol (its self-tests: tests/test_sync_support.py).

N devices, each a `Hub` over a local log (the real SQLite `Store` in a temp dir, or an
in-memory `FakeLog` where only the protocol matters), joined by links that drop, duplicate,
reorder and delay frames from a seeded random generator, driven by a virtual clock: the loop
jumps to the next frame arrival or the next `next_tick_ms()` of any hub, so a minute of
protocol time costs milliseconds. Disconnected links are re-established after a short pause,
as the daemon would. Everything the tests assert on is counted here, outside the protocol:
change sets sent per (sender, receiver, change set), deliveries per (device, change set),
store duplicates.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes import HEADER_SIZE, ChangeSet, Reassembler, make_changeset
from mocksync.errors import MocksyncError
from mocksync.model import to_wire, validate_ops
from mocksync.store import Store
from mocksync.sync import (
    Ack,
    Closed,
    Config,
    Cs,
    Deliver,
    Have,
    Hub,
    Nack,
    Opened,
    PeerPresence,
    Send,
    StoreSource,
    decode_message,
)

SPACE = "ab" * 16
SPACE2 = "cd" * 16


def pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def env_id(i: int) -> str:
    return f"e{i:07d}-0000-4000-8000-000000000000"


def create_ops(env: str) -> list:
    """Seq-1 op of an env's creator, in wire form (so the env renders)."""
    return [to_wire(("c", env, "env", [(("v", "name"), "n"), (("k",), ["uuid", "name"])]))]


def set_ops(env: str, value: str) -> list:
    """A one-register edit, in wire form."""
    return [to_wire(("s", env, ("v", "label"), value))]


# ------------------------------------------------------------------------------- local logs


class FakeLog:
    """An in-memory log with the store's semantics that matter to sync: per-device chains,
    applied in order, pending until the predecessor arrives, duplicates are no-ops."""

    def __init__(self, device: str, key: Ed25519PrivateKey) -> None:
        self.device = device
        self.key = key
        self.chains: dict[tuple[str, str], dict[str, list[bytes]]] = {}
        self.pending: dict[tuple[str, str, str], dict[int, bytes]] = {}
        self.heads: dict[tuple[str, str], ChangeSet] = {}

    def version_vector(self, space: str, env: str) -> dict[str, int]:
        return {d: len(c) for d, c in self.chains.get((space, env), {}).items() if c}

    def wires(self, space: str, env: str, device: str, after: int, upto: int) -> list[bytes]:
        return self.chains.get((space, env), {}).get(device, [])[after:upto]

    def commit(self, space: str, env: str, ops: list, now: int) -> ChangeSet:
        deps = self.version_vector(space, env)
        deps.pop(self.device, None)
        cs = make_changeset(self.key, space=space, env=env, device=self.device, hlc=now << 16,
                            ops=ops, deps=deps, prev=self.heads.get((space, env)))
        self.heads[(space, env)] = cs
        self.chains.setdefault((space, env), {}).setdefault(self.device, []).append(cs.encode())
        return cs

    def ingest(self, wire: bytes, public_key: bytes, now: int) -> tuple[str, list[ChangeSet]]:
        cs = ChangeSet.decode(wire)
        cs.verify(public_key)
        validate_ops(list(cs.ops))
        chain = self.chains.setdefault((cs.space, cs.env), {}).setdefault(cs.device, [])
        if cs.seq <= len(chain):
            return "duplicate", []
        waiting = self.pending.setdefault((cs.space, cs.env, cs.device), {})
        if cs.seq > len(chain) + 1:
            status = "duplicate" if cs.seq in waiting else "pending"
            waiting[cs.seq] = wire
            return status, []
        applied = [cs]
        chain.append(wire)
        while len(chain) + 1 in waiting:
            nxt = waiting.pop(len(chain) + 1)
            chain.append(nxt)
            applied.append(ChangeSet.decode(nxt))
        return "applied", applied


class StoreLog:
    """The real store, with the same small interface as FakeLog."""

    def __init__(self, device: str, key: Ed25519PrivateKey, path: Path) -> None:
        self.device = device
        self.key = key
        self.store = Store(path)
        self.source = StoreSource(self.store)

    def version_vector(self, space: str, env: str) -> dict[str, int]:
        return self.store.version_vector(env)

    def wires(self, space: str, env: str, device: str, after: int, upto: int) -> list[bytes]:
        return list(self.source.wires(space, env, device, after, upto))

    def commit(self, space: str, env: str, ops: list, now: int) -> ChangeSet:
        cs, _ = self.store.commit_local(self.key, space=space, env=env, device=self.device,
                                        ops=validate_ops(ops), now_ms=now)
        return cs

    def ingest(self, wire: bytes, public_key: bytes, now: int) -> tuple[str, list[ChangeSet]]:
        res = self.store.ingest(wire, public_key, now)
        return res.status, list(res.applied)

    def close(self) -> None:
        self.store.close()


# ------------------------------------------------------------------------------- devices


@dataclass
class Node:
    name: str
    log: FakeLog | StoreLog
    hub: Hub
    envs: list[tuple[str, str]]
    deliveries: Counter = field(default_factory=Counter)  # (space, env, device, seq) -> n
    deliveries_from: Counter = field(default_factory=Counter)  # (peer, space, env, dev, seq)
    store_duplicates: Counter = field(default_factory=Counter)
    refusals: list = field(default_factory=list)
    closed: list = field(default_factory=list)
    presence: dict = field(default_factory=dict)


@dataclass
class LinkParams:
    drop: float = 0.0
    dup: float = 0.0
    delay_min: int = 1
    delay_max: int = 1

    @property
    def lossless(self) -> bool:
        return self.drop == 0 and self.dup == 0


LOSSLESS = LinkParams(0, 0, 1, 30)


@dataclass
class Conn:
    cid: int
    a: str
    b: str
    up: bool = True
    closing: bool = False
    retry: bool = True


class Net:
    """Devices, links and a virtual clock."""

    def __init__(self, seed: int = 0, *, config: Config | None = None,
                 reconnect_ms: int = 1_500) -> None:
        self.rng = random.Random(seed)
        self.now = 0
        self.config = config or Config()
        self.reconnect_ms = reconnect_ms
        self.nodes: dict[str, Node] = {}
        self.keys: dict[str, bytes] = {}
        self.params: dict[frozenset, LinkParams] = {}
        self.conns: dict[int, Conn] = {}
        self.want_links: dict[frozenset, tuple[str, str]] = {}  # links to keep up
        self._heap: list = []
        self._order = itertools.count()
        self._cid = itertools.count(1)
        self._observers: dict[tuple[int, str], Reassembler] = {}
        self.sent_cs: Counter = Counter()  # (src, dst, space, env, device, seq) -> n
        self.frames_to: dict[str, list[bytes]] = {}  # every frame sent to a device
        # Flow control seen from the wire: change sets sent and not yet acknowledged (by an
        # ack, a nack, or a vector that covers them) when the acknowledgement reaches the sender.
        self.unacked: dict[tuple[str, str], set] = {}
        self.max_unacked: Counter = Counter()
        self.frames_sent = 0
        self.frames_dropped = 0
        self.incompatible: list[str] = []

    # ------------------------------------------------------------- building

    def add(self, name: str, envs: list[tuple[str, str]], *, store_dir: Path | None = None,
            protocol: int | None = None, model: int | None = None) -> Node:
        key = Ed25519PrivateKey.generate()
        log: FakeLog | StoreLog
        log = StoreLog(name, key, store_dir / f"{name}.sqlite3") if store_dir else FakeLog(name, key)
        source = log.source if isinstance(log, StoreLog) else log
        versions = {}
        if protocol is not None:
            versions["protocol"] = protocol
        if model is not None:
            versions["model"] = model
        hub = Hub(name, source, config=self.config, **versions)
        node = Node(name, log, hub, list(envs))
        self.nodes[name] = node
        self.keys[name] = pub(key)
        return node

    def link(self, a: str, b: str, params: LinkParams | None = None) -> None:
        """Keep a connection between a and b (re-established after failures)."""
        pair = frozenset((a, b))
        self.params[pair] = params or LinkParams()
        self.want_links[pair] = (a, b)
        self._connect(a, b)

    def set_params(self, params: LinkParams) -> None:
        for pair in self.params:
            self.params[pair] = params

    def _shared_envs(self, a: str, b: str) -> list[tuple[str, str]]:
        """What the caller passes: only envs of spaces the peer is a member of."""
        spaces_b = {s for s, _ in self.nodes[b].envs}
        return [p for p in self.nodes[a].envs if p[0] in spaces_b]

    def _connect(self, a: str, b: str) -> None:
        cid = next(self._cid)
        self.conns[cid] = Conn(cid, a, b)
        for me, peer in ((a, b), (b, a)):
            node = self.nodes[me]
            self.handle(node, node.hub.open((cid, peer), self._shared_envs(me, peer), self.now,
                                            expect_device=peer))

    # ------------------------------------------------------------- events

    def handle(self, node: Node, events: list) -> None:
        for ev in events:
            if isinstance(ev, Send):
                self._send(node.name, ev.link, ev.data)
            elif isinstance(ev, Deliver):
                self._deliver(node, ev)
            elif isinstance(ev, Closed):
                node.closed.append(ev.reason)
                self._teardown(ev.link[0], ev.reason)
            elif isinstance(ev, PeerPresence):
                node.presence[ev.device] = ev
            else:
                assert isinstance(ev, Opened)

    def _deliver(self, node: Node, ev: Deliver) -> None:
        key = (ev.space, ev.env, ev.device, ev.seq)
        node.deliveries[key] += 1
        node.deliveries_from[(ev.link[1], *key)] += 1
        try:
            status, applied = node.log.ingest(ev.wire, self.keys[ev.device], self.now)
        except MocksyncError as exc:
            node.refusals.append(str(exc))
            self.handle(node, node.hub.delivered(ev, self.now, refused=str(exc)))
            return
        if status == "duplicate":
            node.store_duplicates[key] += 1
        for cs in applied:
            self.handle(node, node.hub.committed(cs.space, cs.env, cs.device, cs.seq,
                                                 cs.encode(), self.now))
        self.handle(node, node.hub.delivered(ev, self.now))

    def _send(self, src: str, link, data: bytes) -> None:
        cid, dst = link
        conn = self.conns.get(cid)
        if conn is None or not conn.up:
            return
        self.frames_sent += 1
        self.frames_to.setdefault(dst, []).append(data)
        obs = self._observers.setdefault((cid, src), Reassembler())
        payload = obs.feed(data)
        if payload is not None:
            msg = decode_message(payload)
            if isinstance(msg, Cs):
                self.sent_cs[(src, dst, msg.space, msg.env, msg.device, msg.seq)] += 1
                out = self.unacked.setdefault((src, dst), set())
                out.add((msg.space, msg.env, msg.device, msg.seq))
                self.max_unacked[(src, dst)] = max(self.max_unacked[(src, dst)], len(out))
        p = self.params[frozenset((src, dst))]
        if self.rng.random() < p.drop:
            self.frames_dropped += 1
            return
        copies = 2 if self.rng.random() < p.dup else 1
        for _ in range(copies):
            at = self.now + self.rng.randint(p.delay_min, p.delay_max)
            heapq.heappush(self._heap, (at, next(self._order), "frame", (cid, src, dst, data)))

    def _acknowledged(self, sender: str, receiver: str, msg) -> None:
        out = self.unacked.get((sender, receiver))
        if not out:
            return
        if isinstance(msg, Ack | Nack):
            out.discard((msg.space, msg.env, msg.device, msg.seq))
        if isinstance(msg, Ack | Have):
            out.difference_update([k for k in out if k[:2] == (msg.space, msg.env)
                                   and msg.vv.get(k[2], 0) >= k[3]])

    def _teardown(self, cid: int, reason: str) -> None:
        """One side closed: frames already on their way still arrive (a graceful close),
        then the other side sees the transport close; the link is re-made later."""
        conn = self.conns.get(cid)
        if conn is None or conn.closing:
            return
        conn.closing = True
        if reason.startswith("incompatible version"):
            self.incompatible.append(reason)
            conn.retry = False
        linger = self.params[frozenset((conn.a, conn.b))].delay_max + 1
        heapq.heappush(self._heap, (self.now + linger, next(self._order), "close", cid))

    def _closed(self, cid: int) -> None:
        conn = self.conns.pop(cid, None)
        if conn is None:
            return
        conn.up = False
        for me, peer in ((conn.a, conn.b), (conn.b, conn.a)):
            node = self.nodes[me]
            if (cid, peer) in node.hub.sessions:
                self.handle(node, node.hub.close((cid, peer), "transport closed", self.now))
        if conn.retry and frozenset((conn.a, conn.b)) in self.want_links:
            heapq.heappush(self._heap, (self.now + self.reconnect_ms, next(self._order),
                                        "reconnect", (conn.a, conn.b)))

    # ------------------------------------------------------------- driving

    def edit(self, name: str, space: str, env: str) -> ChangeSet:
        node = self.nodes[name]
        log = node.log
        ops = create_ops(env) if not log.version_vector(space, env).get(name) and \
            name == self.creator(env) else set_ops(env, f"{name}@{self.now}")
        cs = log.commit(space, env, ops, self.now)
        self.handle(node, node.hub.committed(space, env, name, cs.seq, cs.encode(), self.now))
        return cs

    def creator(self, env: str) -> str:
        return sorted(self.nodes)[0]

    def run_until(self, end: int) -> None:
        spins = 0
        while True:
            t_heap = self._heap[0][0] if self._heap else None
            ticks = [d for n in self.nodes.values() if (d := n.hub.next_tick_ms()) is not None]
            candidates = [t for t in (t_heap, min(ticks) if ticks else None) if t is not None]
            t = max(self.now, min(candidates)) if candidates else end
            if t > end:
                self.now = end
                return
            spins = spins + 1 if t == self.now else 0
            assert spins < 100_000, "simulation made no progress in time"
            self.now = t
            while self._heap and self._heap[0][0] <= t:
                _, _, kind, item = heapq.heappop(self._heap)
                if kind == "frame":
                    cid, src, dst, data = item
                    conn = self.conns.get(cid)
                    if conn is not None and conn.up:
                        if data[13:17] == b"\x00\x00\x00\x01":
                            self._acknowledged(dst, src, decode_message(data[HEADER_SIZE:]))
                        node = self.nodes[dst]
                        self.handle(node, node.hub.receive_data((cid, src), data, t))
                elif kind == "close":
                    self._closed(item)
                else:
                    a, b = item
                    if frozenset((a, b)) in self.want_links and not self._connected(a, b):
                        self._connect(a, b)
            for node in self.nodes.values():
                due = node.hub.next_tick_ms()
                if due is not None and due <= t:
                    self.handle(node, node.hub.tick(t))

    def run_for(self, ms: int) -> None:
        self.run_until(self.now + ms)

    def _connected(self, a: str, b: str) -> bool:
        return any({c.a, c.b} == {a, b} and c.up for c in self.conns.values())

    # ------------------------------------------------------------- observing

    def vv(self, name: str, space: str, env: str) -> dict[str, int]:
        return self.nodes[name].log.version_vector(space, env)

    def received_by(self, dst: str) -> Counter:
        """Change sets sent to `dst` by anyone: (space, env, device, seq) -> count."""
        out: Counter = Counter()
        for (_src, d, *key), n in self.sent_cs.items():
            if d == dst:
                out[tuple(key)] += n
        return out

    def sessions(self):
        for node in self.nodes.values():
            yield from node.hub.sessions.values()

    def close(self) -> None:
        for node in self.nodes.values():
            if isinstance(node.log, StoreLog):
                node.log.close()
