"""Where this device stands in a space, and how people are named in it (pure).

Why a module of its own: a device removed from a space (or whose member left it) must say so
in every place a person looks (`status`, `space list`, `new`, `share`) with the same words,
and those words must come from the signed log alone: the relay that refuses the device hands
over the entries that prove the removal, the device verifies them as any log, and only then
does it believe it. So the notice is a function of a verified `SpaceState`, never of a refusal
code a relay sent. Likewise two members may carry the same name in logs made before names
were checked (issue 11 follow-up): `member_labels` gives each a label people can tell apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from .membership import Member, SpaceState

#: Hex digits of a member id shown after a name that two members share.
LABEL_ID_CHARS = 6


@dataclass(frozen=True)
class Departure:
    """This device is no longer in the space: removed by an admin, or its member left."""

    space_id: str
    space_name: str
    kind: str  # "removed" | "left"
    by_device: str
    by_name: str
    at_ms: int
    entry: str

    def sentence(self) -> str:
        """What `status`, `space list`, `new` and `share` say about the space."""
        when = datetime.fromtimestamp(self.at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if self.kind == "left":
            return (f"left {self.space_name} at {when}; edits stay on this device only; "
                    "ask an admin to invite you back")
        return (f"removed from {self.space_name} by {self.by_name} at {when}; edits stay on "
                "this device only; ask an admin to invite you back")

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "by": self.by_device, "by_name": self.by_name,
                "at_ms": self.at_ms, "entry": self.entry, "reason": self.sentence()}


def _author_name(state: SpaceState, device: str) -> str:
    """The member name of the device that signed an entry, wherever it now stands."""
    m = state.member_of(device)
    if m is not None:
        return m.name
    r = state.removed_devices.get(device)
    if r is not None and r.member in state.members:
        return state.members[r.member].name
    return f"device {device}"


def departure(state: SpaceState, device_id: str) -> Departure | None:
    """Why `device_id` is out of the space, as the verified log proves it; None while it is an
    active device (or was never one: nothing to say)."""
    if state.is_member(device_id):
        return None
    r = state.removed_devices.get(device_id)
    if r is None:
        return None
    kind = "left" if r.kind == "leave" else "removed"
    return Departure(state.space_id, state.name, kind, r.by, _author_name(state, r.by), r.at_ms,
                     r.entry)


def name_taken(state: SpaceState, name: str, *, besides: str | None = None) -> Member | None:
    """An active member (other than `besides`) already called `name` (case-insensitively)."""
    low = name.casefold()
    for m in state.members.values():
        if m.id != besides and m.name.casefold() == low:
            return m
    return None


def member_labels(members: Mapping[str, Member]) -> dict[str, str]:
    """member id -> how to show it: its name, or `name (id prefix)` when another member
    shares the name (older logs, from before joins with a taken name were refused)."""
    count: dict[str, int] = {}
    for m in members.values():
        key = m.name.casefold()
        count[key] = count.get(key, 0) + 1
    return {mid: (m.name if count[m.name.casefold()] == 1
                  else f"{m.name} ({mid[:LABEL_ID_CHARS]})")
            for mid, m in members.items()}


def device_labels(state: SpaceState) -> dict[str, tuple[str, str]]:
    """device id -> (device name, member label) for every active device of the space."""
    labels = member_labels(state.members)
    return {did: (dev.name, labels.get(dev.member, dev.member))
            for did, dev in state.devices.items()}


__all__ = ["LABEL_ID_CHARS", "Departure", "departure", "device_labels", "member_labels",
           "name_taken"]
