"""Journey: who may bring people in. Alice (admin) runs the space; Bob is an editor.

An editor cannot invite or remove anyone; an admin can. A new member joins with a one-time
token and receives the team's environments; the same token used again, or used after it
expired, is refused with a sentence that says what to do.
"""

from __future__ import annotations

from typing import Any

from .harness import Device, Team

#: Seconds the joining device's clock is moved ahead to use a one-minute token too late.
LATER_S = 180


def member_names(dev: Device, space: str = "team") -> set[str]:
    doc: dict[str, Any] = dev.ms("members", space, "--json").json()
    return {m["name"] for m in doc["members"]}


def test_invites_and_roles(team: Team) -> None:
    # A team of its own: removing a member rotates the space key, which journeys sharing the
    # session's crew must not have to live through.
    laptop, bob = team.crew(members={"alice": ["alice-laptop"], "bob": ["bob-laptop"]})
    laptop.add_example("chat-websocket", "welcome.json")
    env = laptop.share("welcome.json")["uuid"]

    # Bob is an editor: he can neither invite nor remove, and is told so.
    res = bob.ms("invite", "team", check=False)
    assert res.code == 1 and "only an admin" in res.err and "invite" in res.err, res.err
    assert res.out == ""  # no token printed
    res = bob.ms("remove", "team", "alice", check=False)
    assert res.code == 1 and "only an admin" in res.err, res.err
    assert "alice" in member_names(laptop)

    # Alice invites Dave; Dave joins as an editor and gets the team's environments.
    dave = team.device("dave-laptop", "dave")
    token = team.invite(laptop, "team")
    out = dave.ms("join", token, "--timeout", "30").out
    assert "joined space 'team'" in out and "as editor" in out, out
    dave.start()
    team.synced(env, laptop, dave)
    team.wait(lambda: "dave" in member_names(bob), "dave in Bob's `members team`")

    # Eve tries Dave's token: already used, and the sentence says so.
    eve = team.device("eve-laptop", "eve")
    res = eve.ms("join", token, "--timeout", "20", check=False)
    assert res.code != 0 and "already used" in res.err and "ask an admin" in res.err, res.err

    # A one-minute token used three minutes later: expired, refused at once.
    late = team.invite(laptop, "team", expires="1m")
    res = eve.ms("join", late, "--timeout", "20", check=False, clock_shift_s=LATER_S)
    assert res.code != 0 and "expired" in res.err and "ask an admin" in res.err, res.err
    assert [s["kind"] for s in eve.ms("space", "list", "--json").json()] == ["personal"]

    # Alice makes Eve an admin; an admin can invite and remove.
    res = eve.ms("join", team.invite(laptop, "team", role="admin"), "--timeout", "30")
    assert "as admin" in res.out, res.out
    assert team.invite(eve, "team").startswith("mocksync")
    # ...but not itself: the key rotation needs a signer that stays. It says whom to ask, in
    # words (it named a refused `rotate_key` entry), and changes nothing.
    for target in (eve.id, "eve"):
        res = eve.ms("remove", "team", target, check=False)
        assert res.code == 1 and "cannot remove" in res.err, res.err
        assert "another admin device" in res.err and "rotate_key" not in res.err, res.err
    assert "eve" in member_names(eve)
    laptop.ms("remove", "team", "dave")
    team.wait(lambda: "dave" not in member_names(bob), "dave gone from Bob's `members team`")
    assert member_names(laptop) >= {"alice", "bob", "eve"}
