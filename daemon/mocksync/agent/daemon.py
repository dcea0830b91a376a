"""The daemon on one machine: folder <-> log, safely, beside an editor that watches the file.

Data flow (docs/design/architecture.md): a save arrives from the watcher -> parse and validate (an invalid
file is never propagated) -> diff against the version that editor last had -> one signed change
set committed to the log -> handed to the transport. A change set from a peer -> verified and
applied by the store -> the file rewritten atomically, but only once the editor can see it
(docs/design/merge.md: Mockoon is blind for 3 s after its own save; we hold writes 3.5 s).

The Agent decides nothing that a pure module can decide: merge and diff are `mocksync.model`,
signatures and chains `mocksync.changes` and `mocksync.store`, quotas `mocksync.space.quotas`,
editor timing `editorsync`. It is a small orchestrator (issue 14, docs/design/agent.md): it
owns the state every part shares (the synced environments, the local files, the store, the
registry, the holds, the editor history) and wires the parts, each in its own module:

- `folderedits.FolderEdits`: folder -> log (reading files, editor saves, commits of edits);
- `envwrites.EnvWrites`: log -> folder (when and how a file is written);
- `ingest.RemoteIngest`: change sets from peers, adopting and retiring environments;
- `commands.Commands`: share, new, unshare, delete, restore, conflicts, resolve, log;
- `offlineholds.OfflineHolds`: the `prompt` offline policy and relay refusals;
- `statusreport.StatusReport`: the raw `status` document;
- `quotacheck.QuotaCheck`, `faultretry.FaultRetries`, `presencepush.PresencePush`,
  `loopbridge.LoopBridge` (loop vs. store worker), and `linked.LinkedFiles` (issue #7).

Its public methods are the daemon's API (control socket, transports, tests, the web page):
most delegate to the part that does the work.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..agentevents import AgentEvent, LocalChange
from ..model import Op
from ..model.envsize import JS_SIZE_BOUND, compact_size, quick_compact_size
from ..paths import Home
from ..ports import Event, SpaceDirectory, Transport
from ..store import Store
from .commands import Commands
from .editorsync import BlindWindow, SeenVersions, VersionHistory
from .envfiles import EnvRuntime, LocalFile
from .envwrites import EnvWrites
from .errors import QuotaError
from .faultretry import FaultRetries
from .faults import FaultBook
from .folderedits import MAX_FILE_BYTES, FolderEdits
from .ingest import RemoteIngest
from .linked import LinkedFiles
from .loopbridge import LoopBridge
from .offline import HoldBook
from .offlineholds import OfflineHolds
from .presence import Looking, PresenceBook
from .presencepush import PresencePush
from .quotacheck import QuotaCheck
from .registry import Registry
from .settings import Settings
from .statusreport import StatusReport
from .storeworker import StoreWorker
from .watcher import FileEvent, FolderWatcher

log = logging.getLogger("mocksync.agent")

T = TypeVar("T")


class Agent:
    """One device's daemon: the shared state, the parts that act on it, and its API."""

    def __init__(
        self,
        home: Home,
        settings: Settings,
        identity: Any,
        spaces: SpaceDirectory,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home.ensure()
        self.settings = settings
        self.identity = identity
        self.device = identity.device_id
        self.spaces = spaces
        self.transport = transport
        self.clock = clock
        self.folder = Path(settings.folder).expanduser().resolve()
        self.store = Store(home.log_db)
        self.registry = Registry(home.docs)
        #: Environments the `prompt` offline policy holds for keep-local/discard-local.
        self.holds = HoldBook(self.registry.db)
        self.blind = BlindWindow(settings.blind_window_s)
        self.history = VersionHistory()
        #: Per environment: the version vector each recent version of its file reflects (by
        #: content hash), so a save is stamped with what its editor had seen (issue 11 item 8).
        self.seen_versions = SeenVersions()
        #: What this device's user is editing, as `who` shows it everywhere (issue 11 item 6).
        self.presence = PresenceBook()
        self.envs: dict[str, EnvRuntime] = {}
        self.local: dict[Path, LocalFile] = {}
        self.watcher: FolderWatcher | None = None
        self.listeners: list[Callable[[Event], None]] = []
        self.started_at = clock()
        self.rng = random.Random()
        #: Writes, commits and stores that fail for reasons of the machine (disk full, no
        #: permission, I/O error, read-only): shown as `error` and retried with backoff by
        #: themselves (issue 13), each with its pending retry (`retries`).
        self.faults = FaultBook()
        # The parts (docs/design/agent.md). Each reaches the shared state above through
        # this object; linked files get only the narrow `linked.LinkedHost` port.
        self.bridge = LoopBridge()
        #: Files the environments link to (FILE bodies, TLS files): issue #7.
        self.linked = LinkedFiles(self, self.registry.db)
        self.retries = FaultRetries(self)
        self.edits = FolderEdits(self)
        self.quotas = QuotaCheck(self)
        self.writes = EnvWrites(self)
        self.ingest = RemoteIngest(self)
        self.commands = Commands(self)
        self.offline_holds = OfflineHolds(self)
        self.report = StatusReport(self)
        self.presence_push = PresencePush(self)

    @property
    def worker(self) -> StoreWorker | None:
        """The store worker thread (issue 12); None until `start`."""
        return self.bridge.worker

    @property
    def relay_refusals(self) -> dict[str, str]:
        """Environments whose uploads the relay refuses, with its sentence."""
        return self.offline_holds.relay_refusals

    @property
    def trash(self) -> Path:
        """Where files this device moves away are kept, recoverable."""
        return self.home.trash

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.bridge.attach()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.edits.remove_stale_temps()
        self.watcher = FolderWatcher(
            self.folder, step_ms=self.settings.watch_step_ms,
            debounce_ms=self.settings.watch_debounce_ms,
        )
        await self.watcher.start()
        for rec in self.registry.all():
            self.envs[rec.uuid] = EnvRuntime(rec.uuid, rec.space, Path(rec.file), name=rec.name)
        self.enforce_membership()  # removals learned while this daemon was not running
        self.scan()
        self.bridge.spawn(asyncio.create_task(self.edits.watch_loop(), name="watch"))
        if self.transport is not None:
            await self.transport.start(self)

    async def stop(self) -> None:
        if self.transport is not None:
            await self.transport.stop()
        if self.worker is not None:
            await self.worker.close()  # jobs taken are finished; what follows runs here
        self.writes.flush_on_stop()  # flush held writes: nothing acknowledged is lost
        self.retries.flush_on_stop()
        await self.bridge.cancel_all()
        if self.watcher is not None:
            await self.watcher.stop()
        self.store.close()

    def publish(self, event: AgentEvent) -> None:
        """Tell the listeners (control streams, transports, the web page) what happened:
        each gets the event's JSON (`AgentEvent.to_json`) with "time" added."""
        data = event.to_json() if isinstance(event, AgentEvent) else dict(event)
        data.setdefault("time", self.clock())
        self._deliver(data)

    def _deliver(self, event: Event) -> None:
        if self.bridge.to_loop(self._deliver, event):
            return  # listeners (control streams, transports) live on the loop
        for fn in list(self.listeners):
            try:
                fn(event)
            except Exception:  # a broken listener must not break the daemon
                log.exception("event listener failed")

    def spawn(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task of a part; `stop` cancels it."""
        self.bridge.spawn(task)

    def to_loop(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Off the loop: queue `fn(*args)` to run on it and True; on it: False
        (`LoopBridge.to_loop`; linked files start their poll there)."""
        return self.bridge.to_loop(fn, *args)

    def spawn_on_worker(self, fn: Callable[..., Any], *args: Any) -> bool:
        """On the loop: queue `fn(*args)` as a store-worker job and True; False when there
        is no worker or this is it (`LoopBridge.spawn_on_worker`: the caller runs it)."""
        return self.bridge.spawn_on_worker(fn, *args)

    async def store_call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the store worker, after the jobs queued there; run here when there
        is no worker (before `start`, after `stop`). For transports (relay snapshots)."""
        worker = self.worker
        if worker is not None and not worker.closed:
            return await worker.run(fn, *args)
        return fn(*args)

    def store_turn(self) -> Any:
        """Exclusive use of the store for loop code (`LoopBridge.store_turn`)."""
        return self.bridge.store_turn()

    # ------------------------------------------------------------------ shared state
    def env_at(self, path: Path) -> EnvRuntime | None:
        """The synced environment whose file is `path`, if any."""
        for rt in self.envs.values():
            if rt.path == path:
                return rt
        return None

    def env(self, uuid: str) -> EnvRuntime | None:
        """The synced environment `uuid`, if it is synced here."""
        return self.envs.get(uuid)

    def is_held(self, uuid: str) -> bool:
        """Is `uuid` held by the `prompt` offline policy (file unwritten, edits unsent)?"""
        return uuid in self.holds

    def forget_local(self, path: Path) -> None:
        """`path` is no local environment (a linked file named *.json): stop listing it."""
        self.local.pop(path, None)

    def size_problem(self, space: str, doc: dict[str, Any]) -> str | None:
        """The plan's refusal for `doc` (and the files it links) in `space`, or None."""
        return self.quotas.size_problem(space, doc)

    def check_size(self, space: str, env_bytes: int) -> str | None:
        """The plan's refusal for an environment of `env_bytes` in `space`, or None."""
        return self.spaces.check_size(space, env_bytes)

    def commit(self, rt: EnvRuntime, ops: Sequence[Op],
               seen: dict[str, int] | None = None) -> Any:
        """Commit our own edit and send it. `seen`: the version vector of what the edit was
        made against, when older than the log (an editor's save); None: all of it."""
        t0 = time.perf_counter()
        cs, res = self.store.commit_local(
            self.identity.signing_key, space=rt.space, env=rt.uuid, device=self.device,
            ops=ops, now_ms=int(self.clock() * 1000), seen=seen,
        )
        wire = cs.encode()
        # (held: sent on resolve; from the store worker: the transport is the loop's)
        if self.transport is not None and rt.uuid not in self.holds \
                and not self.bridge.to_loop(self.transport.broadcast, rt.space, rt.uuid, wire):
            self.transport.broadcast(rt.space, rt.uuid, wire)
        self.publish(LocalChange(env=rt.uuid, device=self.device, seq=cs.seq, ops=len(ops),
                                 bytes=len(wire),
                                 commit_ms=round((time.perf_counter() - t0) * 1000, 3),
                                 conflicts=len(res.conflicts)))
        return cs

    _commit = commit  # (tests sign hostile edits through it: test_attack_linked_files)

    def forget(self, rt: EnvRuntime) -> None:
        """`rt` is no longer synced here (unshared, deleted, by us or a teammate): drop it
        from every part; its log stays (the tombstone must travel and stay)."""
        if rt.write_handle is not None:
            rt.write_handle.cancel()
        self.envs.pop(rt.uuid, None)
        self.writes.forget(rt.uuid)
        self.relay_refusals.pop(rt.uuid, None)
        self.retries.forget(rt.uuid)
        self.holds.remove(rt.uuid)
        self.registry.remove(rt.uuid)
        self.store.retire_env(rt.uuid)  # keeps the log: the tombstone must travel and stay
        self.history.forget(rt.path)
        self.edits.forget_path(rt.path)
        self.seen_versions.forget(rt.uuid)
        self.presence.forget(rt.uuid)

    # ------------------------------------------------------------------ folder -> log
    def scan(self) -> None:
        """Look at every environment file (start-up, `reconnect`): catch edits made while down."""
        self.edits.scan()

    def handle_event(self, ev: FileEvent) -> None:
        self.edits.handle_event(ev)

    def on_file(self, path: Path, *, initial: bool = False) -> None:
        """A file in the folder appeared or changed."""
        self.edits.on_file(path, initial=initial)

    # ------------------------------------------------------------------ log -> folder
    def schedule_write(self, rt: EnvRuntime) -> None:
        self.writes.schedule(rt)

    async def receive_async(self, space: str, wire: bytes) -> Any:
        return await self.ingest.receive_async(space, wire)

    async def receive_batch_async(self, space: str, wires: list[bytes], *, settle: bool = True,
                                  ) -> tuple[Any, list[tuple[Any, Exception]]]:
        return await self.ingest.receive_batch_async(space, wires, settle=settle)

    async def settle_remote_async(self, space: str, envs: set[str]) -> None:
        await self.ingest.settle_remote_async(space, envs)

    async def note_undecodable_async(self, rows: list[tuple[str, str, int, str]]) -> None:
        """Change sets that arrived but did not decode: listed as refused in `status`."""
        await self.ingest.note_undecodable_async(rows)

    def receive(self, space: str, wire: bytes) -> Any:
        """A change set from another device. Raises the store's refusal on bad input."""
        return self.ingest.receive(space, wire)

    def receive_batch(self, space: str, wires: list[bytes], *, settle: bool = True,
                      ) -> tuple[Any, list[tuple[Any, Exception]]]:
        return self.ingest.receive_batch(space, wires, settle=settle)

    def settle_remote(self, space: str, envs: set[str]) -> None:
        self.ingest.settle_remote(space, envs)

    def enforce_membership(self) -> int:
        return self.ingest.enforce_membership()

    def enforce_membership_soon(self) -> None:
        self.ingest.enforce_membership_soon()

    # ------------------------------------------------------------------ presence
    def tell_presence(self, looking: Looking) -> None:
        self.presence_push.tell(looking)

    def push_presence(self) -> None:
        self.presence_push.push()

    # ------------------------------------------------------------------ commands
    def share(self, file: str, space: str | None = None, copy: bool = False) -> dict[str, Any]:
        return self.commands.share(file, space, copy)

    def new(self, name: str, space: str | None = None) -> dict[str, Any]:
        return self.commands.new(name, space)

    def find(self, text: str) -> EnvRuntime:
        return self.commands.find(text)

    def unshare(self, text: str) -> dict[str, Any]:
        return self.commands.unshare(text)

    def delete(self, text: str) -> dict[str, Any]:
        return self.commands.delete(text)

    def restore(self, text: str) -> dict[str, Any]:
        return self.commands.restore(text)

    def conflicts(self, text: str | None = None) -> list[dict[str, Any]]:
        return self.commands.conflicts(text)

    def resolve_conflict(self, conflict_id: str, take: str) -> dict[str, Any]:
        return self.commands.resolve_conflict(conflict_id, take)

    def change_log(self, text: str) -> list[dict[str, Any]]:
        return self.commands.change_log(text)

    # ------------------------------------------------------------------ offline policy
    def offline_cut(self, env: str) -> int | None:
        return self.offline_holds.cut(env)

    def offline_catch_up(self, env: str, relay_vv: dict[str, int]) -> str:
        return self.offline_holds.catch_up(env, relay_vv)

    def upload_refused(self, env: str, reason: str) -> None:
        self.offline_holds.upload_refused(env, reason)

    def upload_accepted(self, env: str) -> None:
        self.offline_holds.upload_accepted(env)

    def resolve_offline(self, text: str, keep_local: bool) -> dict[str, Any]:
        return self.offline_holds.resolve(text, keep_local)

    # ------------------------------------------------------------------ status
    def all_envs(self) -> list[dict[str, Any]]:
        return self.report.all_envs()

    def status(self) -> dict[str, Any]:
        return self.report.status()


__all__ = [
    "JS_SIZE_BOUND", "MAX_FILE_BYTES", "Agent", "QuotaError", "SpaceDirectory", "Transport",
    "compact_size", "quick_compact_size",
]
