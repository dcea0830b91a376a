"""Journey: teammates edit one shared environment at the same time.

Edits of different properties on different devices all survive, everywhere, with no conflict;
routes moved in the tree, responses reordered and a route deleted reach every device. Saves
are made the way Mockoon makes them (whole file, temp file then rename), each device in its
own folder, without waiting for the other's edit to arrive first.
"""

from __future__ import annotations

from typing import Any

import pytest

from .harness import Crew, Team

#: Rounds of simultaneous saves in the long variant.
ROUNDS = 10


def route(doc: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """The route serving `endpoint` (fails the journey if there is none)."""
    for r in doc["routes"]:
        if r["endpoint"] == endpoint:
            return r
    raise AssertionError(f"no route {endpoint!r} in {doc['name']!r}")


def has_route(doc: dict[str, Any], endpoint: str) -> bool:
    return any(r["endpoint"] == endpoint for r in doc["routes"])


def folder(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in doc["folders"] if f["name"] == name)


def tree_refs(doc: dict[str, Any]) -> set[str]:
    """Every uuid the tree (rootChildren and folders' children) points at."""
    refs = {c["uuid"] for c in doc["rootChildren"]}
    for f in doc["folders"]:
        refs |= {c["uuid"] for c in f["children"]}
    return refs


def test_different_properties_edited_at_once_are_all_kept(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    laptop.add_example("petstore", "pets.json")
    env = laptop.share("pets.json")["uuid"]
    team.synced(env, laptop, desktop, bob)

    # Three people save three different properties within the same second.
    laptop.edit(env, lambda d: route(d, "health").update(endpoint="healthz"))
    bob.edit(env, lambda d: route(d, "v1/pets")["responses"][0].update(label="from bob"))
    desktop.edit(env, lambda d: d.update(port=3999))

    def all_three(d: dict[str, Any]) -> bool:
        return (has_route(d, "healthz") and d["port"] == 3999
                and route(d, "v1/pets")["responses"][0]["label"] == "from bob")

    team.everywhere(env, crew.all, all_three, "all three edits")
    doc = team.synced(env, laptop, desktop, bob)
    assert not has_route(doc, "health")
    # Nothing was overwritten, so nothing is listed as a conflict, anywhere.
    for dev in crew.all:
        res = dev.ms("conflicts", env, "--json", check=False)
        assert res.code == 0 and res.json() == [], (dev.name, res.out, res.err)
        assert dev.env(env)["conflicts"] == 0


def test_reorders_and_deletes_reach_everyone(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    laptop.add_example("petstore", "shop.json")
    env = laptop.share("shop.json")["uuid"]
    start = team.synced(env, laptop, desktop, bob)
    legacy = route(start, "legacy/*")["uuid"]
    status_route = route(start, "v1/store/orders/:orderId/status")
    reversed_responses = [r["uuid"] for r in reversed(status_route["responses"])]
    cache = route(start, "v1/admin/cache")["uuid"]

    # Alice's desktop drags the legacy route to the top of the tree; Bob reverses the order of
    # a route's responses; Alice's laptop deletes the admin cache route. All at once.
    def move_legacy_first(d: dict[str, Any]) -> None:
        item = next(c for c in d["rootChildren"] if c["uuid"] == legacy)
        d["rootChildren"].remove(item)
        d["rootChildren"].insert(0, item)

    def reverse_responses(d: dict[str, Any]) -> None:
        r = route(d, "v1/store/orders/:orderId/status")
        r["responses"].reverse()

    def delete_cache(d: dict[str, Any]) -> None:
        d["routes"] = [r for r in d["routes"] if r["uuid"] != cache]
        admin = folder(d, "admin")
        admin["children"] = [c for c in admin["children"] if c["uuid"] != cache]

    desktop.edit(env, move_legacy_first)
    bob.edit(env, reverse_responses)
    laptop.edit(env, delete_cache)

    def all_done(d: dict[str, Any]) -> bool:
        return (d["rootChildren"][0]["uuid"] == legacy
                and [r["uuid"] for r in route(d, "v1/store/orders/:orderId/status")["responses"]]
                == reversed_responses
                and not has_route(d, "v1/admin/cache"))

    team.everywhere(env, crew.all, all_done, "the move, the reorder and the delete")
    doc = team.synced(env, laptop, desktop, bob)
    assert cache not in tree_refs(doc)
    assert len(doc["routes"]) == len(start["routes"]) - 1
    # The tree still holds every remaining route exactly once.
    assert {r["uuid"] for r in doc["routes"]} <= tree_refs(doc)
    assert [c["uuid"] for c in doc["rootChildren"][1:]] == [
        c["uuid"] for c in start["rootChildren"] if c["uuid"] != legacy]
    for dev in crew.all:
        assert dev.ms("validate", str(dev.file_of(env))).code == 0


@pytest.mark.long
def test_many_rounds_of_edits_on_five_devices(team: Team) -> None:
    """The long variant (`make test-long`): five devices of four members, ten rounds in which
    every device saves a different property at once; after each round every file holds every
    edit, and nothing is listed as a conflict."""
    devs = team.crew(members={"alice": ["alice-laptop", "alice-desktop"], "bob": ["bob-laptop"],
                              "dave": ["dave-laptop"], "eve": ["eve-laptop"]})
    devs[0].add_example("petstore", "long.json")
    env = devs[0].share("long.json")["uuid"]
    start = team.synced(env, *devs)
    routes = [r["endpoint"] for r in start["routes"]]
    for rnd in range(ROUNDS):
        for i, dev in enumerate(devs):
            ep = routes[i]
            label = f"round {rnd} by device {i}"
            dev.edit(env, lambda d, ep=ep, label=label: route(d, ep)["responses"][0].update(
                label=label))

        def round_done(d: dict[str, Any], rnd: int = rnd) -> bool:
            return all(route(d, routes[i])["responses"][0]["label"] == f"round {rnd} by device {i}"
                       for i in range(len(devs)))

        team.everywhere(env, devs, round_done, f"every edit of round {rnd}", timeout=40)
    team.synced(env, *devs)
    for dev in devs:
        assert dev.conflicts(env) == [], dev.name
