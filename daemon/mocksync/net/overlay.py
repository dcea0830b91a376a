"""Which LAN peers to keep a link to: while idle, and on demand for teammates editing the
same environment (pure: no sockets, no clocks).

Why: every link costs CPU while idle (WebRTC consent checks, SCTP timers, our heartbeat):
measured on loopback about 0.14 % of a core per link, so a full mesh of a 50-device space
would idle near 7 % on every laptop (issue 16). Instead each device keeps links only to a few
ring neighbours, enough for membership heads, presence and change announcements to spread
through the team, and opens further links on demand (something to send, see `LanTransport`),
closing them again once idle.

The overlay: devices are placed on a ring by the hash of their id (every device computes the
same order from the same set of online members); each keeps its next and previous device, and
the devices `stride` places away both ways (a circulant graph C_n(1, stride)), with at most
`MAX_ANCHORS` links per device. The stride is ceil(sqrt(n)) (`stride_for`): not the one with
the smallest diameter for each n (a search finds 4 hops instead of 5 at 30 devices), because
the best stride jumps about with n (89 changes between 6 and 200 devices, against 12), and
every change of stride re-wires every chord of the team: a device coming online or leaving
would set off a storm of dials on every laptop. The median hop count, which sets an edit's
median latency, is the same (3 at 30 devices). Both ends of each pair pick each other (the
relation is symmetric), so a link is only dialled by the device the glare rule lets go first.

Forwarding: in a sparse overlay a device passes on what it receives once its store applied
it. Passing a verified change set on *before* applying it was measured (issue 16, 30 daemons
on this 2-core loopback, alternating runs): p50 643 ms against 498-521 ms without. With every
daemon on the same two cores the hops are not what costs: each device's apply and file write
is, and forwarding early makes all 29 applies start at once and share the cores, so they all
finish late, where applying hop by hop finishes the near devices first. It is not done.

Pushing along a tree (measured, not used): a device that applied a teammate's change set
pushes it to every overlay neighbour, and as all neighbours do the same at about the same
time, each device gets it from nearly every link (12 daemons: 4.3 copies received per edit,
3.4 of them redundant, each acknowledged). Pushing only along the breadth-first tree from the
author (the other neighbours get a `have` and fetch what they lack) cut that
to 1.8 copies, but the 30-device p50 went from 0.8 s to 1.5 s on this loaded 2-core machine
(one run each, load ~12): flooding takes the fastest of several paths through busy daemons.
What is kept: links beyond the overlay that are not wanted (left over from an older overlay)
get announcements only, so they close when idle (`LanTransport._relay_to`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

#: Most overlay links a device keeps while idle (two ring neighbours, two chords).
MAX_ANCHORS = 4
#: Teams this small keep the full mesh: no more links than the overlay would give.
FULL_MESH_UP_TO = MAX_ANCHORS + 1
#: A link beyond the overlay is closed after this long without a change set either way (the
#: daemon's `lan_link_idle_s` setting; a co-editor's link reopens on the next local edit).
LINK_IDLE_S = 20.0
#: Most extra links opened to teammates editing the environment this device edits (each
#: costs idle CPU like any link; beyond this many, the overlay carries the rest).
MAX_CO_EDITOR_LINKS = 4


def _position(device: str) -> bytes:
    return hashlib.sha256(b"mocksync/overlay/v1\x00" + device.encode()).digest()


def stride_for(n: int) -> int:
    """The chord length for a ring of n devices: ceil(sqrt(n)), at least 2. It changes only
    when n crosses a square, so a device joining or leaving re-wires few chords."""
    return max(2, math.ceil(math.sqrt(n)))


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


def idle_links(now: float, last_used: dict[str, float], keep: Iterable[str],
               idle_s: float = LINK_IDLE_S) -> list[str]:
    """Peers whose link carried no change set for `idle_s` (LINK_IDLE_S unless the daemon's
    `lan_link_idle_s` says otherwise) and is not an overlay link: close them (they reopen on
    demand)."""
    keep = set(keep)
    return sorted(d for d, t in last_used.items() if d not in keep and now - t >= idle_s)


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


__all__ = ["FULL_MESH_UP_TO", "LINK_IDLE_S", "MAX_ANCHORS",
           "MAX_CO_EDITOR_LINKS", "anchors", "co_editors",
           "idle_links", "stride_for"]
