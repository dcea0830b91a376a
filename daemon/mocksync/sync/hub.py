"""All of one device's sessions, sans-IO: the object the daemon's I/O adapter talks to.

A device has one session per connected peer, and some facts are device-wide: a change set the
store commits must be offered to every session, presence goes to every peer, and the `Wants`
book that keeps a mesh from fetching each change once per peer must be shared. The hub holds
exactly that and routes by the caller's `link` handle, so the adapter needs no bookkeeping of
its own. A typical adapter (asyncio + data channels), in full:

    hub = Hub(device_id, StoreSource(store))

    def run(events):
        for ev in events:
            if isinstance(ev, Send):
                channels[ev.link].send(ev.data)
            elif isinstance(ev, Deliver):
                try:
                    res = store.ingest(ev.wire, keys.lookup(ev.space, ev.device), now())
                except MocksyncError as exc:
                    run(hub.delivered(ev, now(), refused=str(exc)))
                    continue
                for cs in res.applied:
                    run(hub.committed(cs.space, cs.env, cs.device, cs.seq, cs.encode(), now()))
                run(hub.delivered(ev, now()))
            elif isinstance(ev, Closed):
                channels.pop(ev.link).close()
            elif isinstance(ev, PeerPresence):
                presence[ev.device] = ev

    def on_channel(link, channel, peer_envs):        # envs of spaces the peer is a member of
        channels[link] = channel
        channel.on("message", lambda data: run(hub.receive_data(link, data, now())))
        run(hub.open(link, peer_envs, now()))

    async def timer():
        while True:
            due = hub.next_tick_ms()
            await asyncio.sleep(0.05 if due is None else max(0, due - now()) / 1000)
            run(hub.tick(now()))

    # local edits: cs, _ = store.commit_local(...); run(hub.committed(..., cs.encode(), now()))
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from .. import MOCKOON_MAX_MIGRATION, MODEL_VERSION, PROTOCOL_VERSION
from ..errors import ValidationError
from .events import Closed, Deliver, Event
from .membership import MembershipSource
from .session import Config, Counts, Pair, Session
from .source import Source
from .wants import Wants


class Hub:
    """One device's sessions, the shared `Wants` book, and fan-out of local commits."""

    def __init__(
        self,
        device: str,
        source: Source,
        *,
        config: Config | None = None,
        protocol: int = PROTOCOL_VERSION,
        model: int = MODEL_VERSION,
        migration: int = MOCKOON_MAX_MIGRATION,
        membership: MembershipSource | None = None,
    ) -> None:
        self.device = device
        self.source = source
        self.membership = membership
        self.config = config or Config()
        self.wants: Wants = self.config.new_wants()
        self.sessions: dict[Hashable, Session] = {}
        #: Messages by kind and frames each way over all sessions, open or closed.
        self.counts = Counts()
        self._versions = {"protocol": protocol, "model": model, "migration": migration}
        self._presence: tuple[str | None, str | None, str | None, str] | None = None

    def open(
        self,
        link: Hashable,
        envs: Iterable[Pair],
        now_ms: int,
        *,
        expect_device: str | None = None,
        spaces: Iterable[str] = (),
        relay_push: bool = False,
    ) -> list[Event]:
        """A new connection: start a session. `envs`: only envs of spaces the peer is in;
        `spaces`: the spaces both are members of (their membership logs are gossiped)."""
        if link in self.sessions:
            raise ValidationError(f"a session is already open on link {link!r}")
        session = Session(
            self.device, envs, self.source, link=link, wants=self.wants, config=self.config,
            expect_device=expect_device, spaces=spaces, membership=self.membership,
            relay_push=relay_push, counts=self.counts,
            **self._versions,
        )
        self.sessions[link] = session
        events = session.start(now_ms)
        if self._presence is not None:
            events += session.set_presence(*self._presence, now_ms)
        return self._reap(events)

    def receive_data(self, link: Hashable, data: bytes, now_ms: int) -> list[Event]:
        session = self.sessions.get(link)
        return [] if session is None else self._reap(session.receive_data(data, now_ms))

    def delivered(self, event: Deliver, now_ms: int, *, refused: str | None = None) -> list[Event]:
        session = self.sessions.get(event.link)
        if session is None:
            return []
        return self._reap(session.delivered(event, now_ms, refused=refused))

    def committed(
        self, space: str, env: str, device: str, seq: int, wire: bytes | None, now_ms: int,
        *, relay_to: Callable[[str], bool] | None = None,
    ) -> list[Event]:
        """The store applied a change set (local edit or from any peer): tell every session.
        `relay_to(peer device)`: whether the change set is pushed to that peer (our own, or
        another device's on a `relay_push` session) or only announced (None: pushed)."""
        events: list[Event] = []
        for session in list(self.sessions.values()):
            events += session.local_changeset(space, env, device, seq, wire, now_ms,
                                              relay_to=relay_to)
        return self._reap(events)

    def relay_presence(self, link: Hashable, wire: bytes, hops: int, now_ms: int
                       ) -> list[Event]:
        session = self.sessions.get(link)
        return [] if session is None else self._reap(session.relay_presence(wire, hops, now_ms))

    def add_env(self, link: Hashable, space: str, env: str, now_ms: int) -> list[Event]:
        session = self.sessions.get(link)
        return [] if session is None else self._reap(session.add_env(space, env, now_ms))

    def membership_changed(self, space: str, now_ms: int) -> list[Event]:
        """Our membership log of `space` grew: every session gossiping it tells its peer."""
        events: list[Event] = []
        for session in list(self.sessions.values()):
            events += session.membership_changed(space, now_ms)
        return self._reap(events)

    def set_presence(
        self, space: str | None, env: str | None, entity: str | None, editor: str, now_ms: int
    ) -> list[Event]:
        self._presence = (space, env, entity, editor)
        events: list[Event] = []
        for session in list(self.sessions.values()):
            events += session.set_presence(space, env, entity, editor, now_ms)
        return self._reap(events)

    def tick(self, now_ms: int) -> list[Event]:
        events: list[Event] = []
        for session in list(self.sessions.values()):
            events += session.tick(now_ms)
        return self._reap(events)

    def next_tick_ms(self) -> int | None:
        due = [d for s in self.sessions.values() if (d := s.next_tick_ms()) is not None]
        return min(due) if due else None

    def close(self, link: Hashable, reason: str, now_ms: int) -> list[Event]:
        session = self.sessions.get(link)
        return [] if session is None else self._reap(session.close(reason, now_ms))

    def status(self) -> list[dict]:
        return [s.status() for s in self.sessions.values()]

    def _reap(self, events: list[Event]) -> list[Event]:
        for ev in events:
            if isinstance(ev, Closed):
                self.sessions.pop(ev.link, None)
        return events
