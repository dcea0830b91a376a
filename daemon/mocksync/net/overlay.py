"""Which LAN peers to keep a link to when nothing is happening, and how change sets cross the
overlay quickly (pure: no sockets, no clocks).

Why: every link costs CPU while idle (WebRTC consent checks, SCTP timers, our heartbeat):
measured on loopback about 0.14 % of a core per link, so a full mesh of a 50-device space
would idle near 7 % on every laptop (issue 16). Instead each device keeps links only to a few
ring neighbours, enough for membership heads, presence and change announcements to spread
through the team, and opens further links on demand (something to send, see `LanTransport`),
closing them again once idle.

The overlay: devices are placed on a ring by the hash of their id (every device computes the
same order from the same set of online members); each keeps its next and previous device, and
the devices `stride` places away both ways (a circulant graph C_n(1, stride)), with at most
`MAX_ANCHORS` links per device. An edit crosses one hop per link on its way, and each hop
costs a receive, a signature check and a send, so the number of hops (the diameter) is what
an edit's latency grows with: the stride is the one that gives the smallest diameter for the
team's size (searched exactly up to `STRIDE_SEARCH_UP_TO` devices: 4 hops at 30 devices where
the earlier ceil(sqrt(n)) stride needed 5), not a rule of thumb. Both ends of each pair pick
each other (the relation is symmetric), so a link is only dialled by the device the glare rule
lets go first.

Forwarding: in a sparse overlay a device passes on what it receives. Doing that only after its
store applied the change set (and wrote the file) put the apply time on every hop; a small
change set whose signature verifies is passed on as soon as it arrives instead
(`forward_early`), the received bytes unchanged, and applied meanwhile. Large ones (seconds
to decode) still go after the apply, off the event loop.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Mapping
from functools import lru_cache

#: Most overlay links a device keeps while idle (two ring neighbours, two chords).
MAX_ANCHORS = 4
#: Teams this small keep the full mesh: no more links than the overlay would give.
FULL_MESH_UP_TO = MAX_ANCHORS + 1
#: A link beyond the overlay is closed after this long without a change set either way.
LINK_IDLE_S = 20.0
#: Up to this many online devices the stride is searched exactly (a breadth-first walk per
#: candidate, a few ms at this size, once per team size); beyond, ceil(sqrt(2 n)), close
#: to the optimum of a circulant C_n(1, s).
STRIDE_SEARCH_UP_TO = 128
#: Most extra links opened to teammates editing the environment this device edits (each
#: costs idle CPU like any link; beyond this many, the overlay carries the rest).
MAX_CO_EDITOR_LINKS = 4
#: Change sets up to this size are verified and forwarded on arrival, before being applied
#: (decoding and checking them takes well under a millisecond); larger ones after the apply.
FORWARD_EARLY_MAX_BYTES = 64 * 1024


def _position(device: str) -> bytes:
    return hashlib.sha256(b"mocksync/overlay/v1\x00" + device.encode()).digest()


def _circulant_diameter(n: int, stride: int) -> int:
    """Hops between the farthest two of n devices linked to ±1 and ±stride places away (every
    device sees the same graph, so a walk from one of them is enough)."""
    seen = {0: 0}
    queue = deque([0])
    while queue:
        d = queue.popleft()
        for k in (1, -1, stride, -stride):
            nb = (d + k) % n
            if nb not in seen:
                seen[nb] = seen[d] + 1
                queue.append(nb)
    return max(seen.values())


@lru_cache(maxsize=64)
def stride_for(n: int) -> int:
    """The chord length for a ring of n devices: smallest diameter, then the shortest chord.
    Exact search up to STRIDE_SEARCH_UP_TO devices."""
    if n <= FULL_MESH_UP_TO:
        return 1
    if n > STRIDE_SEARCH_UP_TO:
        return math.ceil(math.sqrt(2 * n))
    return min(range(2, n // 2 + 1), key=lambda s: (_circulant_diameter(n, s), s))


def anchors(me: str, peers: Iterable[str]) -> frozenset[str]:
    """The peers `me` keeps a link to while idle, among `peers` (online members, `me` excluded
    or not). Symmetric: b in anchors(a, S) iff a in anchors(b, S) for the same set S."""
    ring = sorted(set(peers) | {me}, key=_position)
    n = len(ring)
    if n <= FULL_MESH_UP_TO:
        return frozenset(d for d in ring if d != me)
    i = ring.index(me)
    stride = stride_for(n)
    picked = {ring[(i + k) % n] for k in (1, -1, stride, -stride)}
    picked.discard(me)
    return frozenset(picked)


def idle_links(now: float, last_used: dict[str, float], keep: Iterable[str]) -> list[str]:
    """Peers whose link carried no change set for LINK_IDLE_S and is not an overlay link:
    close them (they reopen on demand)."""
    keep = set(keep)
    return sorted(d for d, t in last_used.items() if d not in keep and now - t >= LINK_IDLE_S)


def co_editors(mine: tuple[str, str] | None, editing: Mapping[str, tuple[str, str] | None],
               online: Iterable[str]) -> frozenset[str]:
    """Online teammates whose presence says they edit the environment `mine` ((space, env)
    this device's user has open; None: nothing open): worth a direct link, as both sides'
    edits then reach each other in one hop, however far apart they sit on the overlay. At
    most MAX_CO_EDITOR_LINKS (the same ones on every call: sorted by id). The transport
    dials them on demand when presence changes; like every link on demand the link closes
    after LINK_IDLE_S without a change set (`idle_links`), as presence outlives the edits."""
    if mine is None:
        return frozenset()
    online = set(online)
    same = sorted(d for d, where in editing.items() if where == mine and d in online)
    return frozenset(same[:MAX_CO_EDITOR_LINKS])


def forward_early(size: int, *, sparse: bool, author: str, me: str) -> bool:
    """Pass a received change set on before applying it? Only in a sparse overlay (a full
    mesh has every author linked to everyone), only someone else's (our own are pushed when
    committed), and only small ones: checking a large one's signature on the event loop would
    stall every link; those go after the apply, as before."""
    return sparse and author != me and 0 < size <= FORWARD_EARLY_MAX_BYTES


__all__ = ["FORWARD_EARLY_MAX_BYTES", "FULL_MESH_UP_TO", "LINK_IDLE_S", "MAX_ANCHORS",
           "MAX_CO_EDITOR_LINKS", "STRIDE_SEARCH_UP_TO", "anchors", "co_editors",
           "forward_early", "idle_links", "stride_for"]
