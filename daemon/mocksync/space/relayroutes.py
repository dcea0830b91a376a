"""Which relay connection carries which space (issue 11/17): the daemon's routing decision.

Why a decision of its own: a space names the relays its team picked (genesis `relay`, 1..4
addresses, `SpaceState.relays`), and offering a space to any other relay would tell that
relay the space exists, who is in it and when they are online: metadata the team never
agreed to hand it. So the daemon may not simply dial "the relay" of its settings for every
space, as it did before spaces named relays. Pure: space relay lists and the configured
addresses in, routes out; `net.relay_fleet` opens one connection per route.

The rule, first match wins, per space:

1. The space names no relay (the personal space, spaces made before issue 17 or without
   `--relay`): the configured relays (`--relay`, config.toml `relay`), if any; else none
   (LAN peers only).
2. The space names relays and the configured list shares an address with them: the
   configured list, then the space's own addresses it lacks. The configured addresses are
   this device's owner saying "these are instances of that relay" (a relay cluster on one
   database, the only meaning `--relay URL --relay URL` ever had), in the order this device
   prefers; the space's further relays stay behind them as fallbacks.
3. Otherwise: the space's own relays, in the space's order. Configured relays never see it.

A space's relay list is the one in effect in its log (the genesis, or the last `relays`
entry: the team moved relay), plus, on this device only, the relays its owner added with
`space relays --use` (`space_relays`): a device that was away while its space moved cannot
reach the old relay to learn of the move, so its owner names the new one. Those go first
(the person asked for them because the signed list is stale) and are forgotten once the
signed list names them. Either way every address is one someone chose: the team, by a signed
entry, or this device's owner; never a relay of some other space.

Spaces on the same route share one connection (the relay is told all of their ids at once,
which is no more than each space's own relay already knows); a device has at most
`MAX_ROUTES` connections, and a space past that is left unrouted with a reason for `status`.

Relay key pins (issue 17): a space pins the relay key per address (`pin_for`), so a space
listing two independent relays, each with its own key, fails over between them; a pin made
before pins were per address (one per space) still counts, for every address, until the
space's first admission under per-address pins moves it to that address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Relay connections one daemon keeps at most (distinct routes). A relay takes at most
#: three connections per device (relay.server.MAX_CONNECTIONS_PER_DEVICE); sixteen routes
#: cover a person in many teams, each on its own relay, without a connection storm.
MAX_ROUTES = 16

#: A route: the relay addresses one connection tries, in order (the first that answers).
Route = tuple[str, ...]


def address_key(url: str) -> str:
    """One relay address however it is spelled: `HTTP://Relay.Example:08765/` and
    `http://relay.example:8765` dial the same socket. Scheme and host are case-insensitive,
    the port is a number, a trailing `/` means nothing (ws_url drops it); a path is kept (a
    relay behind a proxy may live under one). Names that differ (`localhost`, `127.0.0.1`)
    cannot be told apart without DNS and stay different.

    Why (issue 17, attack tests): routes were compared as text, so a list naming one relay
    four ways was four failover targets, and spaces naming one relay in different spellings
    were different routes: one device, several connections to one relay, past the relay's
    three per device (`too_many_connections`), refusing whichever connected last."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}:{port}{parts.path.rstrip('/')}"


def _distinct(urls: Sequence[str]) -> tuple[str, ...]:
    """`urls` without repeats, however spelled (the first spelling kept)."""
    seen: dict[str, str] = {}
    for u in urls:
        seen.setdefault(address_key(u), u)
    return tuple(seen.values())


def space_relays(signed: Sequence[str], local: Sequence[str] = ()) -> tuple[str, ...]:
    """The relays a space is routed through on this device: `local` (`space relays --use`,
    this device only) first, then the `signed` list in effect in its log; no repeats."""
    return _distinct((*local, *signed))


def route_of(own: Sequence[str], configured: Sequence[str]) -> Route:
    """The relay addresses a space naming `own` syncs through, given this device's
    `configured` relays (the module docstring's rule; empty: no relay at all). Addresses are
    compared as `address_key`s; a shared one is dialled as the configured list spells it."""
    own_t = _distinct(own)
    conf = _distinct(configured)
    if not own_t:
        return conf
    conf_keys = {address_key(u) for u in conf}
    if conf_keys & {address_key(u) for u in own_t}:
        return conf + tuple(u for u in own_t if address_key(u) not in conf_keys)
    return own_t


@dataclass(frozen=True)
class Routes:
    """The routing of every space: `routes` maps each route to the spaces it carries (in
    first-seen order of `spaces`); `unrouted` maps a space to why it has no relay
    connection although it names relays (over `MAX_ROUTES`)."""

    routes: dict[Route, tuple[str, ...]] = field(default_factory=dict)
    unrouted: dict[str, str] = field(default_factory=dict)

    def route(self, space: str) -> Route | None:
        """The route carrying `space`, or None (no relay for it)."""
        for route, spaces in self.routes.items():
            if space in spaces:
                return route
        return None


def plan_routes(spaces: Mapping[str, Sequence[str]], configured: Sequence[str],
                *, max_routes: int = MAX_ROUTES) -> Routes:
    """Group `spaces` (space id -> the relays it names, in the caller's order: the personal
    space first, then by name) by route. A route that would be past `max_routes` is not
    opened: its spaces are `unrouted`, each with the sentence `status` shows."""
    groups: dict[Route, list[str]] = {}
    unrouted: dict[str, str] = {}
    #: A route's addresses as keys -> the route as first spelled: one connection for both.
    spelled: dict[tuple[str, ...], Route] = {}
    for space, own in spaces.items():
        route = route_of(own, configured)
        if not route:
            continue
        route = spelled.setdefault(tuple(address_key(u) for u in route), route)
        if route not in groups and len(groups) >= max_routes:
            unrouted[space] = (f"this device already keeps {max_routes} relay connections "
                               f"(one per distinct relay list of its spaces); this space's "
                               f"relays ({', '.join(route)}) are not dialled")
            continue
        groups.setdefault(route, []).append(space)
    return Routes({r: tuple(s) for r, s in groups.items()}, unrouted)


def primary_route(routes: Routes, configured: Sequence[str]) -> Route | None:
    """The route `status`'s single `relay` object shows (kept for scripts written before a
    daemon had several connections): the configured relays' route when it carries a space,
    else the first route; None without any."""
    conf = tuple(dict.fromkeys(configured))
    if conf in routes.routes:
        return conf
    return next(iter(routes.routes), None)


def pin_for(url_pins: Mapping[str, bytes], legacy: bytes | None, url: str) -> bytes | None:
    """The relay key a space expects at `url` (None: none yet, trust on first use).

    `url_pins`: the space's pins per address; `legacy`: the one pin per space kept before
    pins were per address. The legacy pin was made by whichever relay first admitted the
    space, and every address a space used then presented that key (one relay, or a cluster
    sharing its key through its database), so it holds for any address until the space
    pins its first address, which replaces it (`SpacePins.pin`)."""
    pin = url_pins.get(url)
    if pin is not None:
        return pin
    return legacy if not url_pins else None


__all__ = ["MAX_ROUTES", "Route", "Routes", "address_key", "pin_for", "plan_routes", "primary_route",
           "route_of", "space_relays"]
