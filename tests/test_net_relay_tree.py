"""Pushing change sets over the overlay (issue 16): the session's `relay_to`, which the
transport uses so links left over from an older overlay only get announcements (a push tree
from the author was measured and dropped: see `net.overlay`)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes.chunks import Reassembler
from mocksync.sync import Send, Session
from mocksync.sync.messages import Cs, Have, decode_message

from helpers.syncsupport import SPACE, FakeLog, create_ops, env_id


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
