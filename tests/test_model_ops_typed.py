"""Ops as typed records (issue 14): same signed bytes, same merge, fields by name.

Why: the records replaced bare positional tuples everywhere ops are made (diff, resolution,
linked files, commands) and read (State.apply, validate_ops, to_wire, `mocksync diff`). A
change set is signed over the wire form of its ops, so the one thing that must not move is
its bytes: the golden digests below were taken with the tuple code, before the records.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes import ChangeSet
from mocksync.model import (
    BadOpError,
    Create,
    Delete,
    Op,
    Set,
    State,
    Unset,
    as_op,
    diff,
    render,
    snapshot_ops,
    state_from_doc,
    to_wire,
    validate_ops,
)
from mocksync.model.resolution import recreated, restore_ops

PETSTORE = Path(__file__).resolve().parent.parent / "examples" / "environments" / "petstore.json"

#: sha256 of the signed change sets below, as the positional-tuple ops code encoded them.
GOLDEN_SNAPSHOT = "a5431f77ce8c8a23093342a6d6d422bd3d9be9d592a85b4cf90ca4f991a17564"
GOLDEN_EDIT = "5bfa9101ac487c034d71dcd7cb42fe3304415191dd1bf98ddf657f7530afebb6"


def _edited(doc: dict) -> dict:
    """One of each op: a changed field, a removed key, a new route (create), a removed
    route (delete), a reorder (place sets)."""
    edited = copy.deepcopy(doc)
    edited["routes"][0]["responses"][0]["statusCode"] = 418
    edited["routes"].append(copy.deepcopy(edited["routes"][1]))
    edited["routes"][-1]["uuid"] = "r-new"
    for r in edited["routes"][-1]["responses"]:
        r["uuid"] = r["uuid"][:-1] + "z"
    edited["rootChildren"].append({"type": "route", "uuid": "r-new"})
    del edited["routes"][0]["responses"][0]["headers"]
    gone = edited["routes"].pop(2)["uuid"]
    edited["rootChildren"] = [c for c in edited["rootChildren"] if c["uuid"] != gone]
    edited["rootChildren"].reverse()
    return edited


def _signed(doc: dict, seq: int, ops: list, prev: bytes = b"") -> ChangeSet:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    return ChangeSet(space="ab" * 16, env=doc["uuid"], device="DEVICEA", seq=seq,
                     hlc=1_700_000_000_000 << 16, deps={}, prev_hash=prev,
                     ops=tuple(to_wire(o) for o in ops)).sign(key)


def test_signed_bytes_are_the_ones_the_tuple_ops_made() -> None:
    doc = json.loads(PETSTORE.read_text())
    snap = snapshot_ops(doc, random.Random(1))
    ops = diff(doc, _edited(doc), state_from_doc(doc, rng=random.Random(1)), random.Random(2))
    assert sorted({type(o).__name__ for o in ops}) == ["Create", "Delete", "Set", "Unset"]
    first = _signed(doc, 1, snap)
    second = _signed(doc, 2, ops, first.hash)
    assert hashlib.sha256(first.encode()).hexdigest() == GOLDEN_SNAPSHOT
    assert hashlib.sha256(second.encode()).hexdigest() == GOLDEN_EDIT


def test_records_are_the_positional_tuples() -> None:
    s = Set("u1", ("v", "name"), "x")
    assert (s.name, s.uuid, s.rid, s.value) == ("s", "u1", ("v", "name"), "x")
    with pytest.raises(AttributeError):
        s.value = "y"  # type: ignore[misc]
    assert hash(s) == hash(("s", "u1", ("v", "name"), "x"))
    assert s == ("s", "u1", ("v", "name"), "x")
    assert Create("u2", "route", []) == ("c", "u2", "route", [])
    assert Unset("u1", ("v", "a")) == ("x", "u1", ("v", "a"))
    assert Delete("u3") == ("d", "u3") and Delete("u3").uuid == "u3"


@pytest.mark.parametrize("op", [
    Create("u", "route", [(("v", "method"), "get")]), Set("u", ("v", "a", "b"), [1, {"k": None}]),
    Unset("u", ("v", "a")), Delete("u"),
])
def test_each_record_round_trips(op: Op) -> None:
    assert type(as_op(tuple(op))) is type(op) and as_op(tuple(op)) == op
    assert as_op(op) is op
    back = validate_ops([to_wire(op)])
    assert type(back[0]) is type(op) and back == [op]
    assert pickle.loads(pickle.dumps(op)) == op and type(copy.deepcopy(op)) is type(op)


def test_match_reads_fields_by_name() -> None:
    match Set("u", ("v", "a"), 2):
        case Set(uuid, rid, value):
            assert (uuid, rid, value) == ("u", ("v", "a"), 2)
        case _:
            pytest.fail("a Set did not match Set(uuid, rid, value)")


def test_apply_takes_records_and_the_old_tuples_alike() -> None:
    doc = json.loads(PETSTORE.read_text())
    ops = snapshot_ops(doc, random.Random(1))
    edit = diff(doc, _edited(doc), state_from_doc(doc, rng=random.Random(1)), random.Random(2))
    typed, legacy = State(doc["uuid"]), State(doc["uuid"])
    typed.apply(ops, (1, "A"))
    typed.apply(edit, (2, "A"))
    legacy.apply([tuple(o) for o in ops], (1, "A"))
    legacy.apply([tuple(o) for o in edit], (2, "A"))
    assert render(typed) == render(legacy)
    def regs(st: State) -> dict:
        return {u: {r: (g.value, g.stamp, g.origin) for r, g in e.regs.items()}
                for u, e in st.entities.items()}

    assert regs(typed) == regs(legacy)
    assert render(typed)["routes"][0]["responses"][0]["statusCode"] == 418


def test_unknown_positional_op_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown op"):
        as_op(("z", "u"))
    with pytest.raises(BadOpError):
        validate_ops([["z", "u"]])


def test_restores_are_creates_without_registers() -> None:
    doc = json.loads(PETSTORE.read_text())
    st = state_from_doc(doc, rng=random.Random(1))
    route = doc["routes"][0]["uuid"]
    st.apply([Delete(route)], (5, "B"))
    back = restore_ops(st, route)
    assert back and all(type(o) is Create and o.regs == [] for o in back)
    again = recreated(st, [o for o in snapshot_ops(doc, random.Random(1))
                           if o.uuid == route])
    assert again == [Create(route, "route", [])]
