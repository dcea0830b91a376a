"""Red team of issue 15's sharing shortcut (`Commands.share` notes the shared version in the
history, the views and `seen_versions`, all in memory, and stamps the stored base with what
it reflects): a restart between sharing and the teammate's edit loses the memory; the save
the editor makes on the version it had must still keep the teammate's edit (the stored
base's stamp and `keep_replaced_version` carry it over the restart)."""

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


async def test_a_stale_save_after_sharing_and_a_restart_keeps_a_teammates_move(
        lab: Lab) -> None:
    alice, bob = lab.device("alice"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    space = pair(alice.home, bob.home, "team")
    await lab.start_relay()
    a, _ta = await lab.agent(alice)
    b, _tb = await lab.agent(bob)
    doc = small_env()
    env = doc["uuid"]
    apath = (a.folder / "env.json").resolve()
    apath.write_text(dumps(doc, MOCKOON_LAYOUT), encoding="utf-8")
    await until(lambda: apath in a.local, what="alice's daemon to see the file")
    a.share(str(apath), space)
    shared = on_disk(apath)  # what Alice's editor holds from here on (it never reloads)
    await until(lambda: b.envs.get(env) is not None and b.envs[env].path.exists(),
                what="bob's copy of the env")
    bpath = b.envs[env].path
    await until(lambda: on_disk(bpath) == rendered(a, env), what="bob's file written")
    await lab.stop_agent(a)
    a, _ta = await lab.agent(alice)  # restarted: the in-memory notes of the share are gone

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
    assert {op[0] for op in mine[0].ops} == {"d"}, mine[0].ops
    assert b.device not in mine[0].deps  # made on a version without Bob's move: concurrent
    assert rendered(a, env)["rootChildren"][0]["uuid"] == MOVED
    await until(lambda: rendered(b, env)["rootChildren"] == rendered(a, env)["rootChildren"],
                what="bob and alice agree")
