"""Journey: a space names two relays, and the first is down when a teammate joins (issue 17).

Alice creates the space with `space create --relay URL1 --relay URL2`; `space show` and
`status` list both. Relay 1 then goes down (a lost machine) before Bob joins: Alice's daemon,
which knows both (`daemon --relay URL1 --relay URL2`), is on relay 2; Bob's invite lists both
relays, his `join` tries them all and is admitted through relay 2; he then syncs through it,
edits flowing both ways. Only what a person sees is asserted: the CLI's output and the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .harness import JOIN_TIMEOUT_S, Relay, Team


@pytest.fixture
def relays(team: Team) -> Iterator[tuple[Relay, Relay]]:
    """The team's relay and a second, independent one (its own data), both running."""
    two = Relay(team.root, name="relay2")
    two.start()
    try:
        yield team.relay, two
    finally:
        two.stop()


def test_join_and_sync_through_the_second_relay_when_the_first_is_down(
        team: Team, relays: tuple[Relay, Relay]) -> None:
    one, two = relays
    laptop, bob = team.devices_of({"alice": ["alice-laptop"], "bob": ["bob-laptop"]})
    laptop.ms("space", "create", "team", "--relay", one.url, "--relay", two.url)

    shown = laptop.ms("space", "show", "team", "--json").json()
    assert shown["relays"] == [one.url, two.url]
    assert shown["relay"] == one.url
    text = laptop.ms("space", "show", "team").text
    assert one.url in text and two.url in text
    too_many = laptop.ms("space", "create", "five", *[a for i in range(5) for a in (
        "--relay", f"http://127.0.0.1:{1000 + i}")], check=False)
    assert too_many.code == 1 and "over the limit of 4" in too_many.err
    assert [s["name"] for s in laptop.ms("space", "list", "--json").json()] == [
        "personal", "team"]

    one.stop()  # the first relay is down from here on
    laptop.start(relay=[one.url, two.url])
    team.wait(lambda: laptop.status()["relay"]["state"] == "connected"
              and laptop.status()["relay"]["url"] == two.url, "alice on relay 2")
    spaces = {s["name"]: s for s in laptop.status()["spaces"]}
    assert spaces["team"]["relays"] == [one.url, two.url]
    assert f"team: relays {one.url}, {two.url}" in laptop.ms("status").text

    token = team.invite(laptop, "team")
    joined = bob.ms("join", token, "--timeout", str(JOIN_TIMEOUT_S), "--json",
                    timeout=JOIN_TIMEOUT_S + 30).json()
    assert joined["joined"] is True and joined["relays"] == [one.url, two.url]
    bob.start(relay=[one.url, two.url])
    team.wait(lambda: bob.status()["relay"]["state"] == "connected"
              and bob.status()["relay"]["url"] == two.url, "bob on relay 2")

    name = laptop.add_example("petstore", "shop.json")
    env = laptop.share(name)["uuid"]
    team.synced(env, laptop, bob)

    def rename(d: dict[str, Any]) -> None:
        d["name"] = "Shop (Bob's edit)"

    bob.edit(env, rename)
    team.everywhere(env, [laptop, bob], lambda d: d["name"] == "Shop (Bob's edit)",
                    "Bob's rename")
    assert not one.running
