"""Three-way merge of environment files by the rules of docs/design/merge.md (the `mocksync merge` driver).

Without a change log, a file merge is the log merge in miniature: the base becomes the state,
each side's edits become one change set diffed against the base, both written concurrently
(so every register both sides wrote differently is a conflict), the preferred side with the
greater stamp. The result is the same JSON two devices would converge to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .diff import diff, state_from_doc
from .render import render
from .schema import ROUTE
from .state import ABSENT, Conflict, State


@dataclass
class MergeResult:
    doc: dict[str, Any]
    conflicts: list[Conflict]
    state: State


def merge3(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any],
           prefer: str = "ours") -> MergeResult:
    if prefer not in ("ours", "theirs"):
        raise ValueError("prefer must be 'ours' or 'theirs'")
    state = state_from_doc(base, stamp=(1, "base"), rng=random.Random(0))
    sides = {"ours": diff(base, ours, state, random.Random(1)),
             "theirs": diff(base, theirs, state, random.Random(2))}
    loser = "theirs" if prefer == "ours" else "ours"
    state.apply(sides[loser], (2, loser), origin=(loser, 1), deps={"base": 1})
    state.apply(sides[prefer], (3, prefer), origin=(prefer, 1), deps={"base": 1})
    return MergeResult(render(state), list(state.conflicts), state)


def describe(state: State, c: Conflict) -> str:
    """A line a person can read: where the conflict is and what each side wrote."""
    where = describe_entity(state, c.entity)
    if c.field and c.field[0] == "#deleted":
        what = "deleted, edit of " + ".".join(c.field[2:]) if len(c.field) > 2 else "deleted"
        return f"{where}: {what} (edit lost to the delete)"
    if c.field and c.field[0] == "#parent" and c.parent is not None:
        shown = "not shown" if c.field[-1] == "list" else "kept at the end of the root"
        return (f"{where}: put in {describe_entity(state, c.parent)}, deleted meanwhile "
                f"({c.winner_stamp[1]}); {shown} (resolve --take restores it with the parent)")
    if c.field and c.field[0] == "#ref" and c.parent is not None:
        return (f"{where}: {'.'.join(c.field[2:])} names {describe_entity(state, c.parent)}, "
                f"deleted meanwhile ({c.winner_stamp[1]}); the reference is cleared")
    fieldname = ".".join(c.field[1:]) if c.field[0] == "v" else f"place in {c.field[-1]}"
    return (f"{where}: {fieldname}: kept {_short(c.winner_value)} ({c.winner_stamp[1]}), "
            f"over {_short(c.loser_value)} ({c.loser_stamp[1]})")


def describe_entity(state: State, uuid: str) -> str:
    e = state.entity(uuid)
    if e is None:
        return uuid
    if e.kind == "env":
        return "environment"
    if e.kind == ROUTE:
        return f"route {str(e.get(('v', 'method'), '')).upper()} /{e.get(('v', 'endpoint'), '')}"
    if e.kind == "response":
        p = e.get(("p", "list"), None)
        parent = describe_entity(state, p[0]) if isinstance(p, list | tuple) else "route ?"
        label = e.get(("v", "label"), "") or uuid[:8]
        return f"{parent} response '{label}'"
    name = e.get(("v", "name"), None)
    return f"{e.kind} '{name}'" if name else f"{e.kind} {uuid[:8]}"


def _short(v: Any, limit: int = 40) -> str:
    if v is ABSENT:
        return "(removed)"
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."
