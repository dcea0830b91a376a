"""The migration gate across a restart (issue 11, found by the journey
tests/journeys/test_migration.py): an environment held unwritten because a teammate's Mockoon
saved a newer `lastMigration` was never written on this device, so when the daemon starts
again (with `mockoon_max_migration` raised) it must write it, not call it `missing` ("the file
was deleted on this device") as if the user had deleted it.
"""

from __future__ import annotations

from pathlib import Path

from mocksync.agent.bus import LocalBus

from helpers.agents import env_status, make_agent, running
from helpers.devices import make_device, team_space
from helpers.files import copy_example, read_doc
from helpers.polling import wait_until


async def test_held_by_migration_is_written_after_the_limit_is_raised(tmp_path: Path) -> None:
    dev_a, dev_b = make_device(tmp_path, "a"), make_device(tmp_path, "b")
    team_space(dev_a, dev_b)
    bus = LocalBus()
    src = copy_example("petstore.json", dev_a.folder)
    assert read_doc(src)["lastMigration"] == 33
    async with running(make_agent(dev_a, bus)) as (a,):
        env = a.share(str(src), space="team")["uuid"]
        async with running(make_agent(dev_b, bus, mockoon_max_migration=32)) as (b,):
            row = await wait_until(lambda: (env_status(b, env) or {}).get("state") == "held"
                                   and env_status(b, env), "B to hold the environment")
            assert "migration 33" in row["reason"] and "32" in row["reason"]
            assert list(dev_b.folder.glob("*.json")) == []
        # Restarted with the same limit: still held (and why), not `missing`.
        async with running(make_agent(dev_b, bus, mockoon_max_migration=32)) as (b,):
            row = await wait_until(lambda: (env_status(b, env) or {}).get("state") == "held"
                                   and env_status(b, env), "B to hold it again")
            assert "migration 33" in row["reason"]
            assert list(dev_b.folder.glob("*.json")) == []
        # B's Mockoon is updated: its daemon starts again with the limit raised.
        async with running(make_agent(dev_b, bus, mockoon_max_migration=33)) as (b,):
            await wait_until(lambda: b.envs[env].path.exists()
                             and read_doc(b.envs[env].path) == read_doc(src),
                             "B to write the environment")
            assert env_status(b, env)["state"] == "synced"
