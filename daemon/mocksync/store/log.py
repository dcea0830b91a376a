"""The durable change log and materialised register state (SQLite, WAL).

Why SQLite: docs/design/architecture.md "Storage" measured TinyDB at 1,000x slower for change-set-sized inserts and
without crash safety. Applying a change set is ONE transaction: the change set row, the
touched entities' register records, new conflicts and the clock move together or not at all,
so a kill -9 at any instant leaves either the old state or the new one (docs/design/security.md §9).

The in-memory `State` per environment is the working copy; the `entities` table is its
materialisation (one canonical record per entity, rewritten when the entity is touched), so a
restart loads registers without replaying the log. If a commit fails, the cached State is
dropped and reloaded from disk, so memory never runs ahead of the database.

What the store decides (signatures, chains, equivocation, quarantine) is delegated to the pure
`changes` and `model` packages; membership (who may write) is the caller's business: it passes
the author's public key only for devices the space accepts.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..changes import ChainError, ChangeSet, Clock, too_far_in_future, verify_chain
from ..changes import vv as vvmod
from ..errors import ChangeSetError, MocksyncError, ValidationError
from ..model import ApplyResult, Conflict, Op, State, to_wire, validate_ops
from ..model.state import ABSENT, RECORD_FORMAT, close_deps
from ..paths import PRIVATE_FILE_MODE
from .basedelta import (
    MIN_DELTA_TEXT,
    Delta,
    decode_delta,
    encode_delta,
    is_delta,
    make_delta,
    pack_text,
    unpack_text,
)
from .errors import BadOpsError, BaseDeltaError, EquivocationError, UnknownDeviceError

#: 2: snapshots adopted from the relay (the floors and floor_deps tables). An older mocksync
#: must not open a version 2 log: it knows nothing of floors, so a chain that continues from
#: an adopted snapshot would look broken to it (every later change set pending for ever). A
#: version 1 log is migrated in place (the new tables are created empty).
SCHEMA_VERSION = 2
#: Change sets waiting for a missing predecessor, per environment, before we refuse more.
MAX_PENDING_PER_ENV = 10_000
#: Quarantined (future-stamped) change sets kept per environment.
MAX_QUARANTINED_PER_ENV = 1_000
#: Decoded `deps` of applied change sets kept in memory (conflict checks, closing new deps).
MAX_DEPS_CACHE = 4_096
#: Rows kept in the `rejected` table (status shows the newest few); older ones are dropped.
MAX_REJECTED_ROWS = 1_000
#: How long a connection waits for another thread's write transaction before failing
#: (transactions are serialised by the store's lock first, so this is only a safety net).
SQLITE_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changesets (
  env TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,
  space TEXT NOT NULL, hlc INTEGER NOT NULL, hash BLOB NOT NULL, wire BLOB NOT NULL,
  received_ms INTEGER NOT NULL, status TEXT NOT NULL,
  PRIMARY KEY (env, device, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS changesets_order ON changesets (env, status, hlc);
CREATE TABLE IF NOT EXISTS entities (
  env TEXT NOT NULL, uuid TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY (env, uuid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflicts (
  env TEXT NOT NULL, id TEXT NOT NULL, record TEXT NOT NULL, resolved INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL, PRIMARY KEY (env, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bases (
  env TEXT PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL, text BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS base_seen (
  env TEXT PRIMARY KEY, sha256 TEXT NOT NULL, vv TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS base_anchor (
  env TEXT PRIMARY KEY, sha256 TEXT NOT NULL, text BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejected (
  id INTEGER PRIMARY KEY AUTOINCREMENT, env TEXT, device TEXT, seq INTEGER, reason TEXT NOT NULL,
  at_ms INTEGER NOT NULL
);
-- A snapshot adopted from the relay (`adopt_snapshot`): per device, the change set the
-- snapshot covers up to (its chain continues from it), and the deps of change sets the
-- registers name that this log does not hold.
CREATE TABLE IF NOT EXISTS floors (
  env TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
  space TEXT NOT NULL, hlc INTEGER NOT NULL, PRIMARY KEY (env, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS floor_deps (
  env TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL, deps TEXT NOT NULL,
  PRIMARY KEY (env, device, seq)
) WITHOUT ROWID;
"""
#: Snapshot content layout (`snapshot_content` / `adopt_snapshot`).
SNAPSHOT_FORMAT = 1
#: Most entities, and origins with deps, one adopted snapshot may hold.
MAX_SNAPSHOT_ENTITIES = 2_000_000
MAX_SNAPSHOT_ORIGINS = 2_000_000

# Change-set status values.
APPLIED = "applied"
PENDING = "pending"  # waiting for its predecessor
QUARANTINED = "quarantined"  # stamped too far in the future; not applied


@dataclass
class IngestResult:
    status: str  # applied | duplicate | pending | quarantined
    applied: list[ChangeSet] = field(default_factory=list)  # this one and any it unblocked
    touched: set[str] = field(default_factory=set)
    conflicts: list[Conflict] = field(default_factory=list)


