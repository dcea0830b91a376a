"""What `resolve ID --take` writes: the ops of one change set made after seeing both sides.

Why a module of its own: which ops settle a conflict is a pure function of the state and the
conflict, tested without a daemon; the daemon only commits them. Because the change set has
seen both sides, applying it anywhere empties the register's frontier (or restores what a
delete dropped), so the conflict clears on every device, not only on the one that resolved it.

Taking the loser of work a delete dropped (model.state: `#deleted`, `#parent`, `#ref`) brings
the deleted entity back: a `c` op written after seeing the delete is a birth no delete has
seen. A parent comes back with its own dead ancestors (a response's route, a route's folder)
and with the children the same delete took with it (the route's responses), so the restored
route looks as it did to the side that added to it. Taking the winner makes what the render
already shows explicit: the addition deleted too, a route or folder kept at the end of
`rootChildren`, a dangling reference cleared.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ValidationError
from .fracindex import keys_between
from .ops import Create, Delete, Op, Set, Unset
from .render import tree_parents
from .schema import ROOT, TREE
from .state import (
    ABSENT,
    BUCKET_REF,
    CALLBACK_REFS,
    DELETED,
    PARENT_GONE,
    PARENT_PLACE,
    TARGET_GONE,
    Entity,
    State,
)

#: Entities one restore may bring back (a folder deleted with thousands of routes inside is
#: restored whole; beyond this the user is told to restore it from a file instead).
MAX_RESTORED = 100_000


#: The two words `resolve --take` accepts.
TAKES = ("ours", "theirs")


def takes_loser(conflict: Mapping[str, Any], take: str, device: str) -> bool:
    """Whether `resolve --take TAKE` on `device` puts the conflict's losing value in place.

    "Ours" is the side this device wrote, or the value kept now when it wrote neither; so on
    the device whose write lost, `--take ours` is the flip, and everywhere else `--take
    theirs` is. One rule for the CLI, the web page and the hint `conflicts` prints."""
    if take not in TAKES:
        raise ValidationError(f"--take must be one of {', '.join(TAKES)}, not {take!r}")
    mine = (conflict.get("loser") or {}).get("device") == device
    return (take == "ours") if mine else (take == "theirs")


def flip_take(conflict: Mapping[str, Any], device: str) -> str:
    """The `--take` word that, on `device`, replaces the kept value by the one it won over."""
    return next(t for t in TAKES if takes_loser(conflict, t, device))


def _container(state: State, e: Entity) -> Entity | None:
    """The entity `e` hangs on (its route, its folder), or None (the environment, the root)."""
    place = PARENT_PLACE.get(e.kind or "")
    v = e.get(("p", place), None) if place is not None else None
    if not isinstance(v, list | tuple) or len(v) != 2 or v[0] == ROOT:
        return None
    return state.entity(v[0])


def restore_ops(state: State, uuid: str) -> list[Op]:
    """Ops bringing deleted entity `uuid` back: its deleted ancestors, itself, and what the
    same deletes took with them (outermost first, then breadth first by uuid). [] when it is
    not deleted."""
    chain: list[Entity] = []
    e = state.entity(uuid)
    while e is not None and e.deleted and e.created and e not in chain:
        chain.append(e)
        e = _container(state, e)
    if not chain:
        return []
    origins = {o for ent in chain for _s, o in ent.dels}
    kids: dict[str, list[Entity]] = {}
    for x in state.entities.values():
        if x.deleted and x.created and any(o in origins for _s, o in x.dels):
            parent = _container(state, x)
            if parent is not None:
                kids.setdefault(parent.uuid, []).append(x)
    order = list(reversed(chain))
    chosen = {x.uuid for x in order}
    queue = list(order)
    while queue:
        nxt: list[Entity] = []
        for p in queue:
            for child in sorted(kids.get(p.uuid, []), key=lambda x: x.uuid):
                if child.uuid not in chosen:
                    chosen.add(child.uuid)
                    order.append(child)
                    nxt.append(child)
        if len(order) > MAX_RESTORED:
            raise ValidationError(
                f"restoring this would bring back more than {MAX_RESTORED} entities; restore "
                "it from a saved copy of the file instead")
        queue = nxt
    return [Create(x.uuid, x.kind or "", []) for x in order]


def _root_end(state: State, rng: random.Random) -> list[str]:
    """A tree place at the end of `rootChildren` as it renders now."""
    keys = []
    for u, c in tree_parents(state).items():
        if c == ROOT:
            v = state.entity(u).get(("p", TREE), None)  # type: ignore[union-attr]
            if isinstance(v, list | tuple) and len(v) == 2:
                keys.append(v[1])
    return [ROOT, keys_between(max(keys) if keys else None, None, 1, rng)[0]]


def resolution_ops(state: State, conflict: Mapping[str, Any], take_loser: bool,
                   rng: random.Random | None = None) -> list[Op]:
    """The ops settling `conflict` (a `Store.conflicts` listing entry, or `Conflict.to_json`
    with `absent` flags): the loser's side when `take_loser`, else the winner's."""
    rng = rng or random.Random()
    uuid = conflict["entity"]
    field = tuple(conflict["field"])
    parent = conflict.get("parent")
    ent = state.entity(uuid)
    if ent is None:
        raise ValidationError(f"entity {uuid} is not in this environment's state")
    if field[0] == DELETED:
        return restore_ops(state, uuid) if take_loser else [Delete(uuid)]
    if field[0] in (PARENT_GONE, TARGET_GONE):
        if not isinstance(parent, str):
            raise ValidationError(f"conflict {conflict.get('id')} names no deleted entity")
        if take_loser:
            return restore_ops(state, parent)
        if field[0] == PARENT_GONE:
            if field[2] == TREE:  # a route or folder: keep it where it shows, at the root end
                return [Set(uuid, ("p", TREE), _root_end(state, rng))]
            return [Delete(uuid)]  # a response of a deleted route: gone with it
        rid = field[1:]
        if rid == BUCKET_REF:
            return [Set(uuid, BUCKET_REF, "")]
        if rid == CALLBACK_REFS:
            cur = ent.get(CALLBACK_REFS, [])
            kept = [i for i in cur if not (isinstance(i, dict) and isinstance(i.get("uuid"), str)
                                           and i["uuid"] in state.dead)]
            return [Set(uuid, CALLBACK_REFS, kept)]
        raise ValidationError(f"unknown reference {list(rid)!r}")
    # A register written concurrently: the chosen side's value, written again.
    if take_loser:
        side = conflict["loser"]
        value = ABSENT if side.get("absent") else side["value"]
    else:
        value = ent.get(field)  # what holds now (the listing's winner may be older)
    if value is ABSENT:
        return [Unset(uuid, field)]
    return [Set(uuid, field, value)]


def recreated(state: State, ops: Sequence[Op]) -> list[Op]:
    """Restores for the creates in `ops` of entities deleted in `state`.

    For a decision that makes a whole version of the file the team's (`resolve ENV
    --keep-local/--discard-local`): the chosen version holds an entity the other side
    deleted, so it must come back, and a create alone never resurrects. Not for ordinary
    saves: there a create of a deleted entity is a stale editor's copy, which must not undo
    a teammate's delete."""
    out: list[Op] = []
    for op in ops:
        if isinstance(op, Create) and op.regs:
            e = state.entity(op.uuid)
            if e is not None and e.deleted:
                out.append(Create(op.uuid, op.kind, []))
    return out


__all__ = ["MAX_RESTORED", "recreated", "resolution_ops", "restore_ops"]
