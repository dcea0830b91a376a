"""Attack class: CBOR that is valid, canonical and tag-free, but made of millions of items.

Found by the red team after the decoding gate (test_attack_decode.py) was in place. The gate
refuses tags and expansion, and its generic cap is 16 Mi items; but decoding costs time per
item (about 1 microsecond to scan, and cbor2 holds the GIL while it builds and re-encodes the
value), so a document of millions of one-byte items costs seconds wherever it is decoded, on a
worker thread too:

- a member uploads a 16 KB envelope whose change set carries zlib-compressed ops of 16 million
  zeros: every teammate's daemon stopped answering `status` for up to 3.1 s (6 s in all);
- a peer's sync message of 16 million zeros was decoded in full before its kind was known;
- an unauthenticated client's 8 MB auth frame of 8 million zeros (test_attack_relay_frames.py).

What holds now: each layer carries the item cap its honest content needs: a change set's wire
(`WIRE_ITEMS`), its body (`MAX_BODY_ITEMS`), its compressed ops (`ops_item_cap`: items in
proportion to the compressed bytes), a sync message (`MAX_MESSAGE_ITEMS`), a client's relay
frame (`MAX_CLIENT_FRAME_ITEMS`); the scan stops at the cap, before anything is built.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from attack_tools import cbor_head
from journeys.harness import Team
from mocksync import MODEL_VERSION, PROTOCOL_VERSION
from mocksync.agent.client import ControlClient
from mocksync.changes import ChangeSet, canonical
from mocksync.changes.changeset import (
    FORMAT_VERSION,
    MAX_BODY_ITEMS,
    MAX_DEPS,
    OPS_ITEMS_PER_COMPRESSED_BYTE,
    SIGNING_CONTEXT,
    WIRE_ITEMS,
    ops_item_cap,
)
from mocksync.changes.hlc import pack
from mocksync.devtools.envgen import generate_env
from mocksync.errors import ChangeSetError, MocksyncError
from mocksync.model import snapshot_ops, to_wire
from mocksync.net.relay_client import RelayClient
from mocksync.paths import Home
from mocksync.relay.envelope import seal_envelope
from mocksync.space.identity import Identity
from mocksync.sync import messages
from mocksync.sync.membership import MAX_HEADS, MAX_MEMBERSHIP_SPACES

from helpers.mallory import Mallory

#: Items of the flood: one byte each, 16 MB in all, just under the gate's generic cap.
FLOOD = 16_000_000
#: "Refused at once" for a scan that stops at its cap (the full decode took seconds).
FAST_S = 0.5
#: Longest the daemon may take to answer `status` while the bomb arrives (it took 3.1 s).
STATUS_S = 1.0

SPACE = "ab" * 16
ME = Identity.generate("mallory", now=0)


def zeros(n: int) -> bytes:
    """A canonical list of `n` zeros: n + 5 bytes, n + 1 items."""
    return cbor_head(4, n) + b"\x00" * n


def signed_wire(ops_bytes: bytes | None = None, *, body_extra: dict[str, Any] | None = None,
                identity: Identity = ME, space: str = SPACE, env: str = "env-1") -> bytes:
    """A change set wire built by hand the way a hostile member would: correct fields,
    properly signed, with whatever compressed ops it likes."""
    body = {"v": FORMAT_VERSION, "s": bytes.fromhex(space), "e": env,
            "d": identity.device_id, "n": 1, "h": pack(int(time.time() * 1000), 0), "deps": {},
            "p": b"", "m": 1, "z": zlib.compress(ops_bytes or zeros(2000), 9)}
    body.update(body_extra or {})
    data = canonical.encode(body)
    return canonical.encode([data, identity.signing_key.sign(SIGNING_CONTEXT + data)])


def _refused_fast(fn: Any, match: str) -> None:
    start = time.monotonic()
    with pytest.raises((ChangeSetError, MocksyncError), match=match):
        fn()
    assert time.monotonic() - start < FAST_S


def test_compressed_ops_bomb_is_refused_at_its_item_cap() -> None:
    wire = signed_wire(zeros(FLOOD))
    assert len(wire) < 20_000  # 16 million items in under 20 KB
    assert ops_item_cap(len(wire)) < FLOOD // 20
    _refused_fast(lambda: ChangeSet.decode(wire), r"change set ops: more than \d+ items")


def test_wire_body_and_message_floods_are_refused_before_anything_is_built() -> None:
    # The wire is exactly [body, signature].
    _refused_fast(lambda: ChangeSet.decode(zeros(FLOOD)), f"more than {WIRE_ITEMS} items")
    # A body of a few fields and deps: a body stuffed with millions of items is refused.
    stuffed = signed_wire(body_extra={"deps": {}, "x": [0] * (MAX_BODY_ITEMS + 1)})
    _refused_fast(lambda: ChangeSet.decode(stuffed), f"more than {MAX_BODY_ITEMS} items")
    # A sync message of any kind: at most one item per byte of a control message.
    _refused_fast(lambda: messages.decode_message(zeros(FLOOD)),
                  f"more than {messages.MAX_MESSAGE_ITEMS} items")
    assert messages.MAX_MESSAGE_ITEMS < 64 * 1024


def test_honest_change_sets_stay_far_below_the_caps() -> None:
    """A whole generated environment (1 MB; a 15 MB one measures the same 1.1 items per
    compressed byte) decodes; its item density is a small fraction of the cap's."""
    env = generate_env(1_000_000, seed=3)
    ops = tuple(to_wire(o) for o in snapshot_ops(env))
    cs = ChangeSet(space=SPACE, env=env["uuid"], device=ME.device_id, seq=1,
                   hlc=pack(int(time.time() * 1000), 0), deps={}, prev_hash=b"", ops=ops
                   ).sign(ME.signing_key)
    wire = cs.encode()
    ops_bytes = canonical.encode(list(ops))
    items = canonical.scan(ops_bytes)
    density = items / len(zlib.compress(ops_bytes, 6))
    assert density * 4 < OPS_ITEMS_PER_COMPRESSED_BYTE, density
    assert ChangeSet.decode(wire).ops == cs.ops
    # deps at their own limit fit the body cap
    deps = {f"{n:05d}-AAAAA-AAAAA-AAAAA": 1 for n in range(MAX_DEPS)}
    big = ChangeSet(space=SPACE, env="e", device=ME.device_id, seq=2, hlc=1, deps=deps,
                    prev_hash=bytes(32), ops=(["s", "e", ["v", "name"], '"x"'],)
                    ).sign(ME.signing_key)
    assert len(ChangeSet.decode(big.encode()).deps) == MAX_DEPS


