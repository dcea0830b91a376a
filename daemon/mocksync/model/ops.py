"""Ops: the four things a change set can say about an environment (docs/design/merge.md "Ops").

Wire form (CBOR-friendly lists, kept short because every edit travels):
  ["c", uuid, kind, [[regid, value], ...]]   create an entity with its registers and places
  ["s", uuid, regid, value]                  set one register (a move is a set of a place)
  ["x", uuid, regid]                         unset a register (the key left the object)
  ["d", uuid]                                delete an entity (a tombstone; never resurrected)
Register values travel as JSON text (the `value` slots above): canonical CBOR sorts map keys,
and a rule's or header's key order is part of the file, so values must not pass through a CBOR
map. JSON text keeps it, and keeps numbers exactly as the file had them.
A register id is a list: ["v", key] a field, ["v", key, subkey] a key of a nested object,
["k"] / ["k", key] the key order of the entity / of a nested object, ["p", "list"|"tree"] a
place whose value is [container uuid, position key], ["m", "lifecycle"] on the environment:
"shared", "unshared" (every device keeps a local copy) or "deleted" (copies go to the trash),
["m", "file"] on the environment: the sharer's file name (model.sharedname; never rendered).
`validate_ops` checks all of it before anything is applied, so a bad op changes nothing.

In memory an op is a typed record, `Create`, `Set`, `Unset` or `Delete` (issue 14): code says
`op.uuid`, `op.rid`, and matches on the class instead of decoding positions. Each is a tuple
whose first item is still the short name (`Set(u, rid, v) == ("s", u, rid, v)`), so building
one costs what building the bare tuple did, its fields read at C speed, and code or tests
still holding the positional shape keep working while they move over (`as_op` turns such a
tuple into its record). `to_wire` makes the wire lists (values as JSON text); the signed
bytes are those of the wire lists, so they did not change with the records
(tests/test_model_ops_typed.py keeps golden digests).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

import orjson

from ..errors import ValidationError
from . import limits
from .errors import BadOpError
from .fracindex import is_valid_key
from .jsfmt import LONG_DIGIT_RUN, finite_float
from .schema import KINDS, LIST, TREE

RegId = tuple[str, ...]

#: Register on the environment entity that says whether the team still syncs it. Not rendered.
LIFECYCLE: RegId = ("m", "lifecycle")
SHARED, UNSHARED, DELETED = "shared", "unshared", "deleted"
#: Register on the environment entity: the file name the sharer's device keeps it under, so
#: teammates' devices use the same name when they can (model.sharedname). Not rendered.
FILE_NAME: RegId = ("m", "file")
#: Longest value of FILE_NAME, in characters (its safety is judged where it is used).
MAX_FILE_NAME_CHARS = 255

#: Limits on ops coming from peers: the same ones local files are held to (model.limits).
MAX_KEY_LENGTH = limits.MAX_KEY_LENGTH
MAX_KEYS_PER_OBJECT = limits.MAX_KEYS_PER_OBJECT


# ------------------------------------------------------------------------------ the records
# Each record is a NamedTuple of (name, fields...) with a constructor taking the fields only:
# the name slot keeps the wire's short name first, so the record is the positional tuple
# older code built, and `type(op) is Set` is the dispatch.

def _fields_only(self: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the constructor takes (for pickle and copy): the fields without the name."""
    return self[1:]


class _CreateRow(NamedTuple):
    name: Literal["c"]
    uuid: str
    kind: str
    regs: Sequence[tuple[RegId, Any]]


class Create(_CreateRow):
    """Create entity `uuid` of `kind` with its registers (a restore when `regs` is empty)."""

    __slots__ = ()
    __match_args__ = ("uuid", "kind", "regs")

    def __new__(cls, uuid: str, kind: str, regs: Sequence[tuple[RegId, Any]]) -> Create:
        return tuple.__new__(cls, ("c", uuid, kind, regs))

    __getnewargs__ = _fields_only


class _SetRow(NamedTuple):
    name: Literal["s"]
    uuid: str
    rid: RegId
    value: Any


class Set(_SetRow):
    """Set register `rid` of entity `uuid` to `value` (a move is the set of a place)."""

    __slots__ = ()
    __match_args__ = ("uuid", "rid", "value")

    def __new__(cls, uuid: str, rid: RegId, value: Any) -> Set:
        return tuple.__new__(cls, ("s", uuid, rid, value))

    __getnewargs__ = _fields_only


class _UnsetRow(NamedTuple):
    name: Literal["x"]
    uuid: str
    rid: RegId


