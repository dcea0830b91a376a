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
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ValidationError
from . import limits
from .errors import BadOpError
from .fracindex import is_valid_key
from .jsfmt import finite_float
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


def validate_ops(ops: Any) -> list[tuple]:
    """Check ops from the wire; return them normalised (tuples for register ids)."""
    if not isinstance(ops, list | tuple):
        raise ValidationError("ops must be a list")
    out: list[tuple] = []
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
                    check_value(rid, value)
                    regs.append((rid, value))
                out.append(("c", op[1], op[2], regs))
            elif name == "s":
                if len(op) != 4:
                    raise ValueError("set needs [s, uuid, regid, value]")
                rid = regid_of(op[2])
                value = dec_value(op[3])
                check_value(rid, value)
                out.append(("s", op[1], rid, value))
            elif name == "x":
                if len(op) != 3:
                    raise ValueError("unset needs [x, uuid, regid]")
                rid = regid_of(op[2])
                if rid[0] != "v":
                    raise ValueError("only fields can be unset")
                out.append(("x", op[1], rid))
            elif name == "d":
                if len(op) != 2:
                    raise ValueError("delete needs [d, uuid]")
                out.append(("d", op[1]))
            else:
                raise ValueError(f"unknown op {name!r}")
        except ValueError as exc:
            raise BadOpError(i, str(exc)) from None
    return out


def to_wire(op: tuple) -> list:
    """Internal op (tuples) -> wire lists."""
    name = op[0]
    if name == "c":
        return ["c", op[1], op[2], [[list(r), enc_value(v)] for r, v in op[3]]]
    if name == "s":
        return ["s", op[1], list(op[2]), enc_value(op[3])]
    if name == "x":
        return ["x", op[1], list(op[2])]
    return ["d", op[1]]
