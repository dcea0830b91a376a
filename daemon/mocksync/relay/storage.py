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

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import MocksyncError
from .envelope import Envelope

SCHEMA_VERSION = 1
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
"""


class StorageError(MocksyncError):
    code = "storage"


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
                for e in envelopes:
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

    def _prefix(self, space: str, tag: str, device: str, top: int, count: int) -> int:
        if top == count:
            return top  # seqs are >= 1 and distinct: count == max means 1..max all present
        n = 0
        for (seq,) in self.db.execute(
            "SELECT seq FROM envelopes WHERE space=? AND tag=? AND device=? ORDER BY seq",
            (space, tag, device),
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
        for tag, device, top, count in self._vv_rows(space, None):
            n = self._prefix(space, tag, device, top, count)
            if n:
                out.setdefault(tag, {})[device] = n
        return out

    def vv(self, space: str, tag: str) -> dict[str, int]:
        out = {}
        for _tag, device, top, count in self._vv_rows(space, tag):
            n = self._prefix(space, tag, device, top, count)
            if n:
                out[device] = n
        return out

    def fetch(self, space: str, tag: str, have: Mapping[str, int], *, max_items: int,
              max_bytes: int) -> tuple[list[Envelope], bool]:
        devices = [d for (d,) in self.db.execute(
            "SELECT DISTINCT device FROM envelopes WHERE space=? AND tag=? ORDER BY device",
            (space, tag))]
        out: list[Envelope] = []
        size = 0
        for device in devices:
            rows = self.db.execute(
                "SELECT seq, gen, ct FROM envelopes WHERE space=? AND tag=? AND device=? "
                "AND seq>? ORDER BY seq LIMIT ?",
                (space, tag, device, have.get(device, 0), max_items - len(out) + 1),
            )
            for seq, gen, ct in rows:
                if len(out) >= max_items or (out and size + len(ct) > max_bytes):
                    return out, True
                out.append(Envelope(device, seq, gen, bytes(ct)))
                size += len(ct)
        return out, False


__all__ = ["DB_NAME", "EnvUsage", "RelayStorage", "SQLiteStorage", "StorageError"]
