"""Which LAN peers to dial, when, and what to tell `status` about each (pure: `now` passed in).

Decisions kept out of the asyncio transport so they can be tested with a plain clock:

- Dial policy. A peer is dialled when discovery (mDNS, or an earlier connection) gave us an
  address and we share a space with it per the verified membership log. Retries back off
  exponentially from `BACKOFF_START_S` to `BACKOFF_MAX_S`; a peer that has not been reachable
  for `SLOW_AFTER_S` (mDNS keeps a dead peer "discovered" for ~19 min) is tried only every
  `SLOW_BACKOFF_S`. Seeing the peer again on mDNS resets the backoff: reconnect as soon as
  discovery sees it.
- Glare. Both sides may dial at once. The device with the smaller id wins: an offer arriving
  while we dial is accepted if its sender's id is smaller than ours (we drop our own attempt),
  refused otherwise (the sender accepts ours). The larger id also waits `DIAL_GRACE_S` before
  dialling, so usually only one offer is made.
- Status. Each peer has a state (`discovered`, `connecting`, `connected`, `online`, `closed`,
  `offline`, `incompatible`, `unknown`) and the sentence that explains it. `online`: reachable
  on the LAN with no link open right now (links are opened on demand, `overlay`), shown like a
  relay peer that is online.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..backoff import backoff_delay

#: First retry delay after a failure or a closed session.
BACKOFF_START_S = 0.5
#: Longest retry delay while the peer was seen recently.
BACKOFF_MAX_S = 5.0
#: After this long without reaching the peer, retry only every SLOW_BACKOFF_S.
SLOW_AFTER_S = 120.0
SLOW_BACKOFF_S = 60.0
#: The device with the larger id waits this long before dialling (glare avoidance).
DIAL_GRACE_S = 1.0
#: Most peers remembered (LAN neighbours that share a space with us; strangers are never kept).
MAX_PEERS = 512

DISCOVERED = "discovered"
CONNECTING = "connecting"
CONNECTED = "connected"
CLOSED = "closed"
OFFLINE = "offline"
INCOMPATIBLE = "incompatible"
UNKNOWN = "unknown"
IDLE = "online"

ACCEPT = "accept"
GLARE = "glare"


@dataclass
class PeerRecord:
    device: str
    since: float
    addresses: tuple[str, ...] = ()
    port: int | None = None
    protocol: int | None = None
    spaces: frozenset[str] = frozenset()
    state: str = DISCOVERED
    reason: str | None = None
    failures: int = 0
    next_dial: float = 0.0
    last_ok: float = 0.0
    dialing: bool = False
    via_mdns: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def dialable(self) -> bool:
        return bool(self.addresses) and self.port is not None and bool(self.spaces) \
            and self.state not in (INCOMPATIBLE, UNKNOWN)


class PeerBook:
    """Every LAN peer this device knows of and may sync with."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.peers: dict[str, PeerRecord] = {}

    def get(self, device: str) -> PeerRecord | None:
        return self.peers.get(device)

    def _record(self, device: str, now: float) -> PeerRecord | None:
        rec = self.peers.get(device)
        if rec is None:
            if len(self.peers) >= MAX_PEERS:
                gone = [d for d, r in self.peers.items() if r.state in (OFFLINE, CLOSED)]
                if not gone:
                    return None
                del self.peers[min(gone, key=lambda d: self.peers[d].last_ok)]
            rec = self.peers[device] = PeerRecord(device, since=now, last_ok=now)
        return rec

    def _grace(self, device: str) -> float:
        return DIAL_GRACE_S if self.me > device else 0.0

    def _backoff(self, rec: PeerRecord, now: float) -> float:
        if now - rec.last_ok > SLOW_AFTER_S:
            return SLOW_BACKOFF_S
        return backoff_delay(rec.failures, BACKOFF_START_S, BACKOFF_MAX_S)

    # ------------------------------------------------------------------ discovery
    def discovered(self, device: str, addresses: Iterable[str], port: int, protocol: int,
                   spaces: Iterable[str], now: float, *, our_protocol: int,
                   unknown_reason: str | None = None) -> PeerRecord | None:
        """mDNS announced `device` (shared `spaces` already verified against our log)."""
        spaces = frozenset(spaces)
        if not spaces and unknown_reason is None:
            return None  # a stranger: never kept, never dialled
        rec = self._record(device, now)
        if rec is None:
            return None
        rec.addresses, rec.port, rec.protocol, rec.spaces = tuple(addresses), port, protocol, spaces
        rec.via_mdns = True
        rec.last_ok = now
        if rec.state in (CONNECTED, CONNECTING):
            return rec
        if protocol != our_protocol:
            where = "this device" if protocol > our_protocol else f"device {device}"
            rec.state = INCOMPATIBLE
            rec.reason = (f"incompatible version: peer {device} speaks protocol {protocol}, "
                          f"this device {our_protocol}; update mocksync on {where}")
            rec.next_dial = math.inf
            return rec
        if not spaces:
            rec.state, rec.reason, rec.next_dial = UNKNOWN, unknown_reason, math.inf
            return rec
        rec.state = DISCOVERED
        rec.reason = None
        rec.failures = 0
        rec.next_dial = now + self._grace(device)
        return rec

    def gone(self, device: str, now: float) -> None:
        """mDNS goodbye: stop dialling (an open session lives on until its heartbeat fails)."""
        rec = self.peers.get(device)
        if rec is None:
            return
        rec.via_mdns = False
        if rec.state != CONNECTED and not rec.dialing:
            rec.state = OFFLINE
            rec.reason = "left the network (mDNS goodbye)"
            rec.next_dial = math.inf

    def learned(self, device: str, address: str | None, port: int | None,
                spaces: Iterable[str], now: float) -> None:
        """A peer that reached us (signed offer) may be dialled back at that address later."""
        rec = self._record(device, now)
        if rec is None:
            return
        rec.spaces = frozenset(spaces)
        if address and address not in rec.addresses and not rec.via_mdns:
            rec.addresses = (address, *rec.addresses)[:8]
        if port and rec.port is None:
            rec.port = port

    # ------------------------------------------------------------------ dialling
    def due(self, now: float) -> list[str]:
        return sorted(d for d, r in self.peers.items()
                      if r.dialable and not r.dialing and r.state not in (CONNECTED, CONNECTING)
                      and r.next_dial <= now)

    def next_due(self, only: set[str] | None = None) -> float | None:
        """When the next dial is due, among `only` (the peers a link is wanted to) if given:
        a peer that is due but not wanted must not make the dial loop spin."""
        times = [r.next_dial for d, r in self.peers.items()
                 if (only is None or d in only)
                 and r.dialable and not r.dialing and r.state not in (CONNECTED, CONNECTING)
                 and r.next_dial < math.inf]
        return min(times) if times else None

    def dialing(self, device: str, now: float) -> None:
        rec = self.peers[device]
        rec.dialing = True
        rec.state = CONNECTING
        rec.reason = None

    def dial_done(self, device: str) -> None:
        rec = self.peers.get(device)
        if rec is not None:
            rec.dialing = False

    def failed(self, device: str, reason: str, now: float, *, incompatible: bool = False,
               forbidden: bool = False) -> None:
        """A dial (or an incoming connection) did not get to an open session."""
        rec = self.peers.get(device)
        if rec is None:
            return
        rec.dialing = False
        if rec.state == CONNECTED:
            return  # another attempt (the peer's) won meanwhile
        rec.reason = reason
        if incompatible:
            rec.state, rec.next_dial = INCOMPATIBLE, math.inf
            return
        rec.state = CLOSED
        if forbidden:
            # The peer does not (yet) list us as a member: its log lags. Retry slowly.
            rec.next_dial = now + SLOW_BACKOFF_S
            return
        rec.next_dial = now + self._backoff(rec, now) + self._grace(device)
        rec.failures += 1

    def incoming(self, device: str) -> str:
        """An authenticated offer from `device` arrived: accept it, or refuse it (glare)."""
        rec = self.peers.get(device)
        if rec is not None and rec.dialing and device > self.me:
            return GLARE
        return ACCEPT

    def connected(self, device: str, now: float) -> None:
        rec = self._record(device, now)
        if rec is None:
            return
        rec.state, rec.reason, rec.failures = CONNECTED, None, 0
        rec.last_ok = now
        rec.dialing = False

    def closed(self, device: str, reason: str, now: float, *, incompatible: bool = False) -> None:
        """The session with `device` ended (dead peer, bye, protocol error...)."""
        rec = self.peers.get(device)
        if rec is None:
            return
        rec.last_ok = now
        rec.reason = reason
        if incompatible:
            rec.state, rec.next_dial = INCOMPATIBLE, math.inf
            return
        rec.state = CLOSED
        rec.next_dial = now + self._backoff(rec, now) + self._grace(device)
        rec.failures += 1

    def idle(self, device: str, reason: str, now: float) -> None:
        """The link was closed for being idle: the peer is still there, dial it when needed."""
        rec = self.peers.get(device)
        if rec is None:
            return
        rec.state, rec.reason, rec.failures = IDLE, reason, 0
        rec.last_ok = now
        rec.next_dial = now

    def retry_all(self, now: float) -> None:
        """`mocksync reconnect`: forget backoff, dial every known peer now."""
        for rec in self.peers.values():
            if rec.state in (CLOSED, DISCOVERED, OFFLINE):
                rec.failures = 0
                rec.next_dial = now
                if rec.state == OFFLINE and rec.addresses:
                    rec.state = CLOSED
