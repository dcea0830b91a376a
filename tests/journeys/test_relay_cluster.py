"""Journey: a relay of two instances on one PostgreSQL database survives losing one (issue 17).

A company runs two `mocksync relay --db postgresql://...` instances behind one address book:
Alice's laptop dials instance 1 first, Bob's laptop and Alice's desktop dial instance 2 first,
each knowing both (`daemon --relay URL --relay URL`). They edit across instances; then
instance 1 is killed (-9, a lost machine) while Alice keeps editing. Her laptop moves to
instance 2 by itself and every edit, hers and the others', reaches every device exactly once.
Only what a person sees is asserted: files on disk, `status --json`, `log --json`.

Skipped with the reason when PostgreSQL is not installed (tests/pgserver.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pgserver import pg_server, pg_url  # noqa: F401  (fixtures)

from .harness import Relay, Team

#: Edits Alice makes while her instance is being killed and after.
EDITS_THROUGH_FAILOVER = 4
#: Seconds between Alice's saves (longer than the journey daemons' blind window).
EDIT_PAUSE_S = 0.5
#: Longest a device may take to be connected to the surviving instance after the kill (s).
FAILOVER_WAIT_S = 20.0


@pytest.fixture
def team(pg_url: str) -> Iterator[Team]:  # noqa: F811
    """A team whose relay is two instances on one fresh PostgreSQL database
    (`team.relay` is instance 1, `team.instances` both)."""
    t = Team(start_relay=False)
    one = Relay(t.root, db=pg_url, name="relay1")
    two = Relay(t.root, db=pg_url, name="relay2")
    t.relay = one
    t.instances = (one, two)  # type: ignore[attr-defined]
    try:
        one.start()
        two.start()
        yield t
    finally:
        t.close()
        two.stop()


def add_header(key: str) -> Any:
    """An edit that leaves its own trace: one more response header of the environment."""
    def edit(doc: dict[str, Any]) -> None:
        doc.setdefault("headers", []).append({"key": key, "value": "1"})
    return edit


def header_keys(doc: dict[str, Any]) -> list[str]:
    return [h["key"] for h in doc.get("headers", [])]


def test_devices_on_two_instances_edit_and_survive_killing_one(team: Team) -> None:
    one, two = team.instances  # type: ignore[attr-defined]
    laptop, desktop, bob = team.devices_of({"alice": ["alice-laptop", "alice-desktop"],
                                            "bob": ["bob-laptop"]})
    team.space(laptop, "team")  # created at instance 1
    laptop.start(relay=[one.url, two.url])
    bob.start(relay=[two.url, one.url])
    desktop.start(relay=[two.url, one.url])
    team.join(bob, "team", by=laptop)
    team.join(desktop, "team", by=laptop, device=True)
    team.wait(lambda: all(d.status()["relay"]["state"] == "connected"
                          for d in (laptop, bob, desktop)), "every device connected")
    assert laptop.status()["relay"]["url"] == one.url
    assert bob.status()["relay"]["url"] == two.url

    # Edits cross instances: Alice's laptop at 1, Bob and her desktop at 2.
    name = laptop.add_example("petstore.json")
    uuid = laptop.share(name)["uuid"]
    team.synced(uuid, laptop, bob, desktop)
    bob.edit(uuid, add_header("x-bob-1"))
    team.everywhere(uuid, (laptop, desktop), lambda d: "x-bob-1" in header_keys(d),
                    "Bob's edit made at instance 2")

    # Instance 1 dies with Alice's laptop on it; she keeps editing through it.
    one.kill9()
    for i in range(EDITS_THROUGH_FAILOVER):
        laptop.edit(uuid, add_header(f"x-alice-{i}"))
        time.sleep(EDIT_PAUSE_S)  # each its own save, spread over the failover
    team.wait(lambda: laptop.status()["relay"]["state"] == "connected"
              and laptop.status()["relay"]["url"] == two.url,
              "Alice's laptop connected to instance 2", timeout=FAILOVER_WAIT_S)
    desktop.edit(uuid, add_header("x-desktop-1"))

    want = {"x-bob-1", "x-desktop-1", *(f"x-alice-{i}" for i in range(EDITS_THROUGH_FAILOVER))}
    team.everywhere(uuid, (laptop, bob, desktop), lambda d: want <= set(header_keys(d)),
                    "every edit, made before and after the kill")
    doc = team.synced(uuid, laptop, bob, desktop)
    keys = [k for k in header_keys(doc) if k in want]
    assert sorted(keys) == sorted(want), "each edit exactly once"
    # And in the history each device shows: every change set once, the same on all three.
    logs = []
    for d in (laptop, bob, desktop):
        rows = d.ms("log", uuid, "--json").json()
        per = Counter((r["device"], r["seq"]) for r in rows)
        assert set(per.values()) == {1}, f"{d.name} shows a change set twice: {per}"
        logs.append(set(per))
    assert logs[0] == logs[1] == logs[2]
    assert laptop.status()["relay"]["state"] == "connected"
