"""Membership logs uploaded to the relay at the same moment (the auth race of the relay).

Why these tests: devices of one space connecting at once each upload the log tail they hold
in their auth frame. The relay used to check every upload against the log it held when the
check started and then append it: two checks of one space interleaved, the second append
re-added what the first had stored and left the relay holding a state without the first's
entries (seen: Mallory refused as "not a member" although Alice's upload had added her). The
relay now merges one upload per space at a time, and the database refuses an append made
against a log that grew meanwhile (another instance of a PostgreSQL cluster), so the merge is
checked again. What a team sees: every device is admitted, the stored log holds every entry
once, and what the relay holds in memory is what a fresh load of the log would give.

Both engines (SQLite, PostgreSQL through tests/pgserver.py: skipped with the reason when
PostgreSQL is not installed); every socket is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from mocksync.devtools.pairing import pair
from mocksync.net.relay_client import RelayClient
from mocksync.relay.server import RelayConfig, RelayServer
from mocksync.relay.storage import SQLiteStorage
from mocksync.space.membership import Entry, verify_log
from mocksync.spaceio.actions import create_space

from helpers.devices import Device, logs_of
from helpers.relaylab import Lab, until

#: Devices joining the space one after another, each holding the log as of its own join
#: (so every device uploads a different tail), besides the admin.
TEAM_SIZE = 8
#: Seconds the whole team has to be admitted.
ADMIT_WAIT_S = 30.0


def _team(lab: Lab) -> tuple[list[Device], str, list[dict[str, list[bytes]]]]:
    """Alice creates a space and admits TEAM_SIZE devices of as many members in turn. Returns
    the devices (Alice first), the space and each device's log as of its join: the newest
    device, Mallory, is added only in Alice's log and her own."""
    alice = lab.device("alice")
    create_space(alice.home, alice.identity, "team")
    devices = [alice]
    space = ""
    for i in range(TEAM_SIZE):
        dev = lab.device("mallory" if i == TEAM_SIZE - 1 else f"dev{i}")
        space = pair(alice.home, dev.home, "team")
        devices.append(dev)
    logs = [logs_of(d, space) for d in devices]
    tails = {len(lg[space]) for lg in logs}
    assert len(tails) == TEAM_SIZE, "every joiner holds a log of another length"
    return devices, space, logs


async def _connect_all(urls: list[str], devices: list[Device],
                       logs: list[dict[str, list[bytes]]]) -> list[RelayClient]:
    """Every device's client started in the same loop turn (their auth frames race)."""
    clients = [RelayClient(urls[i % len(urls)], d.identity, lambda lg=lg: lg,
                           backoff_min_s=0.05, backoff_max_s=0.3, refused_retry_s=30.0)
               for i, (d, lg) in enumerate(zip(devices, logs, strict=True))]
    await asyncio.gather(*(c.start() for c in clients))
    return clients


async def _admitted(clients: list[RelayClient], space: str) -> None:
    def settled() -> bool:
        return all(c.state == "connected" or c.state == "refused" for c in clients)

    await until(settled, ADMIT_WAIT_S, "every client to be admitted or refused")
    wrong = {c.identity.device_id[:12]: (c.state, c.reason) for c in clients
             if c.state != "connected" or space not in c.accepted}
    assert not wrong, f"devices not admitted to the space: {wrong}"


async def _stop(clients: list[RelayClient]) -> None:
    for c in clients:
        await c.stop()


def _check_held(relay: RelayServer, space: str, stored: list[bytes]) -> None:
    """What the relay holds in memory is exactly what a fresh load of the stored log gives."""
    held = relay._entries[space]
    assert [e.wire for e in held] == stored
    assert relay.state(space) == verify_log([Entry.from_wire(w) for w in stored])


