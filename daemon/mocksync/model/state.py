"""The merged state of one environment: entities holding last-writer-wins registers.

Each register keeps its value, the stamp `(hlc, device)` that wrote it (the greater stamp
wins) and the change set that wrote it (`origin = (device, seq)`), so concurrent writes can be
told from overwrites using the writers' version vectors (`deps`). Applying is commutative,
associative and idempotent, so every delivery order, with duplicates, gives the same state.
Within one change set ops apply in order (equal stamps: the later op wins).

A delete is a tombstone that beats every edit, earlier or concurrent: an edit never
resurrects. An edit concurrent with the delete is recorded as a conflict, like the loser of
any concurrent write (docs/design/merge.md "Conflicts").

Conflicts are a function of the set of applied change sets, never of their arrival order, so
every device that holds the same log lists the same conflicts (issue 11 item 8). Besides its
winner, each register keeps its *frontier*: the writes no other applied write happened after
(a multi-value register's siblings). A conflict is a frontier write other than the winner
with another value. Maintaining the frontier write by write gives the same set in any order
because happened-before is a partial order (the store closes each change set's `deps` over
its dependencies' deps, so the relation is transitive). A later write by someone who had seen
both sides empties the frontier: that is how a resolution, itself an ordinary change set,
clears the conflict on every device. An edit of a deleted entity is a conflict when it is
in its register's frontier and concurrent with every delete of the entity (a delete made
after seeing the edit discarded it knowingly).

No edit vanishes without a trace (issue 15): besides the losing writes above, whatever the
render drops because something it hangs on was deleted concurrently is a conflict too: an
entity added or moved under a parent deleted at the same time (`#parent`: a response in a
deleted route, a route or folder in a deleted folder, which renders at the end of
`rootChildren`), and a reference written while its target was deleted (`#ref`: a
`databucketID` naming a deleted bucket, an invocation of a deleted callback), both recorded on
the entity holding the place or reference, naming the deleted one as `parent`.

A delete beats every edit and every create of the entity, as said above. The one way back is
a restore: a `c` op with no registers (what `resolve --take` writes, model.resolution). A
delete removes only the restores its author had seen (an observed-remove set), so an entity
is deleted when it has deletes and every restore was seen by one of them: a restore made
after seeing the delete brings it back, a delete made after seeing the restore removes it
again, whatever the delivery order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..changes import canonical
from .ops import Create, Delete, Op, RegId, Set, Unset, as_op
from .schema import BUCKET, CALLBACK, FOLDER, LIST, RESPONSE, ROOT, ROUTE, TREE

Stamp = tuple[int, str]  # (hlc, device)
#: Version of `entity_record`'s layout (the store refuses a database written in another).
RECORD_FORMAT = 2
Origin = tuple[str, int]  # (device, seq)


class _Absent:
    """A register whose key was removed from the object (distinct from JSON null)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


#: One write of a register kept in its frontier: (value, stamp, origin).
Write = tuple[Any, Stamp, "Origin | None"]

#: Writes kept in one register's frontier (one per device writing concurrently, so in practice
#: a handful). Beyond it the oldest-stamped are dropped: a register that many devices wrote
#: concurrently lists this many conflicts at most.
MAX_FRONTIER = 32
#: Deletes remembered per entity (concurrent deletes of one entity by different devices).
MAX_DELETES = 32
#: Restores remembered per entity.
MAX_RESTORES = 32

#: Conflict fields of dropped work (the register that named the deleted entity follows).
PARENT_GONE = "#parent"  # placed under a parent deleted concurrently
TARGET_GONE = "#ref"  # a reference written while its target was deleted
DELETED = "#deleted"  # an edit of an entity deleted concurrently
#: The place that puts each kind under another entity (the env itself is never deleted).
PARENT_PLACE = {RESPONSE: LIST, ROUTE: TREE, FOLDER: TREE}
#: Registers holding references the render clears when their target is deleted.
BUCKET_REF: RegId = ("v", "databucketID")
CALLBACK_REFS: RegId = ("v", "callbacks")


class Reg:
    __slots__ = ("value", "stamp", "origin", "front")

    def __init__(self, value: Any, stamp: Stamp, origin: Origin | None,
                 front: list[Write] | None = None) -> None:
        self.value = value
        self.stamp = stamp
        self.origin = origin
        #: The register's frontier when it is not just the winner (None: only the winner).
        self.front = front


