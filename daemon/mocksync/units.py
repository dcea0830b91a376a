"""Sizes in words: the one way every sentence about bytes is written.

Why a leaf module of its own: the plans' refusals (`space.quotas`, the relay's `policy`), the
linked files' size notes (`model.files`, `agent.linked`) must all read the same ("5.03 MB"
beside a "5 MB" limit), and they live in layers that may not import each other
(docs/design/architecture.md "Layers"). Pure: numbers in, text out.
"""

from __future__ import annotations

#: One megabyte as the plans state it: decimal (Mockoon's plans are in decimal megabytes).
MB = 1_000_000
#: One kilobyte, decimal for the same reason.
KB = 1000


def human_bytes(n: int) -> str:
    """`12.3 MB` style (decimal, as the plans are stated)."""
    if n >= MB:
        text = f"{n / MB:.1f}".rstrip("0").rstrip(".")
        if n % MB and float(text) * MB == round(n / MB) * MB:
            # 5.03 MB must not read "5 MB" beside a 5 MB limit: show the digits that differ.
            text = f"{n / MB:.2f}".rstrip("0").rstrip(".")
        return f"{text} MB"
    if n >= KB:
        return f"{n / KB:.1f}".rstrip("0").rstrip(".") + " kB"
    return f"{n} bytes"
