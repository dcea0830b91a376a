"""Limits on register values: one decision for values from peers and from local files.

Why (issue 12): before these limits, what a value could be was decided by accident, by
Python's recursion limit. A member's change set holding JSON nested 900 levels deep decoded
fine where the stack was shallow (ingest), was applied and shown `synced`, and could then break
code that walks values recursively (diff's comparison, rendering, size checks) on some devices
and not others, depending on how deep their stack was at the time. A limit that depends on the
call stack is not a limit.

So a register value is checked by `value_problem` (pure, iterative, cost linear in the value's
containers, nothing at all for scalars) wherever it enters the model, through one function,
`ops.validate_ops`:
- from the network: every op of every change set, refusing the whole change set on every
  device alike;
- from a local file: the ops a save produces are validated the same way before they are
  committed (`store.Store.commit_local`, and `agent.daemon` first, to name the place in the
  file): a file is `invalid` exactly when the change set it would make is refused by peers.
  Checking the ops of the edit, not the whole file, keeps a one-property save of a 15 MB
  environment as cheap as before.

The limits are far above anything Mockoon writes (its deepest values, response rules and
headers, nest 2 levels; its objects have a few dozen keys).
"""

from __future__ import annotations

from typing import Any

#: Deepest nesting of one register value: `[]` and `{}` are 1, `[[1]]` is 2, a scalar 0.
MAX_VALUE_DEPTH = 32
#: Longest register id part (a field name, a nested object's key).
MAX_KEY_LENGTH = 256
#: Most keys of one object (an entity's fields, a nested object's keys).
MAX_KEYS_PER_OBJECT = 10_000

_CONTAINERS = (list, dict, tuple)


def depth_over(value: Any, limit: int = MAX_VALUE_DEPTH) -> int | None:
    """The nesting depth of `value` if it is over `limit` (the first depth found over it),
    else None. Iterative: a value nested a million deep costs no stack, and the walk stops at
    the first container past the limit."""
    if type(value) not in _CONTAINERS:
        return None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return d
        for child in (v.values() if type(v) is dict else v):
            if type(child) in _CONTAINERS:
                stack.append((child, d + 1))
    return None


def too_deep() -> str:
    """The sentence for a value over MAX_VALUE_DEPTH (also said when a decoder gave up on a
    value hundreds of levels deep, which is certainly over it)."""
    return f"a value nested more than {MAX_VALUE_DEPTH} levels deep (the limit)"


def value_problem(value: Any) -> str | None:
    """Why a register value is refused, or None."""
    if type(value) not in _CONTAINERS:
        return None
    return too_deep() if depth_over(value) is not None else None


__all__ = [
    "MAX_KEYS_PER_OBJECT",
    "MAX_KEY_LENGTH",
    "MAX_VALUE_DEPTH",
    "depth_over",
    "too_deep",
    "value_problem",
]