class Unset(_UnsetRow):
    """Unset field register `rid` of entity `uuid` (the key left the object)."""

    __slots__ = ()
    __match_args__ = ("uuid", "rid")

    def __new__(cls, uuid: str, rid: RegId) -> Unset:
        return tuple.__new__(cls, ("x", uuid, rid))

    __getnewargs__ = _fields_only


class _DeleteRow(NamedTuple):
    name: Literal["d"]
    uuid: str


class Delete(_DeleteRow):
    """Delete entity `uuid` (a tombstone; never resurrected by an edit)."""

    __slots__ = ()
    __match_args__ = ("uuid",)

    def __new__(cls, uuid: str) -> Delete:
        return tuple.__new__(cls, ("d", uuid))

    __getnewargs__ = _fields_only


#: One op, in memory.
Op = Create | Set | Unset | Delete
#: The record classes, for a quick `type(op) in OP_TYPES`.
OP_TYPES: tuple[type, ...] = (Create, Set, Unset, Delete)


def as_op(op: Sequence[Any]) -> Op:
    """The record for `op`: itself when it is one, else built from the positional shape
    (`("s", uuid, rid, value)`, ...) that code written before the records still makes.
    Trusted, in-process input only: ops from the wire go through `validate_ops`."""
    if type(op) in OP_TYPES:
        return op  # type: ignore[return-value]
    name = op[0]
    if name == "c":
        return Create(op[1], op[2], op[3])
    if name == "s":
        return Set(op[1], tuple(op[2]), op[3])
    if name == "x":
        return Unset(op[1], tuple(op[2]))
    if name == "d":
        return Delete(op[1])
    raise ValueError(f"unknown op {name!r}")


def as_ops(ops: Iterable[Sequence[Any]]) -> list[Op]:
    """`as_op` of each."""
    return [as_op(op) for op in ops]


