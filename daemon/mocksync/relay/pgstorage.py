"""The relay's state in PostgreSQL, shared by any number of relay instances (asyncpg).

Why PostgreSQL alone (no extra broker): it is both the shared store and the pub/sub channel
(LISTEN/NOTIFY), the way y-redis / Hocuspocus scale sync servers as stateless instances over a
store plus a channel. A notification carries ids only (a NOTIFY payload is small and
transactional: it is delivered at commit, never for a rolled-back put); the instances that
hear it fetch the rows. Catch-up always reads the tables, so an instance that missed a
notification (restarting) loses nothing: devices resume from their version vectors.

An instance whose LISTEN connection drops (database restart, backend terminated, network)
keeps serving; it reconnects with backoff (`listen_backoff`) and then replays what it missed
from the tables: envelopes with ids above the last one heard per space (a space's puts are
serialized by its advisory lock, so their ids grow in commit order), messages above the last
heard, then presence and membership logs re-read (`Resynced`). More than MAX_CATCHUP_IDS
missed: its devices are asked to reconnect, which catches them up by version vector.

What must be atomic across instances is decided inside one transaction under an advisory
transaction lock: a put and the quota check guarding it (per space), a membership append
(per space), an admission and the device limit (per space and member). The decisions
themselves are the pure callbacks the server passes (`relay.policy`).

Which instances are alive: each upserts its row in `relay_instances` every
`INSTANCE_HEARTBEAT_S` (database clock, so machines' clocks do not matter); one that has not
for `INSTANCE_TTL_S` is dead (killed -9, machine lost): the first instance to notice deletes it
and its sessions and announces `gone`, so devices it held stop counting as online.

Schema: versioned migrations run by the relay itself at start, under a session advisory lock,
so two instances starting at once migrate once. The relay's identity key lives in the database
(`relay_meta`), made by the first instance: every instance of one cluster presents the same key,
which is what devices pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..aiotime import within
from .compaction import HeldSnapshot, Verdict, drop_floors
from .engine import (
    AdmitDecision,
    EventHandler,
    InstanceGone,
    PresenceValue,
    PutCheck,
    RemoteLog,
    RemoteMail,
    RemotePresence,
    RemotePut,
    Resynced,
)
from .envelope import Envelope
from .errors import Compacted, StorageError
from .policy import Refusal
from .storage import EnvUsage, SnapshotJudge, StoredSnapshot, decode_vv, encode_vv

log = logging.getLogger("mocksync.relay.pg")

#: The NOTIFY channel every instance of a cluster listens on.
CHANNEL = "mocksync_relay"
#: Session advisory lock key held while migrating ("mocksync" in ASCII, as an int8).
MIGRATION_LOCK = 0x6D6F636B73796E63
#: Seconds between an instance's heartbeats, and without one before it counts as dead.
INSTANCE_HEARTBEAT_S = 1.0
INSTANCE_TTL_S = 4.0
#: Seconds a cross-instance message (signal, join step) is kept for its recipient.
MAIL_TTL_S = 60.0
#: Connections each instance's pool holds at most (plus one for LISTEN).
POOL_SIZE = 10
#: Envelope ids per NOTIFY (a payload must stay under PostgreSQL's 8000 bytes).
MAX_IDS_PER_NOTIFY = 400
#: Put notifications read from the table with one query (when several are waiting), and
#: the most ciphertext bytes such a read may bring (a put's own size may exceed it: it is
#: then read alone, as one put always was).
MAX_NOTIFIES_PER_READ = 64
MAX_NOTIFY_READ_BYTES = 4 * 1024 * 1024
#: Notifications queued for processing before the instance logs that it falls behind.
MAX_PENDING_NOTIFIES = 100_000
#: Seconds to connect to the database at start.
CONNECT_TIMEOUT_S = 15.0
#: Longest database URL accepted (it is also printed in errors, without its password).
MAX_URL_CHARS = 1000
#: Seconds before the first attempt to reconnect a lost LISTEN connection, and the most
#: between attempts (doubling in between): a database restart is ridden out, not fatal.
LISTEN_RETRY_MIN_S = 0.2
LISTEN_RETRY_MAX_S = 5.0
#: Envelope ids re-read after the LISTEN connection came back (what was put meanwhile). Past
#: it, the server asks its devices to reconnect, which catches them up by version vector.
MAX_CATCHUP_IDS = 20_000
#: Cross-instance messages re-read after the LISTEN connection came back.
MAX_CATCHUP_MAIL = 1_000

#: Migrations, in order: version n is `MIGRATIONS[n - 1]`. Never edit one that shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE log_entries (
      space TEXT NOT NULL, n BIGINT NOT NULL, hash BYTEA NOT NULL, wire BYTEA NOT NULL,
      PRIMARY KEY (space, n), UNIQUE (space, hash));
    CREATE TABLE envs (
      space TEXT NOT NULL, tag TEXT NOT NULL, declared BIGINT NOT NULL, stored BIGINT NOT NULL,
      created_ms BIGINT NOT NULL, PRIMARY KEY (space, tag));
    CREATE TABLE envelopes (
      id BIGSERIAL PRIMARY KEY, space TEXT NOT NULL, tag TEXT NOT NULL, device TEXT NOT NULL,
      seq BIGINT NOT NULL, gen BIGINT NOT NULL, ct BYTEA NOT NULL, uploader TEXT NOT NULL,
      received_ms BIGINT NOT NULL, UNIQUE (space, tag, device, seq));
    """,
    """
    CREATE TABLE relay_instances (id TEXT PRIMARY KEY, seen TIMESTAMPTZ NOT NULL);
    CREATE TABLE relay_sessions (
      instance TEXT NOT NULL, space TEXT NOT NULL, device TEXT NOT NULL, member TEXT NOT NULL,
      tag TEXT, entity TEXT, PRIMARY KEY (instance, space, device));
    CREATE INDEX relay_sessions_member ON relay_sessions (space, member);
    CREATE TABLE relay_mail (
      id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, space TEXT NOT NULL, to_dev TEXT NOT NULL,
      sender TEXT NOT NULL, jid BYTEA NOT NULL, payload BYTEA NOT NULL,
      at TIMESTAMPTZ NOT NULL DEFAULT now());
    """,
    # 3: compaction (relay.compaction): the newest snapshot per env, what was dropped, and
    # each device's high-water mark per env.
    """
    CREATE TABLE snapshots (
      space TEXT NOT NULL, tag TEXT NOT NULL, signer TEXT NOT NULL, vv BYTEA NOT NULL,
      ct BYTEA NOT NULL, sig BYTEA NOT NULL, received_ms BIGINT NOT NULL,
      PRIMARY KEY (space, tag));
    CREATE TABLE floors (
      space TEXT NOT NULL, tag TEXT NOT NULL, device TEXT NOT NULL, seq BIGINT NOT NULL,
      PRIMARY KEY (space, tag, device));
    CREATE TABLE acks (
      space TEXT NOT NULL, tag TEXT NOT NULL, holder TEXT NOT NULL, device TEXT NOT NULL,
      seq BIGINT NOT NULL, PRIMARY KEY (space, tag, holder, device));
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def redact(url: str) -> str:
    """The database URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url


