"""The device-wide request book: each change set asked of one peer, lost requests expire,
gaps are always found again."""

from __future__ import annotations

from mocksync.sync import Wants

S, E, D = "ab" * 16, "env-1", "DEV-X"


def test_a_range_is_claimed_once_across_peers_within_the_budget():
    w = Wants()
    assert w.claim(S, E, D, 0, 10, "p1", 0, budget=4) == [(1, 4)]
    assert w.claim(S, E, D, 0, 10, "p2", 0, budget=100) == [(5, 10)]
    assert w.claim(S, E, D, 0, 10, "p3", 0, budget=100) == []
    assert (w.outstanding("p1"), w.outstanding("p2"), w.outstanding("p3")) == (4, 6, 0)
    assert w.claim(S, E, "DEV-Y", 2, 3, "p1", 0, budget=1) == [(3, 3)]


def test_received_and_applied_entries():
    w = Wants()
    w.claim(S, E, D, 0, 3, "p1", 0, budget=10)
    w.received(S, E, D, 2, 5)
    assert w.outstanding("p1") == 2
    assert w.held(S, E, D, 2, 6) and not w.held(S, E, D, 1, 6)
    w.applied(S, E, D, 2)
    assert not w.held(S, E, D, 2, 6)
    assert len(w) == 2


def test_an_unanswered_request_expires_and_another_peer_may_take_it():
    w = Wants(request_timeout_ms=1_000)
    w.claim(S, E, D, 0, 2, "p1", 0, budget=10)
    gen = w.generation
    assert w.claim(S, E, D, 0, 2, "p2", 999, budget=10) == []
    assert w.expire(1_000)
    assert w.generation > gen and w.outstanding("p1") == 0
    assert w.claim(S, E, D, 0, 2, "p2", 1_000, budget=10) == [(1, 2)]


def test_a_slow_large_transfer_delays_expiry_until_it_stalls():
    w = Wants(request_timeout_ms=1_000)
    w.claim(S, E, D, 0, 1, "p1", 0, budget=10)
    w.progress("p1", 900)  # a frame of a large message from p1
    w.expire(1_500)
    assert w.outstanding("p1") == 1
    assert w.next_deadline() == 2_000  # scans are rate-limited (SCAN_EVERY_MS)
    w.expire(2_000)
    assert w.outstanding("p1") == 0


def test_release_frees_a_dead_peers_requests():
    w = Wants()
    w.claim(S, E, D, 0, 5, "p1", 0, budget=10)
    w.received(S, E, D, 1, 1)
    w.release("p1")
    assert w.outstanding("p1") == 0
    assert w.held(S, E, D, 1, 2)  # what already arrived stays held
    assert w.claim(S, E, D, 0, 5, "p2", 2, budget=10) == [(2, 5)]


def test_a_refused_seq_is_not_asked_for_and_blocks_what_follows():
    w = Wants(refused_backoff_ms=5_000)
    w.claim(S, E, D, 0, 5, "p1", 0, budget=10)
    w.refused(S, E, D, 3, 10)
    assert w.claim(S, E, D, 2, 5, "p2", 11, budget=10) == []
    assert w.claim(S, E, D, 2, 5, "p2", 5_010, budget=10) == [(3, 3)]


def test_a_pushed_set_that_skips_ahead_leaves_a_gap_that_is_found():
    # Regression: a set pushed ahead of the ones asked for must not hide the seqs between.
    w = Wants()
    assert w.claim(S, E, D, 0, 2, "p1", 0, budget=10) == [(1, 2)]
    w.received(S, E, D, 5, 1)
    assert w.claim(S, E, D, 0, 5, "p1", 2, budget=10) == [(3, 4)]
    assert w.claim(S, E, D, 0, 5, "p1", 3, budget=10) == []


def test_connections_are_counted_per_env():
    w = Wants()
    w.connect("DEV-A", {(S, E)})
    w.connect("DEV-A", {(S, E)})  # two links to one device
    w.disconnect("DEV-A", {(S, E)})
    assert w.is_connected(S, E, "DEV-A")
    w.disconnect("DEV-A", {(S, E)})
    assert not w.is_connected(S, E, "DEV-A")
    assert not w.is_connected(S, "env-2", "DEV-A")
