"""Journey: who is online and what each is editing (issue 11 item 6).

Alice (laptop + desktop) and Bob share a space. Alice saves one environment on her laptop
and another on her desktop, Bob saves that other one too: on every device `who` lists the two
others as online, with the environment each last saved, and `members --json` says all three
devices are online. When Bob's daemon stops,
he disappears from `who` on Alice's devices and `members` shows his device offline.
"""

from __future__ import annotations

from typing import Any

from .harness import Crew, Device


def _who(dev: Device) -> dict[str, dict[str, Any]]:
    """`who --json` on `dev`, by device id."""
    return {r["device"]: r for r in dev.ms("who", "--json").json()}


def _online(dev: Device, space: str = "team") -> dict[str, bool | None]:
    """`members SPACE --json` on `dev`: online or not, by device id."""
    doc = dev.ms("members", space, "--json").json()
    return {d["id"]: d["online"] for m in doc["members"] for d in m["devices"]}


def test_who_shows_teammates_online_and_what_they_edit_on_every_device(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    devices = (laptop, desktop, bob)
    pet = laptop.share(laptop.add_example("petstore", "who-petstore.json"))
    chat = bob.share(bob.add_example("chat-websocket", "who-chat.json"))
    team.synced(pet["uuid"], *devices)
    team.synced(chat["uuid"], *devices)

    # Alice edits the petstore on her laptop, then the chat on her desktop; Bob the chat.
    # (The crew is shared by the journeys: each device's last save is made here.)
    laptop.edit(pet["uuid"], lambda d: d.update(port=4101))
    team.everywhere(pet["uuid"], (desktop,), lambda d: d["port"] == 4101, "the new port")
    desktop.edit(chat["uuid"], lambda d: d.update(latency=5))
    bob.edit(chat["uuid"], lambda d: d.update(port=4102))
    editing = {laptop.id: pet["uuid"], bob.id: chat["uuid"], desktop.id: chat["uuid"]}

    last: dict[str, Any] = {}

    def sees_everyone(dev: Device) -> dict[str, dict[str, Any]] | None:
        rows = last[dev.name] = _who(dev)
        others = {d: e for d, e in editing.items() if d != dev.id}
        if set(rows) != set(editing) or any(rows[d]["env"] != e for d, e in others.items()):
            return None
        return rows

    for dev in devices:
        try:
            rows = team.wait(lambda dev=dev: sees_everyone(dev),
                             f"{dev.name}'s `who` to list the two others and what they edit")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; expected {editing}, last `who`: "
                                 f"{last.get(dev.name)}") from None
        assert rows[dev.id]["you"] is True
        for other in devices:
            if other is dev:
                continue
            row = rows[other.id]
            assert row["online"] is True and row["you"] is False
            assert row["member"] == other.member and row["via"]
        assert rows[dev.id]["env"] == editing[dev.id]  # what we edit, as the others see it
    # The human table names the teammates and the environments by name.
    table = desktop.ms("who").out
    assert "alice" in table and "bob" in table and "(you)" in table
    assert pet["name"] in table and chat["name"] in table

    # `members` knows who is online (it said null for everyone before).
    for dev in devices:
        team.wait(lambda dev=dev: all(_online(dev).get(d) is True for d in editing),
                  f"{dev.name}'s `members` to show all three devices online")

    # Bob's daemon stops: he is gone from `who`, and offline in `members`, on Alice's devices.
    bob.stop()
    for dev in (laptop, desktop):
        team.wait(lambda dev=dev: bob.id not in _who(dev),
                  f"{dev.name}'s `who` to drop Bob's stopped device")
        assert _online(dev)[bob.id] is False
        assert _online(dev)[dev.id] is True
    # Without a daemon, Bob's own device is offline and the others unknown.
    offline = _online(bob)
    assert offline[bob.id] is False and offline[laptop.id] is None
