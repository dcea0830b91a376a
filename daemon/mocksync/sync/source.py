"""Where a session reads the local log: a two-method `Source`, so the protocol never imports
the store.

The session needs to ask exactly two things of the local log: "what have you applied of this
env" (a version vector) and "give me device D's change sets after seq a up to seq u" (wire
bytes, chain order). Keeping that behind a Protocol lets the tests drive sessions from an
in-memory fake as easily as from the real SQLite store, and keeps the sans-IO layer free of
files. `StoreSource` adapts `mocksync.store.Store` (duck-typed: nothing is imported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

#: Most change sets `StoreSource.wires` reads in one call (the session asks for small batches).
MAX_WIRES_PER_READ = 1024


class Source(Protocol):
    """The local log, read-only, as the session sees it."""

    def version_vector(self, space: str, env: str) -> Mapping[str, int]:
        """Highest applied seq per device for `env` (absent device = nothing applied)."""
        ...

    def wires(self, space: str, env: str, device: str, after: int, upto: int) -> Sequence[bytes]:
        """Wire bytes of `device`'s applied change sets `after+1 .. upto`, in seq order.

        May return fewer (a prefix) if the log holds fewer; never anything else.
        """
        ...


class StoreSource:
    """`Source` over a `mocksync.store.Store` (which keys its log by env alone)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def version_vector(self, space: str, env: str) -> Mapping[str, int]:
        return self.store.version_vector(env)

    def wires(self, space: str, env: str, device: str, after: int, upto: int) -> Sequence[bytes]:
        out: list[bytes] = []
        for seq in range(after + 1, min(upto, after + MAX_WIRES_PER_READ) + 1):
            got = self.store.get(env, device, seq)
            if got is None or got[1] != "applied" or got[0].space != space:
                break
            out.append(got[0].encode())
        return out