def enc_value(value: Any) -> str:
    """A register value as compact JSON text (key order kept)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate: escape it so the bytes are valid UTF-8
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=finite_float)
_LITERALS = {"true": True, "false": False, "null": None}
#: Value types `check_value` looks into for a field ("v" register): a scalar needs no look.
_VALUE_CONTAINERS = frozenset((list, dict, tuple))
#: Value texts tried with orjson first (see `dec_value`).
_ORJSON_STARTS = frozenset("[{")
_LONG_DIGITS = re.compile(f"[0-9]{{{LONG_DIGIT_RUN}}}")


def dec_value(text: Any) -> Any:
    if not isinstance(text, str):
        raise ValueError("a register value must be JSON text")
    # Fast paths for the common shapes (a 15 MB environment has ~300,000 values):
    # plain strings, small integers, literals. Anything else goes through the full decoder.
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"' and '\\' not in text \
            and '"' not in text[1:-1] and text.isprintable():
        return text[1:-1]
    if text in _LITERALS:
        return _LITERALS[text]
    if 0 < len(text) < 16 and text.isdigit() and (text == "0" or text[0] != "0"):
        return int(text)
    # Objects and arrays (a third of a 15 MB environment's values: key orders, headers,
    # rules) by orjson, several times faster per value; the standard decoder stays the
    # reference and reads whatever orjson refuses (escaped lone surrogates, 1e400, syntax
    # errors, nesting past orjson's limit), and every text with a run of LONG_DIGIT_RUN
    # digits (orjson reads an integer past 64 bits as a double). Same values, same types,
    # same key order (tests/test_first_sync_fast.py checks it against the reference).
    if text[:1] in _ORJSON_STARTS and _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    try:
        return _DECODER.decode(text)
    except RecursionError:  # only ever hundreds of levels deep: far past the limit
        raise ValueError(limits.too_deep()) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"register value is not valid JSON ({exc})") from None


#: Register ids already validated (they repeat: ("v","body") on every response), bounded.
_RID_CACHE: dict[tuple, RegId] = {}
MAX_RID_CACHE = 4096


def regid_of(raw: Any) -> RegId:
    """Validate a wire register id and return it as a tuple."""
    if not isinstance(raw, list | tuple) or not raw:
        raise ValueError("register id must be a non-empty list of strings")
    try:
        hit = _RID_CACHE.get(tuple(raw))
    except TypeError:  # an unhashable part: certainly not a register id
        raise ValueError("register id must be a non-empty list of strings") from None
    if hit is not None:
        return hit
    checked = _regid_of(raw)
    if len(_RID_CACHE) < MAX_RID_CACHE:
        _RID_CACHE[checked] = checked
    return checked


def _regid_of(raw: Any) -> RegId:
    if not all(isinstance(p, str) for p in raw):
        raise ValueError("register id must be a non-empty list of strings")
    t = tuple(raw)
    if any(len(p) > MAX_KEY_LENGTH for p in t):
        raise ValueError(f"register id part longer than {MAX_KEY_LENGTH}")
    kind = t[0]
    if kind == "v" and len(t) in (2, 3):
        if t[1] == "uuid":
            raise ValueError("uuid is not a register")
        return t
    if kind == "k" and len(t) in (1, 2):
        return t
    if kind == "p" and len(t) == 2 and t[1] in (LIST, TREE):
        return t
    if kind == "m" and t in (LIFECYCLE, FILE_NAME):
        return t
    raise ValueError(f"unknown register id {list(t)!r}")


def check_value(rid: RegId, value: Any) -> None:
    if rid[0] == "p":
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not isinstance(value[0], str)
            or not is_valid_key(value[1])
        ):
            raise ValueError("a place must be [container, position key]")
    elif rid == FILE_NAME:
        if not isinstance(value, str) or not 0 < len(value) <= MAX_FILE_NAME_CHARS:
            raise ValueError(f"a file name must be a string of 1..{MAX_FILE_NAME_CHARS} characters")
    elif rid[0] == "m":
        if value not in (SHARED, UNSHARED, DELETED):
            raise ValueError(f"lifecycle must be one of shared, unshared, deleted, not {value!r}")
    elif rid[0] == "k":
        if not isinstance(value, list | tuple) or not all(isinstance(k, str) for k in value):
            raise ValueError("a key order must be a list of strings")
        if len(value) > MAX_KEYS_PER_OBJECT:
            raise ValueError(f"more than {MAX_KEYS_PER_OBJECT} keys")
    elif rid[0] == "v":
        why = limits.value_problem(value)
        if why is not None:
            raise ValueError(f"register {list(rid)!r} holds {why}")


def validate_ops(ops: Any) -> list[Op]:
    """Check ops from the wire; return them as records (tuples for register ids)."""
    if not isinstance(ops, list | tuple):
        raise ValidationError("ops must be a list")
    out: list[Op] = []
    for i, op in enumerate(ops):
        try:
            if not isinstance(op, list | tuple) or not op or not isinstance(op[0], str):
                raise ValueError("not a list starting with its name")
            name = op[0]
            if len(op) < 2 or not isinstance(op[1], str) or not op[1]:
                raise ValueError("no entity uuid")
            if name == "c":
                if len(op) != 4 or op[2] not in KINDS or not isinstance(op[3], list | tuple):
                    raise ValueError("create needs [c, uuid, kind, registers]")
                regs = []
                for pair in op[3]:
                    if not isinstance(pair, list | tuple) or len(pair) != 2:
                        raise ValueError("create registers must be [regid, value] pairs")
                    rid = regid_of(pair[0])
                    value = dec_value(pair[1])
                    # (a field holding a scalar, most registers, passes check_value as is)
                    if rid[0] != "v" or type(value) in _VALUE_CONTAINERS:
                        check_value(rid, value)
                    regs.append((rid, value))
                out.append(Create(op[1], op[2], regs))
            elif name == "s":
                if len(op) != 4:
                    raise ValueError("set needs [s, uuid, regid, value]")
                rid = regid_of(op[2])
                value = dec_value(op[3])
                check_value(rid, value)
                out.append(Set(op[1], rid, value))
            elif name == "x":
                if len(op) != 3:
                    raise ValueError("unset needs [x, uuid, regid]")
                rid = regid_of(op[2])
                if rid[0] != "v":
                    raise ValueError("only fields can be unset")
                out.append(Unset(op[1], rid))
            elif name == "d":
                if len(op) != 2:
                    raise ValueError("delete needs [d, uuid]")
                out.append(Delete(op[1]))
            else:
                raise ValueError(f"unknown op {name!r}")
        except ValueError as exc:
            raise BadOpError(i, str(exc)) from None
    return out


def to_wire(op: Op | Sequence[Any]) -> list[Any]:
    """An op record -> its wire list (register ids as lists, values as JSON text)."""
    op = as_op(op)
    if isinstance(op, Set):
        return ["s", op.uuid, list(op.rid), enc_value(op.value)]
    if isinstance(op, Create):
        return ["c", op.uuid, op.kind, [[list(r), enc_value(v)] for r, v in op.regs]]
    if isinstance(op, Unset):
        return ["x", op.uuid, list(op.rid)]
    return ["d", op.uuid]
