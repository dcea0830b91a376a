"""Where the `prompt` offline policy keeps its holds: a TinyDB table beside the registry.

Why persisted: after a daemon restart the remote change sets are already in the log, so a fresh
decision (`sync.offline.decide`) would see only our unsent change sets, push them and rewrite
the file, silently lifting the hold the user has not answered yet. The decisions themselves are
pure and live in `mocksync.sync.offline`, below the transports that act on them (issue 14).
"""

from __future__ import annotations

from typing import Any

from ..sync.offline import Hold

#: TinyDB table holding the environments waiting for keep-local/discard-local.
HOLDS_TABLE = "offline_holds"


class HoldBook:
    """Held environments, in memory (read on every save and every LAN read) and persisted."""

    def __init__(self, db: Any) -> None:
        self.table = db.table(HOLDS_TABLE)
        self._holds: dict[str, Hold] = {}
        for d in self.table.all():
            if isinstance(d.get("env"), str) and type(d.get("cut")) is int:
                self._holds[d["env"]] = Hold(d["env"], d["cut"], float(d.get("since", 0)))

    def __contains__(self, env: object) -> bool:
        return env in self._holds

    def get(self, env: str) -> Hold | None:
        return self._holds.get(env)

    def cut(self, env: str) -> int | None:
        h = self._holds.get(env)
        return None if h is None else h.cut

    def put(self, hold: Hold) -> None:
        from tinydb import Query

        self.table.upsert(hold.to_doc(), Query().env == hold.env)
        self._holds[hold.env] = hold

    def remove(self, env: str) -> Hold | None:
        from tinydb import Query

        h = self._holds.pop(env, None)
        if h is not None:
            self.table.remove(Query().env == env)
        return h


__all__ = ["HOLDS_TABLE", "HoldBook"]
