"""Dial policy for LAN peers: backoff, glare, versions, strangers (pure, virtual clock)."""

from __future__ import annotations

import math

from mocksync.net import peerbook as pb

ME = "MMMMM-MMMMM-MMMMM-MMMMM"
LOW = "AAAAA-AAAAA-AAAAA-AAAAA"  # sorts before ME: dials first, wins glare
HIGH = "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ"


def seen(book: pb.PeerBook, device: str, now: float, *, protocol: int = 1,
         spaces=("s1",), unknown: str | None = None) -> pb.PeerRecord | None:
    return book.discovered(device, ["198.18.0.12"], 5000, protocol, spaces, now,
                           our_protocol=1, unknown_reason=unknown)


def test_strangers_are_never_kept_or_dialled() -> None:
    book = pb.PeerBook(ME)
    assert seen(book, HIGH, 0.0, spaces=()) is None
    assert book.peers == {} and book.due(100.0) == []


def test_the_smaller_id_dials_first_and_wins_glare() -> None:
    book = pb.PeerBook(ME)
    seen(book, LOW, 0.0)
    seen(book, HIGH, 0.0)
    # We are larger than LOW: we wait the grace period; HIGH is ours to dial at once.
    assert book.due(0.0) == [HIGH]
    assert book.due(pb.DIAL_GRACE_S) == [LOW, HIGH]
    book.dialing(HIGH, 0.0)
    book.dialing(LOW, 1.0)
    # Both dialled each other: HIGH's offer is refused (ours goes ahead), LOW's accepted.
    assert book.incoming(HIGH) == pb.GLARE
    assert book.incoming(LOW) == pb.ACCEPT


def test_backoff_grows_resets_on_rediscovery_and_slows_for_long_gone_peers() -> None:
    book = pb.PeerBook(ME)
    seen(book, HIGH, 0.0)
    now, delays = 0.0, []
    for _ in range(6):
        book.dialing(HIGH, now)
        book.failed(HIGH, "unreachable", now)
        rec = book.get(HIGH)
        delays.append(rec.next_dial - now)
        assert book.due(now) == [] and rec.state == pb.CLOSED and rec.reason == "unreachable"
        now = rec.next_dial
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    seen(book, HIGH, now)  # mDNS sees it again: dial at once
    assert book.due(now) == [HIGH]
    book.dialing(HIGH, now)
    later = now + pb.SLOW_AFTER_S + 1
    book.failed(HIGH, "unreachable", later)
    assert book.get(HIGH).next_dial - later == pb.SLOW_BACKOFF_S


def test_incompatible_peers_are_not_dialled_until_they_change() -> None:
    book = pb.PeerBook(ME)
    rec = seen(book, HIGH, 0.0, protocol=2)
    assert rec.state == pb.INCOMPATIBLE and "protocol 2" in rec.reason
    assert "update mocksync on this device" in rec.reason
    assert book.due(1e9) == []
    seen(book, HIGH, 5.0, protocol=1)  # updated
    assert book.due(5.0) == [HIGH]
    book.dialing(HIGH, 5.0)
    book.connected(HIGH, 5.1)
    book.closed(HIGH, "incompatible version: ...", 6.0, incompatible=True)
    assert book.get(HIGH).state == pb.INCOMPATIBLE and book.due(1e9) == []


def test_session_lifecycle_and_goodbye() -> None:
    book = pb.PeerBook(ME)
    seen(book, HIGH, 0.0)
    book.dialing(HIGH, 0.0)
    book.connected(HIGH, 0.1)
    assert book.get(HIGH).state == pb.CONNECTED and book.due(10.0) == []
    book.failed(HIGH, "late failure of a losing attempt", 0.2)
    assert book.get(HIGH).state == pb.CONNECTED  # a lost race does not undo a connection
    book.closed(HIGH, "went silent", 20.0)
    assert book.get(HIGH).state == pb.CLOSED and book.due(20.5) == [HIGH]
    book.gone(HIGH, 20.1)  # mDNS goodbye
    assert book.get(HIGH).state == pb.OFFLINE and book.get(HIGH).next_dial == math.inf
    book.retry_all(30.0)  # `mocksync reconnect`
    assert book.due(30.0) == [HIGH]


def test_unknown_member_is_listed_with_a_reason_but_not_dialled() -> None:
    book = pb.PeerBook(ME)
    rec = seen(book, HIGH, 0.0, spaces=(), unknown="not in this device's log")
    assert rec.state == pb.UNKNOWN and rec.reason == "not in this device's log"
    assert book.due(100.0) == []


def test_a_refusal_for_membership_retries_slowly() -> None:
    book = pb.PeerBook(ME)
    seen(book, HIGH, 0.0)
    book.dialing(HIGH, 0.0)
    book.failed(HIGH, "not a member", 0.0, forbidden=True)
    assert book.get(HIGH).next_dial == pb.SLOW_BACKOFF_S
