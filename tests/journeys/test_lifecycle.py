"""Journey: environments leave the team (unshare, delete) from any device, and stay gone.

Alice (laptop + desktop) and Bob share one space through a real relay. Whoever runs `unshare`
or `delete`, and whether or not their device is the one that first shared the environment, it
reaches every device: an unshared environment stays on every device as a local file (state
`local`); a deleted one moves to each other device's trash (HOME/trash), and the device that
ran `delete` keeps its file as a local one. A relay restart loses nothing and brings nothing
back, a device that was off during a delete applies it when it starts, and a member who joins
later receives only the live environments. Sharing a removed environment's file again needs
`--copy` (a new environment), and the refusal says so.
"""

from __future__ import annotations

from typing import Any

from .harness import Crew, Device, Team


def trash(dev: Device) -> list[str]:
    """What `mocksync delete` on a teammate's device put in this device's trash."""
    folder = dev.home / "trash"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def syncs(dev: Device) -> int:
    """Relay catch-ups this device's daemon finished (`status --json`, relay counters)."""
    relay = dev.status()["relay"]
    return int(relay["counters"]["syncs"]) if relay.get("state") == "connected" else -1


def listed(dev: Device) -> dict[str, str]:
    """Each environment `status` lists on this device (by uuid) with its state."""
    return {e["uuid"]: e["state"] for e in dev.status()["environments"] if e.get("uuid")}


def test_unshare_from_a_device_that_did_not_share_reaches_everyone(crew: Crew) -> None:
    # The session's crew: nothing here changes its membership; a file name of its own.
    team, (laptop, desktop, bob) = crew.team, crew.all
    pet = laptop.share(laptop.add_example("petstore", "unshare-petstore.json"))["uuid"]
    doc = team.synced(pet, laptop, desktop, bob)

    # Bob, who did not share it, unshares it: every device keeps its file, now `local`.
    res = bob.ms("unshare", pet, "--json").json()
    assert res["state"] == "local"
    for dev in (laptop, desktop, bob):
        dev.wait_state(pet, "local")
        assert dev.doc(pet) == doc, f"{dev.name} should keep the same file"
    assert not [p for p in bob.status()["relay"]["problems"] if "upload" in p["what"]]

    # An edit of a local copy now stays on that device.
    laptop.edit(pet, lambda d: d.update(name="Only on the laptop"))
    team.wait(lambda: laptop.state(pet) == "local", "the edited copy to stay local")
    assert bob.doc(pet)["name"] == "Petstore API"

    # Sharing the same file again would bring the uuid back: refused, with the way out.
    again = bob.ms("share", str(bob.file_of(pet)), "--space", "team", check=False)
    assert again.code == 1
    assert "was unshared" in again.err and "--copy" in again.err
    assert bob.state(pet) == "local"
    copied = bob.share(bob.file_of(pet).name, copy=True)
    team.synced(copied["uuid"], laptop, desktop, bob)
    assert laptop.state(pet) == "local"


def test_delete_from_any_device_reaches_a_device_that_was_off(crew: Crew) -> None:
    # The session's crew (the next journey starts the desktop again): the trash may hold what
    # earlier journeys deleted, so only what this delete adds to it counts.
    team, (laptop, desktop, bob) = crew.team, crew.all
    pet = laptop.share(laptop.add_example("petstore", "delete-petstore.json"))["uuid"]
    team.synced(pet, laptop, desktop, bob)
    trashed = {dev.name: set(trash(dev)) for dev in (laptop, desktop)}
    desktop.stop()  # Alice's desktop is off

    # Bob deletes it (he did not share it): he keeps his file as a local one; Alice's
    # laptop moves its copy to the trash.
    out = bob.ms("delete", pet).out
    assert out.startswith("deleted from the space")
    assert bob.state(pet) == "local" and bob.file_of(pet) is not None
    team.wait(lambda: laptop.file_of(pet) is None, "the laptop's copy to leave the folder")
    assert laptop.env(pet) is None
    added = set(trash(laptop)) - trashed[laptop.name]
    assert len(added) == 1 and added.pop().endswith("delete-petstore.json")

    # The desktop starts again: the delete is waiting for it.
    desktop.start()
    team.wait(lambda: desktop.file_of(pet) is None, "the desktop's copy to leave the folder")
    assert desktop.env(pet) is None and len(set(trash(desktop)) - trashed[desktop.name]) == 1
    desktop.restart()  # and it stays gone
    team.wait(lambda: syncs(desktop) >= 1, "the desktop to catch up with the relay")
    assert desktop.file_of(pet) is None and desktop.env(pet) is None


def test_relay_restart_keeps_everything_and_a_new_member_gets_only_live_envs(
        team: Team) -> None:
    laptop, desktop, bob = team.crew()
    crew = (laptop, desktop, bob)
    uuids: dict[str, str] = {}
    for example in ("petstore", "chat-websocket", "payments-callbacks"):
        laptop.add_example(example)
        uuids[example] = laptop.share(f"{example}.json")["uuid"]
    pet, chat, pay = uuids["petstore"], uuids["chat-websocket"], uuids["payments-callbacks"]
    for env in (pet, chat, pay):
        team.synced(env, *crew)
    desktop.ms("delete", chat)  # neither of these two devices shared them
    bob.ms("unshare", pay)
    team.wait(lambda: all(laptop.env(e) is None or laptop.state(e) == "local"
                          for e in (chat, pay)) and bob.env(chat) is None,
              "the delete and the unshare to reach everyone")
    bob.wait_state(pay, "local")
    laptop.edit(pet, lambda d: d.update(name="Petstore before the restart"))
    team.everywhere(pet, crew, lambda d: d["name"] == "Petstore before the restart",
                    "the last edit before the restart")
    before: dict[str, Any] = {d.name: (d.files(), listed(d)) for d in crew}
    assert set(before[bob.name][1]) == {pet, pay} and before[bob.name][1][pay] == "local"

    # The relay restarts on the same data; every daemon reconnects and catches up by itself.
    seen = {d.name: syncs(d) for d in crew}
    team.relay.stop()
    team.relay.start()
    for d in crew:
        team.wait(lambda d=d: syncs(d) > seen[d.name], f"{d.name} to catch up after the restart")
    for d in crew:
        assert (d.files(), listed(d)) == before[d.name], f"{d.name} changed after the restart"
    bob.edit(pet, lambda d: d.update(name="Petstore after the restart"))
    team.everywhere(pet, crew, lambda d: d["name"] == "Petstore after the restart",
                    "an edit after the restart")

    # Dave joins now: he receives the live environment only, and nothing lands in his trash.
    dave = team.device("dave-laptop", "dave")
    team.join(dave, "team", by=laptop)
    dave.start()
    doc = team.synced(pet, laptop, dave)
    assert doc["name"] == "Petstore after the restart"
    team.wait(lambda: syncs(dave) >= 1, "dave's first catch-up")
    assert dave.files() == [dave.file_of(pet).name]
    assert set(listed(dave)) == {pet} and trash(dave) == []
