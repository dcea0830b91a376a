"""Unshare and delete through a real relay (in-process, 127.0.0.1): from any device, offline or
not, across relay restarts, and for a device that joins later (issue 11, items 1 and 2).

The agents are real (`Agent` + `RelayTransport`); the devices are driven through the agent's
command methods and files, as the CLI does. What is asserted is what a user would see: files
in the folder and in the trash, and each environment's state.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mocksync.agent.daemon import Agent
from mocksync.devtools.pairing import pair
from mocksync.errors import ValidationError
from mocksync.relay.storage import SQLiteStorage
from mocksync.space.quotas import get_plan

from envfactory import small_env
from helpers.devices import Device
from helpers.relaylab import Lab, share, team_of, until


def state_of(agent: Agent, env: str) -> str | None:
    """The state `status` shows for `env` on this device (None: not listed at all)."""
    hits = [e["state"] for e in agent.all_envs() if e["uuid"] == env]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def file_of(agent: Agent, env: str) -> Path | None:
    """The file `status` lists for `env` on this device, as a user finds it (a teammate's
    copy may carry the sharer's file name or the title's: only the uuid says which is which)."""
    hits = [e["file"] for e in agent.all_envs() if e["uuid"] == env and e.get("file")]
    assert len(hits) <= 1, hits
    return Path(hits[0]) if hits else None


def env_files(agent: Agent) -> list[str]:
    return sorted(p.name for p in agent.folder.glob("*.json"))


def trash(dev: Device) -> list[str]:
    return sorted(p.name for p in dev.home.trash.glob("*")) if dev.home.trash.exists() else []


def three(lab: Lab) -> tuple[Device, Device, Device, str]:
    alice, bob, space = team_of(lab)
    carol = lab.device("carol")
    pair(alice.home, carol.home, "team")
    return alice, bob, carol, space


async def shared_everywhere(agents: list[Agent], doc: dict[str, Any], space: str,
                            name: str = "env.json") -> str:
    """The first agent shares `doc`; returns its uuid once every agent lists it `synced`."""
    share(agents[0], doc, space, name)
    env = doc["uuid"]
    await until(lambda: all(state_of(a, env) == "synced" for a in agents), timeout=15,
                what="the environment to be synced on every device")
    return env


async def test_unshare_from_a_device_that_did_not_share_reaches_everyone(lab: Lab) -> None:
    alice, bob, carol, space = three(lab)
    await lab.start_relay()
    (a, _ta), (b, tb), (c, _tc) = [await lab.agent(d) for d in (alice, bob, carol)]
    env = await shared_everywhere([a, b, c], small_env(), space)

    res = b.unshare(env)

    assert res["state"] == "local"
    await until(lambda: state_of(a, env) == "local" and state_of(c, env) == "local",
                timeout=15, what="alice and carol to keep the unshared env as a local file")
    for x in (a, c):  # copies stay: the file status lists is there, and the only one
        f = file_of(x, env)
        assert f is not None and f.is_file() and env_files(x) == [f.name]
    assert not [p for p in tb.status()["relay"]["problems"] if "upload" in p["what"]]
    # The relay holds bob's tombstone: a later replay leaves the environment gone.
    tag = tb._tagger(space)(env)
    assert lab.relay.storage.vv(space, tag).get(bob.identity.device_id) == 1


async def test_a_delete_made_offline_reaches_a_device_that_was_down_too(lab: Lab) -> None:
    alice, bob, carol, space = three(lab)
    await lab.start_relay()
    (a, _ta), (b, _tb), (c, _tc) = [await lab.agent(d) for d in (alice, bob, carol)]
    env = await shared_everywhere([a, b, c], small_env(), space)
    await lab.stop_agent(c)  # carol's laptop is closed
    await lab.stop_relay()  # and the relay is down while bob deletes

    b.delete(env)
    assert state_of(b, env) == "local"

    await lab.start_relay()  # same port, same data: bob uploads the tombstone by himself
    await until(lambda: state_of(a, env) is None and env_files(a) == [], timeout=15,
                what="alice's copy to go to her trash")
    assert len(trash(alice)) == 1 and trash(alice)[0].endswith("-env.json")
    c, _tc = await lab.agent(carol)  # carol's daemon starts again
    await until(lambda: state_of(c, env) is None and env_files(c) == [], timeout=15,
                what="carol's copy to go to her trash after her restart")
    assert len(trash(carol)) == 1


async def test_an_environment_over_the_size_quota_can_still_be_deleted(lab: Lab) -> None:
    """The relay's plan shrank below the environment's size (a restart with a smaller
    `--max-env-bytes`): its edits are refused, but its delete holds nothing and must pass."""
    alice, bob, carol, space = three(lab)
    await lab.start_relay()
    (a, _ta), (b, tb), (c, _tc) = [await lab.agent(d) for d in (alice, bob, carol)]
    env = await shared_everywhere([a, b, c], small_env(), space)
    await lab.stop_relay()
    await lab.start_relay(plan=get_plan("team", max_env_bytes=500))

    b.delete(env)

    await until(lambda: state_of(a, env) is None and state_of(c, env) is None, timeout=15,
                what="the delete to pass the relay's size quota")
    assert not [p for p in tb.status()["relay"]["problems"] if "upload" in p["what"]]


class OnePerPage:
    """A relay storage that serves one envelope per fetch: every log arrives in pages."""

    def __init__(self, inner: SQLiteStorage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fetch(self, space, tag, have, *, max_items, max_bytes):
        return self.inner.fetch(space, tag, have, max_items=1, max_bytes=max_bytes)


async def test_relay_restart_resurrects_nothing_and_a_late_member_gets_only_live_envs(
        lab: Lab) -> None:
    alice, bob, carol, space = three(lab)
    await lab.start_relay()
    (a, ta), (b, _tb), (c, _tc) = [await lab.agent(d) for d in (alice, bob, carol)]
    live, gone, left = small_env(), small_env(), small_env()
    for i, doc in enumerate((gone, left), start=1):
        doc["uuid"] = f"e0000000-0000-4000-8000-00000000000{i}"
        doc["name"] = f"env {i}"
    live_id = await shared_everywhere([a, b, c], live, space, "live.json")
    gone_id = await shared_everywhere([a, b, c], gone, space, "gone.json")
    left_id = await shared_everywhere([a, b, c], left, space, "left.json")
    b.delete(gone_id)  # by a device that did not share it
    a.unshare(left_id)  # by the sharer: its own chain holds both the env and the tombstone
    await until(lambda: all(state_of(x, left_id) == "local" for x in (a, b, c))
                and state_of(a, gone_id) is None and state_of(c, gone_id) is None,
                timeout=15, what="the delete and the unshare to reach everyone")
    before = {x.device: (env_files(x), sorted(e["state"] for e in x.all_envs()))
              for x in (a, b, c)}
    assert before[a.device][0] == ["left.json", "live.json"]

    await lab.stop_relay()
    await lab.start_relay(storage=OnePerPage(SQLiteStorage(lab.tmp / "relay")))
    syncs = ta.counters["syncs"]
    await until(lambda: ta.counters["syncs"] > syncs, timeout=15, what="alice to reconnect")
    for x in (a, b, c):
        assert (env_files(x), sorted(e["state"] for e in x.all_envs())) == before[x.device]

    # Dave joins after all this: he gets the live environment only, and nothing in his trash.
    dave = lab.device("dave")
    pair(alice.home, dave.home, "team")
    d, td = await lab.agent(dave)
    await until(lambda: state_of(d, live_id) == "synced", timeout=15,
                what="dave to receive the live environment")
    assert await td.wait_synced(1)
    live_file = file_of(d, live_id)  # only the live environment's file, nothing resurrected
    assert live_file is not None
    # The file is written on the store worker after the state is synced: wait for the write.
    await until(lambda: live_file.exists(), timeout=15, what="dave's file to be written")
    assert env_files(d) == [live_file.name]
    assert state_of(d, gone_id) is None and state_of(d, left_id) is None
    assert trash(dave) == []


async def test_sharing_a_removed_environment_again_needs_a_copy(lab: Lab) -> None:
    alice, bob, carol, space = three(lab)
    await lab.start_relay()
    (a, _ta), (b, _tb), (c, _tc) = [await lab.agent(d) for d in (alice, bob, carol)]
    env = await shared_everywhere([a, b, c], small_env(), space)
    c.unshare(env)
    await until(lambda: state_of(b, env) == "local", timeout=15, what="bob to see the unshare")
    path = file_of(b, env)
    assert path is not None
    before = path.read_bytes()

    with pytest.raises(ValidationError,
                       match=rf"was unshared.*share {re.escape(path.name)} --copy"):
        b.share(str(path), space)
    assert path.read_bytes() == before and state_of(b, env) == "local"  # nothing changed

    copy = b.share(str(path), space, copy=True)
    assert copy["uuid"] != env
    await until(lambda: state_of(a, copy["uuid"]) == "synced", timeout=15,
                what="the copy to reach alice")
    assert state_of(a, env) == "local"  # the old one stays gone
