"""Membership travels through the relay: a device added (or removed) while a member is away
is known to that member as soon as it connects, so their change sets are accepted (or refused).
"""

from __future__ import annotations

import copy

from mocksync.devtools.pairing import pair
from mocksync.spaceio.actions import create_space, remove
from mocksync.spaceio.store import get_space

from envfactory import small_env
from helpers.relaylab import Lab, share, take, until


def _connected(t) -> bool:
    return t.status()["relay"]["state"] == "connected"


async def test_a_device_added_later_is_learned_from_the_relay(lab: Lab) -> None:
    alice, carol, bob = lab.device("alice"), lab.device("carol"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    space = pair(alice.home, carol.home, "team")
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    c, tc = await lab.agent(carol)
    await until(lambda: _connected(ta) and _connected(tc), what="alice and carol connected")
    doc = small_env()
    share(a, doc, space)
    await until(lambda: doc["uuid"] in c.envs, what="carol has the env")
    # Bob joins while carol is online; carol's copy of the log does not have him yet.
    pair(alice.home, bob.home, "team")
    assert not get_space(carol.home, "team").state.is_member(bob.identity.device_id)
    await ta.push_logs()
    b, tb = await lab.agent(bob)
    await until(lambda: doc["uuid"] in b.envs, what="bob has the env")
    await until(lambda: get_space(carol.home, "team").state.is_member(bob.identity.device_id),
                what="carol learns bob from the relay")
    edited = copy.deepcopy(doc)
    edited["routes"][0]["responses"][0]["label"] = "from bob"
    p = b.envs[doc["uuid"]].path
    import json

    p.write_text(json.dumps(edited, indent=2))
    await take(b, p)
    await until(lambda: "from bob" in c.envs[doc["uuid"]].path.read_text(),
                what="bob's edit reaches carol")
    assert c.store.rejected() == []


async def test_a_removal_is_learned_from_the_relay(lab: Lab) -> None:
    alice, carol, bob = lab.device("alice"), lab.device("carol"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    space = pair(alice.home, carol.home, "team")
    pair(alice.home, bob.home, "team")
    await lab.start_relay()
    a, ta = await lab.agent(alice)
    await until(lambda: _connected(ta), what="alice connected")
    remove(alice.home, alice.identity, "team", bob.identity.device_id)
    await ta.push_logs()
    c, tc = await lab.agent(carol)
    await until(lambda: not get_space(carol.home, "team").state.is_member(bob.identity.device_id),
                what="carol learns that bob was removed")
    await until(lambda: _connected(tc) and space in tc.client.accepted,
                what=f"carol (still a member) connected to the space: {tc.status()['relay']}")
    # Carol also received the rotated content key sealed to her.
    stored = get_space(carol.home, "team")
    assert stored.state.key_generation in stored.keys
