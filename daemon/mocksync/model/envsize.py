"""How big an environment is for a plan's limits, and whether it fits.

Why here, in the pure model: the size a quota counts is a property of the document alone
(its compact JSON, as Mockoon's JavaScript would write it; docs/design/cli.md "Plans"), and
the daemon, the transports and the local web page all measure it the same way. Measuring
exactly is slow on a big environment (a pure-Python JSON writer), so `size_refusal` first
asks with a fast upper bound and measures exactly only when that bound does not fit.
"""

from __future__ import annotations

import json
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
    punctuation; the elements of the top-level arrays (routes, buckets, callbacks, folders)
    are what is remembered, by identity, holding the objects so an id is never reused. It
    relies on what the daemon guarantees of parsed and rendered documents: an object is
    never changed in place once made. The memo holds only the last version's elements."""

    def __init__(self) -> None:
        self._sizes: dict[int, tuple[Any, int]] = {}

    def size(self, doc: Any) -> int:
        """Exactly `quick_compact_size(doc)`."""
        if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
            self._sizes = {}
            return quick_compact_size(doc)
        known = self._sizes
        fresh: dict[int, tuple[Any, int]] = {}
        total = 2 + max(0, len(doc) - 1)  # the braces and the commas between members
        for key, value in doc.items():
            total += _encoded_len(key) + 1  # the key and its colon
            if type(value) is not list:
                total += _encoded_len(value)
                continue
            total += 2 + max(0, len(value) - 1)
            for item in value:
                if not isinstance(item, dict | list):
                    total += _encoded_len(item)
                    continue
                hit = known.get(id(item))
                n = hit[1] if hit is not None and hit[0] is item else _encoded_len(item)
                fresh[id(item)] = (item, n)
                total += n
        self._sizes = fresh
        return total


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
