"""Journeys: membership as a team lives it (issue 11 items 3, 7, 9, 10).

- Alice removes Dave while everybody edits: the key rotates, and every edit made after it
  reaches every remaining device by itself (no `mocksync reconnect`).
- Alice removes Bob's laptop by mistake and invites it back: the same device rejoins and syncs.
- A member owns three devices, and the plan allows two online at once: the third joins, is
  refused by the relay while two are connected (status says why), and gets in by itself once
  one of the others goes offline.
- Alice's personal space (made by `init`) reaches her second device through the relay her
  daemon uses, with no extra step, and an environment shared into it follows.
"""

from __future__ import annotations

from typing import Any

from .harness import Device, Team


def _space_id(dev: Device, name: str) -> str:
    rows = dev.ms("space", "list", "--json").json()
    return next(r["id"] for r in rows if r["name"] == name)


def _relay(dev: Device) -> dict[str, Any]:
    return dev.status()["relay"]


def _set_title(title: str):
    def edit(doc: dict[str, Any]) -> None:
        doc["routes"][0]["documentation"] = title
    return edit


def _title_is(title: str):
    return lambda doc: doc["routes"][0]["documentation"] == title


def test_edits_after_removing_a_member_reach_everyone_without_reconnect(team: Team) -> None:
    laptop, desktop, bob, dave = team.crew(members={"alice": ["alice-laptop", "alice-desktop"],
                                                    "bob": ["bob-laptop"],
                                                    "dave": ["dave-laptop"]})
    laptop.add_example("petstore")
    pet = laptop.share("petstore.json")["uuid"]
    team.synced(pet, laptop, desktop, bob, dave)

    out = laptop.ms("remove", "team", "dave").out
    assert "content key rotated to generation 2" in out

    # The admin edits at once: the first change set sealed with the new key.
    laptop.edit(pet, _set_title("after removal, by alice"))
    team.everywhere(pet, (desktop, bob), _title_is("after removal, by alice"),
                    "alice's edit sealed with the rotated key")
    # The others learned the new key with it and use it for their own edits.
    bob.edit(pet, _set_title("then bob"))
    team.everywhere(pet, (laptop, desktop), _title_is("then bob"), "bob's edit after rotation")
    desktop.edit(pet, _set_title("then alice's desktop"))
    team.everywhere(pet, (laptop, bob), _title_is("then alice's desktop"),
                    "the desktop's edit after rotation")
    for dev in (laptop, desktop, bob):
        rows = dev.ms("space", "list", "--json").json()
        assert next(r for r in rows if r["name"] == "team")["key_generation"] == 2, dev.name
        assert dev.env(pet)["state"] == "synced", dev.name
        problems = " ".join(p.get("reason", "") for p in _relay(dev).get("problems", []))
        assert "does not have" not in problems, (dev.name, problems)
    # Dave is out: the relay refuses him and his copy stays where it was.
    team.wait(lambda: "revoked" in str(_relay(dave)), "the relay to tell dave he was removed")
    assert dave.doc(pet)["routes"][0]["documentation"] != "then alice's desktop"


def test_a_removed_device_can_be_invited_back(team: Team) -> None:
    laptop, desktop, bob = team.crew()
    laptop.add_example("petstore")
    pet = laptop.share("petstore.json")["uuid"]
    team.synced(pet, laptop, desktop, bob)
    members = laptop.ms("members", "team", "--json").json()["members"]
    assert [m["name"] for m in members] == ["alice", "bob"]

    laptop.ms("remove", "team", bob.id)
    team.wait(lambda: "revoked" in str(_relay(bob)), "the relay to refuse bob's laptop")
    # His `status` must not promise his edits reach the team "when it is back": they never do.
    said = bob.ms("status").out
    assert "sent when it is back" not in said and "stay on this device only" in said, said
    laptop.edit(pet, _set_title("while bob was out"))

    # The refusal says to ask an admin to invite it again, and that works.
    result = team.join(bob, "team", by=laptop)
    assert result.code == 0 and "joined space 'team'" in result.out
    bob.wait_doc(pet, _title_is("while bob was out"), "the edit made while bob was out")
    bob.edit(pet, _set_title("bob is back"))
    team.everywhere(pet, (laptop, desktop), _title_is("bob is back"), "bob's edit after rejoin")
    # Back as the same member, not a second "bob".
    members = laptop.ms("members", "team", "--json").json()["members"]
    assert [m["name"] for m in members] == ["alice", "bob"]
    assert [d["id"] for d in members[1]["devices"]] == [bob.id]
    # A device that is a member cannot use a second invite.
    again = bob.ms("join", team.invite(laptop, "team"), "--timeout", "20", check=False)
    assert again.code == 1 and "already" in again.err


