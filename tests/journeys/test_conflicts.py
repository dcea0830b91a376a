"""Journey: two teammates save the same property at nearly the same time (issue 11 item 8).

Alice (laptop + desktop) and Bob share an environment. Alice on her laptop and Bob each set
the first route's path, milliseconds apart, both editing the version their editor had. One
value wins on every device, and the other is not silently lost: `conflicts` lists the same
conflict (same id, same values) on all three devices and exits 1. Bob resolves it with
`resolve ID --take theirs`; the resolution travels like any edit: every device's `conflicts`
is empty and exits 0, and the three files are identical, holding Alice's path.
"""

from __future__ import annotations

import copy
from typing import Any

from .harness import Crew, Device


def _listing(dev: Device, env: str) -> list[tuple[Any, ...]]:
    return [(c["id"], tuple(c["field"]), c["winner"]["value"], c["winner"]["device"],
             c["loser"]["value"], c["loser"]["device"]) for c in dev.conflicts(env)]


def test_same_property_saved_on_two_devices_is_one_conflict_everywhere_and_one_resolve_clears_it(
        crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    devices = (laptop, desktop, bob)
    name = laptop.add_example("petstore", "race-petstore.json")
    env = laptop.share(name)["uuid"]
    doc = team.synced(env, *devices)
    route = doc["routes"][0]["uuid"]
    for dev in devices:
        assert dev.conflicts(env) == [] and dev.ms("conflicts", env, check=False).code == 0

    # Both editors hold this version; each user types a new path for the same route and
    # saves, a few milliseconds apart.
    alices, bobs = copy.deepcopy(doc), copy.deepcopy(doc)
    next(r for r in alices["routes"] if r["uuid"] == route)["endpoint"] = "alice/path"
    next(r for r in bobs["routes"] if r["uuid"] == route)["endpoint"] = "bob/path"
    laptop_file, bob_file = laptop.file_of(env), bob.file_of(env)
    assert laptop_file is not None and bob_file is not None
    laptop.save(laptop_file.name, alices)
    bob.save(bob_file.name, bobs)

    # One conflict, listed the same on all three devices (Alice's desktop wrote neither).
    def listed_alike() -> list[tuple[Any, ...]] | None:
        lists = [_listing(d, env) for d in devices]
        return lists[0] if lists[0] and lists[0] == lists[1] == lists[2] else None

    [(cid, field, won, won_by, lost, lost_by)] = team.wait(
        listed_alike, "the same conflict listed by `conflicts` on all three devices")
    assert field == ("v", "endpoint")
    assert {won, lost} == {"alice/path", "bob/path"}
    assert {won_by, lost_by} == {laptop.id, bob.id}
    for dev in devices:
        res = dev.ms("conflicts", env, check=False)
        assert res.code == 1, f"{dev.name}: `conflicts` should exit 1 while one is open"
        assert cid[:8] in res.out
    merged = team.synced(env, *devices)
    assert next(r for r in merged["routes"] if r["uuid"] == route)["endpoint"] == won

    # Bob takes Alice's path ("theirs" on Bob's device): a change that reaches everyone.
    out = bob.ms("resolve", cid, "--take", "theirs", "--json").json()
    assert out["id"] == cid and out["took"] == "theirs"

    def cleared() -> bool:
        return all(d.ms("conflicts", env, check=False).code == 0 for d in devices)

    team.wait(cleared, "`conflicts` to exit 0 on every device after Bob's resolve")
    for dev in devices:
        assert dev.conflicts(env) == [], dev.name
        assert dev.conflicts() == [], dev.name
    team.everywhere(env, devices, lambda d: next(
        r for r in d["routes"] if r["uuid"] == route)["endpoint"] == "alice/path",
        "Alice's path, taken by Bob's resolve")
    final = team.synced(env, *devices)
    assert laptop.path(laptop_file.name).read_bytes() == bob.path(bob_file.name).read_bytes()
    assert final == laptop.doc(env) == desktop.doc(env) == bob.doc(env)
    assert desktop.env(env)["conflicts"] == 0


def test_edits_of_different_properties_at_the_same_time_are_no_conflict(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    devices = (laptop, desktop, bob)
    name = desktop.add_example("petstore", "calm-petstore.json")
    env = desktop.share(name)["uuid"]
    doc = team.synced(env, *devices)
    route = doc["routes"][0]["uuid"]
    alices, bobs = copy.deepcopy(doc), copy.deepcopy(doc)
    next(r for r in alices["routes"] if r["uuid"] == route)["endpoint"] = "alice/path"
    next(r for r in bobs["routes"] if r["uuid"] == route)["documentation"] = "by bob"
    desktop_file, bob_file = desktop.file_of(env), bob.file_of(env)
    assert desktop_file is not None and bob_file is not None
    desktop.save(desktop_file.name, alices)
    bob.save(bob_file.name, bobs)

    def both(d: dict[str, Any]) -> bool:
        r = next(r for r in d["routes"] if r["uuid"] == route)
        return r["endpoint"] == "alice/path" and r["documentation"] == "by bob"

    team.everywhere(env, devices, both, "both edits merged")
    team.synced(env, *devices)
    for dev in devices:
        assert dev.ms("conflicts", env, check=False).code == 0, dev.name
