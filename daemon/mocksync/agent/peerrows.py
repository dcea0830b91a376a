"""One row per device in `status` and `peers`: how it is reached now, and the fallback.

Why: each transport reports the devices it sees (the LAN a `connected` row per device, the
relay an `online` row per device and space), so a teammate reachable both ways showed twice
(22 rows for 11 peers). A person asks "is Bob's laptop there, and how?": one row, saying the
route in use (`via`: the best route that is up, LAN before relay, since edits go both ways
but the LAN is the fast one) and the route that takes over if it goes (`fallback`), with every
route's own details kept under `routes`. Pure: rows in, rows out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Routes, best first: a bus in the same process (tests), the LAN (WebRTC), the relay.
ROUTE_ORDER = ("local", "lan", "relay")
#: Route states that mean the device can be reached that way now.
UP_STATES = frozenset({"connected", "online"})
#: Fields of a route kept in its `routes` entry.
ROUTE_FIELDS = ("via", "state", "rtt_ms", "address", "reason", "space")


def _rank(row: dict[str, Any]) -> tuple[int, int]:
    via = row.get("via")
    order = ROUTE_ORDER.index(via) if via in ROUTE_ORDER else len(ROUTE_ORDER)
    return (0 if row.get("state") in UP_STATES else 1, order)


def one_row_per_device(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge the transports' peer rows into one per device, in order of first appearance.

    The row of the route in use carries the device's fields (member, presence, ...); added:
    `fallback` (the next route that is up, or None), `routes` (every route: via, state, rtt,
    address, reason) and `spaces` (the union). Rows without a device are kept as they are."""
    groups: dict[str, list[dict[str, Any]]] = {}
    loose: list[tuple[int, dict[str, Any]]] = []
    order: list[str] = []
    for i, row in enumerate(rows):
        device = row.get("device")
        if not isinstance(device, str):
            loose.append((i, row))
            continue
        if device not in groups:
            groups[device] = []
            order.append(device)
        groups[device].append(row)
    out: list[dict[str, Any]] = []
    for device in order:
        ranked = sorted(groups[device], key=_rank)
        best = ranked[0]
        merged = dict(best)
        routes: list[dict[str, Any]] = []
        seen_via: set[Any] = set()
        for r in ranked:
            if r.get("via") in seen_via:
                continue  # the relay reports a device once per shared space: one route
            seen_via.add(r.get("via"))
            routes.append({k: r.get(k) for k in ROUTE_FIELDS if k in r or k in ("via", "state")})
        merged["routes"] = routes
        merged["fallback"] = next((r["via"] for r in routes[1:] if r.get("state") in UP_STATES),
                                  None)
        if not merged.get("member"):
            merged["member"] = next((r.get("member") for r in ranked if r.get("member")), None)
        spaces: list[Any] = []
        for r in ranked:
            for s in r.get("spaces") or ():
                if s not in spaces:
                    spaces.append(s)
        if spaces:
            merged["spaces"] = spaces
        out.append(merged)
    for _i, row in loose:
        out.append(row)
    return out


__all__ = ["ROUTE_ORDER", "UP_STATES", "one_row_per_device"]
