"""How big an environment is for a plan's limits, and whether it fits.

Why here, in the pure model: the size a quota counts is a property of the document alone
(its compact JSON, as Mockoon's JavaScript would write it; docs/design/cli.md "Plans"), and
the daemon, the transports and the local web page all measure it the same way. Measuring
exactly is slow on a big environment (a pure-Python JSON writer), so `size_refusal` first
asks with a fast upper bound and measures exactly only when that bound does not fit.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from typing import Any

from .jsfmt import COMPACT_LAYOUT, dumps

#: JavaScript's compact JSON of a document is at most this many times the size of the
#: standard library's C-encoded one: they differ only in number formats (worst: Python's
#: `1e+20` is JavaScript's `100000000000000000000`, 4.2x) and in lone surrogates (escaped,
#: 2x). So a document whose C size times this fits a limit fits it exactly too.
JS_SIZE_BOUND = 5


def compact_size(doc: dict[str, Any]) -> int:
    """Size used by quotas: bytes of the environment as compact JSON (docs/design/cli.md "Plans")."""
    return len(dumps(doc, COMPACT_LAYOUT).encode("utf-8"))


def quick_compact_size(doc: dict[str, Any]) -> int:
    """A fast stand-in for `compact_size` (C encoder, ~5x faster on a 200 KB environment);
    `compact_size(doc) <= JS_SIZE_BOUND * quick_compact_size(doc)`."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def _encoded_len(value: Any) -> int:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


class SizeMemo:
    """`quick_compact_size` of successive versions of one environment, encoding again only
    the entities that are not the very objects of the version before (issue 15).

    A saved version shares every unchanged entity object with the previous one
    (`model.reparse`), so a one-property save of 15 MB encodes one route, not the whole
    document. The compact encoding composes: an object is `{`, its `"key":value` members
    joined by commas and `}`, so its size is the sum of its parts' sizes plus the
    punctuation. What is remembered is, per top-level array (routes, buckets, callbacks,
    folders), the array itself and its elements' sizes: an array of the same length is
    compared with the last one element by element in C (`operator.is_not`), and only the
    elements that are other objects are encoded, so a one-value save costs no Python step
    per entity (P15c). It relies on what the daemon guarantees of parsed and rendered
    documents: an object is never changed in place once made. The memo holds only the last
    version's arrays (so no id is reused while it is remembered)."""

    def __init__(self) -> None:
        self._arrays: dict[str, tuple[list[Any], list[int], int]] = {}

    def size(self, doc: Any) -> int:
        """Exactly `quick_compact_size(doc)`."""
        if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
            self._arrays = {}
            return quick_compact_size(doc)
        fresh: dict[str, tuple[list[Any], list[int], int]] = {}
        total = 2 + max(0, len(doc) - 1)  # the braces and the commas between members
        for key, value in doc.items():
            total += _encoded_len(key) + 1  # the key and its colon
            if type(value) is not list:
                total += _encoded_len(value)
                continue
            total += 2 + max(0, len(value) - 1)
            sizes, n = _array_sizes(value, self._arrays.get(key))
            fresh[key] = (value, sizes, n)
            total += n
        self._arrays = fresh
        return total


def _array_sizes(items: list[Any], known: tuple[list[Any], list[int], int] | None,
                 ) -> tuple[list[int], int]:
    """The encoded size of each element of `items` and their sum, from `known` (the last
    version of this array, its sizes and sum) for every element that is the same object."""
    if known is not None and known[0] is items:
        return known[1], known[2]
    if known is not None and len(known[0]) == len(items):
        old, old_sizes, total = known
        changed = list(map(operator.is_not, items, old))
        sizes = list(old_sizes)
        i = -1
        while True:
            try:
                i = changed.index(True, i + 1)
            except ValueError:
                return sizes, total
            n = _encoded_len(items[i])
            total += n - sizes[i]
            sizes[i] = n
    by_id = {id(o): n for o, n in zip(known[0], known[1], strict=True)} if known else {}
    sizes = [by_id.get(id(item)) or _encoded_len(item) for item in items]
    return sizes, sum(sizes)


def size_refusal(check: Callable[[int], str | None], doc: dict[str, Any],
                 extra_bytes: int = 0, memo: SizeMemo | None = None) -> str | None:
    """`check(size)`'s refusal for `doc` plus `extra_bytes` (linked files), or None when it
    fits. `check` is asked with the fast bound first; only when that does not fit is the
    exact (slow) size measured, so a save far below the limit costs one C encode (with
    `memo`, the environment's previous versions: only the changed entities' encodes)."""
    quick = memo.size(doc) if memo is not None else quick_compact_size(doc)
    if check(JS_SIZE_BOUND * quick + extra_bytes) is None:
        return None
    return check(compact_size(doc) + extra_bytes)


__all__ = ["JS_SIZE_BOUND", "SizeMemo", "compact_size", "quick_compact_size", "size_refusal"]