def check_url(url: str) -> str:
    """A usable `postgresql://` URL, or a clear error (nothing is connected yet)."""
    if len(url) > MAX_URL_CHARS:
        raise StorageError(f"the database URL is over {MAX_URL_CHARS} characters")
    if not url.startswith(("postgresql://", "postgres://")):
        raise StorageError(
            f"--db must be a postgresql://USER@HOST:PORT/DB URL, not {redact(url)[:80]!r}")
    return url


def plan_migrations(current: int) -> list[tuple[int, str]]:
    """The (version, sql) steps from schema `current` to `SCHEMA_VERSION` (pure)."""
    if current > SCHEMA_VERSION:
        raise StorageError(
            f"the relay database is at schema {current}, written by a newer mocksync relay "
            f"(this one knows {SCHEMA_VERSION}); update this relay")
    return [(v, MIGRATIONS[v - 1]) for v in range(current + 1, SCHEMA_VERSION + 1)]


def _lock(*parts: str) -> str:
    return "\x1f".join(parts)  # a separator no space id, tag or member id holds


def listen_backoff(attempt: int, low: float = LISTEN_RETRY_MIN_S,
                   high: float = LISTEN_RETRY_MAX_S) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0 first) of the LISTEN connection
    (pure): quick for a blip, doubling to `high` so a database that is down is not hammered."""
    return min(high, low * (2 ** min(attempt, 30)))


def read_more(msgs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether `_consume` may take one more waiting notification into the read it is
    gathering (pure): only behind puts, at most MAX_NOTIFIES_PER_READ of them, and only
    while the ciphertext they name ("z") is under MAX_NOTIFY_READ_BYTES (so one read holds
    at most that plus one put, and a put without "z", from an older instance, ends it)."""
    if len(msgs) >= MAX_NOTIFIES_PER_READ or any(m.get("k") != "put" for m in msgs):
        return False
    sizes = [m.get("z") for m in msgs]
    return all(type(z) is int and z >= 0 for z in sizes) and \
        sum(z for z in sizes if type(z) is int) < MAX_NOTIFY_READ_BYTES


