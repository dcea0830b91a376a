"""Membership gossip inside a sync session (issue 16): heads at hello, the entries the other
side lacks, live growth, limits. Pure: two sans-IO sessions wired back to back, made-up logs."""

from __future__ import annotations

import hashlib

import pytest

from mocksync.sync import Closed, Members, Send, Session
from mocksync.sync.membership import (
    MAX_HEADS,
    MLOG_BATCH_BYTES,
    LogItem,
    batches,
    heads_of,
    missing_for,
)
from mocksync.sync.messages import MLog, encode_message

from helpers.syncsupport import SPACE, SPACE2, FakeLog


def _src() -> FakeLog:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return FakeLog("DEV-X", Ed25519PrivateKey.generate())


def item(name: str, *parents: LogItem) -> LogItem:
    wire = f"entry:{name}".encode()
    return LogItem(hashlib.sha256(wire).digest(), tuple(p.hash for p in parents), wire)


G = item("genesis")
A1 = item("a1", G)
B1 = item("b1", G)
M = item("merge", A1, B1)


class Logs:
    """A MembershipSource over plain lists; `learn` plays the transport storing entries."""

    def __init__(self, **logs: list[LogItem]) -> None:
        self.logs = {SPACE if k == "s1" else SPACE2: list(v) for k, v in logs.items()}
        self.by_wire = {i.wire: i for log in self.logs.values() for i in log}

    def log(self, space: str) -> list[LogItem]:
        return self.logs.get(space, [])

    def hash_of(self, wire: bytes) -> bytes | None:
        known = self.by_wire.get(wire)
        return known.hash if known else hashlib.sha256(wire).digest()

    def learn(self, space: str, wires: tuple[bytes, ...], catalogue: dict[bytes, LogItem]) -> int:
        have = {i.hash for i in self.log(space)}
        fresh = [catalogue[w] for w in wires if catalogue[w].hash not in have]
        self.logs.setdefault(space, []).extend(fresh)
        for f in fresh:
            self.by_wire[f.wire] = f
        return len(fresh)


CATALOGUE = {i.wire: i for i in (G, A1, B1, M)}


class Pair:
    def __init__(self, a: Logs, b: Logs, spaces=(SPACE,), spaces_b=None) -> None:
        self.logs = {"A": a, "B": b}
        self.s = {
            "A": Session("DEV-A", (), _src(), spaces=spaces, membership=a),
            "B": Session("DEV-B", (), _src(), spaces=spaces_b or spaces, membership=b),
        }
        self.members: dict[str, list[Members]] = {"A": [], "B": []}
        self.closed: dict[str, str] = {}
        self.sent_entries = {"A": 0, "B": 0}

    def run(self, who: str, events) -> None:
        other = "B" if who == "A" else "A"
        for ev in events:
            if isinstance(ev, Send):
                self.run(other, self.s[other].receive_data(ev.data, 0))
            elif isinstance(ev, Members):
                self.members[who].append(ev)
                self.sent_entries[other] += len(ev.wires)
                if self.logs[who].learn(ev.space, ev.wires, CATALOGUE):
                    self.run(who, self.s[who].membership_changed(ev.space, 0))
            elif isinstance(ev, Closed):
                self.closed[who] = ev.reason

    def start(self) -> Pair:
        self.run("A", self.s["A"].start(0))
        self.run("B", self.s["B"].start(0))
        return self


def hashes(logs: Logs, space: str = SPACE) -> set[bytes]:
    return {i.hash for i in logs.log(space)}


