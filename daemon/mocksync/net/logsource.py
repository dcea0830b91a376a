"""The sync session's read view of the local log, without decoding what it only forwards.

`mocksync.sync.StoreSource` reads change sets through `Store.get`, which decodes each one in
full (inflating and checking every op) only for the session to re-encode it and send the bytes
on. For a whole imported environment that is seconds of CPU per peer (measured: a 15 MB
environment's first change set, 1.4 MB on the wire, took ~3.5 s to fetch that way), spent on
the event loop while heartbeats wait. Serving a peer needs only the stored wire bytes, which
were verified when they entered the log; the session checks each one's header again
(`Cs.of`) before sending. So this source reads the wires of applied change sets straight from
the log's table, in seq order, a bounded batch at a time, and falls back to `StoreSource` if
that read fails (e.g. a future schema).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ..sync import StoreSource

log = logging.getLogger("mocksync.lan")

#: Most change sets read per call (the session asks for small batches).
MAX_WIRES_PER_READ = 256
#: Status of a change set that is part of the applied chain (store.log.APPLIED).
APPLIED = "applied"

_QUERY = ("SELECT seq, wire FROM changesets WHERE env=? AND device=? AND space=? AND status=? "
          "AND seq>? AND seq<=? ORDER BY seq LIMIT ?")


class LogSource:
    """`mocksync.sync.Source` over the agent's store, serving raw wire bytes."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._fallback = StoreSource(store)
        self._raw = True

    def version_vector(self, space: str, env: str) -> Mapping[str, int]:
        return self.store.version_vector(env)

    def wires(self, space: str, env: str, device: str, after: int, upto: int) -> Sequence[bytes]:
        if self._raw:
            try:
                rows = self.store.db.execute(
                    _QUERY, (env, device, space, APPLIED, after, upto,
                             min(MAX_WIRES_PER_READ, max(0, upto - after)))).fetchall()
            except (sqlite3.Error, AttributeError) as exc:
                log.warning("reading raw change sets failed (%s); decoding them instead", exc)
                self._raw = False
            else:
                out: list[bytes] = []
                for expected, (seq, wire) in enumerate(rows, start=after + 1):
                    if seq != expected:
                        break  # a gap: return the contiguous prefix only
                    out.append(bytes(wire))
                return out
        return self._fallback.wires(space, env, device, after, upto)