def catchup_messages(rows: Sequence[tuple[int, str, str, str]], skip: Collection[int] = ()
                     ) -> list[dict[str, Any]]:
    """The `put` notifications to replay for envelope rows (id, space, tag, uploader) that were
    committed while this instance was not listening (pure): grouped per (space, tag, uploader)
    in id order, at most MAX_IDS_PER_NOTIFY ids each, without this instance's own puts (`skip`:
    its devices had those live). The instance field is empty: a replay is never "our own"."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, space, tag, uploader in sorted(rows):
        if i not in skip:
            groups.setdefault((space, tag, uploader), []).append(i)
    out = []
    for (space, tag, uploader), ids in groups.items():
        for k in range(0, len(ids), MAX_IDS_PER_NOTIFY):
            out.append({"k": "put", "i": "", "s": space, "e": tag, "u": uploader,
                        "ids": ids[k:k + MAX_IDS_PER_NOTIFY]})
    return out


class PgStorage:
    """`relay.engine.Engine` on PostgreSQL: tables, transactions, LISTEN/NOTIFY."""

    clustered = True

    def __init__(self, url: str, instance: str | None = None, *,
                 listen_retry_s: tuple[float, float] = (LISTEN_RETRY_MIN_S, LISTEN_RETRY_MAX_S)
                 ) -> None:
        self.url = check_url(url)
        self.instance = instance or uuid.uuid4().hex[:16]
        self.pool: Any = None
        self._listen: Any = None
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._handler: EventHandler | None = None
        self._key: bytes | None = None
        self._closed = False
        self.listen_retry_s = listen_retry_s
        #: Whether the LISTEN connection is up (False while it is being reconnected), and how
        #: many times it was reconnected.
        self.listening = False
        self.relistens = 0
        self._relisten_task: asyncio.Task[None] | None = None
        #: What the channel told: the highest envelope id heard per space (puts in one space
        #: are serialized by its advisory lock, so their ids grow in commit order), the highest
        #: id held when listening started (`_floor`), the highest message id heard. After a
        #: lost LISTEN connection, whatever lies above these was missed.
        self._heard_put: dict[str, int] = {}
        self._floor = 0
        self._heard_mail = 0
        #: Ids this instance put while not listening (its own devices had them live).
        self._own_unheard: set[int] = set()

    # ---------------------------------------------------------------- lifecycle
    async def open(self, on_event: EventHandler) -> None:
        import asyncpg

        self._handler = on_event
        try:
            self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=POOL_SIZE,
                                                  timeout=CONNECT_TIMEOUT_S)
            self._listen = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            await self._close_conns()
            raise StorageError(f"cannot reach the relay database {redact(self.url)}: "
                               f"{exc.__class__.__name__}: {exc}") from None
        await self._migrate()
        await self._listen.add_listener(CHANNEL, self._heard)
        self._listen.add_termination_listener(self._listener_lost)
        self.listening = True
        self._floor = await self.pool.fetchval("SELECT COALESCE(MAX(id), 0) FROM envelopes")
        self._heard_mail = await self.pool.fetchval(
            "SELECT COALESCE(MAX(id), 0) FROM relay_mail")
        await self._beat()
        self._tasks = [asyncio.create_task(self._consume(), name="relay pg events"),
                       asyncio.create_task(self._heartbeat(), name="relay pg heartbeat")]
        # Who is online at the other (alive) instances: the server's presence book starts
        # from it; later changes arrive as notifications (listening started first).
        rows = await self.pool.fetch(
            "SELECT s.instance, s.space, s.device, s.tag, s.entity FROM relay_sessions s "
            "JOIN relay_instances i ON i.id = s.instance WHERE s.instance <> $1 "
            "AND i.seen > now() - make_interval(secs => $2)", self.instance, INSTANCE_TTL_S)
        for r in rows:
            await on_event(RemotePresence(r["instance"], r["space"], r["device"],
                                          (r["tag"], r["entity"])))

    async def _migrate(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS relay_meta (k TEXT PRIMARY KEY, v BYTEA NOT NULL)")
                raw = await conn.fetchval("SELECT v FROM relay_meta WHERE k = 'schema'")
                current = int(raw.decode()) if raw is not None else 0
                for version, sql in plan_migrations(current):
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO relay_meta VALUES ('schema', $1) ON CONFLICT (k) "
                            "DO UPDATE SET v = excluded.v", str(version).encode())
                    log.info("relay database migrated to schema %d", version)
                await conn.execute(
                    "INSERT INTO relay_meta VALUES ('relay_key', $1) ON CONFLICT DO NOTHING",
                    Ed25519PrivateKey.generate().private_bytes_raw())
                self._key = bytes(await conn.fetchval(
                    "SELECT v FROM relay_meta WHERE k = 'relay_key'"))
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [*self._tasks, *([self._relisten_task] if self._relisten_task else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.pool is not None:
            with contextlib.suppress(Exception):  # a clean stop frees its sessions at once
                async with self.pool.acquire() as conn, conn.transaction():
                    gone = await conn.fetch("DELETE FROM relay_sessions WHERE instance = $1 "
                                            "RETURNING space, device", self.instance)
                    await conn.execute("DELETE FROM relay_instances WHERE id = $1",
                                       self.instance)
                    await self._notify(conn, {"k": "gone", "i": self.instance, "n": len(gone)})
        await self._close_conns()

    async def _close_conns(self) -> None:
        if self._listen is not None:
            with contextlib.suppress(Exception):
                await self._listen.close()
            self._listen = None
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await within(5, self.pool.close())
            self.pool = None

    async def relay_key(self) -> bytes | None:
        return self._key

    # ---------------------------------------------------------------- notifications
    async def _notify(self, conn: Any, msg: dict[str, Any]) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL,
                           json.dumps(msg, separators=(",", ":")))

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            log.warning("relay: an unreadable database notification was ignored")
            return
        if not isinstance(msg, dict):
            return
        # Noted on arrival (not when handled): a catch-up must start from what was heard.
        s = msg.get("s")
        if msg.get("k") == "put" and msg.get("ids") and isinstance(s, str):
            self._heard_put[s] = max(self._heard_put.get(s, 0), max(msg["ids"]))
        elif msg.get("k") == "mail" and isinstance(msg.get("id"), int):
            self._heard_mail = max(self._heard_mail, msg["id"])
        if self._events.qsize() == MAX_PENDING_NOTIFIES:
            log.warning("relay: %d database notifications waiting; this instance falls behind",
                        MAX_PENDING_NOTIFIES)
        self._events.put_nowait(msg)

    def _listener_lost(self, conn: Any) -> None:
        """The LISTEN connection closed (database restart, backend terminated, network):
        reconnect it in the background and then replay what was committed meanwhile."""
        if self._closed or conn is not self._listen:
            return
        self.listening = False
        log.error("relay: the database LISTEN connection closed; reconnecting (devices on "
                  "this instance hear other instances again once it is back)")
        if self._relisten_task is None or self._relisten_task.done():
            self._relisten_task = asyncio.get_running_loop().create_task(
                self._relisten(), name="relay pg relisten")

    async def _relisten(self) -> None:
        import asyncpg

        attempt = 0
        while not self._closed:
            await asyncio.sleep(listen_backoff(attempt, *self.listen_retry_s))
            attempt += 1
            conn = None
            try:
                conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
                await conn.add_listener(CHANNEL, self._heard)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("relay: reconnecting the database LISTEN connection failed "
                            "(attempt %d): %s", attempt, exc)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                continue
            old, self._listen = self._listen, conn
            conn.add_termination_listener(self._listener_lost)
            if old is not None:
                with contextlib.suppress(Exception):
                    old.terminate()
            self.listening = True
            self.relistens += 1
            log.info("relay: the database LISTEN connection is back (attempt %d); catching up",
                     attempt)
            await self._catch_up()
            return

    async def _catch_up(self) -> None:
        """Replay, through the event queue (after what was heard before), the puts and
        messages committed while not listening, then a `resync` (presence, logs)."""
        heard = dict(self._heard_put)  # listening again: anything newer is heard live
        own, self._own_unheard = self._own_unheard, set()
        complete = True
        try:
            rows = await self.pool.fetch(
                "SELECT e.id, e.space, e.tag, e.uploader FROM envelopes e "
                "LEFT JOIN unnest($2::text[], $3::bigint[]) AS h(s, n) ON h.s = e.space "
                "WHERE e.id > GREATEST($1, COALESCE(h.n, 0)) ORDER BY e.id LIMIT $4",
                self._floor, list(heard), list(heard.values()), MAX_CATCHUP_IDS + 1)
            if len(rows) > MAX_CATCHUP_IDS:
                complete = False
                rows = rows[:MAX_CATCHUP_IDS]
            mail = await self.pool.fetch(
                "SELECT id FROM relay_mail WHERE id > $1 ORDER BY id LIMIT $2",
                self._heard_mail, MAX_CATCHUP_MAIL)
        except Exception as exc:  # the database went again: devices reconnect to catch up
            log.warning("relay: catching up after the LISTEN connection came back failed: %s",
                        exc)
            rows, mail, complete = [], [], False
        for m in catchup_messages([(r["id"], r["space"], r["tag"], r["uploader"])
                                   for r in rows], own):
            self._events.put_nowait(m)
        for r in mail:
            self._events.put_nowait({"k": "mail", "i": "", "id": r["id"]})
        self._events.put_nowait({"k": "resync", "complete": complete})

    async def _consume(self) -> None:
        """Notifications in the order they were committed. Puts waiting one behind the other
        (a burst, an instance that fell behind) are read from the table with one query
        (`read_batch` decides how many), then handed on one by one, in order."""
        while True:
            msgs = [await self._events.get()]
            while not self._events.empty() and read_more(msgs):
                msgs.append(self._events.get_nowait())
            for msg, event in await self._events_of(msgs):
                try:
                    if event is None:
                        event = await self._event(msg)
                    if event is not None and self._handler is not None:
                        await self._handler(event)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("relay: a database notification could not be handled")

    async def _events_of(self, msgs: list[dict[str, Any]]
                         ) -> list[tuple[dict[str, Any], Any]]:
        """(notification, its event if already read, else None) for each of `msgs` heard
        from other instances: the envelopes of all their puts in one round trip."""
        msgs = [m for m in msgs if m.get("i") != self.instance]
        puts = [m for m in msgs if m.get("k") == "put" and isinstance(m.get("ids"), list)]
        if len(puts) < 2:
            return [(m, None) for m in msgs]
        try:
            rows = await self.pool.fetch(
                "SELECT id, device, seq, gen, ct FROM envelopes WHERE id = ANY($1::bigint[])",
                [i for m in puts for i in m["ids"]])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay: reading the envelopes of %d notifications failed", len(puts))
            return [(m, None) for m in msgs]  # each read again on its own
        by_id = {r["id"]: r for r in rows}
        out: list[tuple[dict[str, Any], Any]] = []
        read = {id(m) for m in puts}
        for m in msgs:
            if id(m) not in read:
                out.append((m, None))
                continue
            got = sorted((by_id[i] for i in m["ids"] if i in by_id),
                         key=lambda r: (r["device"], r["seq"]))
            out.append((m, RemotePut(m["s"], m["e"], m["u"], tuple(
                Envelope(r["device"], r["seq"], r["gen"], bytes(r["ct"])) for r in got))))
        return out

    async def _event(self, msg: dict[str, Any]) -> Any:
        k = msg.get("k")
        if k == "put":
            rows = await self.pool.fetch(
                "SELECT device, seq, gen, ct FROM envelopes WHERE id = ANY($1::bigint[]) "
                "ORDER BY device, seq", msg["ids"])
            return RemotePut(msg["s"], msg["e"], msg["u"], tuple(
                Envelope(r["device"], r["seq"], r["gen"], bytes(r["ct"])) for r in rows))
        if k == "log":
            return RemoteLog(msg["s"])
        if k == "pre":
            v = msg.get("v")
            return RemotePresence(msg["i"], msg["s"], msg["d"], None if v is None else
                                  (v[0], v[1]))
        if k == "gone":
            return InstanceGone(msg["i"])
        if k == "resync":
            rows = await self.pool.fetch(
                "SELECT s.instance, s.space, s.device, s.tag, s.entity FROM relay_sessions s "
                "JOIN relay_instances i ON i.id = s.instance WHERE s.instance <> $1 "
                "AND i.seen > now() - make_interval(secs => $2)", self.instance, INSTANCE_TTL_S)
            return Resynced(tuple((r["instance"], r["space"], r["device"],
                                   (r["tag"], r["entity"])) for r in rows),
                            bool(msg.get("complete")))
        if k == "mail":
            r = await self.pool.fetchrow("SELECT * FROM relay_mail WHERE id = $1", msg["id"])
            if r is None:
                return None
            return RemoteMail(r["kind"], r["space"], r["to_dev"], r["sender"], bytes(r["jid"]),
                              bytes(r["payload"]))
        return None

    async def _beat(self) -> list[str]:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO relay_instances VALUES ($1, now()) ON CONFLICT (id) DO UPDATE "
                "SET seen = now()", self.instance)
            dead = [r["id"] for r in await conn.fetch(
                "DELETE FROM relay_instances WHERE seen < now() - make_interval(secs => $1) "
                "RETURNING id", INSTANCE_TTL_S)]
            for d in dead:
                await conn.execute("DELETE FROM relay_sessions WHERE instance = $1", d)
                await self._notify(conn, {"k": "gone", "i": d})
            await conn.execute("DELETE FROM relay_mail WHERE at < now() - make_interval(secs => $1)",
                               MAIL_TTL_S)
        return dead

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(INSTANCE_HEARTBEAT_S)
            try:
                dead = await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay: heartbeat to the database failed: %s", exc)
                continue
            for d in dead:  # our own notification is skipped by _consume: act on it here
                log.info("relay: instance %s stopped heartbeating; its devices are offline", d)
                if self._handler is not None:
                    await self._handler(InstanceGone(d))

    # ---------------------------------------------------------------- membership logs
    async def log_entries(self, space: str) -> list[bytes]:
        rows = await self.pool.fetch(
            "SELECT wire FROM log_entries WHERE space = $1 ORDER BY n", space)
        return [bytes(r["wire"]) for r in rows]

    async def append_log(self, space: str, wires: Sequence[bytes], hashes: Sequence[bytes],
                         *, base: int | None = None) -> list[bytes] | None:
        async with self.pool.acquire() as conn, conn.transaction():
            # One append per space at a time, cluster-wide; with `base`, only onto the log
            # the caller verified against (else it is handed the log to verify again).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               _lock("log", space))
            if base is not None:
                count = await conn.fetchval(
                    "SELECT COUNT(*) FROM log_entries WHERE space = $1", space)
                if count != base:
                    rows = await conn.fetch(
                        "SELECT wire FROM log_entries WHERE space = $1 ORDER BY n", space)
                    return [bytes(r["wire"]) for r in rows]
            n = await conn.fetchval(
                "SELECT COALESCE(MAX(n), 0) FROM log_entries WHERE space = $1", space)
            added = 0
            for wire, h in zip(wires, hashes, strict=True):
                n += 1
                added += int((await conn.execute(
                    "INSERT INTO log_entries VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    space, n, h, wire)).split()[-1])
            if added:
                await self._notify(conn, {"k": "log", "i": self.instance, "s": space})
        return None

    # ---------------------------------------------------------------- envelopes
    async def env_count(self, space: str) -> int:
        return await self.pool.fetchval(
            "SELECT COUNT(*) FROM envs WHERE space = $1 AND declared > 0", space)

    async def env_usage(self, space: str, tag: str) -> EnvUsage | None:
        r = await self.pool.fetchrow(
            "SELECT declared, stored FROM envs WHERE space = $1 AND tag = $2", space, tag)
        return EnvUsage(r["declared"], r["stored"]) if r else None

    async def put(self, space: str, tag: str, envelopes: Sequence[Envelope], *,
                  declared_bytes: int, uploader: str, now_ms: int,
                  check: PutCheck) -> list[Envelope] | Refusal:
        async with self.pool.acquire() as conn, conn.transaction():
            # One put per space at a time, cluster-wide: the quota check sees every put
            # committed before it, so two instances cannot exceed a quota together.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               _lock("put", space))
            r = await conn.fetchrow(
                "SELECT declared, stored FROM envs WHERE space = $1 AND tag = $2", space, tag)
            count = await conn.fetchval(
                "SELECT COUNT(*) FROM envs WHERE space = $1 AND declared > 0", space)
            refusal = check(EnvUsage(r["declared"], r["stored"]) if r else None, count)
            if refusal is not None:
                return refusal
            rows = await conn.fetch(
                "INSERT INTO envelopes (space, tag, device, seq, gen, ct, uploader, received_ms) "
                "SELECT $1, $2, d, s, g, c, $3, $4 FROM unnest($5::text[], $6::bigint[], "
                "$7::bigint[], $8::bytea[]) AS x(d, s, g, c) "
                # a slot covered by the snapshot and dropped is held, in effect
                "WHERE NOT EXISTS (SELECT 1 FROM floors f WHERE f.space = $1 AND f.tag = $2 "
                "AND f.device = x.d AND f.seq >= x.s) "
                "ON CONFLICT DO NOTHING RETURNING id, device, seq",
                space, tag, uploader, now_ms, [e.device for e in envelopes],
                [e.seq for e in envelopes], [e.gen for e in envelopes],
                [e.ct for e in envelopes])
            fresh = {(x["device"], x["seq"]) for x in rows}
            stored = [e for e in envelopes if (e.device, e.seq) in fresh]
            added = sum(len(e.ct) for e in stored)
            await conn.execute(
                "INSERT INTO envs VALUES ($1, $2, $3, $4, $5) ON CONFLICT (space, tag) DO UPDATE "
                "SET declared = excluded.declared, stored = envs.stored + $4",
                space, tag, declared_bytes, added, now_ms)
            size = {(e.device, e.seq): len(e.ct) for e in stored}
            made = sorted((x["id"], size[(x["device"], x["seq"])]) for x in rows)
            ids = [i for i, _z in made]
            if not self.listening and len(self._own_unheard) < MAX_CATCHUP_IDS:
                self._own_unheard.update(ids)
            for i in range(0, len(ids), MAX_IDS_PER_NOTIFY):
                # "z": the ciphertext bytes the ids name, so a listener can read several
                # puts at once within MAX_NOTIFY_READ_BYTES (`_consume`).
                await self._notify(conn, {"k": "put", "i": self.instance, "s": space, "e": tag,
                                          "u": uploader, "ids": ids[i:i + MAX_IDS_PER_NOTIFY],
                                          "z": sum(z for _i, z in made[i:i + MAX_IDS_PER_NOTIFY])})
        return stored

    async def purge_after(self, space: str, device: str, cuts: Mapping[str, int]) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               _lock("put", space))
            rows = await conn.fetch(
                "SELECT id, tag, seq, length(ct) AS z FROM envelopes WHERE space = $1 "
                "AND device = $2", space, device)
            gone = [r for r in rows if r["seq"] > cuts.get(r["tag"], 0)]
            await conn.execute("DELETE FROM envelopes WHERE id = ANY($1::bigint[])",
                               [r["id"] for r in gone])
            freed: dict[str, int] = {}
            for r in gone:
                freed[r["tag"]] = freed.get(r["tag"], 0) + r["z"]
            for t, z in freed.items():
                await conn.execute("UPDATE envs SET stored = GREATEST(0, stored - $1) "
                                   "WHERE space = $2 AND tag = $3", z, space, t)
        return len(gone)

    async def index(self, space: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {
            r["tag"]: {} for r in await self.pool.fetch(
                "SELECT tag FROM envs WHERE space = $1", space)}
        for r in await self._prefixes(space, None):
            if r["n"]:
                held = out.setdefault(r["tag"], {})
                held[r["device"]] = max(held.get(r["device"], 0), r["n"])
        return out

    async def vv(self, space: str, tag: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in await self._prefixes(space, tag):
            if r["n"]:
                out[r["device"]] = max(out.get(r["device"], 0), r["n"])
        return out

    async def _prefixes(self, space: str, tag: str | None) -> list[Any]:
        # The contiguous prefix per (tag, device): the last seq before the first gap above
        # what compaction dropped (the floor), and the floor alone where nothing is above it.
        return await self.pool.fetch(
            "WITH r AS (SELECT e.tag, e.device, e.seq, COALESCE(f.seq, 0) AS f, row_number() "
            "OVER (PARTITION BY e.tag, e.device ORDER BY e.seq) AS rn FROM envelopes e "
            "LEFT JOIN floors f ON f.space = e.space AND f.tag = e.tag AND f.device = e.device "
            "WHERE e.space = $1 AND ($2::text IS NULL OR e.tag = $2)) "
            "SELECT tag, device, MAX(f) + COALESCE(MIN(rn) FILTER (WHERE seq <> rn + f) - 1, "
            "MAX(rn)) AS n FROM r GROUP BY tag, device "
            "UNION ALL SELECT tag, device, seq AS n FROM floors WHERE space = $1 "
            "AND ($2::text IS NULL OR tag = $2)", space, tag)

    async def fetch(self, space: str, tag: str, have: Mapping[str, int], *, max_items: int,
                    max_bytes: int) -> tuple[list[Envelope], bool]:
        # One round trip per page: the floor check, the page cut by count and bytes (a
        # running sum over the first max_items + 1 slots) and the ciphertexts of the chosen
        # slots only (an unchosen row carries none).
        devices = list(have)
        heads = [int(have[d]) for d in devices]
        rows = await self.pool.fetch(_FETCH_SQL, space, tag, devices, heads, max_items + 1,
                                     max_items, max_bytes)
        if any(r["k"] == 0 for r in rows):
            raise Compacted(await self.floors(space, tag))
        out: list[Envelope] = []
        for r in sorted(rows, key=lambda r: (r["device"], r["seq"])):
            if r["ct"] is None:
                return out, True
            out.append(Envelope(r["device"], r["seq"], r["gen"], bytes(r["ct"])))
        return out, False

    # ---------------------------------------------------------------- compaction
    async def floors(self, space: str, tag: str) -> dict[str, int]:
        return {r["device"]: r["seq"] for r in await self.pool.fetch(
            "SELECT device, seq FROM floors WHERE space = $1 AND tag = $2", space, tag)}

    async def snapshot(self, space: str, tag: str) -> StoredSnapshot | None:
        r = await self.pool.fetchrow(
            "SELECT signer, vv, ct, sig, received_ms FROM snapshots WHERE space = $1 AND "
            "tag = $2", space, tag)
        if r is None:
            return None
        return StoredSnapshot(r["signer"], decode_vv(r["vv"]), bytes(r["ct"]), bytes(r["sig"]),
                              r["received_ms"])

    async def put_snapshot(self, space: str, tag: str, snap: StoredSnapshot,
                           judge: SnapshotJudge) -> Verdict:
        async with self.pool.acquire() as conn, conn.transaction():
            # Snapshots and drops of a space take turns with its puts, cluster-wide.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               _lock("put", space))
            r = await conn.fetchrow(
                "SELECT signer, vv, length(ct) AS z, received_ms FROM snapshots WHERE "
                "space = $1 AND tag = $2", space, tag)
            held = None if r is None else HeldSnapshot(r["signer"], decode_vv(r["vv"]), r["z"],
                                                       r["received_ms"])
            floors = {x["device"]: x["seq"] for x in await conn.fetch(
                "SELECT device, seq FROM floors WHERE space = $1 AND tag = $2", space, tag)}
            verdict = judge(held, floors)
            if verdict.ok:
                await conn.execute(
                    "INSERT INTO snapshots VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT "
                    "(space, tag) DO UPDATE SET signer = excluded.signer, vv = excluded.vv, "
                    "ct = excluded.ct, sig = excluded.sig, received_ms = excluded.received_ms",
                    space, tag, snap.signer, encode_vv(snap.vv), snap.ct, snap.sig,
                    snap.received_ms)
        return verdict

    async def snapshot_slots(self, after: tuple[str, str] | None, limit: int
                             ) -> list[tuple[str, str]]:
        a = after or ("", "")
        return [(r["space"], r["tag"]) for r in await self.pool.fetch(
            "SELECT space, tag FROM snapshots WHERE (space, tag) > ($1, $2) ORDER BY space, "
            "tag LIMIT $3", a[0], a[1], limit)]

    async def note_acks(self, space: str, tag: str, holder: str, vv: Mapping[str, int]) -> None:
        items = [(d, int(n)) for d, n in vv.items() if n > 0]
        if not items:
            return
        await self.pool.execute(
            "INSERT INTO acks SELECT $1, $2, $3, d, n FROM unnest($4::text[], $5::bigint[]) "
            "AS x(d, n) ON CONFLICT (space, tag, holder, device) DO UPDATE SET "
            "seq = GREATEST(acks.seq, excluded.seq)", space, tag, holder,
            [d for d, _n in items], [n for _d, n in items])

    async def compact(self, space: str, tag: str, members: Collection[str],
                      cutoff_ms: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               _lock("put", space))
            snap = await conn.fetchval(
                "SELECT vv FROM snapshots WHERE space = $1 AND tag = $2", space, tag)
            if snap is None:
                return 0  # nothing is ever dropped that no snapshot covers
            acks: dict[str, dict[str, int]] = {}
            for r in await conn.fetch(
                    "SELECT holder, device, seq FROM acks WHERE space = $1 AND tag = $2",
                    space, tag):
                acks.setdefault(r["holder"], {})[r["device"]] = r["seq"]
            young = {r["device"]: r["n"] for r in await conn.fetch(
                "SELECT device, MIN(seq) AS n FROM envelopes WHERE space = $1 AND tag = $2 "
                "AND received_ms > $3 GROUP BY device", space, tag, cutoff_ms)}
            floors = {r["device"]: r["seq"] for r in await conn.fetch(
                "SELECT device, seq FROM floors WHERE space = $1 AND tag = $2", space, tag)}
            stored = {r["device"]: r["n"] for r in await conn.fetch(
                "SELECT device, MAX(n) AS n FROM (SELECT device, MAX(seq) AS n FROM envelopes "
                "WHERE space = $1 AND tag = $2 GROUP BY device UNION ALL SELECT device, seq "
                "FROM floors WHERE space = $1 AND tag = $2) x GROUP BY device", space, tag)}
            new = drop_floors(decode_vv(snap), acks, members, young, floors, stored)
            if not new:
                return 0
            devices = sorted(new)
            seqs = [new[d] for d in devices]
            r = await conn.fetchrow(
                "WITH gone AS (DELETE FROM envelopes e USING unnest($3::text[], $4::bigint[]) "
                "AS x(d, n) WHERE e.space = $1 AND e.tag = $2 AND e.device = x.d "
                "AND e.seq <= x.n RETURNING length(e.ct) AS z) "
                "SELECT COUNT(*) AS n, COALESCE(SUM(z), 0) AS z FROM gone",
                space, tag, devices, seqs)
            await conn.execute(
                "INSERT INTO floors SELECT $1, $2, d, n FROM unnest($3::text[], $4::bigint[]) "
                "AS x(d, n) ON CONFLICT (space, tag, device) DO UPDATE SET seq = excluded.seq",
                space, tag, devices, seqs)
            if r["z"]:
                await conn.execute("UPDATE envs SET stored = GREATEST(0, stored - $1) WHERE "
                                   "space = $2 AND tag = $3", r["z"], space, tag)
        return int(r["n"])

    # ---------------------------------------------------------------- sessions, presence
    async def admit(self, space: str, member: str, device: str, local_online: Collection[str],
                    decide: AdmitDecision) -> Refusal | None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               _lock("member", space, member))
            rows = await conn.fetch(
                "SELECT s.device FROM relay_sessions s JOIN relay_instances i ON "
                "i.id = s.instance WHERE s.space = $1 AND s.member = $2 "
                "AND i.seen > now() - make_interval(secs => $3)", space, member, INSTANCE_TTL_S)
            refusal = decide({r["device"] for r in rows} | set(local_online))
            if refusal is not None:
                return refusal
            await conn.execute(
                "INSERT INTO relay_sessions VALUES ($1, $2, $3, $4, NULL, NULL) ON CONFLICT "
                "(instance, space, device) DO UPDATE SET member = excluded.member, tag = NULL, "
                "entity = NULL", self.instance, space, device, member)
            await self._notify(conn, {"k": "pre", "i": self.instance, "s": space, "d": device,
                                      "v": [None, None]})
        return None

    async def left(self, space: str, device: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM relay_sessions WHERE instance = $1 AND space = $2 "
                               "AND device = $3", self.instance, space, device)
            await self._notify(conn, {"k": "pre", "i": self.instance, "s": space, "d": device,
                                      "v": None})

    async def presence(self, space: str, device: str, value: PresenceValue) -> None:
        if value is None:
            return await self.left(space, device)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE relay_sessions SET tag = $4, entity = $5 WHERE "
                               "instance = $1 AND space = $2 AND device = $3", self.instance,
                               space, device, value[0], value[1])
            await self._notify(conn, {"k": "pre", "i": self.instance, "s": space, "d": device,
                                      "v": list(value)})

    async def mail(self, msg: RemoteMail) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            mid = await conn.fetchval(
                "INSERT INTO relay_mail (kind, space, to_dev, sender, jid, payload) VALUES "
                "($1, $2, $3, $4, $5, $6) RETURNING id", msg.kind, msg.space, msg.to,
                msg.sender, msg.jid, msg.payload)
            await self._notify(conn, {"k": "mail", "i": self.instance, "id": mid})


#: The page query of `PgStorage.fetch` (see there). k 0: `have` is below a floor.
_FETCH_SQL = """
WITH h AS (SELECT * FROM unnest($3::text[], $4::bigint[]) AS h(d, s)),
gap AS (SELECT 1 FROM floors f LEFT JOIN h ON h.d = f.device
        WHERE f.space = $1 AND f.tag = $2 AND f.seq > COALESCE(h.s, 0) LIMIT 1),
