"""Forwarding before applying (issue 16): on a sparse overlay link a change set received from
elsewhere is passed on as soon as it arrives, the bytes unchanged, and the later
`local_changeset` (once the store applied it) sends nothing twice."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes.chunks import Reassembler
from mocksync.sync import Hub, Send, Session
from mocksync.sync.messages import Cs, decode_message

from helpers.syncsupport import SPACE, FakeLog, create_ops, env_id

ENV = env_id(1)


def _src() -> FakeLog:
    return FakeLog("DEV-X", Ed25519PrivateKey.generate())


def _opened(relay_push: bool = True) -> tuple[Session, Session]:
    """A (ours, relay_push as given) and B (the peer), past hello and have both ways."""
    a = Session("DEV-A", [(SPACE, ENV)], _src(), relay_push=relay_push)
    b = Session("DEV-B", [(SPACE, ENV)], _src())
    pending = a.start(0) + b.start(0)
    for _ in range(6):
        nxt = []
        for ev in pending:
            if isinstance(ev, Send):
                nxt += (b if ev.link is a else a).receive_data(ev.data, 0)
        pending = nxt
    return a, b


def _sent(events: list) -> list:
    reasm = Reassembler()
    return [decode_message(m) for ev in events if isinstance(ev, Send)
            if (m := reasm.feed(ev.data)) is not None]


def _chain(n: int) -> list[bytes]:
    third = FakeLog("DEV-C", Ed25519PrivateKey.generate())
    wires = [third.commit(SPACE, ENV, create_ops(ENV), 1).encode()]
    for _ in range(n - 1):
        wires.append(third.commit(SPACE, ENV, [], 1).encode())
    return wires


def test_a_received_change_set_is_forwarded_unchanged_and_not_sent_again_once_applied() -> None:
    a, _b = _opened()
    wire = _chain(1)[0]
    cs = [m for m in _sent(a.forward(SPACE, ENV, "DEV-C", 1, wire, 5)) if isinstance(m, Cs)]
    assert [(m.device, m.seq, bytes(m.wire)) for m in cs] == [("DEV-C", 1, wire)]
    # The store applied it: the usual path finds it in flight and sends nothing more.
    after = _sent(a.local_changeset(SPACE, ENV, "DEV-C", 1, None, 6))
    assert not [m for m in after if isinstance(m, Cs)]


def test_no_forwarding_in_a_full_mesh() -> None:
    a, _b = _opened(relay_push=False)
    assert a.forward(SPACE, ENV, "DEV-C", 1, _chain(1)[0], 5) == []


def test_only_the_next_set_the_peer_lacks_is_forwarded() -> None:
    a, _b = _opened()
    wires = _chain(2)
    assert a.forward(SPACE, ENV, "DEV-C", 2, wires[1], 5) == []  # the peer lacks #1
    assert [m.seq for m in _sent(a.forward(SPACE, ENV, "DEV-C", 1, wires[0], 5))
            if isinstance(m, Cs)] == [1]
    assert [m.seq for m in _sent(a.forward(SPACE, ENV, "DEV-C", 2, wires[1], 6))
            if isinstance(m, Cs)] == [2]
    assert a.forward(SPACE, ENV, "DEV-C", 1, wires[0], 7) == []  # never twice


def test_nothing_is_forwarded_to_its_author_or_as_our_own() -> None:
    a, _b = _opened()
    assert a.forward(SPACE, ENV, "DEV-B", 1, _chain(1)[0], 5) == []
    assert a.forward(SPACE, ENV, "DEV-A", 1, _chain(1)[0], 5) == []


def test_forwarding_records_nothing_as_held_here() -> None:
    a, _b = _opened()
    a.forward(SPACE, ENV, "DEV-C", 1, _chain(1)[0], 5)
    assert a._mine[(SPACE, ENV)].get("DEV-C", 0) == 0  # held only once the store applied it


def test_the_hub_forwards_to_every_session_but_the_one_it_came_from() -> None:
    hub = Hub("DEV-A", _src())
    wire = _chain(1)[0]
    peers = {}
    pending = []
    for name in ("DEV-B", "DEV-D"):
        peers[name] = Session(name, [(SPACE, ENV)], _src())
        pending += hub.open(name, [(SPACE, ENV)], 0, relay_push=True)
        pending += peers[name].start(0)
    for _ in range(6):
        nxt = []
        for ev in pending:
            if not isinstance(ev, Send):
                continue
            if ev.link in peers:  # hub -> peer
                nxt += [e for e in peers[ev.link].receive_data(ev.data, 0)]
            else:  # peer -> hub (a peer session's link is the session itself)
                name = next(n for n, s in peers.items() if s is ev.link)
                nxt += hub.receive_data(name, ev.data, 0)
        pending = nxt
    out = hub.forward("DEV-B", SPACE, ENV, "DEV-C", 1, wire, 5)
    to = {ev.link for ev in out if isinstance(ev, Send)}
    assert to == {"DEV-D"}
