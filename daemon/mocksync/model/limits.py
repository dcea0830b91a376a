"""Limits on register values: one decision for values from peers and from local files.

Why (issue 12): before these limits, what a value could be was decided by accident, by
Python's recursion limit. A member's change set holding JSON nested 900 levels deep decoded
fine where the stack was shallow (ingest), was applied and shown `synced`, and then every
later local save of that environment failed with a RecursionError in code that walks values
recursively (diff's comparison, rendering), on some devices and not others. A limit that
depends on the call stack is not a limit.

So every register value passes `register_problem` (pure, iterative, cost linear in the
value's containers) wherever it enters the model:
- from the network: `ops.validate_ops` checks each op's register and value, refusing the
  whole change set on every device alike;
- from a local file: `validate.check_env` checks the registers `diff.registers_of` would make
  from each entity (one per field, one per key of a nested object, the key orders), so a file
  is `invalid` exactly when the change set it would produce is refused by peers.

The limits are far above anything Mockoon writes (its deepest values, response rules and
headers, nest 2 levels; its objects have a few dozen keys).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Deepest nesting of one register value: `[]` and `{}` are 1, `[[1]]` is 2, a scalar 0.
MAX_VALUE_DEPTH = 32
#: Longest register id part (a field name, a nested object's key).
MAX_KEY_LENGTH = 256
#: Most keys of one object (an entity's fields, a nested object's keys).
MAX_KEYS_PER_OBJECT = 10_000


def depth_over(value: Any, limit: int = MAX_VALUE_DEPTH) -> int | None:
    """The nesting depth of `value` if it is over `limit` (the first depth found over it),
    else None. Iterative: a value nested a million deep costs no stack, and the walk stops at
    the first container past the limit."""
    if type(value) not in (list, dict, tuple):
        return None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return d
        for child in (v.values() if type(v) is dict else v):
            if type(child) in (list, dict, tuple):
                stack.append((child, d + 1))
    return None


def value_problem(value: Any) -> str | None:
    """Why a register value is refused, or None."""
    d = depth_over(value)
    if d is not None:
        return f"a value nested more than {MAX_VALUE_DEPTH} levels deep (the limit)"
    return None


def key_problem(key: str) -> str | None:
    if len(key) > MAX_KEY_LENGTH:
        return f"a key of {len(key)} characters, over the limit of {MAX_KEY_LENGTH}"
    return None


def keys_problem(keys: Iterable[str] | list[str]) -> str | None:
    n = len(keys) if isinstance(keys, list | tuple | dict) else sum(1 for _ in keys)
    if n > MAX_KEYS_PER_OBJECT:
        return f"an object with {n} keys, over the limit of {MAX_KEYS_PER_OBJECT}"
    return None


def fields_problem(keys: list[str], fields: dict[str, Any]) -> tuple[str, str] | None:
    """The first field of an entity whose registers peers would refuse, and why; or None.

    Mirrors `diff.registers_of`: the entity's key order (`keys`, every key of the object, so
    every field name), then per field either one register (its value) or, for a plain object,
    its key order and one register per key. Written for speed (a 15 MB environment has about
    250,000 fields, checked on every save): scalars cost nothing, key lengths are checked in C."""
    why = _keys_problem(keys)
    if why is not None:
        return "", why
    for k, val in fields.items():
        t = type(val)
        if t is dict:
            why = _keys_problem(val)
            if why is not None:
                return k, why
            for sk, sval in val.items():
                if type(sval) in _CONTAINERS:
                    why = value_problem(sval)
                    if why is not None:
                        return f"{k}.{sk}", why
        elif t in _CONTAINERS:
            why = value_problem(val)
            if why is not None:
                return k, why
    return None


_CONTAINERS = (list, tuple, dict)


def _keys_problem(keys: Any) -> str | None:
    """An object's keys: how many, and the longest (as one register id part each)."""
    why = keys_problem(keys)
    if why is None and keys and max(map(len, keys)) > MAX_KEY_LENGTH:
        longest = max(keys, key=len)
        why = f"the key {longest[:40]!r}... ({key_problem(longest)})"
    return why


__all__ = [
    "MAX_KEYS_PER_OBJECT",
    "MAX_KEY_LENGTH",
    "MAX_VALUE_DEPTH",
    "depth_over",
    "fields_problem",
    "key_problem",
    "keys_problem",
    "value_problem",
]
