"""A file that appears at the name chosen for a teammate's new environment, before the daemon
writes it there, is not the daemon's to replace (found while looking for saves taken twice).

The name is chosen free (`FolderEdits.free_path`) when the environment is adopted; the file is
written a moment later. Whatever is at that name by then — a checkout, another tool's file, a
save of the user's own — this device never wrote and never took in as that environment: the
environment moves to another free name, and the file stays, byte for byte, listed as local.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.agents import make_agent, running
from helpers.devices import make_device, team_space
from helpers.files import copy_example
from helpers.polling import wait_until


async def test_a_file_put_at_the_chosen_name_first_is_kept(tmp_path: Path) -> None:
    from mocksync.agent.bus import LocalBus

    dev_a, dev_b = make_device(tmp_path, "a"), make_device(tmp_path, "b")
    team_space(dev_a, dev_b)
    bus = LocalBus()
    src = copy_example("petstore.json", dev_a.folder)
    foreign = b'{"not": "an environment of this team"}\n'
    planted: list[Path] = []
    async with running(make_agent(dev_a, bus), make_agent(dev_b, bus)) as (a, b):

        def plant(ev: dict[str, Any]) -> None:
            # Bob's daemon adopted the environment and chose its file name: before the write
            # lands, something else puts a file there.
            if ev.get("event") == "shared" and ev.get("origin") == "remote" and not planted:
                path = Path(ev["file"])
                path.write_bytes(foreign)
                planted.append(path)

        b.listeners.append(plant)
        env = a.share(str(src), space="team")["uuid"]
        await wait_until(lambda: bool(planted) and env in b.envs
                         and b.envs[env].path != planted[0] and b.envs[env].path.exists(),
                         "B to write the environment under another name")
        assert planted[0].read_bytes() == foreign  # untouched
        written = json.loads(b.envs[env].path.read_bytes())
        assert written["uuid"] == env
        await wait_until(lambda: planted[0] in b.local, "the planted file listed as local")
