"""Whether an environment is still synced by its team: the lifecycle register, read (pure).

Why a module of its own: `unshare` and `delete` are ordinary change sets (one `set` of the
`["m", "lifecycle"]` register on the environment entity) that any member's device may write,
and every part of the daemon must read the result the same way: the agent (does a received
environment get a file? may this file be shared again?), the relay transport (what size to
declare for a tombstoned environment, which no device can render any more once it left) and
the store (an environment whose log must be kept after it left the space).

A tombstone (unshared or deleted) is final for that environment uuid, like an entity delete
(docs/design/merge.md "Ops": "never resurrected"): devices keep the environment's log, tombstone included, so
that it reaches every device that was offline, survives relay restarts and reaches members
who join later, and so that a replay of the log can never bring the environment back. The
same file is shared again as a new environment (`mocksync share FILE --copy`, new uuids):
reusing the uuid would restart or fork the device's chain in that log, and would fight the
tombstone register on every device that already applied it.
"""

from __future__ import annotations

from .ops import DELETED, LIFECYCLE, SHARED, UNSHARED
from .state import State

#: The lifecycle values that take an environment out of its space for good.
TOMBSTONES = (UNSHARED, DELETED)


def lifecycle_of(state: State) -> str:
    """The environment's lifecycle: `shared` (also when nothing says otherwise yet, e.g. its
    first change set has not arrived), `unshared` or `deleted`."""
    ent = state.entity(state.env_uuid)
    if ent is None:
        return SHARED
    value = ent.get(LIFECYCLE, SHARED)
    return value if value in TOMBSTONES else SHARED


def is_tombstoned(state: State) -> bool:
    """Did a member unshare or delete this environment (whatever else the log holds)?"""
    return lifecycle_of(state) in TOMBSTONES


def reshare_refusal(state: State, file_name: str) -> str | None:
    """Why `share FILE` (without `--copy`) must refuse a file whose environment uuid the log
    holds as tombstoned; None when sharing it is fine. The sentence says what to do instead."""
    value = lifecycle_of(state)
    if value not in TOMBSTONES:
        return None
    return (f"{file_name} holds environment {state.env_uuid}, which was {value} by a member of "
            "its space; a removed environment does not come back under the same uuid. Share "
            f"it as a new environment with `mocksync share {file_name} --copy`")


__all__ = ["TOMBSTONES", "is_tombstoned", "lifecycle_of", "reshare_refusal"]