def test_pure_helpers() -> None:
    log = [G, A1, B1, M]
    assert heads_of(log) == (M.hash,)
    assert heads_of([G, A1, B1]) == (A1.hash, B1.hash)
    assert missing_for(log, [A1.hash]) == [B1, M]
    assert missing_for(log, [M.hash]) == []
    assert missing_for(log, [b"\x09" * 32]) == log  # an unknown head covers nothing we know
    many = [item(f"h{i}", G) for i in range(MAX_HEADS + 5)]
    assert len(heads_of([G, *many])) == MAX_HEADS
    big = [b"x" * (MLOG_BATCH_BYTES // 2 + 1)] * 3
    assert [len(b) for b in batches(big)] == [1, 1, 1]
    assert batches([]) == []


def test_the_side_behind_gets_what_it_lacks_at_hello() -> None:
    a, b = Logs(s1=[G, A1]), Logs(s1=[G])
    p = Pair(a, b).start()
    assert hashes(b) == {G.hash, A1.hash}
    assert [m.wires for m in p.members["B"]] == [(A1.wire,)]
    # B cannot tell what A's unknown head covers, so it may repeat what A has: never more.
    assert all(set(m.wires) <= {G.wire} for m in p.members["A"])
    assert not p.closed


def test_diverged_logs_end_equal_both_ways() -> None:
    a, b = Logs(s1=[G, A1]), Logs(s1=[G, B1])
    p = Pair(a, b).start()
    assert hashes(a) == hashes(b) == {G.hash, A1.hash, B1.hash}
    assert p.sent_entries["A"] <= 2 and p.sent_entries["B"] <= 2


def test_growth_during_the_session_reaches_the_peer_once() -> None:
    a, b = Logs(s1=[G]), Logs(s1=[G])
    p = Pair(a, b).start()
    assert p.members == {"A": [], "B": []}
    a.logs[SPACE].append(A1)
    p.run("A", p.s["A"].membership_changed(SPACE, 0))
    assert hashes(b) == {G.hash, A1.hash}
    assert p.sent_entries == {"A": 1, "B": 0}  # not echoed back to A


def test_a_peer_that_only_has_heads_we_lack_is_asked_by_our_heads() -> None:
    """B tells A heads A does not know (mheads): A answers with its own, B sends the rest."""
    a, b = Logs(s1=[G]), Logs(s1=[G])
    p = Pair(a, b).start()
    b.logs[SPACE] += [B1]
    from mocksync.sync.messages import MHeads

    p.run("A", p.s["A"].receive_data(_frame(MHeads(SPACE, (B1.hash,))), 0))
    assert hashes(a) == {G.hash, B1.hash}


def test_spaces_only_one_side_gossips_are_left_alone() -> None:
    a, b = Logs(s1=[G, A1]), Logs(s1=[G])
    p = Pair(a, b, spaces=(SPACE, SPACE2), spaces_b=(SPACE2,)).start()
    assert hashes(b) == {G.hash}  # B does not hold SPACE with A: never sent
    assert not p.closed


def test_entries_for_a_space_not_gossiped_break_the_protocol() -> None:
    a, b = Logs(s1=[G]), Logs(s1=[G])
    p = Pair(a, b).start()
    p.run("A", p.s["A"].receive_data(_frame(MLog(SPACE2, (b"x",), True)), 0))
    assert "does not exchange" in p.closed["A"]


def test_an_answer_over_the_pending_limit_closes_the_session(monkeypatch) -> None:
    import mocksync.sync.session as session_mod

    monkeypatch.setattr(session_mod, "MAX_PENDING_ENTRIES", 3)
    a, b = Logs(s1=[G]), Logs(s1=[G])
    p = Pair(a, b).start()
    p.run("A", p.s["A"].receive_data(_frame(MLog(SPACE, (b"1", b"2"), False)), 0))
    assert not p.closed
    p.run("A", p.s["A"].receive_data(_frame(MLog(SPACE, (b"3", b"4"), True)), 0))
    assert "over the limit" in p.closed["A"]
    assert p.members["A"] == []


_IDS = iter(range(1000, 2000))


def _frame(msg) -> bytes:
    from mocksync.changes.chunks import split

    frames = split(next(_IDS), encode_message(msg), 16 * 1024)
    assert len(frames) == 1
    return frames[0]


@pytest.mark.parametrize("space", [SPACE])
def test_no_membership_source_sends_no_entries(space: str) -> None:
    s1 = Session("DEV-A", (), _src(), spaces=(space,))
    s2 = Session("DEV-B", (), _src(), spaces=(space,))
    out = []
    for ev in s1.start(0):
        out += s2.receive_data(ev.data, 0)
    out += s2.start(0)
    assert not [e for e in out if isinstance(e, Members | Closed)]


@pytest.mark.parametrize("relay_push", [False, True])
def test_a_sparse_overlay_link_pushes_relayed_change_sets(relay_push: bool) -> None:
    """On an overlay link (relay_push) a change set received from a third device goes to the
    peer at once; in a full mesh it is only announced (the peer pulls it if it lacks it)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mocksync.sync.messages import Cs, Have, decode_message

    from helpers.syncsupport import create_ops, env_id

    env = env_id(1)
    third = FakeLog("DEV-C", Ed25519PrivateKey.generate())
    cs = third.commit(SPACE, env, create_ops(env), 1)
    a = Session("DEV-A", [(SPACE, env)], _src(), relay_push=relay_push)
    b = Session("DEV-B", [(SPACE, env)], _src())
    pending = a.start(0) + b.start(0)
    for _ in range(6):  # hello and have both ways
        nxt = []
        for ev in pending:
            if isinstance(ev, Send):
                target = b if ev.link is a else a
                nxt += target.receive_data(ev.data, 0)
        pending = nxt
    from mocksync.changes.chunks import Reassembler

    events = a.local_changeset(SPACE, env, "DEV-C", 1, cs.encode(), 10) + a.tick(1000)
    reasm = Reassembler()
    sent = [decode_message(m) for ev in events if isinstance(ev, Send)
            if (m := reasm.feed(ev.data)) is not None]
    kinds = {type(m) for m in sent}
    assert (Cs in kinds) is relay_push
    assert (Have in kinds) is not relay_push
