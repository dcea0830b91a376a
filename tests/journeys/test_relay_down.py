"""Journey: the relay goes down and comes back (issue 11, item 11).

While the relay is stopped every device says so in words (`status`: offline, the relay is not
running, when the next try is, and that edits are kept), nobody is shown online via the
relay, and the team keeps editing. When the relay is started again each daemon reconnects by
itself (nobody runs `mocksync reconnect`) and the edits made meanwhile reach everyone.
"""

from __future__ import annotations

from typing import Any

from .harness import Crew, Device


def relay_state(dev: Device) -> str:
    return dev.status()["relay"]["state"]


def online_via_relay(dev: Device) -> list[dict[str, Any]]:
    return [p for p in dev.status()["peers"]
            if p.get("via") == "relay" and p.get("state") in ("online", "connected")]


def label(dev: Device, file: str, route: int) -> str:
    return dev.read(file)["routes"][route]["responses"][0]["label"]


def test_relay_down_then_back_with_edits_made_meanwhile(crew: Crew) -> None:
    # The session's crew (Alice on two devices, Bob, all joined the way `Team.crew` does):
    # the next journey finds the relay started again whatever happens here. An environment
    # and a file name of its own.
    team, (laptop, desktop, bob) = crew.team, crew.all
    devices = (laptop, desktop, bob)

    pet = laptop.share(laptop.add_example("petstore", "relaydown-petstore.json"))["uuid"]
    for dev in (desktop, bob):
        team.wait(lambda d=dev: d.file_of(pet), f"petstore on {dev.name}")
    files = {dev: dev.file_of(pet).name for dev in devices}  # type: ignore[union-attr]
    team.wait(lambda: len(online_via_relay(bob)) == 2, "alice's two devices online for bob")

    team.relay.stop()
    for dev in devices:
        st = team.wait(lambda d=dev: (s := d.status()) and "connection refused" in
                       (s["relay"]["reason"] or "") and s, f"{dev.name} to find the relay gone")
        assert st["relay"]["state"] == "offline"
        assert st["relay"]["reason"].startswith(f"the relay at {team.relay.url} is not running")
        assert "Cannot connect" not in st["relay"]["reason"]  # not aiohttp's own text
        assert isinstance(st["relay"]["next_retry_s"], float)
        assert [p for p in st["peers"] if p.get("via") == "relay"] == []
    text = bob.ms("status").out
    assert f"relay   offline: the relay at {team.relay.url} is not running" in text
    assert "next try in" in text and "`mocksync reconnect` tries now" in text
    assert "edits made meanwhile are kept on this device" in text

    # The team keeps working while the relay is down.
    laptop.save(files[laptop], lambda d: d["routes"][0]["responses"][0].update(label="laptop edit"))
    bob.save(files[bob], lambda d: d["routes"][1]["responses"][0].update(label="bob edit"))
    team.wait(lambda: laptop.env(pet)["state"] == "synced", "laptop took its edit")

    team.relay.start()  # same port, same data: nobody runs `mocksync reconnect`
    for dev in devices:
        team.wait(lambda d=dev: relay_state(d) == "connected", f"{dev.name} back by itself")
    for dev in devices:
        team.wait(lambda d=dev: label(d, files[d], 0) == "laptop edit"
                  and label(d, files[d], 1) == "bob edit",
                  f"both edits made meanwhile on {dev.name}")
    team.wait(lambda: len(online_via_relay(bob)) == 2, "alice's devices online again for bob")
    assert "relay   connected" in laptop.ms("status").out
