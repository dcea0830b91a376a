"""Who may write a change set into a space: one decision for the relay and every member (pure).

Why one function: a removed device's change sets must be refused by everyone alike, or the
remaining members diverge for good (issue 12: an edit made after the removal was stored by the
relay, applied by one member and refused by another). So the relay (which sees only the
envelope: device, seq and the environment's *tag*) and each member (which sees the whole change
set) ask the same question with the same inputs: the verified membership state, the device, the
env tag and the seq. A member derives the tag from the environment id with the space's tag key
(`space.envtags.env_tag`), so both sides key the removal cut identically, and the relay never
needs environment ids.

The cut: a removal entry records, per env tag, the last seq of the removed device the admin had
applied (`covers`). Change sets up to it stay accepted everywhere (the admin vouched for them);
anything later is refused everywhere, including change sets a member had applied before it
learned of the removal: `overreach` tells it which ones to take back (the store rebuilds the
environment without them), so every member ends with the same accepted set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .membership import SpaceState

#: Reason codes of a refusal (stable, for status documents and tests).
NOT_A_DEVICE = "not_a_device"
REMOVED = "removed_after_cut"
BAD_SEQ = "bad_seq"


@dataclass(frozen=True)
class Verdict:
    """Accept (with the author's public signing key to verify against) or refuse (why)."""

    accept: bool
    code: str = ""
    reason: str = ""
    sign_key: bytes | None = None

    def __bool__(self) -> bool:
        return self.accept


def judge_change(state: SpaceState, device: str, tag: str, seq: int) -> Verdict:
    """May change set `(device, env tag, seq)` enter the space whose log proves `state`?

    Active devices: yes (their own key verifies the signature). Removed devices: only up to
    the seq their removal covers for that env tag. Anyone else: no. Pure: no clock, no I/O."""
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return Verdict(False, BAD_SEQ, f"change set number {seq!r} of device {device} is not a "
                                        "positive integer")
    dev = state.devices.get(device)
    if dev is not None:
        return Verdict(True, sign_key=dev.sign_key)
    removal = state.removed_devices.get(device)
    if removal is None:
        return Verdict(False, NOT_A_DEVICE, f"device {device} is not a member of space "
                                            f"{state.space_id[:12]}")
    cut = removal.covers.get(tag, 0)
    if seq <= cut:
        return Verdict(True, sign_key=removal.sign_key or None)
    return Verdict(False, REMOVED, (
        f"device {device} was removed from space {state.space_id[:12]} (entry "
        f"{removal.entry[:12]}); its change sets after #{cut} of this environment are refused "
        "by every member and the relay"))


def cut_of(state: SpaceState, device: str, tag: str) -> int | None:
    """The last seq of `device` the space accepts for `tag`; None: no cut (an active device)."""
    if device in state.devices:
        return None
    removal = state.removed_devices.get(device)
    return 0 if removal is None else removal.covers.get(tag, 0)


def overreach(state: SpaceState, tag: str, held: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """Devices whose change sets of env `tag` this holder must take back, with the cut to keep
    and the reason: `held` maps device -> highest seq held (applied, pending or quarantined).

    A member that applied a removed device's change set before it learned of the removal holds
    more than the cut; everyone else never accepted it. Taking it back is what makes all
    members hold the same set."""
    out: dict[str, tuple[int, str]] = {}
    for device, top in sorted(held.items()):
        cut = cut_of(state, device, tag)
        if cut is not None and top > cut:
            out[device] = (cut, judge_change(state, device, tag, cut + 1).reason)
    return out


__all__ = ["BAD_SEQ", "NOT_A_DEVICE", "REMOVED", "Verdict", "cut_of", "judge_change", "overreach"]
