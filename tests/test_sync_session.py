"""One session pair over a pipe the test controls: handshake, version gate, push, pull, flow
control, resends, anti-entropy, heartbeat, dead peers, presence, refusals, bad input."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync import PROTOCOL_VERSION
from mocksync.changes import HEADER_SIZE, Reassembler, make_changeset, split
from mocksync.errors import ValidationError
from mocksync.model import validate_ops
from mocksync.store import Store
from mocksync.sync import (
    Closed,
    Config,
    Cs,
    Deliver,
    Have,
    Hello,
    Hub,
    Opened,
    PeerPresence,
    Ping,
    Send,
    Session,
    StoreSource,
    Want,
    decode_message,
    encode_message,
)
from mocksync.sync.messages import Ack, Bye, Nack, Pong, Presence

from helpers.syncsupport import SPACE, SPACE2, FakeLog, create_ops, env_id, pub, set_ops

E1, E2, E3 = env_id(1), env_id(2), env_id(3)


class Duo:
    """Sessions A (device DEV-A) and B (DEV-B); frames wait in queues until `flow`."""

    def __init__(self, envs_a, envs_b=None, *, config: Config | None = None,
                 b_kwargs: dict | None = None, start: bool = True) -> None:
        self.now = 1_000
        self.logs = {"A": FakeLog("DEV-A", Ed25519PrivateKey.generate()),
                     "B": FakeLog("DEV-B", Ed25519PrivateKey.generate())}
        self.keys = {"DEV-A": pub(self.logs["A"].key), "DEV-B": pub(self.logs["B"].key)}
        cfg = config or Config()
        self.s = {
            "A": Session("DEV-A", envs_a, self.logs["A"], link="A", config=cfg),
            "B": Session("DEV-B", envs_a if envs_b is None else envs_b, self.logs["B"],
                         link="B", config=cfg, **(b_kwargs or {})),
        }
        self.queue: dict[str, list[bytes]] = {"A": [], "B": []}  # frames waiting for A / B
        self.seen: dict[str, list] = {"A": [], "B": []}  # messages each side received
        self.events: dict[str, list] = {"A": [], "B": []}  # non-Send events each side emitted
        self.sent: dict[str, list] = {"A": [], "B": []}  # messages each side sent
        self._obs = {"A": Reassembler(), "B": Reassembler()}
        if start:
            self.take("A", self.s["A"].start(self.now))
            self.take("B", self.s["B"].start(self.now))

    @property
    def a(self) -> Session:
        return self.s["A"]

    @property
    def b(self) -> Session:
        return self.s["B"]

    def take(self, side: str, events: list) -> None:
        other = "B" if side == "A" else "A"
        for ev in events:
            if isinstance(ev, Send):
                self.queue[other].append(ev.data)
                payload = self._obs[side].feed(ev.data)
                if payload is not None:
                    self.sent[side].append(decode_message(payload))
            elif isinstance(ev, Deliver):
                self.events[side].append(ev)
                log = self.logs[side]
                _, applied = log.ingest(ev.wire, self.keys[ev.device], self.now)
                for cs in applied:
                    self.take(side, self.s[side].local_changeset(
                        cs.space, cs.env, cs.device, cs.seq, cs.encode(), self.now))
                self.take(side, self.s[side].delivered(ev, self.now))
            else:
                self.events[side].append(ev)

    def flow(self, *, drop: Callable[[str, object], bool] = lambda side, msg: False,
             only: str | None = None, rounds: int = 100) -> None:
        """Deliver queued frames (to `only`, or both sides) until nothing is left."""
        for _ in range(rounds):
            moved = False
            for side in ("A", "B") if only is None else (only,):
                frames, self.queue[side] = self.queue[side], []
                for frame in frames:
                    moved = True
                    msg = _peek(frame)
                    if drop(side, msg):
                        continue
                    if msg is not None:
                        self.seen[side].append(msg)
                    self.take(side, self.s[side].receive_data(frame, self.now))
            if not moved:
                return

    def tick(self, ms: int) -> None:
        self.now += ms
        for side in ("A", "B"):
            self.take(side, self.s[side].tick(self.now))

    def run(self, ms: int, step: int = 500) -> None:
        """Let `ms` pass with frames flowing (a healthy link)."""
        end = self.now + ms
        while self.now < end:
            self.tick(min(step, end - self.now))
            self.flow()

    def commit(self, side: str, env: str, ops: list | None = None, space: str = SPACE):
        log = self.logs[side]
        cs = log.commit(space, env, ops or set_ops(env, f"v{self.now}"), self.now)
        self.take(side, self.s[side].local_changeset(space, env, cs.device, cs.seq,
                                                     cs.encode(), self.now))
        return cs

    def of(self, side: str, kind: type, sent: bool = False) -> list:
        return [m for m in (self.sent if sent else self.seen)[side] if isinstance(m, kind)]


def _peek(frame: bytes):
    """The message in a single-frame payload (None for one frame of a larger message)."""
    if int.from_bytes(frame[13:17], "big") != 1:
        return None
    try:
        return decode_message(frame[HEADER_SIZE:])
    except Exception:
        return None


# ------------------------------------------------------------------------------- handshake


def test_handshake_shares_the_intersection_and_nothing_else():
    duo = Duo([(SPACE, E1), (SPACE, E2), (SPACE2, E3)], [(SPACE, E1), (SPACE2, E3)])
    duo.flow()
    assert duo.a.state == duo.b.state == "open"
    assert duo.a.shared == duo.b.shared == {(SPACE, E1), (SPACE2, E3)}
    opened = [e for e in duo.events["A"] if isinstance(e, Opened)]
    assert opened == [Opened("A", "DEV-B", frozenset({(SPACE, E1), (SPACE2, E3)}))]
    assert {(m.space, m.env) for m in duo.of("B", Have)} == {(SPACE, E1), (SPACE2, E3)}
    # E2 is listed in A's hello (same space) but B never hears anything else about it
    duo.commit("A", E2)
    duo.flow()
    assert not [m for m in duo.seen["B"] if getattr(m, "env", None) == E2]


def test_envs_of_other_spaces_never_reach_the_peer():
    # The caller passes only envs of spaces the peer is in; the session keeps it that way for
    # edits, announcements and presence in other envs.
    duo = Duo([(SPACE, E1)], [(SPACE, E1)])
    duo.flow()
    hidden = env_id(99)
    log = duo.logs["A"]
    cs = log.commit(SPACE2, hidden, set_ops(hidden, "secret"), duo.now)
    duo.take("A", duo.a.local_changeset(SPACE2, hidden, "DEV-A", cs.seq, cs.encode(), duo.now))
    duo.take("A", duo.a.set_presence(SPACE2, hidden, "ent-1", "mockoon", duo.now))
    duo.run(60_000)
    everything = b"".join(duo.queue["B"]) + b"".join(encode_message(m) for m in duo.seen["B"]
                                                     if not isinstance(m, Cs))
    assert hidden.encode() not in everything and SPACE2.encode() not in everything
    assert all(m.wire != cs.encode() for m in duo.of("B", Cs))
    assert duo.b.peer_presence == PeerPresence("B", "DEV-A", None, None, None, "mockoon")


@pytest.mark.parametrize("field, value, theirs", [
    ("protocol", PROTOCOL_VERSION + 1, "speaks protocol"),
    ("model", 2, "uses register model"),
])
def test_incompatible_versions_close_with_an_actionable_reason(field, value, theirs):
    duo = Duo([(SPACE, E1)], b_kwargs={field: value})
    duo.flow()
    assert duo.a.closed and duo.b.closed
    assert duo.a.closed_reason == (
        f"incompatible version: peer DEV-B {theirs} {value}, this device {value - 1}; "
        "update mocksync on this device")
    assert duo.b.closed_reason == (
        f"incompatible version: peer DEV-A {theirs} {value - 1}, this device {value}; "
        "update mocksync on device DEV-A")
    assert duo.a.status()["closed_reason"] == duo.a.closed_reason
    assert [e.reason for e in duo.events["A"] if isinstance(e, Closed)] == [duo.a.closed_reason]
    assert not duo.of("B", Have) and not duo.of("A", Have)


def test_peer_must_be_the_authenticated_device_and_not_ourselves():
    duo = Duo([(SPACE, E1)])
    duo.s["A"] = Session("DEV-A", [(SPACE, E1)], duo.logs["A"], link="A", expect_device="DEV-Z")
    duo.take("A", duo.a.start(duo.now))
    duo.flow()
    assert duo.a.closed and "authenticated as device DEV-Z" in duo.a.closed_reason
    assert "closed the session" in duo.b.closed_reason
    me = Session("DEV-A", [(SPACE, E1)], duo.logs["A"], link="me")
    (frame,) = [e.data for e in me.start(0) if isinstance(e, Send)]
    me.receive_data(frame, 1)
    assert me.closed and "connected to itself" in me.closed_reason


def test_bad_arguments_are_refused():
    with pytest.raises(ValidationError):
        Session("bad id", [(SPACE, E1)], FakeLog("x", Ed25519PrivateKey.generate()))
    with pytest.raises(ValidationError):
        Session("DEV-A", [("nothex", E1)], FakeLog("x", Ed25519PrivateKey.generate()))


def test_a_lost_hello_is_sent_again_and_early_messages_wait_for_it():
    duo = Duo([(SPACE, E1)])
    duo.commit("A", E1, create_ops(E1))
    # A's first hello is lost; B's arrives, so A opens and its `have` reaches B before any
    # hello from A does: B must keep it, not drop it.
    duo.flow(drop=lambda side, msg: side == "B" and isinstance(msg, Hello))
    assert duo.a.state == "open" and duo.b.state == "connecting"
    assert duo.of("B", Hello) == []
    duo.tick(Config().resend_after_ms)
    duo.flow()
    assert duo.b.state == "open"
    assert duo.logs["B"].version_vector(SPACE, E1) == {"DEV-A": 1}


# ------------------------------------------------------------------------------- moving change sets


def test_a_live_edit_is_one_message_and_is_acknowledged():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    before = len(duo.sent["A"])
    duo.commit("A", E1, create_ops(E1))
    assert [type(m) for m in duo.sent["A"][before:]] == [Cs]
    duo.flow()
    assert duo.logs["B"].version_vector(SPACE, E1) == {"DEV-A": 1}
    assert duo.of("A", Ack)[-1].vv == {"DEV-A": 1}
    assert duo.a.status()["inflight"] == 0
    assert duo.a.peer_vv(SPACE, E1) == {"DEV-A": 1}


def test_received_changes_are_announced_not_pushed_and_never_echoed():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    duo.commit("A", E1, create_ops(E1))
    duo.flow()
    # B applied A's change: telling B's session about it sends nothing back to A
    duo.now += Config().announce_coalesce_ms  # (so it is not merely held back by coalescing)
    sent = len(duo.sent["B"])
    duo.take("B", duo.b.local_changeset(SPACE, E1, "DEV-A", 1, None, duo.now))
    duo.tick(Config().announce_coalesce_ms)
    assert [m for m in duo.sent["B"][sent:] if not isinstance(m, Ping)] == []
    # a change authored by a third device is announced with a have, A pulls it with a want
    third = FakeLog("DEV-C", Ed25519PrivateKey.generate())
    duo.keys["DEV-C"] = pub(third.key)
    wire = third.commit(SPACE, E1, set_ops(E1, "c"), duo.now).encode()
    wire2 = third.commit(SPACE, E1, set_ops(E1, "d"), duo.now).encode()
    duo.now += Config().announce_coalesce_ms
    duo.logs["B"].ingest(wire, duo.keys["DEV-C"], duo.now)
    duo.take("B", duo.b.local_changeset(SPACE, E1, "DEV-C", 1, wire, duo.now))
    assert [type(m) for m in duo.sent["B"][sent:]] == [Have]
    # a second one within ANNOUNCE_COALESCE_MS waits for the next tick
    duo.logs["B"].ingest(wire2, duo.keys["DEV-C"], duo.now)
    duo.take("B", duo.b.local_changeset(SPACE, E1, "DEV-C", 2, wire2, duo.now + 5))
    assert [type(m) for m in duo.sent["B"][sent:]] == [Have]
    assert duo.b.next_tick_ms() == duo.now + Config().announce_coalesce_ms
    duo.tick(Config().announce_coalesce_ms)
    assert [m.vv for m in duo.sent["B"][sent:]] == [{"DEV-A": 1, "DEV-C": 1},
                                                     {"DEV-A": 1, "DEV-C": 2}]
    duo.flow()
    assert [m for m in duo.sent["A"] if isinstance(m, Want)] == [
        Want(SPACE, E1, "DEV-C", 0, 1), Want(SPACE, E1, "DEV-C", 1, 2)]
    assert duo.logs["A"].version_vector(SPACE, E1) == {"DEV-A": 1, "DEV-C": 2}


def test_catch_up_pulls_in_windows_and_flow_control_bounds_what_is_in_flight():
    cfg = Config(want_window=8, max_inflight_messages=3)
    duo = Duo([(SPACE, E1)], config=cfg, start=False)
    for i in range(30):
        duo.logs["A"].commit(SPACE, E1, create_ops(E1) if i == 0 else set_ops(E1, str(i)), i)
    duo.take("A", duo.a.start(duo.now))
    duo.take("B", duo.b.start(duo.now))
    # Let everything reach B, but hold B's acks: A may have at most 3 change sets out.
    duo.flow(drop=lambda side, msg: side == "A" and isinstance(msg, Ack))
    assert len(duo.of("A", Cs, sent=True)) == 3
    assert duo.a.status()["inflight"] == 3
    wants = [m for m in duo.sent["B"] if isinstance(m, Want)]
    asked = sum(w.upto - w.after for w in wants)
    assert asked - len(duo.of("B", Cs)) <= cfg.want_window  # never more than a window open
    assert duo.b.status()["requested"] == cfg.want_window
    # With acks flowing, the whole chain arrives, each change set once.
    for _ in range(40):
        duo.tick(cfg.resend_after_ms)
        duo.flow()
    assert duo.logs["B"].version_vector(SPACE, E1) == {"DEV-A": 30}
    seqs = [m.seq for m in duo.of("B", Cs)]
    assert sorted(set(seqs)) == list(range(1, 31))
    assert len([e for e in duo.events["B"] if isinstance(e, Deliver)]) == 30


def test_byte_credit_sends_one_large_set_at_a_time():
    cfg = Config(max_inflight_bytes=1)
    duo = Duo([(SPACE, E1)], config=cfg)
    duo.flow()
    for i in range(3):
        duo.commit("A", E1, create_ops(E1) if i == 0 else None)
    assert len(duo.of("A", Cs, sent=True)) == 1
    duo.flow()
    assert len(duo.of("A", Cs, sent=True)) == 3
    assert duo.logs["B"].version_vector(SPACE, E1) == {"DEV-A": 3}


def test_lost_change_sets_are_resent_then_given_up():
    cfg = Config(resend_after_ms=1_000, max_send_attempts=3, dead_after_ms=10 ** 9,
                 anti_entropy_ms=10 ** 9)
    duo = Duo([(SPACE, E1)], config=cfg)
    duo.flow()
    duo.commit("A", E1, create_ops(E1))
    duo.flow(drop=lambda side, msg: isinstance(msg, Cs))
    duo.tick(999)
    assert len(duo.of("A", Cs, sent=True)) == 1
    duo.tick(1)
    assert len(duo.of("A", Cs, sent=True)) == 2  # resent after 1 s
    duo.flow(drop=lambda side, msg: isinstance(msg, Cs))
    duo.tick(2_000)  # then after 2 s
    assert len(duo.of("A", Cs, sent=True)) == 3
    duo.flow(drop=lambda side, msg: isinstance(msg, Cs))
    duo.tick(10_000)
    assert len(duo.of("A", Cs, sent=True)) == 3 and duo.a.stats.abandoned == 1
    assert duo.a.status()["inflight"] == 0  # credit is back


def test_duplicates_are_delivered_once_and_acknowledged_each_time():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    cs = duo.commit("A", E1, create_ops(E1))
    (frame,) = duo.queue["B"]
    duo.flow()
    for _ in range(3):  # the same message again (a resend racing a slow ack)
        again = duo.a._msg_id
        duo.a._msg_id += 1
        (copy,) = split(again, encode_message(Cs.of(cs.encode())))
        duo.take("B", duo.b.receive_data(copy, duo.now))
    assert frame  # the first copy went through flow()
    assert len([e for e in duo.events["B"] if isinstance(e, Deliver)]) == 1
    assert duo.b.stats.cs_redundant == 3
    assert len([m for m in duo.sent["B"] if isinstance(m, Ack)]) == 4


def test_copies_that_cross_are_not_acknowledged_and_free_the_credit():
    """Neighbours of a sparse overlay pass a third device's change set on at about the same
    time: each copy tells its receiver the sender holds it, so neither is acknowledged
    (issue 16: every message costs both daemons DTLS, SCTP and an SCTP ack)."""
    duo = Duo([(SPACE, E1)], b_kwargs={"relay_push": True})
    duo.a.relay_push = True
    duo.flow()
    carol = FakeLog("DEV-C", Ed25519PrivateKey.generate())
    duo.keys["DEV-C"] = pub(carol.key)
    cs = carol.commit(SPACE, E1, create_ops(E1), duo.now)
    for side in ("A", "B"):  # each applied it from elsewhere and passes it on
        _, applied = duo.logs[side].ingest(cs.encode(), duo.keys["DEV-C"], duo.now)
        assert [c.seq for c in applied] == [1]
        duo.take(side, duo.s[side].local_changeset(SPACE, E1, "DEV-C", 1, None, duo.now))
    assert len(duo.of("A", Cs, sent=True)) == len(duo.of("B", Cs, sent=True)) == 1
    duo.flow()
    assert duo.a.stats.cs_redundant == duo.b.stats.cs_redundant == 1
    assert duo.of("A", Ack, sent=True) == duo.of("B", Ack, sent=True) == []
    assert duo.a.status()["inflight"] == duo.b.status()["inflight"] == 0
    assert duo.a.counts.kinds_out["cs"] == duo.a.stats.kinds_in["cs"] == 1
    duo.run(10_000)  # and nothing is resent: each knows the other holds it
    assert duo.a.stats.cs_resent == duo.b.stats.cs_resent == 0


def test_anti_entropy_heals_a_lost_have():
    cfg = Config(anti_entropy_ms=30_000, dead_after_ms=10 ** 9)
    duo = Duo([(SPACE, E1)], config=cfg, start=False)
    duo.logs["A"].commit(SPACE, E1, create_ops(E1), 1)
    duo.take("A", duo.a.start(duo.now))
    duo.take("B", duo.b.start(duo.now))
    duo.flow(drop=lambda side, msg: side == "B" and isinstance(msg, Have))
    assert duo.logs["B"].version_vector(SPACE, E1) == {}
    duo.tick(29_999)
    duo.flow()
    assert duo.logs["B"].version_vector(SPACE, E1) == {}
    duo.tick(1)
    duo.flow()
    assert duo.logs["B"].version_vector(SPACE, E1) == {"DEV-A": 1}


def test_a_refused_change_set_is_reported_and_not_asked_for_again_soon():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    duo.commit("A", E1, create_ops(E1))
    (frame,) = duo.queue["B"]
    duo.queue["B"].clear()
    (ev,) = [e for e in duo.b.receive_data(frame, duo.now) if isinstance(e, Deliver)]
    duo.take("B", duo.b.delivered(ev, duo.now, refused="device DEV-A is not a member"))
    duo.flow()
    assert duo.of("A", Nack) == [Nack(SPACE, E1, "DEV-A", 1, "device DEV-A is not a member")]
    assert duo.a.status()["refused_by_peer"][0]["reason"] == "device DEV-A is not a member"
    assert duo.a.status()["inflight"] == 0
    duo.tick(30_000)  # anti-entropy: B sees A has #1 but does not ask within the backoff
    duo.flow()
    assert not duo.of("A", Want)


def test_a_large_change_set_travels_in_frames_and_survives_a_lost_frame():
    cfg = Config(chunk_size=4096, resend_after_ms=1_000, dead_after_ms=10 ** 9)
    duo = Duo([(SPACE, E1)], config=cfg)
    duo.flow()
    big = os.urandom(30_000).hex()
    cs = duo.commit("A", E1, [create_ops(E1)[0], *set_ops(E1, big)])
    frames = list(duo.queue["B"])
    assert len(frames) > 5
    duo.queue["B"] = frames[:3] + frames[4:]  # one frame lost
    duo.flow()
    assert duo.logs["B"].version_vector(SPACE, E1) == {}
    assert duo.b.status()["stats"]["frames_in"] >= len(frames) - 1
    duo.tick(1_000 + len(cs.encode()) // 1_000)  # resent in full under a new message id
    duo.flow()
    assert duo.logs["B"].version_vector(SPACE, E1) == {"DEV-A": 1}
    duo.tick(cfg.partial_timeout_ms)
    assert duo.b._reasm.pending_count == 0  # the incomplete first copy was given up


# ------------------------------------------------------------------------------- liveness


def test_ping_pong_measures_the_round_trip():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    assert duo.a.rtt_ms is None
    duo.tick(Config().ping_interval_ms)
    duo.flow(only="B")  # B answers A's ping at once; the pong waits in A's queue
    duo.now += 37
    duo.flow(only="A")
    assert duo.a.last_rtt_ms == 37 and duo.a.rtt_ms == 37
    assert duo.a.status()["rtt_ms"] == 37


def test_one_side_of_a_pair_keeps_the_heartbeat():
    """Issue 16: the smaller device id pings on the clock; the other answers, pings once to
    learn its round trip, and then only every RTT_REFRESH_MS: one ping and one pong per
    interval per pair instead of two of each."""
    from mocksync.sync.session import RTT_REFRESH_MS

    duo = Duo([(SPACE, E1)])
    duo.flow()
    interval = Config().ping_interval_ms
    duo.run(interval * 10, step=interval // 4)
    pings_a, pings_b = len(duo.of("A", Ping, sent=True)), len(duo.of("A", Ping))
    assert pings_a >= 9 and pings_b == 1  # B pinged once (no round trip yet), then listened
    assert duo.b.rtt_ms is not None and not duo.a.closed and not duo.b.closed
    duo.run(RTT_REFRESH_MS, step=interval // 4)
    assert len(duo.of("A", Ping)) == 2  # B's round trip refreshed once, still no heartbeat


def _edits(duo: Duo, side: str, ms: int, every: int = 500) -> None:
    """`side` commits an edit every `every` ms for `ms`, frames flowing (a live edit session)."""
    end = duo.now + ms
    while duo.now < end:
        duo.commit(side, E1)
        duo.flow()
        duo.tick(every)
        duo.flow()


@pytest.mark.parametrize("editor", ["A", "B"])
def test_no_heartbeat_while_traffic_flows(editor):
    """Issue 16: while the peer's frames keep arriving (change sets one way, acks the other)
    neither side pings, except to refresh its round trip every RTT_REFRESH_MS."""
    from mocksync.sync.session import RTT_REFRESH_MS

    duo = Duo([(SPACE, E1)])
    duo.flow()
    interval = Config().ping_interval_ms
    duo.run(interval * 2, step=interval // 4)  # idle: A pings on the clock, B learns its rtt
    pings_a, pings_b = len(duo.of("B", Ping)), len(duo.of("A", Ping))
    assert pings_a >= 1 and pings_b == 1 and duo.a.rtt_ms is not None
    _edits(duo, editor, RTT_REFRESH_MS - interval * 3)
    assert len(duo.of("B", Ping)) == pings_a  # ~13 pings before the change
    assert len(duo.of("A", Ping)) == pings_b
    assert len(duo.of("A", Cs if editor == "B" else Ack)) >= 40  # traffic did flow
    _edits(duo, editor, interval * 5)  # the round trips grew RTT_REFRESH_MS old: refreshed
    assert len(duo.of("B", Ping)) == pings_a + 1 and len(duo.of("A", Pong)) == pings_a + 1
    assert len(duo.of("A", Ping)) == pings_b + 1 and len(duo.of("B", Pong)) == pings_b + 1
    assert not duo.a.closed and not duo.b.closed
    duo.run(interval * 3, step=interval // 4)  # the edits stop: A's heartbeat is back
    assert len(duo.of("B", Ping)) >= pings_a + 2


def test_a_peer_that_dies_mid_traffic_is_still_detected():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    interval = Config().ping_interval_ms
    duo.run(interval * 2, step=interval // 4)
    _edits(duo, "B", interval * 4)
    before = len(duo.of("A", Ping, sent=True))
    for _ in range(4):  # B's frames are lost from now on: A must ping again within interval
        duo.tick(interval // 2)
        duo.flow(drop=lambda side, msg: side == "A")
    assert len(duo.of("A", Ping, sent=True)) > before
    assert not duo.a.closed
    duo.tick(Config().dead_after_ms - interval * 2)
    assert duo.a.dead and "went silent" in (duo.a.closed_reason or "")


def test_the_quiet_side_pings_when_the_pinging_side_goes_silent():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    interval = Config().ping_interval_ms
    duo.run(interval * 3, step=interval // 4)
    before = len(duo.of("B", Ping, sent=True))
    for _ in range(4):  # A's frames are lost from now on: B must take over the pinging
        duo.tick(interval // 2)
        duo.flow(drop=lambda side, msg: side == "B")
    assert len(duo.of("B", Ping, sent=True)) > before
    duo.tick(Config().dead_after_ms)
    assert duo.b.dead  # and the silence still ends the session as before


def test_silence_closes_the_session_as_dead():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    duo.tick(9_999)
    assert not duo.a.closed
    duo.queue = {"A": [], "B": []}
    duo.tick(1)  # nothing received for 10 s (the pings of the last tick were lost)
    assert duo.a.dead and duo.a.closed
    assert "went silent for 10 s: connection presumed dead" in duo.a.closed_reason
    lonely = Session("DEV-A", [(SPACE, E1)], duo.logs["A"])
    lonely.start(0)
    assert lonely.next_tick_ms() <= Config().dead_after_ms
    lonely.tick(Config().dead_after_ms)
    assert lonely.dead and "sent nothing" in lonely.closed_reason


def test_next_tick_is_always_in_the_future_after_a_tick():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    duo.commit("A", E1, create_ops(E1))
    for step in (0, 1, 19, 500, 2_000, 5_000, 9_000, 9_000, 9_000):
        duo.tick(step)
        duo.flow()
        for s in (duo.a, duo.b):
            assert s.next_tick_ms() > duo.now


# ------------------------------------------------------------------------------- presence, bye, bad input


def test_presence_is_sent_on_open_and_on_change():
    duo = Duo([(SPACE, E1)], start=False)
    duo.take("A", duo.a.set_presence(SPACE, E1, "route-1", "mockoon", duo.now))
    duo.take("A", duo.a.start(duo.now))
    duo.take("B", duo.b.start(duo.now))
    duo.flow()
    assert duo.b.peer_presence == PeerPresence("B", "DEV-A", SPACE, E1, "route-1", "mockoon")
    duo.take("A", duo.a.set_presence(None, None, None, "mockoon", duo.now))
    duo.flow()
    assert duo.b.peer_presence.env is None
    assert duo.b.status()["presence"]["editor"] == "mockoon"
    assert [e for e in duo.events["B"] if isinstance(e, PeerPresence)][-1] == duo.b.peer_presence


def test_close_says_why_to_the_peer():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    duo.take("A", duo.a.close("space left by the user", duo.now))
    duo.flow()
    assert duo.of("B", Bye) == [Bye("space left by the user")]
    assert duo.b.closed_reason == "peer DEV-A closed the session: space left by the user"
    assert duo.a.receive_data(b"anything", duo.now) == []


def test_peer_text_shown_to_people_has_no_control_characters():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    (frame,) = split(900, encode_message(Presence(None, None, None, "ed\x1b[2Jitor")))
    duo.take("B", duo.b.receive_data(frame, duo.now))
    assert duo.b.peer_presence.editor == "ed?[2Jitor"
    (frame,) = split(901, encode_message(Bye("bad\x1b]0;title\x07 peer")))
    duo.b.receive_data(frame, duo.now)
    assert duo.b.closed_reason == "peer DEV-A closed the session: bad?]0;title? peer"


def test_config_is_checked():
    with pytest.raises(ValidationError, match="chunk_size"):
        Config(chunk_size=300_000)
    with pytest.raises(ValidationError, match="want_window"):
        Config(want_window=0)


@pytest.mark.parametrize("bad", [
    b"\x00" * 10,                                                   # not a frame
    b"\xc1" + bytes(24) + b"\xff",                                  # a frame, not CBOR
    "frame",                                                        # not bytes
])
def test_garbage_closes_the_session_with_a_reason(bad):
    duo = Duo([(SPACE, E1)])
    duo.flow()
    events = duo.b.receive_data(bad, duo.now)
    assert duo.b.closed and "broke the sync protocol" in duo.b.closed_reason
    assert [type(e) for e in events][-1] is Closed
    assert any(isinstance(e, Send) for e in events)  # a bye went out


@pytest.mark.parametrize("msg", [
    Want(SPACE, E2, "DEV-B", 0, 1),
    Ack(SPACE, E2, "DEV-B", 1, {}),
    Nack(SPACE, E2, "DEV-B", 1, "no"),
    Presence(SPACE, E2, None, "x"),
])
def test_messages_about_unshared_envs_close_the_session(msg):
    duo = Duo([(SPACE, E1)])
    duo.flow()
    (frame,) = split(999, encode_message(msg))
    duo.b.receive_data(frame, duo.now)
    assert duo.b.closed and "does not sync" in duo.b.closed_reason


def test_a_change_set_for_an_unshared_env_never_reaches_the_store():
    duo = Duo([(SPACE, E1)])
    duo.flow()
    wire = make_changeset(duo.logs["A"].key, space=SPACE, env=E2, device="DEV-A", hlc=1,
                          ops=set_ops(E2, "x")).encode()
    (frame,) = split(999, encode_message(Cs.of(wire)))
    events = duo.b.receive_data(frame, duo.now)
    assert not [e for e in events if isinstance(e, Deliver)]
    assert duo.b.closed


def test_pongs_and_pings_before_hello_are_fine():
    duo = Duo([(SPACE, E1)])
    (frame,) = split(500, encode_message(Ping(7)))
    duo.take("B", duo.b.receive_data(frame, duo.now))
    assert [m for m in duo.sent["B"] if isinstance(m, Pong)] == [Pong(7)]
    assert not duo.b.closed


def test_add_env_after_open_starts_syncing_it_both_ways():
    duo = Duo([(SPACE, E1)], [(SPACE, E1), (SPACE, E2)])
    duo.flow()
    duo.commit("B", E2, create_ops(E2))
    duo.flow()
    assert duo.logs["A"].version_vector(SPACE, E2) == {}
    duo.take("A", duo.a.add_env(SPACE, E2, duo.now))
    duo.flow()
    assert (SPACE, E2) in duo.a.shared and (SPACE, E2) in duo.b.shared
    assert duo.logs["A"].version_vector(SPACE, E2) == {"DEV-B": 1}


# ------------------------------------------------------------------------------- adapters


def test_store_source_reads_ranges_of_applied_change_sets(tmp_path):
    key = Ed25519PrivateKey.generate()
    store = Store(tmp_path / "log.sqlite3")
    try:
        wires = []
        for i in range(5):
            ops = validate_ops(create_ops(E1) if i == 0 else set_ops(E1, str(i)))
            cs, _ = store.commit_local(key, space=SPACE, env=E1, device="DEV-A", ops=ops,
                                       now_ms=1_000 + i)
            wires.append(cs.encode())
        source = StoreSource(store)
        assert source.version_vector(SPACE, E1) == {"DEV-A": 5}
        assert list(source.wires(SPACE, E1, "DEV-A", 1, 3)) == wires[1:3]
        assert list(source.wires(SPACE, E1, "DEV-A", 3, 99)) == wires[3:]
        assert list(source.wires(SPACE2, E1, "DEV-A", 0, 5)) == []  # not that space's env
    finally:
        store.close()


def test_hub_routes_by_link_and_forgets_closed_sessions():
    log = FakeLog("DEV-H", Ed25519PrivateKey.generate())
    hub = Hub("DEV-H", log)
    out = hub.open("L1", [(SPACE, E1)], 0)
    assert [e.link for e in out] == ["L1"]
    with pytest.raises(ValidationError):
        hub.open("L1", [(SPACE, E1)], 0)
    hub.set_presence(SPACE, E1, None, "mockoon", 0)
    hub.open("L2", [(SPACE, E1)], 0)
    assert set(hub.sessions) == {"L1", "L2"}
    assert hub.next_tick_ms() == min(s.next_tick_ms() for s in hub.sessions.values())
    closed = hub.close("L1", "bye", 5)
    assert isinstance(closed[-1], Closed) and closed[-1].link == "L1"
    assert set(hub.sessions) == {"L2"}
    assert hub.receive_data("L1", b"x", 6) == []
    assert [s["state"] for s in hub.status()] == ["connecting"]
    assert hub.sessions["L2"]._presence == (SPACE, E1, None, "mockoon")
