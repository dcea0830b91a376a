"""Journeys: removal, leaving, names (issue 11 follow-ups from a teammate trial).

- Carol is removed while her daemon is off. When it comes back the relay refuses it and hands
  over the signed entries that prove the removal: her environments stop saying `synced`,
  `space list` and `status` say who removed her and when, and `new --space team` says so
  instead of pretending it synced.
- Carol leaves the team on her own (`leave team --yes`): her device stops syncing it and
  keeps its copies, Alice's daemon rotates the key when it learns it, and the last admin is
  told she cannot leave.
- A second "dave" cannot join under a name another member uses; `--member-name` gets him in.
  `peers` and `who` name each device beside its id, and `space list` marks this device's own
  personal space.
"""

from __future__ import annotations

from typing import Any

from .harness import Device, Team


def _team_row(dev: Device) -> dict[str, Any]:
    rows = dev.ms("space", "list", "--json").json()
    return next(r for r in rows if r["name"] == "team")


def _set_title(title: str):
    def edit(doc: dict[str, Any]) -> None:
        doc["routes"][0]["documentation"] = title
    return edit


def test_a_device_removed_while_off_learns_it_from_the_signed_entries(team: Team) -> None:
    alice, bob, carol = team.crew(members={"alice": ["alice-laptop"], "bob": ["bob-laptop"],
                                           "carol": ["carol-laptop"]})
    alice.add_example("petstore")
    pet = alice.share("petstore.json")["uuid"]
    team.synced(pet, alice, bob, carol)
    carol.stop()
    out = alice.ms("remove", "team", "carol").out
    assert "removed member carol" in out, out
    carol.start()

    env = team.wait(lambda: (e := carol.env(pet)) and e["state"] == "removed" and e,
                    "carol's copy of petstore to say she was removed")
    assert "removed from team by alice at " in env["reason"], env
    assert "edits stay on this device only" in env["reason"], env
    assert "ask an admin to invite you back" in env["reason"], env
    row = _team_row(carol)
    assert row["removed"]["kind"] == "removed" and row["removed"]["by_name"] == "alice", row
    assert row["role"] is None
    said = carol.ms("space", "list").out
    assert "removed from team by alice" in said, said
    assert "removed from team by alice" in carol.ms("status").out
    # `new` into the team no longer claims it synced: nothing is written, and it says why.
    res = carol.ms("new", "Orders API", "--space", "team", check=False)
    assert res.code != 0 and "removed from team by alice" in res.err, (res.out, res.err)
    assert "synced in space" not in res.out
    assert not any(name.startswith("Orders") for name in carol.files())
    # Her copy stays, and the team's edits no longer reach it.
    alice.edit(pet, _set_title("after carol left"))
    bob.wait_doc(pet, lambda d: d["routes"][0]["documentation"] == "after carol left",
                 "alice's edit at bob")
    assert carol.doc(pet) is not None
    assert carol.doc(pet)["routes"][0]["documentation"] != "after carol left"  # type: ignore[index]


def test_a_member_leaves_and_the_admin_rotates_the_key(team: Team) -> None:
    alice, carol = team.crew(members={"alice": ["alice-laptop"], "carol": ["carol-laptop"]})
    alice.add_example("petstore")
    pet = alice.share("petstore.json")["uuid"]
    team.synced(pet, alice, carol)

    # The last admin is told she cannot leave; nothing changes.
    res = alice.ms("leave", "team", "--yes", check=False)
    assert res.code != 0 and "last admin" in res.err and "--role admin" in res.err, res.err
    assert _team_row(alice)["role"] == "admin"
    # Without --yes it asks; no answer (stdin closed) changes nothing.
    res = carol.ms("leave", "team", check=False)
    assert res.code != 0 and "leave space 'team'?" in res.text, res.text
    assert _team_row(carol)["role"] == "editor"

    out = carol.ms("leave", "team", "--yes").out
    assert "left space 'team'" in out and "local copies" in out, out
    row = _team_row(carol)
    assert row["removed"]["kind"] == "left", row
    env = carol.wait_state(pet, "left")
    assert env["reason"].startswith("left team at "), env
    assert carol.doc(pet) is not None  # the local copy stays

    # Alice's daemon learns it and rotates the key (no command on her side).
    team.wait(lambda: _team_row(alice)["key_generation"] == 2,
              "alice's daemon to rotate the key after carol left")
    members = alice.ms("members", "team", "--json").json()["members"]
    assert [m["name"] for m in members] == ["alice"]
    alice.edit(pet, _set_title("after carol left"))
    alice.wait_state(pet, "synced")
    assert carol.doc(pet)["routes"][0]["documentation"] != "after carol left"  # type: ignore[index]


def test_member_names_stay_unambiguous_and_devices_are_named(team: Team) -> None:
    alice, dave = team.crew(members={"alice": ["alice-laptop"], "dave": ["dave-laptop"]})
    # A second person also called dave: refused, told how to pick another name.
    dave2 = team.device("dave-2", "dave")
    token = team.invite(alice, "team")
    res = dave2.ms("join", token, "--timeout", "30", check=False)
    assert res.code != 0 and "already called 'dave'" in res.err, res.err
    assert "--member-name" in res.err, res.err
    # The same token, another name: admitted (the refusal did not use it up).
    out = dave2.ms("join", token, "--timeout", "30", "--member-name", "dave k").out
    assert "joined space 'team'" in out, out
    names = sorted(m["name"] for m in alice.ms("members", "team", "--json").json()["members"])
    assert names == ["alice", "dave", "dave k"], names

    # `peers` and `who` name each device beside its id.
    team.wait(lambda: any(p.get("device") == dave.id and p.get("name") == "dave-laptop"
                          for p in alice.ms("peers", "--json").json()),
              "alice's `peers` to name dave's laptop")
    peers = alice.ms("peers").out
    assert "dave-laptop" in peers, peers
    who = alice.ms("who", "--json").json()
    assert any(r.get("device") == dave.id and r.get("name") == "dave-laptop"
               and r.get("member") == "dave" for r in who), who
    assert "dave-laptop" in alice.ms("who").out

    # `space list` marks this device's own personal space (where share/new go by default).
    rows = alice.ms("space", "list", "--json").json()
    own = [r for r in rows if r["own"]]
    assert len(own) == 1 and own[0]["kind"] == "personal", rows
    assert "this device's own" in alice.ms("space", "list").out
