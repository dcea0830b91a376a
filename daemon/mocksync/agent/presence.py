"""Presence: who is online and what each is editing, as `who` and `members` show it.

Why a module of its own: the facts come from three places that disagree in shape (LAN peer
rows carry a `presence` object and state `connected`; relay rows carry `env`/`entity` at the
top and state `online`; an editor plugin may say exactly what it shows) and `who` used to
drop every relay row and never learn what anyone edits (issue 11 item 6). Everything here is
a pure decision: the caller passes `now` and the rows; nothing reads a clock or a socket.

What a device reports as "editing": what its editor plugin said, if it said anything since
the last save; otherwise the environment it last saved, for `EDITING_TTL_S` after that save
(a save is the one sign of editing every editor gives).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: A save counts as "editing that environment" for this long (then the device shows as
#: online, editing nothing, until its next save).
EDITING_TTL_S = 600.0
#: Peer states that mean "reachable now": a LAN session is `connected`, the relay reports
#: devices it holds a connection to as `online`.
ONLINE_STATES = frozenset({"connected", "online"})
#: Environments whose last save time is remembered (the most recent is the one reported).
MAX_SAVES_KEPT = 64


@dataclass(frozen=True)
class Looking:
    """Where one user is: space and environment (None: nothing), entity, editor name."""

    space: str | None = None
    env: str | None = None
    entity: str | None = None
    editor: str | None = None


NOWHERE = Looking()


class PresenceBook:
    """This device's own presence, from saves and from an editor plugin (pure; `now` passed)."""

    def __init__(self, ttl_s: float = EDITING_TTL_S) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.ttl_s = ttl_s
        self._saves: dict[str, tuple[str, float]] = {}  # env -> (space, time of last save)
        self._explicit: tuple[Looking, float] | None = None
        #: What was last sent to the transports (to send only changes).
        self.sent: Looking = NOWHERE

    def saved(self, space: str, env: str, now: float) -> None:
        self._saves.pop(env, None)
        self._saves[env] = (space, now)
        while len(self._saves) > MAX_SAVES_KEPT:
            self._saves.pop(next(iter(self._saves)))

    def told(self, looking: Looking, now: float) -> None:
        """An editor plugin said what it shows (NOWHERE: nothing)."""
        self._explicit = (looking, now)

    def forget(self, env: str) -> None:
        """The environment left the space: nobody edits it any more."""
        self._saves.pop(env, None)
        if self._explicit is not None and self._explicit[0].env == env:
            self._explicit = None

    def current(self, now: float) -> Looking:
        """What this device reports now."""
        last = max(self._saves.items(), key=lambda kv: kv[1][1], default=None)
        if self._explicit is not None and (last is None or self._explicit[1] >= last[1][1]):
            return self._explicit[0]
        if last is None or now - last[1][1] > self.ttl_s:
            return NOWHERE
        env, (space, _t) = last
        editor = self._explicit[0].editor if self._explicit is not None else None
        return Looking(space, env, None, editor)

    def next_change(self, now: float) -> float | None:
        """When `current` will change by itself (a save ageing out), or None."""
        last = max((t for _s, t in self._saves.values()), default=None)
        if last is None or now - last > self.ttl_s:
            return None
        if self._explicit is not None and self._explicit[1] >= last:
            return None
        return last + self.ttl_s

    def update(self, now: float) -> Looking | None:
        """The presence to send, when it differs from what was last sent; else None."""
        cur = self.current(now)
        if cur == self.sent:
            return None
        self.sent = cur
        return cur


def _looking_at(p: dict[str, Any]) -> dict[str, Any]:
    """A peer row's presence, whatever transport reported it."""
    return p.get("presence") or {"env": p.get("env"), "entity": p.get("entity")}


def who_rows(me: dict[str, Any], peers: Iterable[dict[str, Any]],
             describe: Callable[[str | None, str | None], tuple[str | None, str | None]],
             ) -> list[dict[str, Any]]:
    """`who`: this device first, then every other device online by LAN or relay, one row
    each (`via` names every way it is reachable; what it edits comes from the row that says,
    the LAN's first), sorted by member then device. `describe(env, entity)` names an
    environment and an entity for people."""
    by_device: dict[str, list[dict[str, Any]]] = {}
    for p in peers:
        device = p.get("device")
        if device and device != me["device"] and p.get("state") in ONLINE_STATES:
            by_device.setdefault(device, []).append(p)
    rows = []
    for device, ps in by_device.items():
        best = max(ps, key=lambda p: (bool(_looking_at(p).get("env")), p.get("via") == "lan"))
        pres = _looking_at(best)
        env = pres.get("env")
        entity = pres.get("entity") if env else None
        env_name, entity_name = describe(env, entity)
        rows.append({"device": device, "name": best.get("name"),
                     "member": next((p["member"] for p in ps if p.get("member")), None),
                     "you": False, "via": "+".join(sorted({str(p.get("via")) for p in ps})),
                     "online": True, "env": env, "env_name": env_name, "entity": entity,
                     "entity_name": entity_name, "editor": pres.get("editor")})
    rows.sort(key=lambda r: (str(r["member"] or "").casefold(), r["device"]))
    return [me, *rows]


def online_devices(rows: Iterable[dict[str, Any]]) -> set[str]:
    """Device ids a `who` answer shows online (this device included)."""
    return {r["device"] for r in rows if r.get("online") and r.get("device")}


def mark_online(members_doc: dict[str, Any], online: set[str] | None) -> dict[str, Any]:
    """`members --json` with each device's `online`: True/False from a running daemon's
    `who`; None (unknown) without one, except this device, which is then offline."""
    for m in members_doc.get("members", []):
        for d in m.get("devices", []):
            if online is not None:
                d["online"] = d["id"] in online
            elif d.get("this_device"):
                d["online"] = False
            else:
                d["online"] = None
    return members_doc
