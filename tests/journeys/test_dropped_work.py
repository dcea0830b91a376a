"""Journey: no edit vanishes without a trace (issue 15 part 1).

Alice (laptop + desktop) and Bob share an environment. Alice deletes a route on her laptop
while Bob, on the version his editor had (it still shows the route), adds a response to it.
The delete wins, so no file shows the route or Bob's response, but Bob's work is not silently
gone: `conflicts` lists it on all three devices (same id, naming the deleted route) and exits
1. Alice looks at it and takes Bob's side, `resolve ID --take theirs`: the route comes back
on every device with its responses and Bob's, and `conflicts` is empty everywhere.
"""

from __future__ import annotations

import copy
from typing import Any

from .harness import Crew, Device

ADDED = "aaaaaaaa-0000-4000-8000-00000000d00d"


def _listing(dev: Device, env: str) -> tuple[int, list[tuple[Any, ...]]]:
    res = dev.ms("conflicts", env, "--json", check=False)
    assert res.code in (0, 1), f"{dev.name}: `conflicts` exited {res.code}: {res.err}"
    return res.code, [(c["id"], tuple(c["field"]), c["entity"], c.get("parent"),
                       c["winner"]["device"], c["loser"]["device"]) for c in res.json()]


def _responses(doc: dict[str, Any], route: str) -> list[str] | None:
    r = next((r for r in doc["routes"] if r["uuid"] == route), None)
    return None if r is None else [x["uuid"] for x in r["responses"]]


def test_a_response_added_to_a_route_deleted_meanwhile_is_listed_and_brought_back(
        crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    devices = (laptop, desktop, bob)
    name = laptop.add_example("petstore", "dropped-petstore.json")
    env = laptop.share(name)["uuid"]
    doc = team.synced(env, *devices)
    route = next(r for r in doc["routes"] if r["type"] != "crud" and r["responses"])
    before = [x["uuid"] for x in route["responses"]]

    # Alice deletes the route (from the routes and from the tree, as Mockoon does).
    alices = copy.deepcopy(doc)
    alices["routes"] = [r for r in alices["routes"] if r["uuid"] != route["uuid"]]
    for holder in [alices["rootChildren"]] + [f["children"] for f in alices["folders"]]:
        holder[:] = [c for c in holder if c["uuid"] != route["uuid"]]
    laptop_file, bob_file = laptop.file_of(env), bob.file_of(env)
    assert laptop_file is not None and bob_file is not None
    laptop.save(laptop_file.name, alices)
    bob.wait_doc(env, lambda d: _responses(d, route["uuid"]) is None,
                 "Alice's delete written into Bob's file")
    # Bob's editor had not reloaded: it still shows the route, and he adds a response to it.
    bobs = copy.deepcopy(doc)
    added = copy.deepcopy(route["responses"][0])
    added.update(uuid=ADDED, label="added by Bob", default=False, body='{"bob": true}')
    next(r for r in bobs["routes"] if r["uuid"] == route["uuid"])["responses"].append(added)
    bob.save(bob_file.name, bobs)

    # The delete wins everywhere; Bob's response is listed, the same on all three devices.
    def listed_alike() -> list[tuple[Any, ...]] | None:
        seen = [_listing(d, env) for d in devices]
        lists = [listing for _code, listing in seen]
        if lists[0] and lists[0] == lists[1] == lists[2]:
            assert [code for code, _l in seen] == [1, 1, 1]
            return lists[0]
        return None

    [(cid, field, entity, parent, won_by, lost_by)] = team.wait(
        listed_alike, "Bob's dropped response listed by `conflicts` on all three devices")
    assert field == ("#parent", "p", "list") and entity == ADDED and parent == route["uuid"]
    assert (won_by, lost_by) == (laptop.id, bob.id)
    text = desktop.ms("conflicts", check=False).out  # what a person reads
    assert cid in text and "deleted meanwhile" in text
    merged = team.synced(env, *devices)
    assert _responses(merged, route["uuid"]) is None and ADDED not in str(merged)

    # Alice takes Bob's side: the route comes back with its responses and Bob's, everywhere.
    out = laptop.ms("resolve", cid, "--take", "theirs", "--json").json()
    assert out["id"] == cid and out["changed"] is True
    team.everywhere(env, devices, lambda d: _responses(d, route["uuid"]) == before + [ADDED],
                    "the route back with its responses and Bob's")
    team.wait(lambda: all(_listing(d, env) == (0, []) for d in devices),
              "`conflicts` to list nothing and exit 0 on every device after the resolve")
    final = team.synced(env, *devices)
    back = next(r for r in final["routes"] if r["uuid"] == route["uuid"])
    assert back["responses"][-1]["label"] == "added by Bob"
    assert sum(x["default"] for x in back["responses"]) == 1
    assert laptop.path(laptop_file.name).read_bytes() == bob.path(bob_file.name).read_bytes()
