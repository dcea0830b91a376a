"""Which LAN peers to keep a link to when nothing is happening (pure).

Why: every link costs CPU while idle (WebRTC consent checks, SCTP timers, our heartbeat):
measured on loopback about 0.14 % of a core per link, so a full mesh of a 50-device space
would idle near 7 % on every laptop (issue 16). Instead each device keeps links only to a few
ring neighbours, enough for membership heads, presence and change announcements to spread
through the team, and opens further links on demand (something to send, see `LanTransport`),
closing them again once idle.

The overlay: devices are placed on a ring by the hash of their id (every device computes the
same order from the same set of online members); each keeps its next and previous device, and
the devices `stride` places away both ways, `stride` = ceil(sqrt(n)), which bounds the hops
any announcement takes to about 2 * sqrt(n) / 2 + 1 (5 for 30 devices) with at most
`MAX_ANCHORS` links per device. Both ends of each pair pick each other (the relation is
symmetric), so a link is only dialled by the device the glare rule lets go first.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

#: Most overlay links a device keeps while idle (two ring neighbours, two chords).
MAX_ANCHORS = 4
#: Teams this small keep the full mesh: no more links than the overlay would give.
FULL_MESH_UP_TO = MAX_ANCHORS + 1
#: A link beyond the overlay is closed after this long without a change set either way.
LINK_IDLE_S = 20.0


def _position(device: str) -> bytes:
    return hashlib.sha256(b"mocksync/overlay/v1\x00" + device.encode()).digest()


def anchors(me: str, peers: Iterable[str]) -> frozenset[str]:
    """The peers `me` keeps a link to while idle, among `peers` (online members, `me` excluded
    or not). Symmetric: b in anchors(a, S) iff a in anchors(b, S) for the same set S."""
    ring = sorted(set(peers) | {me}, key=_position)
    n = len(ring)
    if n <= FULL_MESH_UP_TO:
        return frozenset(d for d in ring if d != me)
    i = ring.index(me)
    stride = max(2, math.ceil(math.sqrt(n)))
    picked = {ring[(i + k) % n] for k in (1, -1, stride, -stride)}
    picked.discard(me)
    return frozenset(picked)


def idle_links(now: float, last_used: dict[str, float], keep: Iterable[str]) -> list[str]:
    """Peers whose link carried no change set for LINK_IDLE_S and is not an overlay link:
    close them (they reopen on demand)."""
    keep = set(keep)
    return sorted(d for d, t in last_used.items() if d not in keep and now - t >= LINK_IDLE_S)


__all__ = ["FULL_MESH_UP_TO", "LINK_IDLE_S", "MAX_ANCHORS", "anchors", "idle_links"]
