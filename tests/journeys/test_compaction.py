"""Journey: the relay's history stays bounded, and nobody loses anything by it.

A relay run with a short retention (`relay --retention 2`); Alice and Bob share an
environment with `snapshot_changesets = 8`. Bob goes offline and edits; Alice edits many
times. Her daemon uploads an encrypted snapshot, and the relay drops the change sets it covers
(its log says how many). Carol, a new member, joins afterwards: she starts from the snapshot
and has the whole state. Bob comes back after the drop: he starts from the snapshot too, his
offline edit survives and reaches everyone.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

from .harness import Device, Team

#: Seconds after which the relay drops covered history whatever the acks (`--retention`).
RETENTION_S = 2
#: Change sets after which a device makes a snapshot (config `snapshot_changesets`).
EVERY = 8
EDITS = 14
CONFIG = {"snapshot_changesets": EVERY}
_DROPPED = re.compile(r"\((\d+) dropped in all\)")


def dropped(team: Team) -> int:
    """The relay's own count of change sets compaction dropped (its log), 0 before any."""
    found = _DROPPED.findall(team.relay.log())
    return int(found[-1]) if found else 0


def adopted(dev: Device) -> bool:
    return "from the relay's snapshot" in dev.log()


def test_history_is_dropped_after_a_snapshot_and_devices_start_from_it(team: Team) -> None:
    team.relay.stop()
    team.relay.start(retention=RETENTION_S)
    alice, bob = team.devices_of({"alice": ["alice"], "bob": ["bob"]})
    team.space(alice, "team")
    team.start(alice, bob, **CONFIG)
    team.join(bob, "team", by=alice)
    alice.add_example("petstore", "compact.json")
    env = alice.share("compact.json")["uuid"]
    team.synced(env, alice, bob)

    # Bob goes offline and keeps working; Alice edits many times meanwhile.
    bob.stop()
    bob.edit(env, lambda d: d.update(endpointPrefix="bob-offline"))
    for i in range(1, EDITS + 1):
        alice.edit(env, lambda d, i=i: d.update(latency=i))
        alice.wait_doc(env, lambda d, i=i: d["latency"] == i, f"Alice's edit {i}")
        time.sleep(0.2)  # one save, one change set
    alice.wait_state(env, "synced")

    # Her daemon made a snapshot; the relay dropped the history it covers.
    team.wait(lambda: "stored a snapshot" in team.relay.log(), "a snapshot on the relay", 60)
    team.wait(lambda: dropped(team) > 0, "history dropped by the relay", 60)
    assert "uploaded a snapshot" in alice.log()
    # The relay's health endpoint (what a load balancer or monitoring polls) counts it too.
    health = f"{team.relay.url}/v1/health"
    with urllib.request.urlopen(health, timeout=10) as r:  # noqa: S310 (loopback)
        stats = json.loads(r.read())["compaction"]
    assert stats["snapshots"] >= 1 and stats["dropped"] >= dropped(team) > 0, stats

    # A new member joins after the drop: she starts from the snapshot, with the whole state.
    carol = team.device("carol")
    carol.start(**CONFIG)
    team.join(carol, "team", by=alice)
    team.synced(env, alice, carol, timeout=60)
    assert carol.doc(env)["latency"] == EDITS
    assert adopted(carol), carol.log()

    # Bob returns after the drop: the snapshot, then what came after it; his edit survives.
    bob.start(**CONFIG)
    team.everywhere(env, [alice, bob, carol],
                    lambda d: d["latency"] == EDITS and d["endpointPrefix"] == "bob-offline",
                    "Alice's edits and Bob's offline edit merged", timeout=60)
    team.synced(env, alice, bob, carol, timeout=60)
    assert adopted(bob), bob.log()
    for dev in (alice, bob, carol):
        res = dev.ms("conflicts", env, "--json", check=False)
        assert res.code == 0 and res.json() == [], (dev.name, res.out, res.err)