def test_third_device_of_a_member_waits_for_a_free_simultaneous_slot(team: Team) -> None:
    laptop, desktop, bob = team.crew()
    laptop.add_example("petstore")
    pet = laptop.share("petstore.json")["uuid"]
    team.synced(pet, laptop, desktop, bob)

    # Alice's third device joins (owning three devices is fine)...
    phone = team.device("alice-phone", "alice")
    joined = team.join(phone, "team", by=laptop, device=True)
    assert joined.code == 0
    team_id = _space_id(phone, "team")
    phone.start()

    # ...but while her laptop and desktop are connected, the relay keeps it out of the team
    # space, and status says why with the plan's numbers.
    def refused() -> str | None:
        why = (_relay(phone).get("refused_spaces") or {}).get(team_id)
        return why if why and "device limit reached" in why else None
    why = team.wait(refused, "the relay to refuse alice's third simultaneous device")
    assert "2 simultaneous devices per member" in why
    assert phone.file_of(pet) is None

    # Her desktop goes offline: the phone gets in by itself and catches up.
    desktop.stop()
    team.wait(lambda: team_id in (_relay(phone).get("spaces") or []),
              "alice's phone to be admitted once her desktop is offline", timeout=40)
    phone.wait_doc(pet, lambda doc: doc["name"] == "Petstore API", "the team's environment")
    laptop.edit(pet, _set_title("to the phone"))
    phone.wait_doc(pet, _title_is("to the phone"), "a live edit")


def test_personal_space_reaches_the_members_second_device(team: Team) -> None:
    laptop = team.device("alice-laptop", "alice")
    desktop = team.device("alice-desktop", "alice")
    laptop.start()
    # `init` made the personal space without a relay: the invite carries the relay the
    # laptop's daemon uses, so the desktop joins with no extra step.
    token = laptop.ms("invite", "personal", "--json").json()["token"]
    joined = desktop.ms("join", token, "--timeout", "20", "--json").json()
    personal = joined["id"]
    assert joined["kind"] == "personal" and joined["role"] == "admin"
    desktop.start()

    laptop.add_example("petstore")
    pet = laptop.share("petstore.json", space=personal)["uuid"]
    team.synced(pet, laptop, desktop)
    desktop.edit(pet, _set_title("from the desktop"))
    laptop.wait_doc(pet, _title_is("from the desktop"), "the desktop's edit")


def test_on_a_second_device_personal_means_the_personal_space_it_joined(team: Team) -> None:
    """`init` gave the desktop a personal space of its own before it joined the laptop's, so
    it holds two spaces named `personal`. The help's own example (`invite personal  # your
    own second device`) failed there ("2 spaces are named 'personal'"), and `share` without
    `--space` picked one of the two by id order: half the time the one no other device of
    Alice's is in. Both must mean the personal space the desktop joined."""
    laptop = team.device("alice-laptop", "alice")
    desktop = team.device("alice-desktop", "alice")
    laptop.start()
    token = laptop.ms("invite", "personal", "--json").json()["token"]
    personal = desktop.ms("join", token, "--timeout", "20", "--json").json()["id"]
    desktop.start()
    spaces = desktop.ms("space", "list", "--json").json()
    assert [s["name"] for s in spaces].count("personal") == 2, spaces

    invite = desktop.ms("invite", "personal", "--json").json()
    assert invite["space"] == personal, invite
    assert desktop.ms("members", "personal", "--json").json()["space"]["id"] == personal

    name = desktop.add_example("petstore", "mine.json")
    shared = desktop.share(name, space=None)  # the default: "your personal space"
    assert shared["space"] == personal, shared
    team.synced(shared["uuid"], laptop, desktop)


def test_join_says_why_when_the_invite_names_no_reachable_relay(team: Team) -> None:
    laptop = team.device("alice-laptop", "alice")
    desktop = team.device("alice-desktop", "alice")
    # No daemon on the laptop: the personal space's invite names no relay.
    invite = laptop.ms("invite", "personal", "--json", check=False)
    token = invite.json()["token"]
    # It looks on the LAN for as long as it was given (issue 16), and says so truthfully.
    r = desktop.ms("join", token, "--timeout", "2", check=False)
    assert r.code == 1
    assert "names no relay" in r.err and "not found on the LAN within 2." in r.err
