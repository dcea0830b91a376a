"""Sends what this device's user is editing to the transports (issue 11 item 6).

What to send and when it ages out is `presence.PresenceBook`'s decision; this part only
carries it to the transports and sets the timer for the next change.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..ports import PresenceCarrier
from .presence import Looking

if TYPE_CHECKING:
    from .daemon import Agent


class PresencePush:
    """Pushes presence changes to the transports (owned by `Agent`)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.handle: asyncio.TimerHandle | None = None

    def tell(self, looking: Looking) -> None:
        """An editor plugin said what its user is looking at (`presence` control call)."""
        self.agent.presence.told(looking, self.agent.clock())
        self.push()

    def push(self) -> None:
        """Send this device's presence to every transport when it changed, and come back
        when a save ages out of "editing" (the decision is `PresenceBook`'s)."""
        if self.agent.bridge.loop is None:
            return  # not running: nothing to tell, nobody to tell it to
        if self.agent.bridge.to_loop(self.push):
            return
        now = self.agent.clock()
        looking = self.agent.presence.update(now)
        transport = self.agent.transport
        if looking is not None and isinstance(transport, PresenceCarrier):
            transport.set_presence(space=looking.space, env=looking.env,
                                        entity=looking.entity, editor=looking.editor)
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        due = self.agent.presence.next_change(now)
        if due is not None:
            self.handle = self.agent.bridge.loop.call_later(max(0.0, due - now) + 0.05,
                                                          self.push)
