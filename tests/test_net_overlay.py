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
