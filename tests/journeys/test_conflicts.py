"""Journey: two teammates save the same property at nearly the same time (issue 11 item 8).

Alice (laptop + desktop) and Bob share an environment. Alice on her laptop and Bob each set
the first route's path, each on the version their editor had (Bob's editor had not reloaded
Alice's, which had already reached his file). One value wins on every device, and the other is not silently lost: `conflicts` lists the same
conflict (same id, same values) on all three devices and exits 1. Bob resolves it with
`resolve ID --take theirs`; the resolution travels like any edit: every device's `conflicts`
is empty and exits 0, and the three files are identical, holding Alice's path.
"""

from __future__ import annotations

import copy
from typing import Any

from .harness import Crew, Device


def _conflicts(dev: Device, env: str) -> tuple[int, list[tuple[Any, ...]]]:
    """`conflicts ENV --json` on `dev`: its exit code and what it lists."""
    res = dev.ms("conflicts", env, "--json", check=False)
    assert res.code in (0, 1), f"{dev.name}: `conflicts` exited {res.code}: {res.err}"
    return res.code, [(c["id"], tuple(c["field"]), c["winner"]["value"], c["winner"]["device"],
                       c["loser"]["value"], c["loser"]["device"]) for c in res.json()]


def test_same_property_saved_on_two_devices_is_one_conflict_everywhere_and_one_resolve_clears_it(
        crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    devices = (laptop, desktop, bob)
    name = laptop.add_example("petstore", "race-petstore.json")
    env = laptop.share(name)["uuid"]
    doc = team.synced(env, *devices)
    route = doc["routes"][0]["uuid"]

    # Both editors hold this version; each user types a new path for the same route. Alice
    # saves first; her path reaches Bob's file, but Bob's editor has not reloaded it (Mockoon
    # is blind to changes for 3 s after its own saves, or its watcher is off): Bob saves the
    # path he typed on the version he had. The two writes are concurrent (the 16 ms race of
    # issue 11, made certain here): Bob's must not silently overwrite Alice's.
    alices, bobs = copy.deepcopy(doc), copy.deepcopy(doc)
    next(r for r in alices["routes"] if r["uuid"] == route)["endpoint"] = "alice/path"
    next(r for r in bobs["routes"] if r["uuid"] == route)["endpoint"] = "bob/path"
    laptop_file, bob_file = laptop.file_of(env), bob.file_of(env)
    assert laptop_file is not None and bob_file is not None
    laptop.save(laptop_file.name, alices)
    bob.wait_doc(env, lambda d: next(r for r in d["routes"] if r["uuid"] == route)["endpoint"]
                 == "alice/path", "Alice's path written into Bob's file")
    bob.save(bob_file.name, bobs)

    # One conflict, listed the same on all three devices (Alice's desktop wrote neither),
    # and `conflicts` exits 1 on each.
    def listed_alike() -> list[tuple[Any, ...]] | None:
        seen = [_conflicts(d, env) for d in devices]
        lists = [listing for _code, listing in seen]
        if lists[0] and lists[0] == lists[1] == lists[2]:
            assert [code for code, _l in seen] == [1, 1, 1]
            return lists[0]
        return None

    [(cid, field, won, won_by, lost, lost_by)] = team.wait(
        listed_alike, "the same conflict listed by `conflicts` on all three devices")
    assert field == ("v", "endpoint")
    assert {won, lost} == {"alice/path", "bob/path"}
    assert {won_by, lost_by} == {laptop.id, bob.id}
    assert cid in desktop.ms("conflicts", check=False).out  # the human listing names it
    merged = team.synced(env, *devices)
    assert next(r for r in merged["routes"] if r["uuid"] == route)["endpoint"] == won

    # Bob takes Alice's path ("theirs" on Bob's device): a change that reaches everyone.
    out = bob.ms("resolve", cid, "--take", "theirs", "--json").json()
    assert out["id"] == cid and out["took"] == "theirs"
    team.wait(lambda: all(_conflicts(d, env) == (0, []) for d in devices),
              "`conflicts` to list nothing and exit 0 on every device after Bob's resolve")
    team.everywhere(env, devices, lambda d: next(
        r for r in d["routes"] if r["uuid"] == route)["endpoint"] == "alice/path",
        "Alice's path, taken by Bob's resolve")
    team.synced(env, *devices)
    assert laptop.path(laptop_file.name).read_bytes() == bob.path(bob_file.name).read_bytes()
    assert laptop.doc(env) == desktop.doc(env) == bob.doc(env)
    assert desktop.ms("conflicts", check=False).code == 0


def test_edits_of_different_properties_at_the_same_time_are_no_conflict(crew: Crew) -> None:
    """Alice's desktop and Bob save different properties of one route at once: both merge,
    nothing is listed."""
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
        assert _conflicts(dev, env) == (0, []), dev.name


def test_the_conflicts_hint_names_the_take_that_flips_it_on_each_device(crew: Crew) -> None:
    """"Ours" is the side this device wrote: on the device whose save lost, `--take theirs`
    keeps things as they are. The hint under `conflicts` said `--take theirs` everywhere, so
    the teammate whose value lost followed it and nothing changed (`resolve` said only
    "resolved"). Each device must name the word that flips the conflict there, and `resolve`
    must say which value it put in place."""
    team, (laptop, desktop, bob) = crew.team, crew.all
    devices = (laptop, desktop, bob)
    name = laptop.add_example("petstore", "flip-petstore.json")
    env = laptop.share(name)["uuid"]
    doc = team.synced(env, *devices)
    laptop_file, bob_file = laptop.file_of(env), bob.file_of(env)
    assert laptop_file is not None and bob_file is not None
    alices, bobs = copy.deepcopy(doc), copy.deepcopy(doc)
    alices["port"], bobs["port"] = 4101, 4102
    laptop.save(laptop_file.name, alices)
    bob.wait_doc(env, lambda d: d["port"] == 4101, "Alice's port written into Bob's file")
    bob.save(bob_file.name, bobs)  # on the version his editor had: concurrent with Alice's

    def listed_everywhere() -> list[tuple[Any, ...]] | None:
        lists = [_conflicts(d, env)[1] for d in devices]
        return lists[0] if lists[0] and lists[0] == lists[1] == lists[2] else None

    [(cid, field, won, won_by, lost, lost_by)] = team.wait(
        listed_everywhere, "the port conflict listed on all three devices")
    assert field == ("v", "port") and {won, lost} == {4101, 4102}
    loser = laptop if lost_by == laptop.id else bob
    assert lost_by == loser.id and won_by != loser.id
    for dev in devices:
        flip = "ours" if dev is loser else "theirs"
        [listed] = dev.conflicts(env)
        assert listed["flip"] == flip, dev.name
        hint = dev.ms("conflicts", env, check=False).out
        assert f"resolve ID --take {flip}" in hint, f"{dev.name}: {hint}"

    # The teammate whose value lost follows the hint on their own device: it takes their value.
    out = loser.ms("resolve", cid, "--take", "ours").out
    assert f"took {lost}" in out, out
    team.everywhere(env, devices, lambda d: d["port"] == lost, "the losing port, taken back")
    team.wait(lambda: all(_conflicts(d, env) == (0, []) for d in devices),
              "no conflict left on any device")


def test_an_edit_of_something_deleted_meanwhile_reads_as_deleted_in_conflicts(
        crew: Crew) -> None:
    """Alice edits a response's body while Bob deletes its route. `conflicts` showed the kept
    side as `None (bob...)` in field `v.body`, as if Bob had written the value None: it must
    say the route's response was deleted, and name the field as the editor shows it."""
    team, (laptop, desktop, bob) = crew.team, crew.all
    devices = (laptop, desktop, bob)
    name = laptop.add_example("petstore", "gone-petstore.json")
    env = laptop.share(name)["uuid"]
    doc = team.synced(env, *devices)
    route = doc["routes"][0]["uuid"]
    laptop_file, bob_file = laptop.file_of(env), bob.file_of(env)
    assert laptop_file is not None and bob_file is not None
    alices, bobs = copy.deepcopy(doc), copy.deepcopy(doc)
    alices["routes"][0]["responses"][0]["body"] = "edited by alice"
    bobs["routes"] = [r for r in bobs["routes"] if r["uuid"] != route]
    for holder in [bobs, *bobs["folders"]]:
        key = "rootChildren" if holder is bobs else "children"
        holder[key] = [c for c in holder[key] if c.get("uuid") != route]
    laptop.save(laptop_file.name, alices)
    bob.wait_doc(env, lambda d: d["routes"][0]["responses"][0]["body"] == "edited by alice",
                 "Alice's body in Bob's file")
    bob.save(bob_file.name, bobs)  # on the version his editor had: concurrent with Alice's

    def listed() -> str | None:
        text = desktop.ms("conflicts", env, check=False).out
        return text if "edited by alice" in text else None

    text = team.wait(listed, "the body edit of the deleted route listed on Alice's desktop")
    assert "(deleted) (bob" in text and "None (" not in text, text
    assert "│ body " in text and "v.body" not in text, text