def test_the_largest_honest_sync_messages_fit_the_message_cap() -> None:
    spaces = [f"{n:032x}" for n in range(MAX_MEMBERSHIP_SPACES)]
    hello = {"t": "hello", "p": PROTOCOL_VERSION, "m": MODEL_VERSION, "mig": 0,
             "d": ME.device_id, "envs": [[SPACE, f"env-{n}"] for n in range(messages.MAX_ENVS)],
             "mh": {sp: [bytes([n % 256]) * 32 for n in range(MAX_HEADS)] for sp in spaces}}
    data = canonical.encode(hello)
    assert canonical.scan(data) <= messages.MAX_MESSAGE_ITEMS
    assert len(messages.decode_message(data).envs) == messages.MAX_ENVS
    vv = {f"{n:05d}-AAAAA-AAAAA-AAAAA": 1 for n in range(messages.MAX_VV_DEVICES)}
    have = canonical.encode({"t": "have", "s": SPACE, "e": "env-1", "vv": vv})
    assert len(messages.decode_message(have).vv) == messages.MAX_VV_DEVICES


# ------------------------------------------------------------------ black box


@pytest.fixture
def team() -> Iterator[Team]:
    t = Team()
    try:
        yield t
    finally:
        t.close()


def test_a_members_ops_bomb_does_not_freeze_the_team(team: Team) -> None:
    """Mallory (a member, no daemon: the library's own signing and sealing code) uploads a
    16 KB envelope of compressed ops of 16 million zeros; alice's daemon keeps answering and
    keeps syncing bob's edits."""
    alice, bob, mallory_dev = team.device("alice"), team.device("bob"), team.device("mallory")
    team.space(alice, "team")
    alice.start()
    team.join(bob, "team", by=alice)
    team.join(mallory_dev, "team", by=alice)
    bob.start()
    name = alice.add_example("petstore")
    env = alice.share(name)["uuid"]
    team.synced(env, alice, bob)
    m = Mallory(mallory_dev, "team", env, alice.id)
    bomb = seal_envelope(m.space, m.tag, m.keys,
                         signed_wire(zeros(FLOOD), identity=m.identity, space=m.space, env=env))

    api = ControlClient(Home(alice.home.resolve()).socket, timeout=30)
    answers: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            t = time.monotonic()
            api.call("status")
            answers.append(time.monotonic() - t)
            stop.wait(0.05)

    async def upload() -> int:
        client = RelayClient(team.relay.url, m.identity, m.logs)
        await client.start()
        try:
            deadline = time.monotonic() + 15
            while client.state != "connected":
                assert time.monotonic() < deadline, client.reason
                await asyncio.sleep(0.05)
            return await client.put(m.space, m.tag, [bomb], declared_bytes=1000)
        finally:
            await client.stop()

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        assert asyncio.run(upload()) == 1  # the relay cannot look inside: it stores it
        bob.save(bob.file_of(env).name, lambda d: d.update(name="after the bomb"))
        alice.wait_doc(env, lambda d: d["name"] == "after the bomb", "bob's edit after the bomb")
        time.sleep(2)  # the bomb has long been fetched and refused
    finally:
        stop.set()
        prober.join()
    assert answers and max(answers) < STATUS_S, (max(answers), len(answers))
    assert alice.running
