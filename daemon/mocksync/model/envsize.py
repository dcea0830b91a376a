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


def size_refusal(check: Callable[[int], str | None], doc: dict[str, Any],
                 extra_bytes: int = 0) -> str | None:
    """`check(size)`'s refusal for `doc` plus `extra_bytes` (linked files), or None when it
    fits. `check` is asked with the fast bound first; only when that does not fit is the
    exact (slow) size measured, so a save far below the limit costs one C encode."""
    if check(JS_SIZE_BOUND * quick_compact_size(doc) + extra_bytes) is None:
        return None
    return check(compact_size(doc) + extra_bytes)


__all__ = ["JS_SIZE_BOUND", "compact_size", "quick_compact_size", "size_refusal"]
