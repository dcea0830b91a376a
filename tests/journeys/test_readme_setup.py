"""Journey: the README's "Running it for real" setup, its commands as written (issue 11/17).

Alice's laptop: `init --name laptop`, `space create team --relay URL`, `invite team`,
`daemon --folder F`; her teammate's desk, while it runs: `init --name desk`, `join TOKEN`,
`daemon --folder F`;
then `share F/petstore.json --space team` and `status --wait`. No daemon is given `--relay`,
and mDNS is off (the journeys' `--no-mdns`), so the only way anything reaches the desk is the
relay the space names: before issue 11/17's fix the daemons said `relay none: no relay
configured` and nothing synced. Only what a person sees is asserted: the CLI's output and the
files in the folders.
"""

from __future__ import annotations

import re
from typing import Any

from .harness import JOIN_TIMEOUT_S, LOOPBACK, Device, Team

#: What an invite token looks like in `invite`'s output.
TOKEN = re.compile(r"mocksync1-[a-z0-9]+")


def newcomer(team: Team, name: str) -> Device:
    """A machine before `mocksync init`: an empty home (whose config.toml only keeps the
    LAN search of `join` on loopback, the journeys' network rule) and an empty folder."""
    dev = Device(team, name, name)
    dev.folder.mkdir(parents=True)
    dev.home.mkdir(parents=True, mode=0o700)
    (dev.home / "config.toml").write_text(f'bind = ["{LOOPBACK}"]\n')
    team.devices[name] = dev
    return dev


def test_the_readme_setup_syncs_through_the_relay_the_space_names(team: Team) -> None:
    url = team.relay.url
    laptop, desk = newcomer(team, "laptop"), newcomer(team, "desk")

    laptop.ms("init", "--name", "laptop")
    laptop.ms("space", "create", "team", "--relay", url)
    out = laptop.ms("invite", "team").text
    token = TOKEN.search(out)
    assert token is not None, out
    laptop.start(relay=False)  # `mocksync daemon --folder F`: no --relay
    team.wait(lambda: laptop.status()["relay"]["state"] == "connected",
              "the laptop's daemon on the space's relay")

    desk.ms("init", "--name", "desk")
    desk.ms("join", token.group(0), timeout=JOIN_TIMEOUT_S + 60)
    desk.start(relay=False)

    for dev in (laptop, desk):
        team.wait(lambda d=dev: d.status()["relay"]["state"] == "connected",
                  f"{dev.name} connected to the relay")
        st = dev.status()
        assert st["relay"]["url"] == url
        assert [(r["url"], r["source"], r["state"]) for r in st["relays"]] == [
            (url, "space", "connected")]
        text = dev.ms("status").text
        assert f"relay   connected {url}" in text and "no relay" not in text

    laptop.add_example("petstore.json")  # saved in the folder, listed by the daemon
    laptop.ms("share", str(laptop.path("petstore.json")), "--space", "team")
    laptop.ms("status", "--wait", timeout=120)
    env = laptop.env("petstore.json")
    assert env is not None
    uuid = env["uuid"]
    team.synced(uuid, laptop, desk)

    def rename(doc: dict[str, Any]) -> None:
        doc["name"] = "Petstore (edited at the desk)"

    desk.edit(uuid, rename)
    laptop.wait_doc(uuid, lambda d: d["name"] == "Petstore (edited at the desk)",
                    "the desk's edit")
    assert not any(p.get("via") == "lan" for p in laptop.status()["peers"])
