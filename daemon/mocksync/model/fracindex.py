"""Fractional-index position keys for ordered collections.

An item's position is a string; items sort by `(position, uuid)`. Inserting between two items
makes a key strictly between theirs, so moving one route is one `move` op and never a
re-keying of its siblings, and two devices' concurrent reorders merge. Keys are base-62 digit
strings read as fractions in [0, 1) and never end in the smallest digit (so there is always
room between two keys). A random suffix keeps two devices inserting at the same spot from
picking the same key; ties would still sort deterministically by uuid.
"""

from __future__ import annotations

import random

DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BASE = len(DIGITS)
_INDEX = {c: i for i, c in enumerate(DIGITS)}
#: Random digits appended to each new key.
JITTER_DIGITS = 3
#: Refuse absurd keys from peers. Appending one item at a time grows a key by a digit per
#: ~30 appends, so this allows ~100,000 appends to one list; the author's own ops pass the
#: same check before they are committed, so no device can write a key its peers refuse.
MAX_KEY_LENGTH = 4096


def is_valid_key(key: object) -> bool:
    return (
        isinstance(key, str)
        and 0 < len(key) <= MAX_KEY_LENGTH
        and all(c in _INDEX for c in key)
        and key[-1] != DIGITS[0]
    )


def _midpoint(a: str, b: str | None) -> str:
    """A digit string strictly between fractions a and b (b None = 1), not ending in '0'."""
    if b is not None:
        n = 0
        while n < len(b) and (a[n] if n < len(a) else DIGITS[0]) == b[n]:
            n += 1
        if n > 0:
            return b[:n] + _midpoint(a[n:], b[n:])
    da = _INDEX[a[0]] if a else 0
    db = _INDEX[b[0]] if b is not None else BASE
    if db - da > 1:
        return DIGITS[(da + db) // 2]
    if b is not None and len(b) > 1:
        return b[0]
    return DIGITS[da] + _midpoint(a[1:], None)


def _increment(a: str) -> str:
    """A short key above `a`: appends at the end grow keys by one digit per ~60, not per ~6."""
    for i, c in enumerate(a):
        if _INDEX[c] < BASE - 2:
            return a[:i] + DIGITS[_INDEX[c] + 1]
    return _midpoint(a, None)


def _decrement(b: str) -> str:
    """A short key below `b`, mirror of `_increment` for inserts at the start."""
    for i, c in enumerate(b):
        if _INDEX[c] > 1:
            return b[:i] + DIGITS[_INDEX[c] - 1]
    return _midpoint("", b)


def key_between(lo: str | None, hi: str | None, rng: random.Random | None = None) -> str:
    """A fresh key with lo < key < hi (None = open end). Requires lo < hi when both given."""
    a = lo or ""
    if hi is not None and not a < hi:
        raise ValueError(f"key_between: {lo!r} is not below {hi!r}")
    if hi is None and a:
        key = _increment(a)
    elif lo is None and hi:
        key = _decrement(hi)
    else:
        key = _midpoint(a, hi)
    while hi is not None and hi.startswith(key):
        key = _midpoint(key, hi)
    if rng is not None and JITTER_DIGITS:
        suffix = "".join(rng.choice(DIGITS) for _ in range(JITTER_DIGITS - 1))
        key += suffix + rng.choice(DIGITS[1:])
    return key


def keys_between(lo: str | None, hi: str | None, n: int, rng: random.Random | None = None) -> list[str]:
    """n increasing keys between lo and hi, spread by bisection so lengths grow as log(n)."""
    if n <= 0:
        return []
    mid = key_between(lo, hi, rng)
    left = n // 2
    return keys_between(lo, mid, left, rng) + [mid] + keys_between(mid, hi, n - left - 1, rng)
