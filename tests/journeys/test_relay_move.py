"""Journey: a team moves its space to another relay (issue 17 follow-up).

Alice (admin), Bob and Carol share `team` through relay 1. Carol's laptop goes away. A second
relay starts; Bob (an editor) cannot move the space (exit 1, a sentence, nothing changed), nor
can Alice with a bad address; then Alice runs `space relays team --set URL2`. Her daemon hands
the signed move to relay 1 on its way out, Bob's daemon learns it there and follows: both end
up on relay 2 alone, and an edit made after the move never reaches relay 1, even while it
still runs. Relay 1 is stopped; edits keep flowing both ways through relay 2. Carol comes back:
her copy of the space still names relay 1, which is gone, so she adds relay 2 for this device
only (`space relays team --use URL2`); through it she learns the move (her local route is then
forgotten: the space names relay 2 itself) and catches up.

What a person sees is asserted through the CLI; relay 1's own file is read only to prove what
it never received.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from .harness import Device, Relay, Team


@pytest.fixture
def second(team: Team) -> Iterator[Relay]:
    """A second relay, independent of the team's (its own data, so its own key); started by
    the test, when the team decides to move."""
    two = Relay(team.root, name="relay2")
    try:
        yield two
    finally:
        two.stop()


def connections(dev: Device) -> dict[str, tuple[str, list[str]]]:
    """The device's relay connections: url -> (state, spaces carried)."""
    return {r["url"]: (r["state"], r["serves"]) for r in dev.status()["relays"] if r["url"]}


def envelopes(relay: Relay) -> set[tuple[str, str, int]]:
    """Every change set the relay stores: (tag, device, seq)."""
    db = sqlite3.connect(f"file:{relay.data / 'relay.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT tag, device, seq FROM envelopes").fetchall()
    finally:
        db.close()
    return {(r[0], r[1], r[2]) for r in rows}


def rename(name: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["name"] = name
    return edit


def test_a_team_moves_its_space_to_another_relay(team: Team, second: Relay) -> None:
    one, two = team.relay, second
    alice, bob, carol = team.devices_of({"alice": ["alice-laptop"], "bob": ["bob-laptop"],
                                         "carol": ["carol-laptop"]})
    alice.ms("space", "create", "team", "--relay", one.url)
    alice.start(relay=False)
    team.join(bob, "team", by=alice)
    team.join(carol, "team", by=alice)
    team.start(bob, carol, relay=False)
    space = alice.ms("space", "show", "team", "--json").json()["id"]
    on_one = {one.url: ("connected", [space])}
    team.wait(lambda: all(connections(d) == on_one for d in (alice, bob, carol)),
              "everyone on relay 1")
    env = alice.share(alice.add_example("petstore.json"))["uuid"]
    team.synced(env, alice, bob, carol)
    carol.stop()  # away while the team moves

    two.start()
    refused = bob.ms("space", "relays", "team", "--set", two.url, check=False)
    assert refused.code == 1
    assert "only an admin device can change the relays of 'team'" in refused.err
    bad = alice.ms("space", "relays", "team", "--set", "relay2.example", check=False)
    assert bad.code == 1 and "must start with http:// or https://" in bad.err
    for dev in (alice, bob):
        assert dev.ms("space", "show", "team", "--json").json()["relays"] == [one.url]

    moved = alice.ms("space", "relays", "team", "--set", two.url)
    assert f"now syncs through {two.url} (was {one.url})" in moved.text
    on_two = {two.url: ("connected", [space])}
    team.wait(lambda: connections(alice) == on_two and connections(bob) == on_two,
              "alice and bob on relay 2, not on relay 1")
    for dev in (alice, bob):
        assert dev.ms("space", "relays", "team", "--json").json()["relays"] == [two.url]
        assert {s["name"]: s["relays"] for s in dev.status()["spaces"]}["team"] == [two.url]
    assert f"team: relays {two.url}" in bob.ms("status").text

    before = envelopes(one)
    alice.edit(env, rename("Petstore (Alice, after the move)"))
    bob.wait_doc(env, lambda d: d["name"] == "Petstore (Alice, after the move)",
                 "Alice's edit through relay 2")
    assert envelopes(one) == before, "relay 1 received an edit made after the move"
    one.stop()
    bob.edit(env, rename("Petstore (Bob, relay 1 gone)"))
    alice.wait_doc(env, lambda d: d["name"] == "Petstore (Bob, relay 1 gone)",
                   "Bob's edit through relay 2")
    assert envelopes(one) == before

    carol.start(relay=False)  # her copy still names relay 1, which is gone
    assert carol.ms("space", "show", "team", "--json").json()["relays"] == [one.url]
    used = carol.ms("space", "relays", "team", "--use", two.url)
    assert "this device only" in used.text
    team.wait(lambda: carol.ms("space", "show", "team", "--json").json()["relays"]
              == [two.url], "carol learns the move through relay 2")
    carol.wait_doc(env, lambda d: d["name"] == "Petstore (Bob, relay 1 gone)",
                   "carol catches up through relay 2")
    team.wait(lambda: connections(carol) == on_two, "carol on relay 2 alone")
    shown = carol.ms("space", "show", "team", "--json").json()
    assert shown["local_relays"] == []  # forgotten: the space names relay 2 itself
    carol.edit(env, rename("Petstore (Carol, back)"))
    for dev in (alice, bob):
        dev.wait_doc(env, lambda d: d["name"] == "Petstore (Carol, back)",
                     "Carol's edit through relay 2")
