"""Two versions of an environment -> the fewest ops that turn one into the other.

One changed property is one `set`; moving one route is one place `set`, found with a longest
increasing subsequence of the items that kept their relative order, so concurrent reorders on
other devices merge instead of being overwritten. New position keys are made between the
current keys (from the State) of the neighbours that stayed, which is what lets a stale editor
(one that has not seen a teammate's reorder) insert without undoing that reorder.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Any

from ..errors import ValidationError
from .flatten import EntityView, flatten
from .fracindex import is_valid_key, keys_between
from .ops import Create, Delete, Op, RegId, Set, Unset
from .render import tree_parents
from .schema import ENV, LIST, TREE
from .state import State


def same(a: Any, b: Any) -> bool:
    """JSON equality that tells true from 1 and 1 from 1.0 only where Python would not."""
    if a != b:
        return False
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return True


def registers_of(v: EntityView) -> dict[RegId, Any]:
    """An entity's field registers: one per field, one per key of a nested plain object."""
    regs: dict[RegId, Any] = {("k",): list(v.keys)}
    for k, val in v.fields.items():
        if isinstance(val, dict):
            regs[("v", k)] = {}
            regs[("k", k)] = list(val)
            for sk, sval in val.items():
                regs[("v", k, sk)] = sval
        else:
            regs[("v", k)] = val
    return regs


def _field_ops(b: EntityView, n: EntityView) -> list[Op]:
    # Python's == is the fast C comparison; it equates true with 1 and 1 with 1.0, which
    # Mockoon's fixed field types never swap, so `same` is only paid for entities that changed.
    if b.keys == n.keys and b.fields == n.fields:
        return []
    old, new = registers_of(b), registers_of(n)
    ops: list[Op] = []
    for rid, val in new.items():
        if rid not in old or not same(old[rid], val):
            ops.append(Set(n.uuid, rid, val))
    for rid in old:
        if rid not in new and rid[0] == "v":
            ops.append(Unset(n.uuid, rid))
    return ops


def _lis(seq: Sequence[int]) -> set[int]:
    """Indices (into seq) of one longest strictly increasing subsequence."""
    tails: list[int] = []
    tails_idx: list[int] = []
    prev = [-1] * len(seq)
    for i, x in enumerate(seq):
        j = bisect.bisect_left(tails, x)
        if j == len(tails):
            tails.append(x)
            tails_idx.append(i)
        else:
            tails[j] = x
            tails_idx[j] = i
        prev[i] = tails_idx[j - 1] if j > 0 else -1
    out: set[int] = set()
    i = tails_idx[-1] if tails_idx else -1
    while i >= 0:
        out.add(i)
        i = prev[i]
    return out


def _sequences(views: dict[str, EntityView]) -> dict[tuple[str, str, str], list[str]]:
    """Ordered members per (place, kind-group, container). The tree mixes folders and routes."""
    seqs: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for v in views.values():
        for place, (container, idx) in v.places.items():
            group = "tree" if place == TREE else v.kind
            seqs.setdefault((place, group, container), []).append((idx, v.uuid))
    return {k: [u for _, u in sorted(lst)] for k, lst in seqs.items()}


