"""Pushing change sets over the overlay (issue 16): `relay_children`, the breadth-first tree
from an author (measured, not used by the transport: see `net.overlay`), and the session's
`relay_to`, which the transport uses so links left over from an older overlay only get
announcements."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes.chunks import Reassembler
from mocksync.net.overlay import FULL_MESH_UP_TO, anchors, relay_children
from mocksync.sync import Send, Session
from mocksync.sync.messages import Cs, Have, decode_message

from helpers.syncsupport import SPACE, FakeLog, create_ops, env_id


def team(n: int) -> list[str]:
    return [f"DEV{i:03d}-TREE" for i in range(n)]


@pytest.mark.parametrize("n", [FULL_MESH_UP_TO + 1, 12, 30, 57])
def test_the_push_tree_spans_the_team_over_overlay_links(n: int) -> None:
    devs = team(n)
    for origin in devs[:: max(1, n // 7)]:
        parents: dict[str, list[str]] = {d: [] for d in devs}
        for me in devs:
            children = relay_children(origin, me, devs)
            assert children is not None
            for child in children:
                assert child in anchors(me, devs), "pushed only over overlay links"
                parents[child].append(me)
        assert parents[origin] == []
        assert all(len(parents[d]) == 1 for d in devs if d != origin), "one push each"
        reached, todo = {origin}, [origin]
        while todo:  # and from the author the pushes reach everyone
            me = todo.pop()
            for child in relay_children(origin, me, devs) or ():
                assert child not in reached
                reached.add(child)
                todo.append(child)
        assert reached == set(devs)


def test_no_tree_in_a_full_mesh_or_for_an_author_not_online() -> None:
    small = team(FULL_MESH_UP_TO)
    assert relay_children(small[0], small[1], small) is None
    big = team(12)
    assert relay_children("DEV999-GONE", big[0], big) is None
    assert relay_children(big[3], big[0], big) is not None


def _sent_after_relay(relay_to, author: str = "DEV-C") -> set[type]:
    """What session A sends B once it applied `author`'s change set, on a relaying link."""
    env = env_id(1)
    third = FakeLog(author, Ed25519PrivateKey.generate())
    cs = third.commit(SPACE, env, create_ops(env), 1)
    a = Session("DEV-A", [(SPACE, env)], FakeLog("DEV-X", Ed25519PrivateKey.generate()),
                relay_push=True)
    b = Session("DEV-B", [(SPACE, env)], FakeLog("DEV-Y", Ed25519PrivateKey.generate()))
    pending = a.start(0) + b.start(0)
    for _ in range(6):  # hello and have both ways
        nxt = []
        for ev in pending:
            if isinstance(ev, Send):
                nxt += (b if ev.link is a else a).receive_data(ev.data, 0)
        pending = nxt
    events = a.local_changeset(SPACE, env, author, 1, cs.encode(), 10,
                               relay_to=relay_to) + a.tick(1000)
    reasm = Reassembler()
    return {type(decode_message(m)) for ev in events if isinstance(ev, Send)
            if (m := reasm.feed(ev.data)) is not None}


def test_a_child_gets_the_change_set_pushed_and_another_neighbour_an_announcement() -> None:
    pushed = _sent_after_relay(lambda peer: peer == "DEV-B")
    assert Cs in pushed and Have not in pushed
    told = _sent_after_relay(lambda peer: False)
    assert Cs not in told and Have in told
    assert Cs in _sent_after_relay(None)  # no tree: pushed as before


def test_our_own_edit_is_pushed_only_where_relay_to_says() -> None:
    """A link left over from an older overlay gets only announcements of our edits too, so
    the change sets it carries do not keep it open."""
    assert Cs in _sent_after_relay(lambda peer: True, author="DEV-A")
    told = _sent_after_relay(lambda peer: False, author="DEV-A")
    assert Cs not in told and Have in told
