"""The idle overlay (issue 16): few links per device whatever the team size, symmetric, and
connected with a short diameter, so announcements spread without a full mesh."""

from __future__ import annotations

from collections import deque

import pytest

from mocksync.net.overlay import (
    FULL_MESH_UP_TO,
    LINK_IDLE_S,
    MAX_ANCHORS,
    anchors,
    idle_links,
    stride_for,
)


def team(n: int) -> list[str]:
    return [f"DEV{i:03d}-XXXX" for i in range(n)]


def diameter(devs: list[str]) -> int:
    graph = {d: anchors(d, devs) for d in devs}
    worst = 0
    for start in devs:
        seen = {start: 0}
        queue = deque([start])
        while queue:
            d = queue.popleft()
            for nb in graph[d]:
                if nb not in seen:
                    seen[nb] = seen[d] + 1
                    queue.append(nb)
        assert len(seen) == len(devs), "the overlay must connect every device"
        worst = max(worst, max(seen.values()))
    return worst


def test_small_teams_keep_the_full_mesh() -> None:
    devs = team(FULL_MESH_UP_TO)
    for d in devs:
        assert anchors(d, devs) == frozenset(devs) - {d}


@pytest.mark.parametrize("n", [6, 12, 30, 50, 200])
def test_links_per_device_are_bounded_symmetric_and_the_diameter_short(n: int) -> None:
    devs = team(n)
    for d in devs:
        mine = anchors(d, devs)
        assert d not in mine and 1 <= len(mine) <= MAX_ANCHORS
        for other in mine:
            assert d in anchors(other, devs), "both ends must want the link"
    assert diameter(devs) <= 2 * int(n ** 0.5) + 1


def test_idle_links_outside_the_overlay_close() -> None:
    last = {"A": 0.0, "B": 0.0, "C": LINK_IDLE_S - 1}
    assert idle_links(LINK_IDLE_S, last, keep={"B"}) == ["A"]
    assert idle_links(LINK_IDLE_S - 2, last, keep=()) == []


def test_a_due_peer_no_link_is_wanted_to_does_not_make_the_dial_loop_spin() -> None:
    from mocksync.net.peerbook import PeerBook

    book = PeerBook("AAA")
    book.discovered("BBB", ["127.0.0.1"], 1, 3, {"s"}, 0.0, our_protocol=3)
    book.discovered("CCC", ["127.0.0.1"], 1, 3, {"s"}, 0.0, our_protocol=3)
    assert book.due(10.0) == ["BBB", "CCC"]
    assert book.next_due(only={"CCC"}) is not None
    assert book.next_due(only=set()) is None  # nothing wanted: the loop sleeps its full tick


def test_an_idle_closed_peer_is_online_and_dialable_at_once() -> None:
    from mocksync.net.peerbook import IDLE, PeerBook

    book = PeerBook("AAA")
    book.discovered("BBB", ["127.0.0.1"], 1, 3, {"s"}, 0.0, our_protocol=3)
    book.connected("BBB", 1.0)
    book.idle("BBB", "idle", 5.0)
    rec = book.get("BBB")
    assert rec is not None and rec.state == IDLE == "online" and rec.failures == 0
    assert book.due(5.0) == ["BBB"]


def test_the_stride_changes_rarely_as_devices_come_and_go() -> None:
    """Every change of stride re-wires every chord in the team (a dial storm on every
    laptop): it may change only when the team size crosses a square."""
    changes = [n for n in range(FULL_MESH_UP_TO + 1, 200) if stride_for(n) != stride_for(n + 1)]
    assert len(changes) <= 13
    assert all(stride_for(n) >= 2 for n in range(FULL_MESH_UP_TO + 1, 201))


def test_one_device_coming_online_rewires_few_links() -> None:
    devs = team(31)
    before = {d: anchors(d, devs[:30]) for d in devs[:30]}
    after = {d: anchors(d, devs) for d in devs[:30]}
    changed = sum(1 for d in before if before[d] != after[d])
    assert changed <= 2 * stride_for(31) + 4  # the chords spanning the newcomer, not all
