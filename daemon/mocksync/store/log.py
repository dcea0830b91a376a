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
from ..model import ApplyResult, Conflict, State, to_wire, validate_ops
from ..model.state import ABSENT, close_deps
from ..paths import PRIVATE_FILE_MODE

SCHEMA_VERSION = 1
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
CREATE TABLE IF NOT EXISTS rejected (
  id INTEGER PRIMARY KEY AUTOINCREMENT, env TEXT, device TEXT, seq INTEGER, reason TEXT NOT NULL,
  at_ms INTEGER NOT NULL
);
"""

# Change-set status values.
APPLIED = "applied"
PENDING = "pending"  # waiting for its predecessor
QUARANTINED = "quarantined"  # stamped too far in the future; not applied


class EquivocationError(ChangeSetError):
    """Same (device, seq) with different content: a forked chain. Rejected and logged."""


class BadOpsError(ChangeSetError):
    """A well-signed change set whose ops do not make sense: refused whole."""


class UnknownDeviceError(ChangeSetError):
    """No public key for the author: not a member of the space (or not yet known)."""


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
        self._lock = threading.RLock()
        self._states: dict[str, State] = {}
        self._deps_cache: dict[tuple[str, str, int], dict[str, int]] = {}
        #: Per environment, a number that changes whenever its in-memory State may have
        #: (applied to, reloaded, rebuilt): what views derived from a State are cached by.
        self._generation: dict[str, int] = {}
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
                return None
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

    def has_env(self, env: str) -> bool:
        return self.db.execute("SELECT 1 FROM entities WHERE env=? LIMIT 1", (env,)).fetchone() is not None

    def envs(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT env FROM changesets ORDER BY env")]

    def envs_oldest_first(self) -> list[str]:
        """Every environment, the one shared first (smallest stamp of its first change set)
        first, ties by uuid. Why an order at all: where only some environments fit (a relay
        plan's count), the ones kept must be the ones shared first, the same on every run."""
        return [r[0] for r in self.db.execute(
            "SELECT env, MIN(hlc) AS first FROM changesets GROUP BY env ORDER BY first, env")]

    def version_vector(self, env: str) -> dict[str, int]:
        """Highest applied seq per device (applied chains are contiguous by construction)."""
        return {
            d: s
            for d, s in self.db.execute(
                "SELECT device, MAX(seq) FROM changesets WHERE env=? AND status=? GROUP BY device",
                (env, APPLIED),
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
            "SELECT seq, hash, space FROM changesets WHERE env=? AND device=? AND status=? "
            "ORDER BY seq DESC LIMIT 1", (env, device, APPLIED)).fetchone()
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
        row = self.db.execute("SELECT space FROM changesets WHERE env=? LIMIT 1", (env,)).fetchone()
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
        self.db.executemany(
            "INSERT INTO entities VALUES (?, ?, ?) ON CONFLICT(env, uuid) DO UPDATE SET record=excluded.record",
            [(env, u, st.entity_record(u)) for u in res.touched],
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
        ops: Iterable[tuple],
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
        ready: list[tuple[ChangeSet, list[tuple], bytes]] = []
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

    def _commit_batch(self, ready: list[tuple[ChangeSet, list[tuple], bytes]], now_ms: int,
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

    def _apply_chain(self, cs: ChangeSet, ops: list[tuple], wire: bytes, now_ms: int,
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
        blob = zlib.compress(text, 1) if len(text) > 4096 else text
        with self._tx():
            vv = self.version_vector(env) if seen is None else seen
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

    def get_base(self, env: str) -> tuple[str, str, bytes] | None:
        row = self.db.execute("SELECT path, sha256, text FROM bases WHERE env=?", (env,)).fetchone()
        if row is None:
            return None
        blob = bytes(row[2])
        text = zlib.decompress(blob) if blob[:1] == b"\x78" else blob
        return row[0], row[1], text

    def forget_env(self, env: str) -> None:
        """Drop everything about `env`, its log included. The file itself is not touched.

        Not for unshare/delete: see `retire_env`, which keeps the tombstone."""
        with self._tx(env):
            for table in ("changesets", "entities", "conflicts", "bases", "base_seen"):
                self.db.execute(f"DELETE FROM {table} WHERE env=?", (env,))
        self._states.pop(env, None)
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
            for table in ("conflicts", "bases", "base_seen"):
                self.db.execute(f"DELETE FROM {table} WHERE env=?", (env,))
        self._states.pop(env, None)  # reloaded from the entities table when next needed


def _checked_ops(cs: ChangeSet) -> list[tuple]:
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