slots AS (SELECT e.id, e.device, e.seq, e.gen, length(e.ct) AS z FROM envelopes e
          LEFT JOIN h ON h.d = e.device
          WHERE e.space = $1 AND e.tag = $2 AND e.seq > COALESCE(h.s, 0)
          ORDER BY e.device, e.seq LIMIT $5),
page AS (SELECT *, row_number() OVER w AS rn, sum(z) OVER w AS cum FROM slots
         WINDOW w AS (ORDER BY device, seq ROWS UNBOUNDED PRECEDING))
SELECT 0 AS k, NULL::text AS device, NULL::bigint AS seq, NULL::bigint AS gen,
       NULL::bytea AS ct FROM gap
UNION ALL
SELECT 1, p.device, p.seq, p.gen, CASE WHEN p.rn <= $6 AND (p.rn = 1 OR p.cum <= $7)
       THEN (SELECT e.ct FROM envelopes e WHERE e.id = p.id) END FROM page p
"""


__all__ = [
    "CHANNEL",
    "INSTANCE_HEARTBEAT_S",
    "INSTANCE_TTL_S",
    "LISTEN_RETRY_MAX_S",
    "LISTEN_RETRY_MIN_S",
    "MAX_CATCHUP_IDS",
    "MIGRATIONS",
    "PgStorage",
    "SCHEMA_VERSION",
    "catchup_messages",
    "check_url",
    "listen_backoff",
    "plan_migrations",
    "read_more",
    "redact",
]
