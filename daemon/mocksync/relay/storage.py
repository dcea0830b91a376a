"""Where the relay keeps what it holds: membership logs and sealed envelopes.

Why an interface (`RelayStorage`) with one SQLite class behind it: a PostgreSQL backend comes
next, for relays that serve many teams from several processes, and the server must not care.
So every query lives in the backend class; the server only calls the methods below, all of
which take and return plain values. Each mutating call is one transaction: an envelope is
acknowledged only after the transaction holding it committed, so a relay killed at any
instant loses nothing it acknowledged (WAL + synchronous=NORMAL survives a process crash).

What is stored (and all there is, docs/design/security.md §3): per space, the membership log entries as
their exact signed wire bytes (the relay must verify the log; the names of the space, its
members and devices are sealed in them for members only, `space.names`, and removal cuts name
env tags); per envelope, space, env tag, device, seq, key
generation, ciphertext, which device uploaded it and when; per env tag, the size its uploader
last declared and the ciphertext bytes held. Nothing of an environment's content.

Version vectors: `index` and `vv` report per device the *contiguous prefix* held (the highest
n such that seqs 1..n are all present), not the maximum: a device that holds a chain then
uploads exactly what the relay is missing, gaps included, so a dropped envelope heals as soon
as any holder reconnects.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..changes import canonical
from .compaction import HeldSnapshot, Verdict, drop_floors
from .envelope import Envelope
from .errors import Compacted, StorageError

#: 2: compaction (the snapshots, floors and acks tables). An older relay must not open a
#: version 2 file: it knows nothing of floors and would serve a compacted environment's
#: remaining change sets as if they were its whole history. A version 1 file is migrated in
#: place (the new tables are created empty; nothing else changed).
SCHEMA_VERSION = 2
DB_NAME = "relay.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log_entries (
  space TEXT NOT NULL, n INTEGER NOT NULL, hash BLOB NOT NULL, wire BLOB NOT NULL,
  PRIMARY KEY (space, n)
);
CREATE UNIQUE INDEX IF NOT EXISTS log_entries_hash ON log_entries (space, hash);
CREATE TABLE IF NOT EXISTS envs (
  space TEXT NOT NULL, tag TEXT NOT NULL, declared INTEGER NOT NULL, stored INTEGER NOT NULL,
  created_ms INTEGER NOT NULL, PRIMARY KEY (space, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS envelopes (
  id INTEGER PRIMARY KEY, space TEXT NOT NULL, tag TEXT NOT NULL, device TEXT NOT NULL,
  seq INTEGER NOT NULL, gen INTEGER NOT NULL, ct BLOB NOT NULL, uploader TEXT NOT NULL,
  received_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS envelopes_slot ON envelopes (space, tag, device, seq);
-- Compaction (relay.compaction): the newest snapshot per env, what was dropped, who holds what.
CREATE TABLE IF NOT EXISTS snapshots (
  space TEXT NOT NULL, tag TEXT NOT NULL, signer TEXT NOT NULL, vv BLOB NOT NULL,
  ct BLOB NOT NULL, sig BLOB NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (space, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS floors (
  space TEXT NOT NULL, tag TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (space, tag, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acks (
  space TEXT NOT NULL, tag TEXT NOT NULL, holder TEXT NOT NULL, device TEXT NOT NULL,
  seq INTEGER NOT NULL, PRIMARY KEY (space, tag, holder, device)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class StoredSnapshot:
    """The snapshot kept for one (space, env tag), as uploaded (relay.compaction)."""

    signer: str
    vv: dict[str, int]
    ct: bytes
    sig: bytes
    received_ms: int


def encode_vv(vv: Mapping[str, int]) -> bytes:
    return canonical.encode({d: int(n) for d, n in vv.items()})


def decode_vv(blob: bytes) -> dict[str, int]:
    v = canonical.decode(bytes(blob), what="stored snapshot vv")
    return {str(d): int(n) for d, n in v.items()}


#: A snapshot judgment run inside the storage's transaction: (held, floors) -> verdict.
SnapshotJudge = Callable[[HeldSnapshot | None, dict[str, int]], Verdict]


@dataclass(frozen=True)
class EnvUsage:
    """What the relay holds of one environment (by tag)."""

    declared_bytes: int
    stored_bytes: int


class RelayStorage(Protocol):
    """The relay's durable state. Implementations: `SQLiteStorage` (PostgreSQL planned)."""

    def log_entries(self, space: str) -> list[bytes]:
        """Membership entry wire bytes of `space`, in the order they were stored."""

    def append_log(self, space: str, wires: Sequence[bytes], hashes: Sequence[bytes], *,
                   base: int | None = None) -> list[bytes] | None:
        """Add verified entries (the caller verified them; duplicates by hash are ignored).

        `base`: how many stored entries the caller verified them against. When the log holds
        a different number now (another upload was stored meanwhile), nothing is added and
        the stored log is returned, for the caller to verify its entries again: the store,
        not the caller's memory, decides which check was the last. None: no such check."""

    def spaces(self) -> list[str]:
        """Every space with a stored log."""

    def env_count(self, space: str) -> int:
        """Live environments (distinct tags whose last declared size is above 0) the space
        has on the relay: the number its plan's count quota limits."""

    def env_usage(self, space: str, tag: str) -> EnvUsage | None:
        """Size figures of one environment, or None if the relay holds nothing of it."""

    def put(self, space: str, tag: str, envelopes: Sequence[Envelope], *, declared_bytes: int,
            uploader: str, now_ms: int) -> list[Envelope]:
        """Store envelopes whose slot (device, seq) is free; return those newly stored.
        An occupied slot keeps its first envelope (ciphertexts of one change set differ by
        nonce, so equality cannot be checked; receivers verify what they get)."""

    def index(self, space: str) -> dict[str, dict[str, int]]:
        """Per env tag of the space, the contiguous prefix held per device."""

    def vv(self, space: str, tag: str) -> dict[str, int]:
        """The contiguous prefix held per device for one environment."""

    def fetch(self, space: str, tag: str, have: Mapping[str, int], *, max_items: int,
              max_bytes: int) -> tuple[list[Envelope], bool]:
        """Envelopes with seq above `have[device]` (0 when absent), ascending per device, at
        most `max_items` and about `max_bytes` (always at least one); and whether more remain."""

    def purge_after(self, space: str, device: str, cuts: Mapping[str, int]) -> int:
        """Drop `device`'s envelopes above its removal cut (`cuts`: env tag -> last seq kept;
        a tag not named keeps none); returns how many went."""

    # Compaction (relay.compaction). `fetch` raises `Compacted` when `have` is below a floor.
    def snapshot(self, space: str, tag: str) -> StoredSnapshot | None:
        """The snapshot kept for the env, or None."""

    def put_snapshot(self, space: str, tag: str, snap: StoredSnapshot,
                     judge: SnapshotJudge) -> Verdict:
        """Keep `snap` as the env's snapshot if `judge(held, floors)` says so (one transaction)."""

    def note_acks(self, space: str, tag: str, holder: str, vv: Mapping[str, int]) -> None:
        """`holder` holds `vv` of the env (its high-water mark; only ever raised)."""

    def snapshot_slots(self, after: tuple[str, str] | None, limit: int
                       ) -> list[tuple[str, str]]:
        """Up to `limit` (space, env tag) that hold a snapshot, in order, after `after`
        (None: from the first): what the compaction timer walks, a page per round."""

    def compact(self, space: str, tag: str, members: Collection[str], cutoff_ms: int) -> int:
        """Drop the change sets the snapshot covers that every device of `members` holds or
        that were received before `cutoff_ms` (`compaction.drop_floors`); how many went."""

    def floors(self, space: str, tag: str) -> dict[str, int]:
        """Per device, the highest seq dropped (every seq up to it is gone)."""

    def close(self) -> None: ...