class Entity:
    __slots__ = ("uuid", "kind", "created", "deleted", "del_stamp", "del_origin", "regs",
                 "dels", "restores")

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self.kind: str | None = None
        self.created = False
        self.deleted = False
        self.del_stamp: Stamp | None = None
        self.del_origin: Origin | None = None
        self.regs: dict[RegId, Reg] = {}
        #: Every delete of this entity (stamp, origin); del_stamp/del_origin is the earliest.
        self.dels: list[tuple[Stamp, Origin | None]] = []
        #: The change sets that restored it after deletes (see the module docstring).
        self.restores: list[Origin | None] = []

    @property
    def live(self) -> bool:
        return self.created and not self.deleted

    def get(self, rid: RegId, default: Any = ABSENT) -> Any:
        r = self.regs.get(rid)
        return default if r is None or r.value is ABSENT else r.value


@dataclass(frozen=True)
class Conflict:
    """A concurrent write that lost (or work a delete dropped). Reversible.

    `field` is the register id, or it starts with DELETED (an edit of a deleted entity),
    PARENT_GONE or TARGET_GONE (work dropped because `parent` was deleted concurrently; the
    register that names it follows). For those the winner is the delete (value ABSENT)."""

    env: str
    entity: str
    kind: str | None
    field: tuple[str, ...]
    winner_value: Any
    winner_stamp: Stamp
    winner_origin: Origin | None
    loser_value: Any
    loser_stamp: Stamp
    loser_origin: Origin | None
    #: The deleted entity whose loss dropped this work (PARENT_GONE / TARGET_GONE only).
    parent: str | None = None

    @property
    def id(self) -> str:
        """Stable id: the same conflict gets the same id on every device."""
        key: list[Any] = [self.env, self.entity, list(self.field), list(self.loser_stamp)]
        if self.parent is not None:  # one reference list may name several deleted callbacks
            key.append(self.parent)
        return hashlib.sha256(canonical.encode(key)).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        def val(v: Any) -> Any:
            return None if v is ABSENT else v

        out = {
            "id": self.id,
            "env": self.env,
            "entity": self.entity,
            "kind": self.kind,
            "field": list(self.field),
            "winner": {"value": val(self.winner_value), "hlc": self.winner_stamp[0],
                       "device": self.winner_stamp[1]},
            "loser": {"value": val(self.loser_value), "hlc": self.loser_stamp[0],
                      "device": self.loser_stamp[1]},
        }
        if self.parent is not None:
            out["parent"] = self.parent
        return out


@dataclass
class ApplyResult:
    """What one apply did: the entities it touched, and the open conflicts on them afterwards
    (the store replaces its listing of those entities with these)."""

    touched: set[str] = field(default_factory=set)
    conflicts: list[Conflict] = field(default_factory=list)
    #: What other entities may name (("uuid", u) a container or callback, ("bucket", id) a
    #: bucket id) whose existence changed: the dropped-work conflicts of the entities naming
    #: them must be derived again (`State.naming`), though those were not touched.
    named: set[tuple[str, str]] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.touched)


def _conflict_order(c: Conflict) -> tuple:
    return (c.field, c.loser_stamp, c.id)


def close_deps(applied: dict[str, int], seen: dict[str, int] | None, device: str,
               deps_of: Callable[[Origin], dict[str, int] | None]) -> dict[str, int]:
    """`deps` for `device`'s next change set: what it saw, closed over what those change sets
    (and its own previous one) had seen.

    `applied` is the device's version vector; `seen` what the edit was made against (None:
    all of it; never counted beyond `applied`). Closing makes happened-before transitive even
    when change sets arrived out of causal order (A's edit, which saw C's, arriving before
    C's), so a register's frontier, and the conflicts derived from it, come out the same
    whatever the delivery order. Pure: `deps_of` looks up an applied change set's deps.
    """
    base = dict(applied) if seen is None else {
        d: min(int(n), applied.get(d, 0)) for d, n in seen.items() if applied.get(d, 0) > 0}
    base[device] = applied.get(device, 0)
    out = dict(base)
    for d, n in base.items():
        if n <= 0:
            continue
        for dd, nn in (deps_of((d, n)) or {}).items():
            if nn > out.get(dd, 0):
                out[dd] = nn
    out.pop(device, None)
    return {d: n for d, n in sorted(out.items()) if n > 0}