def diff(
    base: dict[str, Any] | None,
    new: dict[str, Any],
    state: State | None = None,
    rng: random.Random | None = None,
    *,
    base_views: dict[str, EntityView] | None = None,
    new_views: dict[str, EntityView] | None = None,
) -> list[Op]:
    """Ops turning `base` (None: nothing) into `new`; position keys come from `state`.

    `base_views` / `new_views` are the docs' `flatten` results when the caller has them
    (`ParsedEnv.views`), which saves re-flattening a large environment on every save.
    """
    rng = rng or random.Random()
    if base is not None and state is None:
        state = state_from_doc(base, rng=random.Random(0))
    nviews = new_views if new_views is not None else flatten(new)
    if base is None:
        bviews: dict[str, EntityView] = {}
    else:
        bviews = base_views if base_views is not None else flatten(base)
    new_env = next(iter(nviews))
    if bviews and next(iter(bviews)) != new_env:
        raise ValidationError(
            f"the environment's uuid changed from {next(iter(bviews))} to {new_env}; "
            "share it as a new environment instead"
        )
    creates: dict[str, tuple[str, dict[RegId, Any]]] = {}  # uuid -> kind, registers
    sets: list[Op] = []
    # Whether every entity kept its kind and places: then no container's order changed and
    # the (whole-environment) sequence comparison below is skipped. A view shared by both
    # sides (an incremental parse keeps every untouched entity's view) is not compared at all.
    places_kept = True
    for u, nv in nviews.items():
        bv = bviews.get(u)
        if bv is None:
            regs = registers_of(nv)
            creates[u] = (nv.kind, regs)
            places_kept = False
        elif bv is not nv:
            sets.extend(_field_ops(bv, nv))
            if places_kept and (bv.kind != nv.kind or bv.places != nv.places):
                places_kept = False
    deletes = [Delete(u) for u in bviews if u not in nviews]

    # Places: per ordered container, keep the LIS of items that stayed; re-key the rest.
    reordered = not places_kept or bool(deletes)
    bseqs = _sequences(bviews) if reordered else {}
    moves: list[Op] = []
    shown_in: dict[str, str] | None = None  # tree_parents(state), computed when first needed
    for key, nseq in (_sequences(nviews) if reordered else {}).items():
        place, _group, container = key
        bseq = bseqs.get(key, [])
        if nseq == bseq:
            continue
        bidx = {u: i for i, u in enumerate(bseq)}
        cur_keys: dict[str, str] = {}
        # Here in `base` too, but the state has it in another container since: a teammate's
        # move that this (stale) editor has not seen. (Not an orphan or a cycle breaker, which
        # the render itself places here: those are re-keyed into the container they show in.)
        elsewhere: set[str] = set()
        for u in nseq:
            if u in bidx and state is not None:
                e = state.entity(u)
                val = e.get(("p", place), None) if e is not None else None
                if isinstance(val, list | tuple) and len(val) == 2 and is_valid_key(val[1]):
                    if val[0] == container:
                        cur_keys[u] = val[1]
                    elif place != TREE:
                        elsewhere.add(u)
                    else:
                        if shown_in is None:
                            shown_in = tree_parents(state)
                        if shown_in.get(u) != container:
                            elsewhere.add(u)
        eligible = [i for i, u in enumerate(nseq) if u in cur_keys or u in elsewhere]
        stay_local = _lis([bidx[nseq[i]] for i in eligible])
        stay = {eligible[j] for j in stay_local}
        # Those the edit left in order are not the edit's to move back: no op, no anchor.
        untouched = {i for i in stay if nseq[i] in elsewhere}
        stay -= untouched
        i = 0
        while i < len(nseq):
            if i in stay:
                i += 1
                continue
            j = i
            while j < len(nseq) and j not in stay:
                j += 1
            lo_keys = [cur_keys[nseq[k]] for k in range(i) if k in stay]
            hi_keys = [cur_keys[nseq[k]] for k in range(j, len(nseq)) if k in stay]
            lo = max(lo_keys) if lo_keys else None
            hi = min(hi_keys) if hi_keys else None
            if lo is not None and hi is not None and not lo < hi:
                hi = None
            for n, (u, k) in enumerate(zip(nseq[i:j], keys_between(lo, hi, j - i, rng),
                                           strict=True)):
                if i + n in untouched:
                    continue
                value = [container, k]
                if u in creates:
                    creates[u][1][("p", place)] = value
                else:
                    moves.append(Set(u, ("p", place), value))
            i = j

    ops: list[Op] = []
    for u, (kind, regs) in creates.items():
        ops.append(Create(u, kind, list(regs.items())))
    ops.extend(sets)
    ops.extend(moves)
    ops.extend(deletes)
    return ops


def snapshot_ops(doc: dict[str, Any], rng: random.Random | None = None) -> list[Op]:
    """Ops that create a whole environment from nothing (its first change set)."""
    return diff(None, doc, None, rng)


def state_from_doc(doc: dict[str, Any], stamp: tuple[int, str] = (0, ""),
                   rng: random.Random | None = None) -> State:
    """A State holding `doc`, written at `stamp` (for tools that merge files without a log)."""
    ops = snapshot_ops(doc, rng)
    s = State(doc["uuid"])
    s.apply(ops, stamp)
    return s


__all__ = ["diff", "snapshot_ops", "state_from_doc", "registers_of", "same", "ENV", "LIST"]
