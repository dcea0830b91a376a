"""Presence along the overlay and links for co-editors, end to end on loopback (issue 16):
real mDNS, signaling, WebRTC and sessions between in-process agents bound to 127.0.0.1.

The overlay is pinned to a line A - B - C (its real shape only differs from a full mesh past
FULL_MESH_UP_TO devices, too many for a fast test), so A and C have no link: C must still see
what A edits (a signed note passed on by B), and once C opens the same environment it links
to A directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from mocksync.net import lan_transport

from helpers.agents import LAN_WAIT_S as WAIT
from helpers.agents import connected, lan_agent, peer_of, running
from helpers.devices import make_device, team_space
from helpers.polling import wait_until
from helpers.procs import short_tmp

ENV = "0f" * 16


@pytest.fixture
def line(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    order: list[str] = []

    def anchors(me: str, peers: Iterable[str]) -> frozenset[str]:
        online = set(peers) | {me}
        i = order.index(me)
        return frozenset(d for d in order[max(0, i - 1):i + 2] if d != me and d in online)

    monkeypatch.setattr(lan_transport, "anchors", anchors)
    return order


def presence_of(agent: Any, device: str) -> dict[str, Any] | None:
    p = peer_of(agent, device)
    return None if p is None else p.get("presence")


async def test_presence_crosses_the_overlay_and_co_editors_link(line: list[str]) -> None:
    with short_tmp() as root:
        a, b, c = (make_device(root, n) for n in "abc")
        space = team_space(a, b, c, share_logs=True)
        line.extend([a.id, b.id, c.id])
        aa, ab, ac = lan_agent(a), lan_agent(b), lan_agent(c)
        async with running(aa, ab, ac):
            await wait_until(lambda: connected(ab, a.id) and connected(ab, c.id),
                             "B to link to A and C", WAIT)
            await wait_until(lambda: peer_of(ac, a.id) is not None, "C to discover A", WAIT)
            assert not connected(ac, a.id), "A and C are not anchors of each other"

            aa.transport.set_presence(space=space, env=ENV, entity=None, editor="mockoon")
            await wait_until(lambda: (presence_of(ac, a.id) or {}).get("env") == ENV,
                             "C to learn through B what A edits", WAIT)
            assert not connected(ac, a.id), "presence came along the overlay, not a new link"
            assert presence_of(ac, a.id)["editor"] == "mockoon"

            ac.transport.set_presence(space=space, env=ENV, entity=None, editor="mockoon")
            await wait_until(lambda: connected(ac, a.id) and connected(aa, c.id),
                             "C and A, editing the same environment, to link directly", WAIT)
