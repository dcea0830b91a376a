"""Can this environment sync? The decision behind an environment's `blocked` state in `status`.

Why (issue 12): a change set this device refused (bad signature, a device that may not write,
ops the model refuses, a broken chain) or quarantined (stamped too far in the future) leaves
its author's chain stuck here: every later change set of that device waits behind it. Before,
`status` still said `synced`, so nobody knew edits had stopped arriving. Now an environment is
`blocked` while any such change set stands in the way, with a sentence naming which device,
which change set and why.

Which refusals block: only those of a change set its author really made (its signature
verified: ops the model refuses, a forked chain) by a device that may still write, while that
device's chain here has not moved past it. A forgery (someone else's signature in a teammate's
slot, recorded with the FORGED prefix) blocks nothing: the teammate's genuine change set with
that number is still welcome. Nor does a change set of a removed device past its removal's cut:
the team converges without it. Every refusal stays listed in `refused`. Quarantine always
blocks: the change set is held, not applied, and that device's later ones wait for it.

Pure: the store's rows in, a verdict out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..changes.hlc import physical_ms

#: State an environment shows while refused or quarantined change sets stop it syncing.
BLOCKED = "blocked"
#: Refusals listed per environment in `status --json` (newest first).
MAX_LISTED_REFUSALS = 10
#: Prefix of the recorded reason of a change set whose signature is not its author's.
FORGED = "forged: "
#: Longest refusal reason quoted in the environment's status sentence.
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class Health:
    """`blocked`: a sentence when the environment cannot sync, else None. `refused`: what to
    list in `status --json` (each with `blocking` true or false)."""

    blocked: str | None
    refused: list[dict[str, Any]] = field(default_factory=list)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def sync_health(heads: Mapping[str, int], refusals: Sequence[Mapping[str, Any]],
                quarantined: Sequence[tuple[str, int, int]], *, now_ms: int,
                active: Collection[str], names: Mapping[str, str] | None = None) -> Health:
    """Judge one environment.

    `heads`: device -> highest seq applied here; `refusals`: rows `{device, seq, reason,
    at_ms}` newest first; `quarantined`: `(device, seq, hlc)`; `active`: the devices that may
    write to the space now; `names`: device -> member name for sentences."""
    names = names or {}

    def who(device: str) -> str:
        n = names.get(device)
        return f"{device} ({n})" if n else device

    listed: list[dict[str, Any]] = []
    blocking: list[dict[str, Any]] = []
    for r in refusals:
        device, seq = r.get("device"), r.get("seq")
        reason = str(r.get("reason") or "")
        stuck = (isinstance(device, str) and isinstance(seq, int) and device in active
                 and heads.get(device, 0) < seq and not reason.startswith(FORGED))
        item = {"device": device, "seq": seq, "reason": r.get("reason"), "at_ms": r.get("at_ms"),
                "blocking": stuck}
        if stuck:
            blocking.append(item)
        if len(listed) < MAX_LISTED_REFUSALS:
            listed.append(item)
    for device, seq, hlc in quarantined:
        ahead_s = max(0, (physical_ms(hlc) - now_ms) // 1000)
        item = {"device": device, "seq": seq, "blocking": True, "at_ms": None,
                "reason": (f"quarantined: stamped {ahead_s} s ahead of this device's clock, more "
                           "than the allowed drift; held, not applied (check that device's "
                           "system time)")}
        blocking.append(item)
        if len(listed) < MAX_LISTED_REFUSALS:
            listed.append(item)
    if not blocking:
        return Health(None, listed)
    first = blocking[0]
    more = f" (and {len(blocking) - 1} more)" if len(blocking) > 1 else ""
    sentence = (f"change set #{first['seq']} from {who(first['device'])} was refused{more}: "
                f"{_clip(str(first['reason']))}; that device's later edits wait behind it")
    return Health(sentence, listed)


__all__ = ["BLOCKED", "FORGED", "MAX_LISTED_REFUSALS", "Health", "sync_health"]
