"""Journeys: each space syncs through the relays it names, and only those (issue 11/17).

1. A space names two independent relays (each its own data and key). Both daemons, started
   without `--relay`, sync through the first; it is killed (-9) mid-session; both move to
   the second by themselves (its key is pinned for its own address: no `relay_key_changed`)
   and edits keep flowing both ways.
2. One device is in two spaces on two different relays. Its daemon (no `--relay`) keeps one
   connection per relay, `status` shows both, and each relay only ever holds its own space:
   what a relay stores (its SQLite file) names no other space, so neither relay learnt that
   the other space exists.

What a person sees is asserted through the CLI; the relays' own files are read only to prove
what they never received.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from .harness import Relay, Team

#: Longest both devices may take to be on the second relay after the first died (s).
FAILOVER_WAIT_S = 30.0


@pytest.fixture
def second(team: Team) -> Iterator[Relay]:
    """A second relay, independent of the team's (its own data, so its own key)."""
    two = Relay(team.root, name="relay2")
    two.start()
    try:
        yield two
    finally:
        two.stop()


def on(url: str, *devs: Any) -> bool:
    """Is every device connected to the relay at `url` (its `status --json` `relay`)?"""
    for d in devs:
        r = d.status()["relay"]
        if r["state"] != "connected" or r["url"] != url:
            return False
    return True


def spaces_held(relay: Relay) -> set[str]:
    """Every space the relay stores anything of (membership entries, environments)."""
    db = sqlite3.connect(f"file:{relay.data / 'relay.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT space FROM log_entries UNION SELECT space FROM envs "
                          "UNION SELECT space FROM envelopes").fetchall()
    finally:
        db.close()
    return {r[0] for r in rows}


def test_a_space_with_two_independent_relays_fails_over_when_the_first_dies(
        team: Team, second: Relay) -> None:
    one, two = team.relay, second
    laptop, bob = team.devices_of({"alice": ["alice-laptop"], "bob": ["bob-laptop"]})
    laptop.ms("space", "create", "team", "--relay", one.url, "--relay", two.url)
    laptop.start(relay=False)
    team.wait(lambda: on(one.url, laptop), "alice on relay 1")
    team.join(bob, "team", by=laptop)
    bob.start(relay=False)
    team.wait(lambda: on(one.url, laptop, bob), "both on relay 1")
    env = laptop.share(laptop.add_example("petstore.json"))["uuid"]
    team.synced(env, laptop, bob)

    one.kill9()  # a lost machine, mid-session
    team.wait(lambda: on(two.url, laptop, bob), "both on relay 2", timeout=FAILOVER_WAIT_S)
    for dev in (laptop, bob):
        relay = dev.status()["relay"]
        assert relay["code"] != "relay_key_changed" and relay["urls"] == [one.url, two.url]

    def rename(name: str) -> Any:
        def edit(doc: dict[str, Any]) -> None:
            doc["name"] = name
        return edit

    bob.edit(env, rename("Petstore (Bob, after the failover)"))
    laptop.wait_doc(env, lambda d: d["name"] == "Petstore (Bob, after the failover)",
                    "Bob's edit through relay 2")
    laptop.edit(env, rename("Petstore (Alice, after the failover)"))
    bob.wait_doc(env, lambda d: d["name"] == "Petstore (Alice, after the failover)",
                 "Alice's edit through relay 2")
    assert not one.running


def test_two_spaces_on_two_relays_each_relay_only_sees_its_own(
        team: Team, second: Relay) -> None:
    one, two = team.relay, second
    laptop, bob = team.devices_of({"alice": ["alice-laptop"], "bob": ["bob-laptop"]})
    laptop.ms("space", "create", "alpha", "--relay", one.url)
    laptop.ms("space", "create", "beta", "--relay", two.url)
    laptop.start(relay=False)

    def connections(dev: Any) -> dict[str, tuple[str, list[str]]]:
        return {r["url"]: (r["state"], r["serves"]) for r in dev.status()["relays"]}

    ids = {s["name"]: s["id"] for s in laptop.ms("space", "list", "--json").json()}
    want = {one.url: ("connected", [ids["alpha"]]), two.url: ("connected", [ids["beta"]])}
    team.wait(lambda: connections(laptop) == want, "alice on both relays, one space each")
    team.join(bob, "alpha", by=laptop)
    team.join(bob, "beta", by=laptop)
    bob.start(relay=False)
    team.wait(lambda: connections(bob) == want, "bob on both relays, one space each")

    text = laptop.ms("status").text
    assert f"relay   connected {one.url}\n        for alpha" in text
    assert f"relay   connected {two.url}\n        for beta" in text

    a = laptop.share(laptop.add_example("petstore.json"), space="alpha")["uuid"]
    b = laptop.share(laptop.add_example("petstore.json", as_name="shop.json"),
                     space="beta")["uuid"]
    team.synced(a, laptop, bob)
    team.synced(b, laptop, bob)

    assert spaces_held(one) == {ids["alpha"]}
    assert spaces_held(two) == {ids["beta"]}