def happened_before(a: Origin, b: Origin, b_deps: dict[str, int] | None) -> bool:
    """Did change set `a` precede change set `b` (b's author had seen a)?"""
    if a[0] == b[0]:
        return a[1] < b[1]
    return b_deps is not None and b_deps.get(a[0], 0) >= a[1]


class State:
    """Registers of one environment (pure: no I/O)."""

    def __init__(self, env_uuid: str, deps_lookup: Callable[[Origin], dict | None] | None = None):
        self.env_uuid = env_uuid
        self.entities: dict[str, Entity] = {}
        #: Registers whose frontier holds more than the winner: where conflicts can be.
        self.contested: set[tuple[str, RegId]] = set()
        #: Deleted entities other entities can hang on or name (routes, folders, buckets,
        #: callbacks): while there are none, no work can have been dropped.
        self.dead: set[str] = set()
        self._deps: dict[Origin, dict[str, int]] = {}
        self._deps_lookup = deps_lookup
        #: Rendered JSON objects of leaf entities (responses, buckets, callbacks), by uuid,
        #: dropped whenever the entity is touched: rendering a 15 MB env after a one-property
        #: edit then rebuilds one object, not twenty thousand. Never mutated once stored.
        self.render_cache: dict[str, dict[str, Any]] = {}
        #: Serialised text of those objects per layout (see `jsfmt.dumps`): (obj, level, text).
        self.text_cache: dict[Any, dict[str, tuple[Any, int, str]]] = {}
        #: How many times `apply` or `load_record` touched entities, and each entity's last
        #: touch, least recent first: a view derived from a few entities (the files an
        #: environment links) asks what changed since it was made (`touched_since`) instead
        #: of walking 25,000 entities after every change (issue 15).
        self.touches = 0
        self._touched: dict[str, int] = {}

    # ------------------------------------------------------------------ queries
    def entity(self, uuid: str) -> Entity | None:
        return self.entities.get(uuid)

    def touched_since(self, mark: int) -> list[str]:
        """Entities touched after the touch numbered `mark` (`touches` when a view was
        made), most recent first: as many steps as there are such entities."""
        out: list[str] = []
        touched = self._touched
        for u in reversed(touched):
            if touched[u] <= mark:
                break
            out.append(u)
        return out

    def _mark(self, uuids: Iterable[str]) -> None:
        self.touches += 1
        n, touched = self.touches, self._touched
        for u in uuids:
            touched.pop(u, None)  # (re-inserted last: the dict stays in touch order)
            touched[u] = n

    def live(self, kind: str | None = None) -> Iterable[Entity]:
        for e in self.entities.values():
            if e.live and (kind is None or e.kind == kind):
                yield e

    def deps_of(self, origin: Origin | None) -> dict[str, int] | None:
        if origin is None:
            return None
        d = self._deps.get(origin)
        if d is None and self._deps_lookup is not None:
            d = self._deps_lookup(origin)
        return d

    def _before(self, a: Origin | None, b: Origin | None) -> bool:
        """Did write `a` happen before write `b`? A write with no origin (a snapshot's
        baseline) precedes every write that has one."""
        if a is None:
            return b is not None
        if b is None or a == b:
            return False
        return happened_before(a, b, self.deps_of(b))

    def _concurrent(self, a: Origin | None, b: Origin | None) -> bool:
        if a is None or b is None or a == b:
            return False
        return not self._before(a, b) and not self._before(b, a)

    # ------------------------------------------------------------------ conflicts
    @property
    def conflicts(self) -> list[Conflict]:
        """Every open conflict, derived from the registers (same log -> same list)."""
        out: list[Conflict] = []
        dropped = self.naming({("uuid", u) for u in self.dead} | self._dead_bucket_keys())
        for uuid in sorted({u for u, _rid in self.contested} | dropped
                           | {e.uuid for e in self.entities.values() if e.deleted}):
            out += self.conflicts_of(uuid)
        return out

    def conflicts_of(self, uuid: str) -> list[Conflict]:
        """Open conflicts on one entity, in a fixed order (pure function of its registers)."""
        ent = self.entities.get(uuid)
        if ent is None:
            return []
        out: list[Conflict] = []
        if ent.deleted:
            # The entity is gone: what lost is any edit no delete had seen.
            for rid in sorted(ent.regs):
                if rid[0] != "v":
                    continue
                r = ent.regs[rid]
                for value, stamp, origin in (r.front or [(r.value, r.stamp, r.origin)]):
                    if origin is not None and ent.del_stamp is not None and ent.dels and all(
                            self._concurrent(origin, d_origin) for _s, d_origin in ent.dels):
                        out.append(Conflict(self.env_uuid, uuid, ent.kind,
                                            ("#deleted",) + tuple(rid), ABSENT, ent.del_stamp,
                                            ent.del_origin, value, stamp, origin))
            return sorted(out, key=_conflict_order)
        for rid in sorted(rid for u, rid in self.contested if u == uuid):
            r = ent.regs[rid]
            if rid[0] == "k" or not r.front:
                continue
            for value, stamp, origin in r.front:
                if origin == r.origin and stamp == r.stamp or value == r.value:
                    continue
                out.append(Conflict(self.env_uuid, uuid, ent.kind, rid, r.value, r.stamp,
                                    r.origin, value, stamp, origin))
        if self.dead and ent.live:
            out += self._dropped(ent)
        return sorted(out, key=_conflict_order)

    # ------------------------------------------------------------------ dropped work
    def _dropped_by(self, origin: Origin | None, gone: Entity) -> bool:
        """Was the write `origin` dropped unknowingly by the deletes of `gone`: no delete had
        seen it, and it was not written after seeing every delete (knowingly)."""
        if origin is None or not gone.dels:
            return False
        if any(self._before(origin, d) for _s, d in gone.dels):
            return False
        return not all(self._before(d, origin) for _s, d in gone.dels)

    def _gone(self, ent: Entity, field: tuple[str, ...], reg: Reg, parent: Entity) -> Conflict:
        return Conflict(self.env_uuid, ent.uuid, ent.kind, field, ABSENT,
                        parent.del_stamp or reg.stamp, parent.del_origin, reg.value, reg.stamp,
                        reg.origin, parent.uuid)

    def _dropped(self, ent: Entity) -> list[Conflict]:
        """Work on live `ent` the render drops because what it hangs on was deleted
        concurrently (see the module docstring). Pure function of the registers."""
        out: list[Conflict] = []
        place = PARENT_PLACE.get(ent.kind or "")
        if place is not None:
            reg = ent.regs.get(("p", place))
            value = reg.value if reg is not None else None
            if reg is not None and isinstance(value, list | tuple) and len(value) == 2 \
                    and value[0] != ROOT and value[0] in self.dead:
                parent = self.entities[value[0]]
                if self._dropped_by(reg.origin, parent):
                    out.append(self._gone(ent, (PARENT_GONE, "p", place), reg, parent))
        if ent.kind in (RESPONSE, CALLBACK):
            reg = ent.regs.get(BUCKET_REF)
            if reg is not None and isinstance(reg.value, str) and reg.value:
                bucket = self._dead_bucket(reg.value)
                if bucket is not None and self._dropped_by(reg.origin, bucket):
                    out.append(self._gone(ent, (TARGET_GONE,) + BUCKET_REF, reg, bucket))
        if ent.kind == RESPONSE:
            reg = ent.regs.get(CALLBACK_REFS)
            if reg is not None and isinstance(reg.value, list):
                for inv in reg.value:
                    cb = inv.get("uuid") if isinstance(inv, dict) else None
                    gone = self.entities.get(cb) if isinstance(cb, str) and cb in self.dead \
                        else None
                    if gone is not None and gone.kind == CALLBACK \
                            and self._dropped_by(reg.origin, gone):
                        out.append(self._gone(ent, (TARGET_GONE,) + CALLBACK_REFS, reg, gone))
        return out

    def _dead_bucket(self, bucket_id: str) -> Entity | None:
        """The deleted bucket a `databucketID` names, when no live bucket has that id (the
        render then clears the reference); the one with the smallest uuid if several."""
        dead = sorted(u for u in self.dead if self.entities[u].kind == BUCKET
                      and self.entities[u].get(("v", "id"), None) == bucket_id)
        if not dead or any(e.kind == BUCKET and e.live and e.get(("v", "id"), None) == bucket_id
                           for e in self.entities.values()):
            return None
        return self.entities[dead[0]]

    def _dead_bucket_keys(self) -> set[tuple[str, str]]:
        return {("bucket", v) for u in self.dead if self.entities[u].kind == BUCKET
                for v in [self.entities[u].get(("v", "id"), None)] if isinstance(v, str)}

    def naming(self, named: set[tuple[str, str]]) -> set[str]:
        """Live entities that hang on or refer to any of `named` (see `ApplyResult.named`):
        those whose dropped-work conflicts may have changed. One pass over the entities, paid
        only by change sets that deleted or restored something."""
        if not named:
            return set()
        uuids = {k for kind, k in named if kind == "uuid"}
        buckets = {k for kind, k in named if kind == "bucket"}
        out: set[str] = set()
        for e in self.entities.values():
            if not e.live:
                continue
            place = PARENT_PLACE.get(e.kind or "")
            if place is not None and uuids:
                v = e.get(("p", place), None)
                if isinstance(v, list | tuple) and len(v) == 2 and v[0] in uuids:
                    out.add(e.uuid)
                    continue
            ref = e.get(BUCKET_REF, None) if buckets and e.kind in (RESPONSE, CALLBACK) else None
            if isinstance(ref, str) and ref in buckets:
                out.add(e.uuid)
                continue
            cbs = e.get(CALLBACK_REFS, None) if e.kind == RESPONSE and uuids else None
            if isinstance(cbs, list) and any(
                    isinstance(i, dict) and isinstance(i.get("uuid"), str) and i["uuid"] in uuids
                    for i in cbs):
                out.add(e.uuid)
        return out

    def _advance(self, ent: Entity, rid: RegId, reg: Reg, value: Any, stamp: Stamp,
                 origin: Origin | None) -> None:
        """Add one write to the register's frontier (before the winner is updated)."""
        old = reg.front if reg.front is not None else [(reg.value, reg.stamp, reg.origin)]
        if any(o == origin for _v, _s, o in old):
            # The same change set again (a duplicate, or a later op of it): it replaces itself.
            new = [(value, stamp, o) if o == origin else (v, s, o) for v, s, o in old]
        else:
            new = [w for w in old if not self._before(w[2], origin)]
            if not any(self._before(origin, w[2]) for w in old):
                new.append((value, stamp, origin))
            if len(new) > MAX_FRONTIER:
                new = sorted(new, key=lambda w: w[1])[-MAX_FRONTIER:]
        key = (ent.uuid, rid)
        if len(new) == 1:
            reg.front = None
            self.contested.discard(key)
        else:
            reg.front = new
            self.contested.add(key)

    # ------------------------------------------------------------------ apply
    def apply(
        self,
        ops: Iterable[Op | tuple[Any, ...]],
        stamp: Stamp,
        origin: Origin | None = None,
        deps: dict[str, int] | None = None,
    ) -> ApplyResult:
        """Apply validated ops (see `ops.validate_ops`) written at `stamp` by change set `origin`."""
        res = ApplyResult()
        if origin is not None and deps is not None:
            self._deps[origin] = dict(deps)
        for raw in ops:
            op = as_op(raw)  # itself, or the record of an older positional tuple
            ent = self.entities.get(op.uuid)
            if ent is None:
                ent = self.entities[op.uuid] = Entity(op.uuid)
            if isinstance(op, Set):
                self._set(ent, op.rid, op.value, stamp, origin, deps, res)
            elif isinstance(op, Create):
                if ent.kind is None:
                    ent.kind = op.kind
                    if ent.dels:  # its delete came first: only now is it known what it was
                        self._settle(ent, res)
                if not op.regs:  # a restore: it does not create, it undoes deletes it had seen
                    self._restore(ent, origin, res)
                    continue
                if not ent.created and not ent.regs and not ent.deleted:
                    # A brand-new entity (the common case, e.g. a whole environment shared):
                    # nothing to compare against, so no conflict checks per register.
                    ent.created = True
                    res.touched.add(ent.uuid)
                    regs = ent.regs
                    for rid, value in op.regs:
                        regs[rid] = Reg(value, stamp, origin)
                    if ent.kind == BUCKET:  # may stand for a deleted bucket of the same id
                        self._name_bucket(ent, res)
                    continue
                if not ent.created:
                    ent.created = True
                    res.touched.add(ent.uuid)
                for rid, value in op.regs:
                    self._set(ent, rid, value, stamp, origin, deps, res)
            elif isinstance(op, Unset):
                self._set(ent, op.rid, ABSENT, stamp, origin, deps, res)
            elif isinstance(op, Delete):
                self._delete(ent, stamp, origin, deps, res)
        for u in res.touched:
            self.render_cache.pop(u, None)
        if res.touched:
            self._mark(res.touched)
        if res.touched and (self.contested or self.dead or any(
                self.entities[u].deleted for u in res.touched)):
            for u in sorted(res.touched):
                res.conflicts += self.conflicts_of(u)
        return res

    def _set(self, ent: Entity, rid: RegId, value: Any, stamp: Stamp, origin: Origin | None,
             deps: dict | None, res: ApplyResult) -> None:
        cur = ent.regs.get(rid)
        if cur is None:
            ent.regs[rid] = Reg(value, stamp, origin)
            res.touched.add(ent.uuid)
            return
        if cur.stamp == stamp and cur.value == value and cur.origin == origin:
            return  # duplicate delivery
        if ent.kind == BUCKET and rid == ("v", "id"):
            self._name_bucket(ent, res)  # the old id, and the new one below
        before = cur.front
        self._advance(ent, rid, cur, value, stamp, origin)
        if cur.front != before:
            res.touched.add(ent.uuid)
        if stamp >= cur.stamp:
            cur.value, cur.stamp, cur.origin = value, stamp, origin
            res.touched.add(ent.uuid)
            if ent.kind == BUCKET and rid == ("v", "id"):
                self._name_bucket(ent, res)

    def _delete(self, ent: Entity, stamp: Stamp, origin: Origin | None, deps: dict | None,
                res: ApplyResult) -> None:
        if any(o == origin and s == stamp for s, o in ent.dels):
            return  # duplicate delivery
        if len(ent.dels) < MAX_DELETES:
            ent.dels.append((stamp, origin))
            ent.dels.sort(key=lambda d: d[0])
        res.touched.add(ent.uuid)
        if ent.del_stamp is None or stamp < ent.del_stamp:
            ent.del_stamp, ent.del_origin = stamp, origin  # keep the earliest: deterministic
        self._settle(ent, res)

    def _restore(self, ent: Entity, origin: Origin | None, res: ApplyResult) -> None:
        """A restore of `ent` by change set `origin` (kept even before the entity's create or
        the deletes it undoes arrive: delivery is not causal across devices)."""
        if origin in ent.restores or len(ent.restores) >= MAX_RESTORES:
            return
        ent.restores.append(origin)
        ent.restores.sort(key=lambda o: ("", 0) if o is None else o)
        res.touched.add(ent.uuid)
        self._settle(ent, res)

    def _observed(self, restore: Origin | None, delete: Origin | None) -> bool:
        """Had the author of `delete` seen `restore`? (A delete without an origin, a
        what-if's, sees everything.)"""
        return restore is None or delete is None or restore == delete \
            or self._before(restore, delete)

    def _settle(self, ent: Entity, res: ApplyResult) -> None:
        """Existence after a restore or a delete: deleted when it has deletes and every
        restore was seen by one of them (an observed-remove set, so the same set of ops gives
        the same answer in any order). What hangs on it or names it is looked at again."""
        was = ent.deleted
        ent.deleted = bool(ent.dels) and all(
            any(self._observed(r, d) for _s, d in ent.dels) for r in ent.restores)
        if ent.deleted != was:
            res.touched.add(ent.uuid)
        if ent.kind in (ROUTE, FOLDER, BUCKET, CALLBACK):
            if ent.deleted:
                self.dead.add(ent.uuid)
            else:
                self.dead.discard(ent.uuid)
            res.named.add(("uuid", ent.uuid))
            if ent.kind == BUCKET:
                self._name_bucket(ent, res)

    @staticmethod
    def _name_bucket(ent: Entity, res: ApplyResult) -> None:
        v = ent.get(("v", "id"), None)
        if isinstance(v, str):
            res.named.add(("bucket", v))

    # ------------------------------------------------------------------ persistence
    def entity_record(self, uuid: str) -> bytes:
        """One entity as bytes for the store's materialised table.

        JSON, not CBOR: key order inside values must survive (CBOR maps are sorted), and one
        C call per entity is several times faster than encoding each value. The record is
        local state (and, inside a sealed snapshot, read back by `load_record` only), never
        signed or hashed, so it needs no canonical form: orjson writes it (UTF-8, 4x faster
        than the standard encoder, a first sync writes 20,000 records, issue 15), and the
        standard encoder what orjson refuses (an integer past 64 bits, a lone surrogate).
        Register values never hold NaN or Infinity (`ops.dec_value` refuses them), which
        orjson would write as null."""
        e = self.entities[uuid]
        def write(value: Any, stamp: Stamp, origin: Origin | None) -> list[Any]:
            return [value is not ABSENT, None if value is ABSENT else value, stamp[0], stamp[1],
                    list(origin) if origin else None]

        # Rows as tuples (both encoders write a tuple as the array a list makes): the common
        # register, a winner with no frontier, costs one tuple and no call.
        regs: list[tuple[Any, ...]] = []
        add = regs.append
        for rid, r in e.regs.items():
            value = r.value
            if r.front:  # optional 7th slot: the frontier
                add((rid, *write(value, r.stamp, r.origin), [write(*w) for w in r.front]))
            elif value is ABSENT:
                add((rid, False, None, *r.stamp, r.origin or None))
            else:
                add((rid, True, value, *r.stamp, r.origin or None))
        rec: list[Any] = [
            RECORD_FORMAT, e.kind, e.created, e.deleted,
            list(e.del_stamp) if e.del_stamp else None,
            list(e.del_origin) if e.del_origin else None,
            regs,
        ]
        if e.dels or e.restores:
            rec.append([[list(st), list(o) if o else None] for st, o in e.dels])
        if e.restores:  # optional 9th slot
            rec.append([list(o) if o else None for o in e.restores])
        try:
            return orjson.dumps(rec)
        except orjson.JSONEncodeError:
            return json.dumps(rec, separators=(",", ":"), allow_nan=False).encode("ascii")

    def load_record(self, uuid: str, blob: bytes) -> None:
        """Load one record (records written before frontiers existed load with none)."""
        fmt, kind, created, deleted, dstamp, dorigin, regs, *rest = json.loads(blob)
        if fmt != RECORD_FORMAT:
            raise ValueError(f"entity record format {fmt!r} is not {RECORD_FORMAT}")

        def write(present: bool, value: Any, hlc: int, dev: str, origin: Any) -> Write:
            return (value if present else ABSENT, (hlc, dev), tuple(origin) if origin else None)

        e = Entity(uuid)
        e.kind, e.created, e.deleted = kind, created, deleted
        e.del_stamp = tuple(dstamp) if dstamp else None
        e.del_origin = tuple(dorigin) if dorigin else None
        if rest and rest[0]:
            e.dels = [(tuple(st), tuple(o) if o else None) for st, o in rest[0]]
        elif deleted and e.del_stamp is not None:
            e.dels = [(e.del_stamp, e.del_origin)]
        if len(rest) > 1:
            e.restores = [tuple(o) if o else None for o in rest[1]]
        if kind in (ROUTE, FOLDER, BUCKET, CALLBACK) and deleted:
            self.dead.add(uuid)
        else:
            self.dead.discard(uuid)
        for u, rid in [k for k in self.contested if k[0] == uuid]:
            self.contested.discard((u, rid))
        for row in regs:
            rid = tuple(row[0])
            value, stamp, origin = write(*row[1:6])
            front = [write(*w) for w in row[6]] if len(row) > 6 and row[6] else None
            e.regs[rid] = Reg(value, stamp, origin, front)
            if front:
                self.contested.add((uuid, rid))
        self.entities[uuid] = e
        self.render_cache.pop(uuid, None)
        self._mark((uuid,))

    def copy(self) -> State:
        """Deep enough copy for what-if merges (registers are replaced, never mutated in place)."""
        s = State(self.env_uuid, self._deps_lookup)
        for u, e in self.entities.items():
            n = Entity(u)
            n.kind, n.created, n.deleted = e.kind, e.created, e.deleted
            n.del_stamp, n.del_origin = e.del_stamp, e.del_origin
            n.regs = {rid: Reg(r.value, r.stamp, r.origin, list(r.front) if r.front else None)
                      for rid, r in e.regs.items()}
            n.dels = list(e.dels)
            n.restores = list(e.restores)
            s.entities[u] = n
        s.contested = set(self.contested)
        s.dead = set(self.dead)
        s._deps = dict(self._deps)
        return s
