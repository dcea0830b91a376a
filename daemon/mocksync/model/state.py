"""The merged state of one environment: entities holding last-writer-wins registers.

Each register keeps its value, the stamp `(hlc, device)` that wrote it (the greater stamp
wins) and the change set that wrote it (`origin = (device, seq)`), so concurrent writes can be
told from overwrites using the writers' version vectors (`deps`). Applying is commutative,
associative and idempotent, so every delivery order, with duplicates, gives the same state.
Within one change set ops apply in order (equal stamps: the later op wins).

A delete is a tombstone that beats every edit, earlier or concurrent: an edit never
resurrects. An edit concurrent with the delete is recorded as a conflict, like the loser of
any concurrent write (MERGE.md "Conflicts").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..changes import canonical
from .ops import RegId

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


class Reg:
    __slots__ = ("value", "stamp", "origin")

    def __init__(self, value: Any, stamp: Stamp, origin: Origin | None) -> None:
        self.value = value
        self.stamp = stamp
        self.origin = origin


class Entity:
    __slots__ = ("uuid", "kind", "created", "deleted", "del_stamp", "del_origin", "regs")

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self.kind: str | None = None
        self.created = False
        self.deleted = False
        self.del_stamp: Stamp | None = None
        self.del_origin: Origin | None = None
        self.regs: dict[RegId, Reg] = {}

    @property
    def live(self) -> bool:
        return self.created and not self.deleted

    def get(self, rid: RegId, default: Any = ABSENT) -> Any:
        r = self.regs.get(rid)
        return default if r is None or r.value is ABSENT else r.value


@dataclass(frozen=True)
class Conflict:
    """A concurrent write that lost (or an edit that lost to a delete). Reversible."""

    env: str
    entity: str
    kind: str | None
    field: tuple[str, ...]  # register id; ("#deleted",) for delete-vs-edit
    winner_value: Any
    winner_stamp: Stamp
    winner_origin: Origin | None
    loser_value: Any
    loser_stamp: Stamp
    loser_origin: Origin | None

    @property
    def id(self) -> str:
        """Stable id: the same conflict gets the same id on every device."""
        h = hashlib.sha256(
            canonical.encode([self.env, self.entity, list(self.field), list(self.loser_stamp)])
        )
        return h.hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        def val(v: Any) -> Any:
            return None if v is ABSENT else v

        return {
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


@dataclass
class ApplyResult:
    touched: set[str] = field(default_factory=set)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.touched)


def happened_before(a: Origin, b: Origin, b_deps: dict[str, int] | None) -> bool:
    """Did change set `a` precede change set `b` (b's author had seen a)?"""
    if a[0] == b[0]:
        return a[1] < b[1]
    return bool(b_deps) and b_deps.get(a[0], 0) >= a[1]


class State:
    """Registers of one environment (pure: no I/O)."""

    def __init__(self, env_uuid: str, deps_lookup: Callable[[Origin], dict | None] | None = None):
        self.env_uuid = env_uuid
        self.entities: dict[str, Entity] = {}
        self.conflicts: list[Conflict] = []
        self._deps: dict[Origin, dict[str, int]] = {}
        self._deps_lookup = deps_lookup
        #: Rendered JSON objects of leaf entities (responses, buckets, callbacks), by uuid,
        #: dropped whenever the entity is touched: rendering a 15 MB env after a one-property
        #: edit then rebuilds one object, not twenty thousand. Never mutated once stored.
        self.render_cache: dict[str, dict[str, Any]] = {}
        #: Serialised text of those objects per layout (see `jsfmt.dumps`): (obj, level, text).
        self.text_cache: dict[Any, dict[str, tuple[Any, int, str]]] = {}

    # ------------------------------------------------------------------ queries
    def entity(self, uuid: str) -> Entity | None:
        return self.entities.get(uuid)

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

    def _concurrent(self, a: Origin | None, b: Origin | None, b_deps: dict | None) -> bool:
        if a is None or b is None or a == b:
            return False
        if happened_before(a, b, b_deps):
            return False
        return not happened_before(b, a, self.deps_of(a))

    # ------------------------------------------------------------------ apply
    def apply(
        self,
        ops: Iterable[tuple],
        stamp: Stamp,
        origin: Origin | None = None,
        deps: dict[str, int] | None = None,
    ) -> ApplyResult:
        """Apply validated ops (see `ops.validate_ops`) written at `stamp` by change set `origin`."""
        res = ApplyResult()
        if origin is not None and deps is not None:
            self._deps[origin] = dict(deps)
        for op in ops:
            name = op[0]
            ent = self.entities.get(op[1])
            if ent is None:
                ent = self.entities[op[1]] = Entity(op[1])
            if name == "c":
                if ent.kind is None:
                    ent.kind = op[2]
                if not ent.created and not ent.regs and not ent.deleted:
                    # A brand-new entity (the common case, e.g. a whole environment shared):
                    # nothing to compare against, so no conflict checks per register.
                    ent.created = True
                    res.touched.add(ent.uuid)
                    regs = ent.regs
                    for rid, value in op[3]:
                        regs[rid] = Reg(value, stamp, origin)
                    continue
                if not ent.created:
                    ent.created = True
                    res.touched.add(ent.uuid)
                for rid, value in op[3]:
                    self._set(ent, rid, value, stamp, origin, deps, res)
            elif name == "s":
                self._set(ent, op[2], op[3], stamp, origin, deps, res)
            elif name == "x":
                self._set(ent, op[2], ABSENT, stamp, origin, deps, res)
            elif name == "d":
                self._delete(ent, stamp, origin, deps, res)
        for u in res.touched:
            self.render_cache.pop(u, None)
        return res

    def _set(self, ent: Entity, rid: RegId, value: Any, stamp: Stamp, origin: Origin | None,
             deps: dict | None, res: ApplyResult) -> None:
        cur = ent.regs.get(rid)
        # Field edits only, as `_delete` records: the same conflicts in either delivery order.
        if ent.deleted and rid[0] == "v" and self._concurrent(ent.del_origin, origin, deps):
            self._record(res, ent, ("#deleted",), ABSENT, ent.del_stamp, ent.del_origin,
                         value, stamp, origin, loser_field=rid)
        if cur is None:
            ent.regs[rid] = Reg(value, stamp, origin)
            res.touched.add(ent.uuid)
            return
        if stamp >= cur.stamp:
            if cur.stamp == stamp and cur.value == value:
                return  # duplicate delivery
            if rid[0] != "k" and cur.value != value and self._concurrent(cur.origin, origin, deps):
                self._record(res, ent, rid, value, stamp, origin, cur.value, cur.stamp, cur.origin)
            cur.value, cur.stamp, cur.origin = value, stamp, origin
            res.touched.add(ent.uuid)
        elif rid[0] != "k" and cur.value != value and self._concurrent(cur.origin, origin, deps):
            self._record(res, ent, rid, cur.value, cur.stamp, cur.origin, value, stamp, origin)

    def _delete(self, ent: Entity, stamp: Stamp, origin: Origin | None, deps: dict | None,
                res: ApplyResult) -> None:
        if ent.deleted:
            if ent.del_stamp is not None and stamp < ent.del_stamp:
                ent.del_stamp, ent.del_origin = stamp, origin  # keep the earliest: deterministic
            return
        ent.deleted = True
        ent.del_stamp, ent.del_origin = stamp, origin
        res.touched.add(ent.uuid)
        # Edits concurrent with the delete lose to it; record them.
        for rid, r in ent.regs.items():
            if rid[0] == "v" and self._concurrent(r.origin, origin, deps):
                self._record(res, ent, ("#deleted",), ABSENT, stamp, origin, r.value, r.stamp,
                             r.origin, loser_field=rid)

    def _record(self, res: ApplyResult, ent: Entity, rid: RegId, wv: Any, ws: Stamp,
                wo: Origin | None, lv: Any, ls: Stamp, lo: Origin | None,
                loser_field: RegId | None = None) -> None:
        f = rid if loser_field is None else ("#deleted",) + tuple(loser_field)
        c = Conflict(self.env_uuid, ent.uuid, ent.kind, f, wv, ws, wo, lv, ls, lo)
        if any(x.id == c.id for x in self.conflicts[-64:]):
            return
        self.conflicts.append(c)
        res.conflicts.append(c)

    # ------------------------------------------------------------------ persistence
    def entity_record(self, uuid: str) -> bytes:
        """One entity as bytes for the store's materialised table.

        JSON, not CBOR: key order inside values must survive (CBOR maps are sorted), and one
        C-accelerated json.dumps per entity is several times faster than encoding each value.
        The record is local state, never signed or sent, so it needs no canonical form.
        """
        e = self.entities[uuid]
        regs = [
            [list(rid), r.value is not ABSENT, None if r.value is ABSENT else r.value,
             r.stamp[0], r.stamp[1], list(r.origin) if r.origin else None]
            for rid, r in e.regs.items()
        ]
        return json.dumps([
            RECORD_FORMAT, e.kind, e.created, e.deleted,
            list(e.del_stamp) if e.del_stamp else None,
            list(e.del_origin) if e.del_origin else None,
            regs,
        ], separators=(",", ":"), allow_nan=False).encode("ascii")

    def load_record(self, uuid: str, blob: bytes) -> None:
        fmt, kind, created, deleted, dstamp, dorigin, regs = json.loads(blob)
        if fmt != RECORD_FORMAT:
            raise ValueError(f"entity record format {fmt!r} is not {RECORD_FORMAT}")
        e = Entity(uuid)
        e.kind, e.created, e.deleted = kind, created, deleted
        e.del_stamp = tuple(dstamp) if dstamp else None
        e.del_origin = tuple(dorigin) if dorigin else None
        for rid, present, value, hlc, dev, origin in regs:
            e.regs[tuple(rid)] = Reg(value if present else ABSENT, (hlc, dev),
                                     tuple(origin) if origin else None)
        self.entities[uuid] = e
        self.render_cache.pop(uuid, None)

    def copy(self) -> State:
        """Deep enough copy for what-if merges (registers are replaced, never mutated in place)."""
        s = State(self.env_uuid, self._deps_lookup)
        for u, e in self.entities.items():
            n = Entity(u)
            n.kind, n.created, n.deleted = e.kind, e.created, e.deleted
            n.del_stamp, n.del_origin = e.del_stamp, e.del_origin
            n.regs = {rid: Reg(r.value, r.stamp, r.origin) for rid, r in e.regs.items()}
            s.entities[u] = n
        s.conflicts = list(self.conflicts)
        s._deps = dict(self._deps)
        return s
