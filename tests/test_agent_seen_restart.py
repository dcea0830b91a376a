"""What the editor's file had seen survives a daemon restart (issue 15, P's leftover): the
first save after a restart is stamped with the version vector kept with the file's base, not
with the whole log, so a teammate's edit that reached the log but not the file is concurrent
with it and a write of the same property by both is a conflict on every device."""

from __future__ import annotations

import time
from pathlib import Path

from mocksync.store import Store

from envfactory import small_env
from helpers.relaylab import Lab, on_disk, rendered, synced_team, take, until, write


def test_the_base_keeps_what_it_reflects(tmp_path: Path) -> None:
    st = Store(tmp_path / "log.sqlite3")
    try:
        env = small_env()["uuid"]
        assert st.base_seen(env, "sha-1") is None  # nothing recorded yet
        st.set_base(env, "/f.json", "sha-1", b"{}", seen={"B": 2, "A": 1})
        assert st.base_seen(env, "sha-1") == {"A": 1, "B": 2}
        assert st.base_seen(env, "sha-2") is None  # only for the version it was kept with
        st.set_base(env, "/f.json", "sha-2", b"{}")  # None: everything applied (none here)
        assert st.base_seen(env, "sha-2") == {} and st.base_seen(env, "sha-1") is None
        st.set_base(env, "/f.json", "sha-3", b"{}", seen={"A": 5})
    finally:
        st.close()
    again = Store(tmp_path / "log.sqlite3")  # a restart: read back from disk
    try:
        assert again.base_seen(env, "sha-3") == {"A": 5}
        again.forget_env(env)
        assert again.base_seen(env, "sha-3") is None
    finally:
        again.close()


async def test_the_first_save_after_a_restart_is_concurrent_with_an_unseen_edit(
        lab: Lab) -> None:  # noqa: F811
    t = await synced_team(lab, "merge")
    # Alice changes the port; her change set reaches Bob's log while his daemon is down
    # (as a catch-up would just before his editor's save), not his file.
    a, ta = await lab.agent(t.alice, "merge")
    assert await ta.wait_synced(1)
    adoc = on_disk(t.apath)
    adoc["port"] = 4000
    write(t.apath, adoc)
    await take(a, t.apath)
    head = a.store.version_vector(t.env)[a.device]
    got = a.store.get(t.env, a.device, head)
    assert got is not None
    wire = got[0].encode()
    bstore = Store(t.bob.home.log_db)
    try:
        bstore.ingest(wire, t.alice.identity.sign_public, int(time.time() * 1000))
        assert render_port(bstore, t.env) == 4000
    finally:
        bstore.close()
    # Bob's editor, on the version it had, changes the same property.
    bdoc = on_disk(t.bpath)
    assert bdoc["port"] == t.doc["port"]
    bdoc["port"] = 5000
    write(t.bpath, bdoc)
    b, tb = await lab.agent(t.bob, "merge")
    assert await tb.wait_synced(1)
    mine = [c for c in b.store.conflicts(t.env) if c["field"] == ["v", "port"]]
    assert len(mine) == 1, b.store.conflicts(t.env)
    assert {mine[0]["winner"]["value"], mine[0]["loser"]["value"]} == {4000, 5000}
    await until_same(a, b, t.env)
    assert [c["id"] for c in a.store.conflicts(t.env)] == [c["id"] for c in b.store.conflicts(t.env)]


def render_port(store: Store, env: str) -> int:
    from mocksync.model import render

    return render(store.state(env))["port"]


async def until_same(a, b, env: str) -> None:

    await until(lambda: a.store.version_vector(env) == b.store.version_vector(env),
                what="both devices to hold the same change sets")
    await until(lambda: rendered(a, env) == rendered(b, env), what="the same state")