class SQLiteStorage:
    """`RelayStorage` in one SQLite file (WAL) under the relay's data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / DB_NAME
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} was written by a newer mocksync relay (schema {row[0]}); update it"
            )
        elif int(row[0]) < SCHEMA_VERSION:  # the script above created what was missing
            self.db.execute("UPDATE meta SET v=? WHERE k='schema'", (str(SCHEMA_VERSION),))
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # ---------------------------------------------------------------- membership logs
    def log_entries(self, space: str) -> list[bytes]:
        return [bytes(w) for (w,) in self.db.execute(
            "SELECT wire FROM log_entries WHERE space=? ORDER BY n", (space,))]

    def append_log(self, space: str, wires: Sequence[bytes], hashes: Sequence[bytes], *,
                   base: int | None = None) -> list[bytes] | None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if base is not None:
                    (count,) = self.db.execute(
                        "SELECT COUNT(*) FROM log_entries WHERE space=?", (space,)).fetchone()
                    if count != base:  # grew meanwhile: the caller checks again
                        stored = self.log_entries(space)
                        self.db.execute("ROLLBACK")
                        return stored
                (n,) = self.db.execute(
                    "SELECT COALESCE(MAX(n), 0) FROM log_entries WHERE space=?", (space,)
                ).fetchone()
                for wire, h in zip(wires, hashes, strict=True):
                    n += 1
                    self.db.execute(
                        "INSERT OR IGNORE INTO log_entries VALUES (?, ?, ?, ?)", (space, n, h, wire)
                    )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return None

    def spaces(self) -> list[str]:
        return [s for (s,) in self.db.execute("SELECT DISTINCT space FROM log_entries ORDER BY space")]

    # ---------------------------------------------------------------- envelopes
    def env_count(self, space: str) -> int:
        # Live environments only: an unshared or deleted one declares 0 bytes from its
        # tombstone on, and must not keep a slot of the plan's count for ever.
        return self.db.execute("SELECT COUNT(*) FROM envs WHERE space=? AND declared > 0",
                               (space,)).fetchone()[0]

    def env_usage(self, space: str, tag: str) -> EnvUsage | None:
        row = self.db.execute(
            "SELECT declared, stored FROM envs WHERE space=? AND tag=?", (space, tag)
        ).fetchone()
        return EnvUsage(row[0], row[1]) if row else None

    def put(self, space: str, tag: str, envelopes: Sequence[Envelope], *, declared_bytes: int,
            uploader: str, now_ms: int) -> list[Envelope]:
        stored: list[Envelope] = []
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self.floors(space, tag)
                for e in envelopes:
                    if e.seq <= dropped.get(e.device, 0):
                        continue  # covered by the snapshot and dropped: held, in effect
                    cur = self.db.execute(
                        "INSERT OR IGNORE INTO envelopes (space, tag, device, seq, gen, ct, "
                        "uploader, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (space, tag, e.device, e.seq, e.gen, e.ct, uploader, now_ms),
                    )
                    if cur.rowcount:
                        stored.append(e)
                added = sum(len(e.ct) for e in stored)
                self.db.execute(
                    "INSERT INTO envs VALUES (?, ?, ?, ?, ?) ON CONFLICT(space, tag) DO UPDATE "
                    "SET declared=excluded.declared, stored=stored + ?",
                    (space, tag, declared_bytes, added, now_ms, added),
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return stored

    def purge_after(self, space: str, device: str, cuts: Mapping[str, int]) -> int:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                rows = self.db.execute(
                    "SELECT id, tag, seq, LENGTH(ct) FROM envelopes WHERE space=? AND device=?",
                    (space, device)).fetchall()
                gone = [(i, tag, size) for i, tag, seq, size in rows if seq > cuts.get(tag, 0)]
                self.db.executemany("DELETE FROM envelopes WHERE id=?", [(i,) for i, _t, _z in gone])
                freed: dict[str, int] = {}
                for _i, tag, size in gone:
                    freed[tag] = freed.get(tag, 0) + size
                self.db.executemany(
                    "UPDATE envs SET stored=MAX(0, stored - ?) WHERE space=? AND tag=?",
                    [(n, space, tag) for tag, n in freed.items()])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return len(gone)

    def _prefix(self, space: str, tag: str, device: str, top: int, count: int,
                floor: int = 0) -> int:
        if top == count + floor:
            return top  # seqs above the floor are distinct: count == max - floor, no gap
        n = floor
        for (seq,) in self.db.execute(
            "SELECT seq FROM envelopes WHERE space=? AND tag=? AND device=? AND seq>? "
            "ORDER BY seq", (space, tag, device, floor),
        ):
            if seq != n + 1:
                break
            n = seq
        return n

    def _vv_rows(self, space: str, tag: str | None):
        if tag is None:
            return self.db.execute(
                "SELECT tag, device, MAX(seq), COUNT(*) FROM envelopes WHERE space=? "
                "GROUP BY tag, device", (space,)).fetchall()
        return self.db.execute(
            "SELECT tag, device, MAX(seq), COUNT(*) FROM envelopes WHERE space=? AND tag=? "
            "GROUP BY device", (space, tag)).fetchall()

    def index(self, space: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {
            t: {} for (t,) in self.db.execute("SELECT tag FROM envs WHERE space=?", (space,))
        }
        dropped: dict[tuple[str, str], int] = {
            (t, d): n for t, d, n in self.db.execute(
                "SELECT tag, device, seq FROM floors WHERE space=?", (space,))}
        for (tag, device), n in dropped.items():
            out.setdefault(tag, {})[device] = n
        for tag, device, top, count in self._vv_rows(space, None):
            n = self._prefix(space, tag, device, top, count, dropped.get((tag, device), 0))
            if n:
                out.setdefault(tag, {})[device] = n
        return out

    def vv(self, space: str, tag: str) -> dict[str, int]:
        dropped = self.floors(space, tag)
        out = dict(dropped)
        for _tag, device, top, count in self._vv_rows(space, tag):
            n = self._prefix(space, tag, device, top, count, dropped.get(device, 0))
            if n:
                out[device] = n
        return out

    def fetch(self, space: str, tag: str, have: Mapping[str, int], *, max_items: int,
              max_bytes: int) -> tuple[list[Envelope], bool]:
        # One query per page: the floor check, the page cut by count and bytes (a running
        # sum over the first max_items + 1 slots, sizes read from the record header) and the
        # ciphertexts of the slots chosen only.
        rows = self.db.execute(_FETCH_SQL, (
            space, tag, json.dumps({d: int(n) for d, n in have.items()}), max_items + 1,
            max_items, max_bytes)).fetchall()
        if any(kind == 0 for kind, *_rest in rows):
            raise Compacted(self.floors(space, tag))
        out: list[Envelope] = []
        more = False
        for _kind, device, seq, gen, ct in sorted(rows, key=lambda r: (r[1], r[2])):
            if ct is None:
                more = True
                break
            out.append(Envelope(device, seq, gen, bytes(ct)))
        return out, more

    # ---------------------------------------------------------------- compaction
    def floors(self, space: str, tag: str) -> dict[str, int]:
        return {d: n for d, n in self.db.execute(
            "SELECT device, seq FROM floors WHERE space=? AND tag=?", (space, tag))}

    def snapshot(self, space: str, tag: str) -> StoredSnapshot | None:
        row = self.db.execute(
            "SELECT signer, vv, ct, sig, received_ms FROM snapshots WHERE space=? AND tag=?",
            (space, tag)).fetchone()
        if row is None:
            return None
        return StoredSnapshot(row[0], decode_vv(row[1]), bytes(row[2]), bytes(row[3]), row[4])

    def put_snapshot(self, space: str, tag: str, snap: StoredSnapshot,
                     judge: SnapshotJudge) -> Verdict:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                row = self.db.execute(
                    "SELECT signer, vv, LENGTH(ct), received_ms FROM snapshots WHERE space=? "
                    "AND tag=?", (space, tag)).fetchone()
                held = None if row is None else HeldSnapshot(row[0], decode_vv(row[1]), row[2],
                                                             row[3])
                verdict = judge(held, self.floors(space, tag))
                if verdict.ok:
                    self.db.execute(
                        "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(space, "
                        "tag) DO UPDATE SET signer=excluded.signer, vv=excluded.vv, "
                        "ct=excluded.ct, sig=excluded.sig, received_ms=excluded.received_ms",
                        (space, tag, snap.signer, encode_vv(snap.vv), snap.ct, snap.sig,
                         snap.received_ms))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return verdict

    def snapshot_slots(self, after: tuple[str, str] | None, limit: int
                       ) -> list[tuple[str, str]]:
        a = after or ("", "")
        return [(sp, tag) for sp, tag in self.db.execute(
            "SELECT space, tag FROM snapshots WHERE (space, tag) > (?, ?) ORDER BY space, tag "
            "LIMIT ?", (a[0], a[1], limit))]

    def note_acks(self, space: str, tag: str, holder: str, vv: Mapping[str, int]) -> None:
        with self._lock:
            self.db.executemany(
                "INSERT INTO acks VALUES (?, ?, ?, ?, ?) ON CONFLICT(space, tag, holder, device) "
                "DO UPDATE SET seq=MAX(seq, excluded.seq)",
                [(space, tag, holder, d, int(n)) for d, n in vv.items() if n > 0])

    def compact(self, space: str, tag: str, members: Collection[str], cutoff_ms: int) -> int:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                gone = self._compact(space, tag, members, cutoff_ms)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return gone

    def _compact(self, space: str, tag: str, members: Collection[str], cutoff_ms: int) -> int:
        row = self.db.execute("SELECT vv FROM snapshots WHERE space=? AND tag=?",
                              (space, tag)).fetchone()
        if row is None:
            return 0  # nothing is ever dropped that no snapshot covers
        acks: dict[str, dict[str, int]] = {}
        for holder, device, seq in self.db.execute(
                "SELECT holder, device, seq FROM acks WHERE space=? AND tag=?", (space, tag)):
            acks.setdefault(holder, {})[device] = seq
        young = {d: n for d, n in self.db.execute(
            "SELECT device, MIN(seq) FROM envelopes WHERE space=? AND tag=? AND received_ms>? "
            "GROUP BY device", (space, tag, cutoff_ms))}
        stored = {d: n for d, n in self.db.execute(
            "SELECT device, MAX(n) FROM (SELECT device, MAX(seq) AS n FROM envelopes WHERE "
            "space=? AND tag=? GROUP BY device UNION ALL SELECT device, seq FROM floors WHERE "
            "space=? AND tag=?) GROUP BY device", (space, tag, space, tag))}
        new = drop_floors(decode_vv(row[0]), acks, members, young, self.floors(space, tag),
                          stored)
        gone = freed = 0
        for device, floor in sorted(new.items()):
            n, z = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(ct)), 0) FROM envelopes WHERE space=? "
                "AND tag=? AND device=? AND seq<=?", (space, tag, device, floor)).fetchone()
            self.db.execute("DELETE FROM envelopes WHERE space=? AND tag=? AND device=? AND "
                            "seq<=?", (space, tag, device, floor))
            self.db.execute("INSERT INTO floors VALUES (?, ?, ?, ?) ON CONFLICT(space, tag, "
                            "device) DO UPDATE SET seq=excluded.seq", (space, tag, device, floor))
            gone += n
            freed += z
        if freed:
            self.db.execute("UPDATE envs SET stored=MAX(0, stored - ?) WHERE space=? AND tag=?",
                            (freed, space, tag))
        return gone


#: The page query of `SQLiteStorage.fetch` (see there). Kind 0: `have` is below a floor.
_FETCH_SQL = """
WITH h(d, s) AS (SELECT key, value FROM json_each(?3)),
gap AS (SELECT 1 FROM floors f LEFT JOIN h ON h.d = f.device
        WHERE f.space = ?1 AND f.tag = ?2 AND f.seq > COALESCE(h.s, 0) LIMIT 1),
devs AS (SELECT DISTINCT device FROM envelopes WHERE space = ?1 AND tag = ?2),
slots AS (SELECT e.id, e.device, e.seq, e.gen, LENGTH(e.ct) AS z FROM devs
          JOIN envelopes e ON e.space = ?1 AND e.tag = ?2 AND e.device = devs.device
          AND e.seq > COALESCE((SELECT s FROM h WHERE h.d = devs.device), 0)
          ORDER BY e.device, e.seq LIMIT ?4),
page AS (SELECT *, ROW_NUMBER() OVER w AS rn, SUM(z) OVER w AS cum FROM slots
         WINDOW w AS (ORDER BY device, seq ROWS UNBOUNDED PRECEDING))
SELECT 0, NULL, NULL, NULL, NULL FROM gap
UNION ALL
SELECT 1, device, seq, gen, CASE WHEN rn <= ?5 AND (rn = 1 OR cum <= ?6)
       THEN (SELECT ct FROM envelopes WHERE id = page.id) END FROM page
"""


__all__ = ["Compacted", "DB_NAME", "EnvUsage", "RelayStorage", "SQLiteStorage", "SnapshotJudge",
           "StorageError", "StoredSnapshot"]