class Store:
    """One device's log. Not thread-safe by design beyond a coarse lock: the daemon is one loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it: its -wal/-shm files copy this mode, and the WAL
        # holds plaintext environments (issue 13: no other local user may read them).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                         PRIVATE_FILE_MODE))
        # One connection per thread (issue 12): the daemon's store worker thread ingests
        # peers' change sets on its own connection while the loop's reads (`status`) see the
        # last committed state through WAL, never a half-done transaction of the other.
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise ChangeSetError(
                f"{self.path} was written by a newer mocksync (schema {row[0]}); update mocksync"
            )
        elif int(row[0]) < SCHEMA_VERSION:  # the script above created what was missing
            self.db.execute("UPDATE meta SET v=? WHERE k='schema'", (str(SCHEMA_VERSION),))
        self._lock = threading.RLock()
        self._states: dict[str, State] = {}
        self._deps_cache: dict[tuple[str, str, int], dict[str, int]] = {}
        #: Per environment, a number that changes whenever its in-memory State may have
        #: (applied to, reloaded, rebuilt): what views derived from a State are cached by.
        self._generation: dict[str, int] = {}
        #: Per environment, the anchor its stored base is a delta against (`basedelta`):
        #: (sha256, text), so recording a base never decompresses it (issue 15).
        self._anchors: dict[str, tuple[str, bytes]] = {}
        self.clock = Clock(last=int(self._meta("clock", "0")))

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection to the log (opened on first use)."""
        conn = getattr(self._local, "db", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                   timeout=SQLITE_BUSY_TIMEOUT_S)
            # NORMAL in WAL mode survives any process crash (kill -9); FULL would add an fsync
            # per commit for power-loss durability of the very last transaction.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            with self._conns_lock:
                self._conns.append(conn)
            self._local.db = conn
        return conn

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    # ------------------------------------------------------------------ helpers
    def _meta(self, k: str, default: str) -> str:
        row = self.db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else default

    @contextmanager
    def _tx(self, env: str | None = None) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute(
                    "INSERT INTO meta VALUES ('clock', ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                    (str(self.clock.last),),
                )
                self.db.execute("COMMIT")
            except BaseException:
                # SQLite already rolled back after some failures (a full disk, an I/O error):
                # a second ROLLBACK would raise "cannot rollback" and hide the real cause.
                if self.db.in_transaction:
                    with suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                if env is not None:
                    self._states.pop(env, None)  # memory may be ahead of disk: reload
                self.clock.last = int(self._meta("clock", "0"))
                raise

    def check_writable(self) -> None:
        """One write transaction that changes nothing (it rewrites the clock row): raises
        what a commit would raise now (a full disk, a read-only or failing home), so the
        daemon can tell when its log takes writes again."""
        with self._tx():
            pass

    def _deps_lookup(self, env: str):
        def lookup(origin: tuple[str, int]) -> dict[str, int] | None:
            key = (env, origin[0], origin[1])
            hit = self._deps_cache.get(key)
            if hit is not None:
                return hit
            row = self.db.execute(
                "SELECT wire FROM changesets WHERE env=? AND device=? AND seq=? AND status=?",
                (env, origin[0], origin[1], APPLIED),
            ).fetchone()
            if row is None:
                # Covered by an adopted snapshot: its deps came with it.
                snap = self.db.execute(
                    "SELECT deps FROM floor_deps WHERE env=? AND device=? AND seq=?",
                    (env, origin[0], origin[1])).fetchone()
                return None if snap is None else {d: int(n) for d, n in
                                                  json.loads(snap[0]).items()}
            if len(self._deps_cache) >= MAX_DEPS_CACHE:
                self._deps_cache.clear()
            # (A first change set can be megabytes: decode it once, not on every save.)
            deps = self._deps_cache[key] = dict(ChangeSet.decode(row[0]).deps)
            return deps

        return lookup

    # ------------------------------------------------------------------ reads
    def state(self, env: str) -> State:
        """The materialised State of `env` (empty State if we hold nothing for it)."""
        st = self._states.get(env)
        if st is None:
            st = State(env, self._deps_lookup(env))
            for uuid, blob in self.db.execute(
                "SELECT uuid, record FROM entities WHERE env=?", (env,)
            ):
                st.load_record(uuid, blob)
            # Two threads may load it at once (the loop's `status` while the store worker
            # ingests): the first one kept wins, so nobody applies to a copy that is dropped.
            st = self._states.setdefault(env, st)
            self._bump(env)
        return st

    def warm(self, env: str) -> None:
        """Load now what the first commit or ingest of `env` after a start would: its State,
        and the deps of each device's last change set (`_closed_deps` closes over them; the
        first change set of an environment, a whole snapshot, takes seconds to decode when
        it is 15 MB). For the store worker at start (issue 15), so no save pays for it."""
        self.state(env)
        lookup = self._deps_lookup(env)
        for device, seq in self.version_vector(env).items():
            if seq > 0:
                lookup((device, seq))

    def loaded_state(self, env: str) -> State | None:
        """`state(env)` when it is in memory already, else None (never loads it: a caller
        on the event loop must not walk a big environment's rows)."""
        return self._states.get(env)

    def has_env(self, env: str) -> bool:
        return self.db.execute("SELECT 1 FROM entities WHERE env=? LIMIT 1", (env,)).fetchone() is not None

    def envs(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT env FROM changesets UNION SELECT env FROM floors ORDER BY env")]

    def envs_oldest_first(self) -> list[str]:
        """Every environment, the one shared first (smallest stamp of its first change set)
        first, ties by uuid. Why an order at all: where only some environments fit (a relay
        plan's count), the ones kept must be the ones shared first, the same on every run."""
        return [r[0] for r in self.db.execute(
            "SELECT env, MIN(hlc) AS first FROM (SELECT env, hlc FROM changesets UNION ALL "
            "SELECT env, hlc FROM floors) GROUP BY env ORDER BY first, env")]

    def version_vector(self, env: str) -> dict[str, int]:
        """Highest applied seq per device (applied chains are contiguous by construction; an
        adopted snapshot's floor counts as applied)."""
        return {
            d: s
            for d, s in self.db.execute(
                "SELECT device, MAX(seq) FROM (SELECT device, seq FROM changesets WHERE env=? "
                "AND status=? UNION ALL SELECT device, seq FROM floors WHERE env=?) "
                "GROUP BY device", (env, APPLIED, env),
            )
        }

    def get(self, env: str, device: str, seq: int) -> tuple[ChangeSet, str] | None:
        row = self.db.execute(
            "SELECT wire, status FROM changesets WHERE env=? AND device=? AND seq=?",
            (env, device, seq),
        ).fetchone()
        return (ChangeSet.decode(row[0]), row[1]) if row else None

    def _head_info(self, env: str, device: str) -> tuple[int, bytes, str] | None:
        """(seq, hash, space) of a device's last applied change set, without decoding it (the
        first change set of a shared environment can be megabytes)."""
        row = self.db.execute(
            "SELECT seq, hash, space FROM (SELECT seq, hash, space FROM changesets WHERE env=? "
            "AND device=? AND status=? UNION ALL SELECT seq, hash, space FROM floors WHERE "
            "env=? AND device=?) ORDER BY seq DESC LIMIT 1",
            (env, device, APPLIED, env, device)).fetchone()
        return (row[0], bytes(row[1]), row[2]) if row else None

    def log(self, env: str) -> list[tuple[ChangeSet, int]]:
        """Applied change sets, oldest (by stamp) first, with the time we received each."""
        return [
            (ChangeSet.decode(w), t)
            for w, t in self.db.execute(
                "SELECT wire, received_ms FROM changesets WHERE env=? AND status=? "
                "ORDER BY hlc, device",
                (env, APPLIED),
            )
        ]

    def wires_missing(self, env: str, remote_vv: dict[str, int]) -> list[bytes]:
        """Wire bytes of applied change sets the holder of `remote_vv` lacks, in chain order."""
        out: list[bytes] = []
        for device, (after, upto) in vvmod.missing(remote_vv, self.version_vector(env)).items():
            out.extend(
                w for (w,) in self.db.execute(
                    "SELECT wire FROM changesets WHERE env=? AND device=? AND status=? "
                    "AND seq>? AND seq<=? ORDER BY seq",
                    (env, device, APPLIED, after, upto),
                )
            )
        return out

    def head_space(self, env: str) -> str | None:
        """The space an environment's change sets belong to."""
        row = self.db.execute("SELECT space FROM changesets WHERE env=? LIMIT 1", (env,)).fetchone() \
            or self.db.execute("SELECT space FROM floors WHERE env=? LIMIT 1", (env,)).fetchone()
        return row[0] if row else None

    def count(self, env: str, status: str = APPLIED) -> int:
        return self.db.execute(
            "SELECT COUNT(*) FROM changesets WHERE env=? AND status=?", (env, status)
        ).fetchone()[0]

    def conflicts(self, env: str | None = None, include_resolved: bool = False) -> list[dict[str, Any]]:
        q = "SELECT record, resolved FROM conflicts"
        args: list[Any] = []
        conds = []
        if env is not None:
            conds.append("env=?")
            args.append(env)
        if not include_resolved:
            conds.append("resolved=0")
        if conds:
            q += " WHERE " + " AND ".join(conds)
        out = []
        for rec, resolved in self.db.execute(q, args):
            d = json.loads(rec)
            d["resolved"] = bool(resolved)
            out.append(d)
        # The same order on every device (never by local arrival time).
        out.sort(key=lambda d: (d["env"], d["loser"]["hlc"], d["loser"]["device"], d["id"]))
        return out

    def mark_resolved(self, env: str, conflict_id: str) -> bool:
        with self._tx():
            cur = self.db.execute(
                "UPDATE conflicts SET resolved=1 WHERE env=? AND id=?", (env, conflict_id)
            )
            return cur.rowcount > 0

    def rejected(self, limit: int = 50) -> list[dict[str, Any]]:
        return [
            {"env": e, "device": d, "seq": s, "reason": r, "at_ms": t}
            for e, d, s, r, t in self.db.execute(
                "SELECT env, device, seq, reason, at_ms FROM rejected ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        ]

    def refusals(self, env: str, limit: int = 50) -> list[dict[str, Any]]:
        """Refused change sets of one environment, newest first (what `status` explains)."""
        return [
            {"device": d, "seq": s, "reason": r, "at_ms": t}
            for d, s, r, t in self.db.execute(
                "SELECT device, seq, reason, at_ms FROM rejected WHERE env=? ORDER BY id DESC "
                "LIMIT ?", (env, limit))
        ]

    def quarantined(self, env: str) -> list[tuple[str, int, int]]:
        """`(device, seq, hlc)` of the change sets of `env` held back for a far-future stamp."""
        return [(d, s, h) for d, s, h in self.db.execute(
            "SELECT device, seq, hlc FROM changesets WHERE env=? AND status=? ORDER BY device, seq",
            (env, QUARANTINED))]

    # ------------------------------------------------------------------ writes
    def generation(self, env: str) -> int:
        """Changes whenever `state(env)` may have changed (see `_generation`)."""
        return self._generation.get(env, 0)

    def _bump(self, env: str) -> None:
        self._generation[env] = self._generation.get(env, 0) + 1

    def _persist(self, env: str, st: State, res: ApplyResult, now_ms: int) -> None:
        self._bump(env)
        # In key order: `entities` is a WITHOUT ROWID b-tree on (env, uuid), and rows that
        # come in key order append to it instead of splitting pages at random (a first sync's
        # 20,000 records: 3x less SQLite time, issue 15).
        self.db.executemany(
            "INSERT INTO entities VALUES (?, ?, ?) ON CONFLICT(env, uuid) DO UPDATE SET record=excluded.record",
            [(env, u, st.entity_record(u)) for u in sorted(res.touched)],
        )
        self._sync_conflicts(env, st, res, now_ms)

    def _sync_conflicts(self, env: str, st: State, res: ApplyResult,
                        now_ms: int) -> list[Conflict]:
        """Make the listing of the touched entities equal to their derived conflicts; return
        the ones that are new here. Rows of conflicts that no longer hold (someone wrote the
        register after seeing both sides: a resolution) go; a local dismissal survives while
        its conflict holds."""
        if not res.touched and not res.named:
            return []
        # Entities not touched whose work a delete (or a restore) just dropped (or brought
        # back) are looked at too: a response added to a route deleted meanwhile (issue 15).
        looked = res.touched | st.naming(res.named)
        rows = self.db.execute("SELECT id, record FROM conflicts WHERE env=?", (env,)).fetchall()
        listed = {cid for cid, rec in rows if json.loads(rec)["entity"] in looked}
        now = {c.id: c for u in sorted(looked) for c in st.conflicts_of(u)}
        gone = listed - set(now)
        if gone:
            self.db.executemany("DELETE FROM conflicts WHERE env=? AND id=?",
                                [(env, cid) for cid in sorted(gone)])
        fresh = [c for cid, c in now.items() if cid not in listed]
        if fresh:
            self.db.executemany(
                "INSERT OR IGNORE INTO conflicts (env, id, record, created_ms) VALUES (?, ?, ?, ?)",
                [(env, c.id, json.dumps(_conflict_json(c), ensure_ascii=False), now_ms)
                 for c in fresh],
            )
        res.conflicts = fresh
        return fresh

    def commit_local(
        self,
        key: Ed25519PrivateKey,
        *,
        space: str,
        env: str,
        device: str,
        ops: Iterable[Op],
        now_ms: int,
        seen: dict[str, int] | None = None,
    ) -> tuple[ChangeSet, ApplyResult]:
        """Our own edit: stamp, sign, log and apply it in one transaction.

        `seen` is the version vector of what the edit was made against (the version of the
        file the editor had), when that is older than the log: a teammate's change applied
        here but not yet in the editor's file is concurrent with this edit, not overwritten
        knowingly, so a write to the same register must be listed as a conflict (issue 11:
        two saves 16 ms apart). None: everything applied here was seen (a command's edit).
        """
        ops = list(ops)
        wire_ops = [to_wire(op) for op in ops]
        # Our own ops pass the checks every peer applies, so we never commit what they refuse.
        try:
            validate_ops(wire_ops)
        except ValidationError as exc:
            raise BadOpsError(f"refusing to commit an edit peers would refuse: {exc}") from None
        with self._lock:
            st = self.state(env)
            with self._tx(env):
                prev = self._head_info(env, device)
                deps = self._closed_deps(env, device, seen)
                hlc = self.clock.tick(now_ms)
                cs = ChangeSet(
                    space=space, env=env, device=device,
                    seq=1 if prev is None else prev[0] + 1, hlc=hlc, deps=deps,
                    prev_hash=b"" if prev is None else prev[1],
                    ops=tuple(wire_ops),
                ).sign(key)
                wire = cs.encode()
                self.db.execute(
                    "INSERT INTO changesets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (env, device, cs.seq, space, hlc, cs.hash, wire, now_ms, APPLIED),
                )
                res = st.apply(ops, (hlc, device), (device, cs.seq), dict(cs.deps))
                self._persist(env, st, res, now_ms)
        return cs, res

    def _closed_deps(self, env: str, device: str, seen: dict[str, int] | None) -> dict[str, int]:
        """`deps` for our next change set (see `model.state.close_deps`)."""
        return close_deps(self.version_vector(env), seen, device, self._deps_lookup(env))

    def ingest(self, wire_or_cs: bytes | ChangeSet, public_key: bytes | None, now_ms: int) -> IngestResult:
        """A change set from a peer or the relay. Refusals raise and change nothing."""
        cs = wire_or_cs if isinstance(wire_or_cs, ChangeSet) else ChangeSet.decode(wire_or_cs)
        if public_key is None:
            raise UnknownDeviceError(
                f"change set #{cs.seq} of {cs.env} is from device {cs.device}, "
                "which is not a member of the space"
            )
        cs.verify(public_key)
        ops = _checked_ops(cs)  # refuse malformed ops before touching anything
        wire = cs.encode()
        with self._lock:
            existing = self.db.execute(
                "SELECT hash, status FROM changesets WHERE env=? AND device=? AND seq=?",
                (cs.env, cs.device, cs.seq),
            ).fetchone()
            if existing is not None:
                if bytes(existing[0]) == cs.hash:
                    return IngestResult("duplicate")
                self._reject(cs, "equivocation: a different change set with the same seq", now_ms)
                raise EquivocationError(
                    f"device {cs.device} sent two different change sets numbered #{cs.seq} for "
                    f"{cs.env}: refused (equivocation)"
                )
            if too_far_in_future(cs.hlc, now_ms, self.clock.max_drift_ms):
                n = self.count(cs.env, QUARANTINED)
                if n >= MAX_QUARANTINED_PER_ENV:
                    raise ChangeSetError(
                        f"too many quarantined change sets for {cs.env} ({n}); refusing more"
                    )
                with self._tx():
                    self.db.execute(
                        "INSERT INTO changesets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (cs.env, cs.device, cs.seq, cs.space, cs.hlc, cs.hash, wire, now_ms,
                         QUARANTINED),
                    )
                return IngestResult(QUARANTINED)
            head = self._head_info(cs.env, cs.device)
            head_seq = head[0] if head else 0
            if cs.seq > head_seq + 1:
                if self.count(cs.env, PENDING) >= MAX_PENDING_PER_ENV:
                    raise ChangeSetError(
                        f"more than {MAX_PENDING_PER_ENV} change sets of {cs.env} wait for "
                        "missing predecessors; refusing more until they arrive"
                    )
                with self._tx():
                    self.db.execute(
                        "INSERT INTO changesets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (cs.env, cs.device, cs.seq, cs.space, cs.hlc, cs.hash, wire, now_ms,
                         PENDING),
                    )
                return IngestResult(PENDING)
            if head is None:
                verify_chain(None, cs)
            elif cs.prev_hash != head[1] or cs.space != head[2]:
                raise ChainError(
                    f"change set #{cs.seq} of {cs.env} from {cs.device} does not link to "
                    f"#{head[0]}: its prev_hash names another predecessor (a forked or altered "
                    "chain)" if cs.prev_hash != head[1] else
                    f"change set #{cs.seq} of {cs.env} from {cs.device} claims another space")
            result = IngestResult(APPLIED)
            self._apply_chain(cs, ops, wire, now_ms, result)
            return result

    def ingest_batch(self, items: list[tuple[ChangeSet, bytes | None]], now_ms: int,
                     ) -> tuple[IngestResult, list[tuple[ChangeSet, MocksyncError]]]:
        """Many change sets at once (catch-up): same checks as `ingest`, one transaction.

        Change sets that extend their chain directly are verified, applied in memory and
        committed together, with each touched entity's record written once for the whole
        batch instead of once per change set (10,000 catch-up sets touch a few hundred
        entities). Anything else (gaps, duplicates, equivocation, quarantine) goes through
        `ingest` one by one. Refusals are returned, not raised, so one bad set does not
        stop the others; the committed part is all-or-nothing.
        """
        total = IngestResult(APPLIED)
        errors: list[tuple[ChangeSet, MocksyncError]] = []
        ready: list[tuple[ChangeSet, list[Op], bytes]] = []
        slow: list[tuple[ChangeSet, bytes | None]] = []
        heads: dict[tuple[str, str], tuple[int, bytes]] = {}
        for cs, key in sorted(items, key=lambda it: (it[0].env, it[0].device, it[0].seq)):
            try:
                if key is None:
                    raise UnknownDeviceError(
                        f"change set #{cs.seq} of {cs.env} is from device {cs.device}, "
                        "which is not a member of the space")
                cs.verify(key)
                ops = _checked_ops(cs)
            except MocksyncError as exc:
                errors.append((cs, exc))
                continue
            hk = (cs.env, cs.device)
            if hk not in heads:
                row = self.db.execute(
                    "SELECT seq, hash FROM changesets WHERE env=? AND device=? AND status=? "
                    "ORDER BY seq DESC LIMIT 1", (cs.env, cs.device, APPLIED)).fetchone()
                heads[hk] = (row[0], bytes(row[1])) if row else (0, b"")
            head_seq, head_hash = heads[hk]
            if (cs.seq == head_seq + 1 and cs.prev_hash == head_hash
                    and not too_far_in_future(cs.hlc, now_ms, self.clock.max_drift_ms)):
                ready.append((cs, ops, cs.encode()))
                heads[hk] = (cs.seq, cs.hash)
            else:
                slow.append((cs, key))
        if ready:
            try:
                self._commit_batch(ready, now_ms, total)
            except sqlite3.Error:
                slow = [(cs, None) for cs, _o, _w in ready] + slow  # retried one by one below
                total = IngestResult(APPLIED)
        for cs, key in slow:
            if key is None:
                key = next((k for c, k in items if c is cs), None)
            try:
                r = self.ingest(cs, key, now_ms)
            except MocksyncError as exc:
                errors.append((cs, exc))
                continue
            total.applied += r.applied
            total.touched |= r.touched
            total.conflicts += r.conflicts
        if not total.applied:
            total.status = "duplicate" if not errors else "refused"
        return total, errors

    def _commit_batch(self, ready: list[tuple[ChangeSet, list[Op], bytes]], now_ms: int,
                      total: IngestResult) -> None:
        by_env: dict[str, ApplyResult] = {}
        envs = {cs.env for cs, _o, _w in ready}
        with self._lock:
            try:
                with self._tx():
                    for cs, ops, _wire in ready:
                        self.clock.observe(cs.hlc, now_ms)
                        st = self.state(cs.env)
                        res = st.apply(ops, (cs.hlc, cs.device), (cs.device, cs.seq),
                                       dict(cs.deps))
                        agg = by_env.setdefault(cs.env, ApplyResult())
                        agg.touched |= res.touched
                        agg.named |= res.named
                        agg.conflicts += res.conflicts
                    self.db.executemany(
                        "INSERT INTO changesets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT(env, device, seq) DO UPDATE SET status=excluded.status",
                        [(cs.env, cs.device, cs.seq, cs.space, cs.hlc, cs.hash, wire, now_ms,
                          APPLIED) for cs, _o, wire in ready])
                    for env, agg in by_env.items():
                        self._persist(env, self.state(env), agg, now_ms)
            except BaseException:
                for env in envs:
                    self._states.pop(env, None)
                raise
        last: dict[tuple[str, str], ChangeSet] = {}
        for cs, _o, _w in ready:
            total.applied.append(cs)
            last[(cs.env, cs.device)] = cs
        for agg in by_env.values():
            total.touched |= agg.touched
            total.conflicts += agg.conflicts
        # Change sets that waited for one of these as their predecessor can go now.
        for cs in last.values():
            row = self.db.execute(
                "SELECT wire FROM changesets WHERE env=? AND device=? AND seq=? AND status=?",
                (cs.env, cs.device, cs.seq + 1, PENDING)).fetchone()
            if row is None:
                continue
            nxt = ChangeSet.decode(row[0])
            try:
                verify_chain(cs, nxt)
                ops = _checked_ops(nxt)
            except ChangeSetError as exc:
                self._reject(nxt, f"dropped pending change set: {exc}", now_ms)
                continue
            self._apply_chain(nxt, ops, row[0], now_ms, total)

    def _apply_chain(self, cs: ChangeSet, ops: list[Op], wire: bytes, now_ms: int,
                     result: IngestResult) -> None:
        """Apply `cs`, then any pending successors it unblocks, each in its own transaction."""
        st = self.state(cs.env)
        while True:
            with self._tx(cs.env):
                self.clock.observe(cs.hlc, now_ms)
                self.db.execute(
                    "INSERT INTO changesets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(env, device, seq) DO UPDATE SET status=excluded.status",
                    (cs.env, cs.device, cs.seq, cs.space, cs.hlc, cs.hash, wire, now_ms, APPLIED),
                )
                res = st.apply(ops, (cs.hlc, cs.device), (cs.device, cs.seq), dict(cs.deps))
                self._persist(cs.env, st, res, now_ms)
            result.applied.append(cs)
            result.touched |= res.touched
            result.conflicts += res.conflicts
            row = self.db.execute(
                "SELECT wire FROM changesets WHERE env=? AND device=? AND seq=? AND status=?",
                (cs.env, cs.device, cs.seq + 1, PENDING),
            ).fetchone()
            if row is None:
                return
            nxt = ChangeSet.decode(row[0])
            try:
                verify_chain(cs, nxt)
                ops = _checked_ops(nxt)
            except ChangeSetError as exc:
                with self._tx():
                    self.db.execute(
                        "DELETE FROM changesets WHERE env=? AND device=? AND seq=? AND status=?",
                        (nxt.env, nxt.device, nxt.seq, PENDING),
                    )
                self._reject(nxt, f"dropped pending change set: {exc}", now_ms)
                return
            cs, wire = nxt, row[0]

    def release_quarantine(self, env: str, now_ms: int,
                           key_lookup) -> IngestResult:
        """Retry quarantined change sets whose stamps are no longer too far ahead."""
        total = IngestResult("released")
        rows = self.db.execute(
            "SELECT wire FROM changesets WHERE env=? AND status=? ORDER BY device, seq",
            (env, QUARANTINED),
        ).fetchall()
        for (w,) in rows:
            cs = ChangeSet.decode(w)
            if too_far_in_future(cs.hlc, now_ms, self.clock.max_drift_ms):
                continue
            with self._tx():
                self.db.execute(
                    "DELETE FROM changesets WHERE env=? AND device=? AND seq=? AND status=?",
                    (env, cs.device, cs.seq, QUARANTINED),
                )
            r = self.ingest(w, key_lookup(cs.device), now_ms)
            total.applied += r.applied
            total.touched |= r.touched
            total.conflicts += r.conflicts
        return total

    def _reject(self, cs: ChangeSet, reason: str, now_ms: int) -> None:
        with self._tx():
            self._note_rejected(cs.env, cs.device, cs.seq, reason, now_ms)

    def _note_rejected(self, env: str, device: str, seq: int, reason: str, now_ms: int) -> None:
        """One `rejected` row (inside a transaction): the same refusal of the same change set
        is kept once (a peer that re-sends it does not fill the table), and the table keeps
        the newest MAX_REJECTED_ROWS rows."""
        if self.db.execute(
            "SELECT 1 FROM rejected WHERE env=? AND device=? AND seq=? AND reason=? LIMIT 1",
            (env, device, seq, reason),
        ).fetchone():
            return
        self.db.execute(
            "INSERT INTO rejected (env, device, seq, reason, at_ms) VALUES (?, ?, ?, ?, ?)",
            (env, device, seq, reason, now_ms),
        )
        self.db.execute(
            "DELETE FROM rejected WHERE id <= (SELECT MAX(id) FROM rejected) - ?",
            (MAX_REJECTED_ROWS,),
        )

    def refuse(self, cs: ChangeSet, reason: str, now_ms: int) -> None:
        """Record that `cs` was refused before reaching the log (its author may not write to
        the space: `space.writers`), so `status` names it. Changes nothing else."""
        self._reject(cs, reason, now_ms)

    def refuse_slot(self, env: str, device: str, seq: int, reason: str, now_ms: int) -> None:
        """Record a refusal by slot, for a change set that did not decode (so there is no
        `ChangeSet` to name it by): `status` lists it like any other. Changes nothing else."""
        with self._tx():
            self._note_rejected(env, device, seq, reason, now_ms)

    def held_seqs(self, env: str) -> dict[str, int]:
        """Highest seq held per device for `env`, whatever its status (applied, waiting for a
        predecessor, quarantined): what a removal cut is compared against."""
        return {d: s for d, s in self.db.execute(
            "SELECT device, MAX(seq) FROM changesets WHERE env=? GROUP BY device", (env,))}

    def revoke(self, env: str, device: str, cut: int, reason: str, now_ms: int) -> list[int]:
        """Take back `device`'s change sets of `env` numbered above `cut` (its removal's cut,
        which this device learned after applying them) and rebuild the environment from the
        change sets that remain, in one transaction. Returns the seqs taken back (listed in
        `rejected` with `reason`).

        Why a rebuild and not an undo: applying is commutative, so the state of a log is the
        same whatever the order its change sets arrived in; replaying the remaining applied
        change sets gives exactly the state of a member that never accepted the revoked ones,
        which is what makes every member converge. Change sets of others that built on the
        revoked ones stay (their authors are members); their `deps` may name a revoked change
        set, which only means "seen", never "required"."""
        with self._lock:
            rows = self.db.execute(
                "SELECT seq, status FROM changesets WHERE env=? AND device=? AND seq>? "
                "ORDER BY seq", (env, device, cut)).fetchall()
            if not rows:
                return []
            seqs = [r[0] for r in rows]
            rebuild = any(r[1] == APPLIED for r in rows)
            old = set(self.state(env).entities) if rebuild else set()
            try:
                with self._tx(env):
                    self.db.execute("DELETE FROM changesets WHERE env=? AND device=? AND seq>?",
                                    (env, device, cut))
                    for seq in seqs:
                        self._note_rejected(env, device, seq, reason, now_ms)
                    if rebuild:
                        self._deps_cache = {k: v for k, v in self._deps_cache.items()
                                            if k[0] != env}
                        st = State(env, self._deps_lookup(env))
                        for wire, hlc, dev, seq in self.db.execute(
                            "SELECT wire, hlc, device, seq FROM changesets WHERE env=? AND "
                            "status=? ORDER BY hlc, device, seq", (env, APPLIED)).fetchall():
                            cs = ChangeSet.decode(wire)
                            st.apply(_checked_ops(cs), (hlc, dev), (dev, seq), dict(cs.deps))
                        self._states[env] = st
                        self._bump(env)
                        self.db.execute("DELETE FROM entities WHERE env=?", (env,))
                        res = ApplyResult()
                        res.touched = set(st.entities)
                        self.db.executemany(
                            "INSERT INTO entities VALUES (?, ?, ?)",
                            [(env, u, st.entity_record(u)) for u in sorted(st.entities)])
                        res.touched |= old
                        self._sync_conflicts(env, st, res, now_ms)
            except BaseException:
                self._states.pop(env, None)
                raise
        return seqs

    # ------------------------------------------------------------------ snapshots
    def history_bytes(self, env: str, since: dict[str, int]) -> int:
        """Bytes of the applied change sets of `env` above `since` (per device): the history
        a snapshot covering `since` does not fold yet (the daemon's snapshot trigger)."""
        row = self.db.execute(
            "SELECT SUM(LENGTH(wire)) FROM changesets WHERE env=? AND status=? "
            "AND seq > COALESCE((SELECT value FROM json_each(?) WHERE key=device), 0)",
            (env, APPLIED, json.dumps(since))).fetchone()
        return int(row[0] or 0)

    def snapshot_content(self, env: str) -> dict[str, Any] | None:
        """What this device holds of `env` as a snapshot's content (relay compaction), or
        None when it holds nothing applied.

        Enough to rebuild the same state and keep merging: the registers (each entity's
        record: values, stamps, origins, frontiers, deletes), the version vector they are
        the merge of (`vv`), each device's chain head (`h`: seq and hash, so its next change
        set links), the deps of every change set the records or heads name (`d`: conflicts
        are derived from them), the space, the first stamp (`o`) and the clock (`c`)."""
        with self._lock:
            vv = self.version_vector(env)
            space = self.head_space(env)
            if not vv or space is None:
                return None
            st = self.state(env)
            heads: dict[str, list[Any]] = {}
            for device in sorted(vv):
                info = self._head_info(env, device)
                if info is not None:
                    heads[device] = [info[0], info[1]]
            origins: set[tuple[str, int]] = {(d, n) for d, n in vv.items()}
            records = []
            for uuid in sorted(st.entities):
                e = st.entities[uuid]
                for r in e.regs.values():
                    if r.origin:
                        origins.add(tuple(r.origin))  # type: ignore[arg-type]
                    for _v, _s, o in r.front or ():
                        if o:
                            origins.add(tuple(o))  # type: ignore[arg-type]
                for o in [e.del_origin, *(o for _s, o in e.dels), *e.restores]:
                    if o:
                        origins.add(tuple(o))  # type: ignore[arg-type]
                records.append([uuid, st.entity_record(uuid)])
            lookup = self._deps_lookup(env)
            deps = []
            for origin in sorted(origins):
                d = lookup(origin)
                if d:
                    deps.append([origin[0], origin[1], {k: int(v) for k, v in sorted(d.items())}])
            first = self.db.execute(
                "SELECT MIN(hlc) FROM (SELECT hlc FROM changesets WHERE env=? AND status=? "
                "UNION ALL SELECT hlc FROM floors WHERE env=?)", (env, APPLIED, env)).fetchone()
        return {"f": SNAPSHOT_FORMAT, "rf": RECORD_FORMAT, "e": env, "s": space,
                "vv": dict(sorted(vv.items())), "h": heads, "r": records, "d": deps,
                "o": int(first[0] or 0), "c": int(self.clock.last)}

    def adopt_snapshot(self, content: Any, now_ms: int) -> IngestResult:
        """Start `env` from a snapshot's content (see `snapshot_content`), in one transaction.

        Whatever this log holds is kept and applied again on top of the snapshot's registers
        (applying is idempotent and commutative), so a snapshot that lacks something this
        device holds never takes it away: the result is the merge of both. Change sets the
        snapshot covers count as applied from now on (`floors`), so a catch-up continues
        after them and nothing is applied twice. Malformed content raises and changes
        nothing."""
        env, space, vv, heads, records, deps, first, clock = _snapshot_parts(content)
        held = self.head_space(env)
        if held is not None and held != space:
            raise ChangeSetError(f"snapshot of {env} belongs to another space than its log")
        result = IngestResult("adopted")
        with self._lock:
            local_vv = self.version_vector(env)
            if vvmod.missing(local_vv, vv) == {}:
                return IngestResult("duplicate")  # nothing it covers is missing here
            # A snapshot adopted before brought registers this log holds no change set for:
            # a new one must cover all of it, or adopting would take those edits away.
            floors = dict(self.db.execute(
                "SELECT device, seq FROM floors WHERE env=?", (env,)).fetchall())
            short = sorted(d for d, n in floors.items() if vv.get(d, 0) < n)
            if short:
                raise ChangeSetError(
                    f"snapshot of {env} covers less than the one this device started from "
                    f"(device {short[0]} #{vv.get(short[0], 0)} < #{floors[short[0]]}); "
                    "adopting it would lose edits, so it is refused")
            old = set(self.state(env).entities)
            st = State(env, self._deps_lookup(env))
            try:
                for uuid, blob in records:
                    st.load_record(uuid, blob)
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                raise ChangeSetError(f"snapshot of {env}: a malformed entity record ({exc})") \
                    from None
            try:
                with self._tx(env):
                    self.clock.observe(clock, now_ms)
                    for device, seq in vv.items():
                        if seq <= local_vv.get(device, 0):
                            continue  # this log holds the chain that far (the real rows)
                        self.db.execute(
                            "INSERT INTO floors VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(env, device) "
                            "DO UPDATE SET seq=excluded.seq, hash=excluded.hash, "
                            "space=excluded.space, hlc=excluded.hlc",
                            (env, device, seq, heads[device], space, first))
                        self.db.execute(
                            "DELETE FROM changesets WHERE env=? AND device=? AND seq<=? AND "
                            "status<>?", (env, device, seq, APPLIED))
                    self.db.executemany(
                        "INSERT OR IGNORE INTO floor_deps VALUES (?, ?, ?, ?)",
                        [(env, d, n, json.dumps(dd, separators=(",", ":"))) for d, n, dd in deps])
                    # This log's own change sets again, over the snapshot: nothing held is lost.
                    for wire, hlc, dev, seq in self.db.execute(
                            "SELECT wire, hlc, device, seq FROM changesets WHERE env=? AND "
                            "status=? ORDER BY hlc, device, seq", (env, APPLIED)).fetchall():
                        cs = ChangeSet.decode(wire)
                        st.apply(_checked_ops(cs), (hlc, dev), (dev, seq), dict(cs.deps))
                    self._states[env] = st
                    self._bump(env)
                    self.db.execute("DELETE FROM entities WHERE env=?", (env,))
                    self.db.executemany(
                        "INSERT INTO entities VALUES (?, ?, ?)",
                        [(env, u, st.entity_record(u)) for u in sorted(st.entities)])
                    res = ApplyResult()
                    res.touched = set(st.entities) | old
                    self._sync_conflicts(env, st, res, now_ms)
            except BaseException:
                self._states.pop(env, None)
                raise
            result.touched = set(res.touched)
            result.conflicts = list(res.conflicts)
            # Change sets that waited for one the snapshot covers can go now.
            for device, seq in sorted(vv.items()):
                row = self.db.execute(
                    "SELECT wire FROM changesets WHERE env=? AND device=? AND seq=? AND status=?",
                    (env, device, seq + 1, PENDING)).fetchone()
                if row is None:
                    continue
                nxt = ChangeSet.decode(row[0])
                if nxt.prev_hash != heads.get(device):
                    self._reject(nxt, "dropped pending change set: it does not link to the "
                                      "snapshot's head of its chain", now_ms)
                    continue
                try:
                    ops = _checked_ops(nxt)
                except ChangeSetError as exc:
                    self._reject(nxt, f"dropped pending change set: {exc}", now_ms)
                    continue
                self._apply_chain(nxt, ops, row[0], now_ms, result)
        return result

    # ------------------------------------------------------------------ file bases
    def set_base(self, env: str, path: str, sha256: str, text: bytes,
                 seen: dict[str, int] | None = None) -> None:
        """The version of `env`'s file that the editor has seen (we wrote it or read it), and
        the version vector of the change sets it reflects (`seen`; None: all applied here).

        Kept durably so that after a crash a file is diffed against what it was, never against
        a newer state the file has not received (which would revert remote edits), and so that
        the first save after a restart is stamped with what its editor had seen, not with the
        whole log: a teammate's edit that arrived meanwhile stays concurrent with it (issue 15).
        """
        text = bytes(text)
        with self._lock:  # the anchor read, the delta made and stored against it: one step
            anchor = self._anchors.get(env)
            delta = None
            if len(text) > MIN_DELTA_TEXT and anchor is not None:
                delta = make_delta(anchor[1], anchor[0], text)
            new_anchor = None
            if delta is not None:
                blob = encode_delta(delta)
            elif len(text) > MIN_DELTA_TEXT:
                # The text becomes the anchor; the base is the empty delta against it.
                new_anchor = (sha256, text)
                blob = encode_delta(Delta(sha256, len(text), 0, b""))
            else:
                blob = text
            with self._tx():
                vv = self.version_vector(env) if seen is None else seen
                if new_anchor is not None:
                    self.db.execute(
                        "INSERT INTO base_anchor VALUES (?, ?, ?) ON CONFLICT(env) DO UPDATE SET "
                        "sha256=excluded.sha256, text=excluded.text",
                        (env, sha256, pack_text(text)))
                self.db.execute(
                    "INSERT INTO bases VALUES (?, ?, ?, ?) ON CONFLICT(env) DO UPDATE SET "
                    "path=excluded.path, sha256=excluded.sha256, text=excluded.text",
                    (env, path, sha256, blob),
                )
                self.db.execute(
                    "INSERT INTO base_seen VALUES (?, ?, ?) ON CONFLICT(env) DO UPDATE SET "
                    "sha256=excluded.sha256, vv=excluded.vv",
                    (env, sha256, json.dumps({d: int(n) for d, n in sorted(vv.items())})),
                )
            if new_anchor is not None:
                self._anchors[env] = new_anchor

    def base_seen(self, env: str, sha256: str) -> dict[str, int] | None:
        """What version `sha256` of `env`'s file reflects, when it is the stored base (None
        otherwise, or for a base recorded before this was kept)."""
        row = self.db.execute("SELECT sha256, vv FROM base_seen WHERE env=?", (env,)).fetchone()
        if row is None or row[0] != sha256:
            return None
        try:
            vv = json.loads(row[1])
        except ValueError:
            return None
        if not isinstance(vv, dict):
            return None
        return {d: n for d, n in vv.items() if isinstance(d, str) and type(n) is int}

    def base_sha(self, env: str) -> tuple[str, str] | None:
        """(path, sha256) of `env`'s stored base, without its text: what most callers need."""
        row = self.db.execute("SELECT path, sha256 FROM bases WHERE env=?", (env,)).fetchone()
        return None if row is None else (row[0], row[1])

    def get_base(self, env: str) -> tuple[str, str, bytes] | None:
        """(path, sha256, text) of `env`'s stored base. A base stored as a delta is rebuilt
        from its anchor and checked against its sha256: a damaged one is None (no base)."""
        row = self.db.execute("SELECT path, sha256, text FROM bases WHERE env=?", (env,)).fetchone()
        if row is None:
            return None
        blob = bytes(row[2])
        if not is_delta(blob):
            return row[0], row[1], unpack_text(blob)
        try:
            delta = decode_delta(blob)
            text = delta.apply(self._anchor_text(env, delta.anchor_sha))
        except (BaseDeltaError, zlib.error):
            return None
        if hashlib.sha256(text).hexdigest() != row[1]:
            return None
        return row[0], row[1], text

    def _anchor_text(self, env: str, sha256: str) -> bytes:
        anchor = self._anchors.get(env)
        if anchor is not None and anchor[0] == sha256:
            return anchor[1]
        row = self.db.execute("SELECT sha256, text FROM base_anchor WHERE env=?", (env,)).fetchone()
        if row is None or row[0] != sha256:
            raise BaseDeltaError("the stored base's anchor is gone")
        text = unpack_text(bytes(row[1]))
        with self._lock:
            self._anchors[env] = (sha256, text)
        return text

    def forget_env(self, env: str) -> None:
        """Drop everything about `env`, its log included. The file itself is not touched.

        Not for unshare/delete: see `retire_env`, which keeps the tombstone."""
        with self._tx(env):
            for table in ("changesets", "entities", "conflicts", "bases", "base_seen", "base_anchor",
                          "floors", "floor_deps"):
                self.db.execute(f"DELETE FROM {table} WHERE env=?", (env,))
        self._states.pop(env, None)
        self._anchors.pop(env, None)
        self._deps_cache = {k: v for k, v in self._deps_cache.items() if k[0] != env}

    def retire_env(self, env: str) -> None:
        """`env` left this device's folder (unshared or deleted): drop what only a synced file
        needs (the editor's base version, open conflicts) and keep the log and registers.

        The log holds the tombstone: it must still be uploaded (maybe by a catch-up hours
        later), offered to peers that lack it, and it is what makes a replay of the
        environment (relay restart, a new member, a late edit by an offline teammate) leave
        it gone instead of bringing it back. Keeping this device's chain also means its
        next change set in `env` never reuses a sequence number the team already holds."""
        with self._tx(env):
            for table in ("conflicts", "bases", "base_seen", "base_anchor"):
                self.db.execute(f"DELETE FROM {table} WHERE env=?", (env,))
        self._states.pop(env, None)  # reloaded from the entities table when next needed
        self._anchors.pop(env, None)


def _snapshot_parts(content: Any) -> tuple[str, str, dict[str, int], dict[str, bytes],
                                           list[tuple[str, bytes]],
                                           list[tuple[str, int, dict[str, int]]], int, int]:
    """A snapshot's content checked field by field (it comes from another member): (env,
    space, vv, head hash per device, records, deps, first stamp, clock), or ChangeSetError."""
    def bad(what: str) -> ChangeSetError:
        return ChangeSetError(f"snapshot content: {what}")

    if type(content) is not dict:
        raise bad("not a map")
    if content.get("f") != SNAPSHOT_FORMAT or content.get("rf") != RECORD_FORMAT:
        raise bad(f"format {content.get('f')!r}/{content.get('rf')!r} is not "
                  f"{SNAPSHOT_FORMAT}/{RECORD_FORMAT} (made by another mocksync version)")
    env, space = content.get("e"), content.get("s")
    if type(env) is not str or type(space) is not str:
        raise bad("env or space missing")
    raw_vv, raw_heads = content.get("vv"), content.get("h")
    if type(raw_vv) is not dict or type(raw_heads) is not dict:
        raise bad("vv or heads missing")
    vv: dict[str, int] = {}
    heads: dict[str, bytes] = {}
    for d, n in raw_vv.items():
        h = raw_heads.get(d)
        if type(d) is not str or type(n) is not int or n < 1 or type(h) is not list \
                or len(h) != 2 or h[0] != n or type(h[1]) is not bytes:
            raise bad(f"the chain head of device {str(d)[:24]} is malformed")
        vv[d], heads[d] = n, h[1]
    records = content.get("r")
    if type(records) is not list or len(records) > MAX_SNAPSHOT_ENTITIES or not all(
            type(r) is list and len(r) == 2 and type(r[0]) is str and type(r[1]) is bytes
            for r in records):
        raise bad("entity records malformed")
    deps = content.get("d")
    if type(deps) is not list or len(deps) > MAX_SNAPSHOT_ORIGINS:
        raise bad("deps malformed")
    out_deps = []
    for item in deps:
        if type(item) is not list or len(item) != 3 or type(item[0]) is not str \
                or type(item[1]) is not int or type(item[2]) is not dict \
                or not all(type(k) is str and type(v) is int for k, v in item[2].items()):
            raise bad("deps malformed")
        out_deps.append((item[0], item[1], dict(item[2])))
    first, clock = content.get("o"), content.get("c")
    if type(first) is not int or type(clock) is not int:
        raise bad("stamps malformed")
    return env, space, vv, heads, [(u, b) for u, b in records], out_deps, first, clock


def _checked_ops(cs: ChangeSet) -> list[Op]:
    try:
        return validate_ops(list(cs.ops))
    except ValidationError as exc:
        raise BadOpsError(f"change set #{cs.seq} from {cs.device} for {cs.env}: {exc}") from None


def _conflict_json(c: Conflict) -> dict[str, Any]:
    d = c.to_json()
    d["winner"]["origin"] = list(c.winner_origin) if c.winner_origin else None
    d["loser"]["origin"] = list(c.loser_origin) if c.loser_origin else None
    d["loser"]["absent"] = c.loser_value is ABSENT
    d["winner"]["absent"] = c.winner_value is ABSENT
    return d
