"""A save on the file as it was shared must not undo a teammate's edit that the daemon wrote
to the file meanwhile (the flaky reorders journey, tests/journeys/test_edits.py).

What happened: the sharing device's daemon recorded the shared file as the file's base but not
as a version the editor holds (`VersionHistory`). When a teammate's move arrived and the daemon
wrote it, the base became that write and the shared version was forgotten; a save the editor
made on the shared version (it had not reloaded yet: Mockoon reloads, but a save can come
first) was then diffed against the daemon's write, and the diff moved the teammate's route back.
The journey hit it when Alice's desktop's move reached her laptop in the ~50 ms between her
laptop's editor reading the file and saving its delete (about 1 run in 8 on a loaded machine).
"""

from __future__ import annotations

import copy

from mocksync.devtools.pairing import pair
from mocksync.model import dumps
from mocksync.model.jsfmt import MOCKOON_LAYOUT
from mocksync.spaceio.actions import create_space

from envfactory import small_env
from helpers.relaylab import Lab, on_disk, rendered, take, until, write

MOVED = "00000000-0000-4000-8000-000000000040"  # the last route at the top, moved by Bob
DELETED = "00000000-0000-4000-8000-000000000030"  # a route Alice deletes


async def test_a_save_on_the_shared_version_keeps_a_teammates_move(lab: Lab) -> None:
    alice, bob = lab.device("alice"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    space = pair(alice.home, bob.home, "team")
    await lab.start_relay()
    a, _ta = await lab.agent(alice)
    b, _tb = await lab.agent(bob)
    doc = small_env()
    env = doc["uuid"]
    apath = (a.folder / "env.json").resolve()
    # Saved the way Mockoon saves it, so sharing leaves the file as it is (no write of ours).
    apath.write_text(dumps(doc, MOCKOON_LAYOUT), encoding="utf-8")
    await until(lambda: apath in a.local, what="alice's daemon to see the file (a local one)")
    before = apath.read_bytes()
    a.share(str(apath), space)
    shared = on_disk(apath)  # what Alice's editor holds from here on (it never reloads)
    assert apath.read_bytes() == before
    await until(lambda: b.envs.get(env) is not None and b.envs[env].path.exists(),
                what="bob's copy of the env")
    bpath = b.envs[env].path
    await until(lambda: on_disk(bpath) == rendered(a, env), what="bob's file written")

    moved = on_disk(bpath)
    item = next(c for c in moved["rootChildren"] if c["uuid"] == MOVED)
    moved["rootChildren"].remove(item)
    moved["rootChildren"].insert(0, item)
    write(bpath, moved)
    await take(b, bpath)
    await until(lambda: on_disk(apath)["rootChildren"][0]["uuid"] == MOVED,
                what="bob's move written to alice's file")

    stale = copy.deepcopy(shared)  # Alice deletes a route on the version she had
    stale["routes"] = [r for r in stale["routes"] if r["uuid"] != DELETED]
    stale["rootChildren"] = [c for c in stale["rootChildren"] if c["uuid"] != DELETED]
    write(apath, stale)
    await take(a, apath)
    head = a.store.version_vector(env)[a.device]
    mine = a.store.get(env, a.device, head)
    assert mine is not None
    ops = mine[0].ops
    # The delete only (the route and its responses): nothing of the tree is the save's to
    # move back, neither the moved route nor the others around it.
    assert [op[0] for op in ops if op[1] == DELETED] == ["d"]
    assert {op[0] for op in ops} == {"d"}, ops
    assert b.device not in mine[0].deps  # made on a version without Bob's move: concurrent
    assert rendered(a, env)["rootChildren"][0]["uuid"] == MOVED
    await until(lambda: rendered(b, env)["rootChildren"] == rendered(a, env)["rootChildren"],
                what="bob and alice agree")
    assert rendered(b, env)["rootChildren"][0]["uuid"] == MOVED
    assert DELETED not in {r["uuid"] for r in rendered(b, env)["routes"]}
