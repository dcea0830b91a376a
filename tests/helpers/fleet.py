"""Stand-ins for what `net.relay_fleet.RelayFleet` reads of the agent: its spaces, each with
the relay list its membership log names (the route tests and their attack tests share them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeState:
    relays: tuple[str, ...]


@dataclass
class FakeSpace:
    space_id: str
    state: FakeState


@dataclass
class FakeDirectory:
    held: list[FakeSpace] = field(default_factory=list)

    def spaces(self) -> list[FakeSpace]:
        return list(self.held)


@dataclass
class FakeAgent:
    spaces: FakeDirectory