def _check_stored(stored: list[bytes], full_log: list[bytes]) -> None:
    hashes = [hashlib.sha256(w).digest() for w in stored]
    assert len(hashes) == len(set(hashes)), "the stored log holds an entry twice"
    assert set(stored) == set(full_log), "the stored log lacks an entry that was uploaded"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """None: the relay keeps its state in SQLite; else a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


async def _stored(relay: RelayServer, space: str) -> list[bytes]:
    return await relay.db.log_entries(space)


async def test_a_team_connecting_at_once_is_admitted_and_the_log_is_whole(
        lab: Lab, db_url: str | None) -> None:
    devices, space, logs = _team(lab)
    relay = RelayServer(RelayConfig(data_dir=lab.tmp / "relay", port=0, db_url=db_url))
    await relay.start()
    clients: list[RelayClient] = []
    try:
        clients = await _connect_all([relay.url], devices, logs)
        await _admitted(clients, space)
        stored = await _stored(relay, space)
        _check_stored(stored, logs[0][space])
        _check_held(relay, space, stored)
        # What a team sees next: everyone reconnects at once, each naming the log it holds,
        # which the relay now holds whole (nothing is uploaded); all are admitted again.
        await _stop(clients)
        clients = await _connect_all([relay.url], devices, logs)
        await _admitted(clients, space)
        assert await _stored(relay, space) == stored
    finally:
        await _stop(clients)
        await relay.stop()


async def test_a_team_connecting_at_once_to_two_instances_is_admitted(
        lab: Lab, pg_url: str) -> None:
    devices, space, logs = _team(lab)
    relays = []
    clients: list[RelayClient] = []
    try:
        for i in range(2):
            r = RelayServer(RelayConfig(data_dir=lab.tmp / f"relay{i}", port=0, db_url=pg_url))
            await r.start()
            relays.append(r)
        clients = await _connect_all([r.url for r in relays], devices, logs)
        await _admitted(clients, space)
        stored = await _stored(relays[0], space)
        _check_stored(stored, logs[0][space])
        for r in relays:  # each instance holds the stored log, in the stored order
            await until(lambda r=r: [e.wire for e in r._entries.get(space, [])] == stored,
                        ADMIT_WAIT_S, "each instance to hold the stored log")
            _check_held(r, space, stored)
    finally:
        await _stop(clients)
        for r in relays:
            await r.stop()


# ------------------------------------------------------------------------------ engines


def _h(w: bytes) -> bytes:
    return hashlib.sha256(w).digest()


async def test_an_append_against_a_log_that_grew_stores_nothing(engine: Any) -> None:
    """The database is the arbiter: an append checked against `base` stored entries is
    refused (nothing stored) when the log holds more now, and the caller is given the log."""
    assert await engine.append_log("sp", [b"g", b"a"], [_h(b"g"), _h(b"a")], base=0) is None
    stale = await engine.append_log("sp", [b"b"], [_h(b"b")], base=1)
    assert stale == [b"g", b"a"]
    assert await engine.log_entries("sp") == [b"g", b"a"]  # the refused append stored nothing
    assert await engine.append_log("sp", [b"b"], [_h(b"b")], base=2) is None
    assert await engine.log_entries("sp") == [b"g", b"a", b"b"]
    assert await engine.append_log("other", [b"x"], [_h(b"x")], base=0) is None  # per space


# ------------------------------------------------------------------------------ the retry


class Interloper:
    """An engine whose log grows behind the relay's back just before each of its appends,
    as when another instance of a cluster stores an upload of the same space meanwhile."""

    def __init__(self, inner: Any, space: str, extra: list[bytes], per_append: int) -> None:
        self.inner = inner
        self.space = space
        self.extra = list(extra)
        self.per_append = per_append
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append_log(self, space: str, wires: Any, hashes: Any, *,
                         base: int | None = None) -> list[bytes] | None:
        self.appends += 1
        theirs, self.extra = self.extra[:self.per_append], self.extra[self.per_append:]
        if theirs:
            assert await self.inner.append_log(self.space, theirs, [_h(w) for w in theirs]) \
                is None
        return await self.inner.append_log(space, wires, hashes, base=base)


async def _seeded_relay(lab: Lab, space: str, seed: list[bytes], extra: list[bytes],
                        per_append: int) -> tuple[RelayServer, Interloper]:
    storage = SQLiteStorage(lab.tmp / "relay")
    storage.append_log(space, seed, [_h(w) for w in seed])
    relay = RelayServer(RelayConfig(data_dir=lab.tmp / "relay", port=0), storage=storage)
    await relay.start()
    relay.db = sneaky = Interloper(relay.db, space, extra, per_append)
    return relay, sneaky


@pytest.mark.parametrize("seeded", [1, 0], ids=["known-space", "new-space"])
async def test_an_upload_checked_against_a_log_that_grew_is_checked_again(
        lab: Lab, seeded: int) -> None:
    """The relay held the genesis (or nothing: the space is new to it) when it checked the
    upload; another instance stored the whole log before the append."""
    from mocksync.relay.authbudget import ItemBudget

    devices, space, logs = _team(lab)
    full = logs[0][space]
    first = logs[1][space]  # genesis and the first joiner's admission
    relay, sneaky = await _seeded_relay(lab, space, full[:seeded], full[seeded:],
                                        per_append=len(full))
    try:
        state, refusal = await relay._merge_log(space, first, ItemBudget())
        assert refusal is None and sneaky.appends == 1  # refused by the store, then held
        stored = await relay.db.log_entries(space)
        assert stored == full
        _check_held(relay, space, stored)
        assert state == relay.state(space)
        assert devices[-1].identity.device_id in state.devices  # Mallory, added elsewhere
    finally:
        await relay.stop()


async def test_a_log_that_keeps_growing_refuses_the_upload_for_now(lab: Lab) -> None:
    from mocksync.relay.authbudget import ItemBudget
    from mocksync.relay.server import MAX_LOG_MERGE_TRIES

    devices, space, logs = _team(lab)
    full = logs[0][space]
    assert len(full) > MAX_LOG_MERGE_TRIES + 1
    relay, sneaky = await _seeded_relay(lab, space, full[:1], full[1:], per_append=1)
    try:
        state, refusal = await relay._merge_log(space, full, ItemBudget())
        assert refusal is not None and refusal.code == "server_full"
        assert "checked again" in refusal.reason
        assert sneaky.appends == MAX_LOG_MERGE_TRIES
        stored = await relay.db.log_entries(space)
        assert stored == full[:1 + MAX_LOG_MERGE_TRIES]  # only what the other one stored
        _check_held(relay, space, stored)
    finally:
        await relay.stop()
