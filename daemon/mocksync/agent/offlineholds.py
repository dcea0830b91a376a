"""Holds: environments kept back from the team, and why (the `prompt` offline policy, and
relay quota refusals).

The decisions (what a reconnect means, whether to hold, the team's side of a held
environment) are `sync.offline`'s pure functions; this part applies them: a held
environment's file is not written and our change sets are not sent until
`resolve --keep-local|--discard-local`.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agentevents import Held, ResolvedOffline
from ..errors import ValidationError
from ..model import ParsedEnv, diff, parse_env, render
from ..model.resolution import recreated, resolution_ops
from ..sync.offline import (
    Hold,
    decide,
    held_reason,
    settled_by_decision,
    should_hold,
    team_state,
)
from .envfiles import HELD, SYNCED, EnvRuntime
from .errors import QuotaError
from .writer import (
    content_hash,
)

if TYPE_CHECKING:
    from .daemon import Agent

log = logging.getLogger("mocksync.agent")


class OfflineHolds:
    """Offline-policy holds and relay refusals (owned by `Agent`)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        #: Environments whose last upload the relay refused (a quota), with its sentence:
        #: shown as held, never as synced, until an upload of theirs is accepted again.
        self.relay_refusals: dict[str, str] = {}

    def cut(self, env: str) -> int | None:
        """While `env` is held by the `prompt` policy: the last of our own change sets the
        team has (ours after it are not sent to anyone); None when it is not held."""
        return self.agent.holds.cut(env)

    def catch_up(self, env: str, relay_vv: dict[str, int]) -> str:
        """A relay catch-up is about to take `env` in (call it before pulling): what the
        reconnect means (offline.decide); under the `prompt` policy, when both sides changed
        the environment, hold it: file unwritten, our change sets unsent."""
        decision = decide(self.agent.device, self.agent.store.version_vector(env), relay_vv)
        rt = self.agent.envs.get(env)
        if (rt is not None and env not in self.agent.holds
                and should_hold(self.agent.settings.offline_policy, decision)):
            self.agent.holds.put(Hold(env, int(relay_vv.get(self.agent.device, 0)), self.agent.clock()))
            if rt.write_handle is not None:
                rt.write_handle.cancel()
                rt.write_handle = None
            self.agent.publish(Held(env=env, reason=self.hold_view(rt)["reason"]))
        return decision

    def upload_refused(self, env: str, reason: str) -> None:
        """The relay refused this environment's change sets (transport hook): say so."""
        if env in self.agent.envs and self.agent.relay_refusals.get(env) != reason:
            self.agent.relay_refusals[env] = reason
            self.agent.publish(Held(env=env, reason=reason))

    def upload_accepted(self, env: str) -> None:
        """The relay took this environment's change sets again (transport hook)."""
        self.agent.relay_refusals.pop(env, None)

    def hold_view(self, rt: EnvRuntime) -> dict[str, Any]:
        """What `status` shows instead of the runtime state while the env is held."""
        refused = self.agent.relay_refusals.get(rt.uuid)
        if refused is not None and rt.uuid not in self.agent.holds and rt.state == SYNCED:
            return {"state": HELD, "reason": (
                f"{refused}; the relay does not take it, so teammates do not get this "
                "environment's edits through it until it fits")}
        if rt.uuid not in self.agent.holds:
            return {}
        return {"state": HELD, "reason": held_reason(rt.name or rt.path.name,
                                                     shlex.quote(rt.path.name))}

    def resolve(self, text: str, keep_local: bool) -> dict[str, Any]:
        """`mocksync resolve ENV --keep-local|--discard-local` for an environment the `prompt`
        policy holds. Everything is checked before anything changes."""
        rt = self.agent.find(text)
        hold = self.agent.holds.get(rt.uuid)
        if hold is None:
            raise ValidationError(
                f"{rt.path.name} is not waiting for a keep-local/discard-local decision: only an "
                "environment held by the `prompt` offline policy (state `held` in `mocksync "
                "status`) is; see `mocksync conflicts` for what merged over what")
        state = self.agent.store.state(rt.uuid)
        parsed: ParsedEnv | None = None
        local_data: bytes | None = None
        if keep_local:
            local_data = self.agent.edits.read(rt.path)
            if local_data is None:
                raise ValidationError(
                    f"{rt.path.name} is not on this device, so there is no local version to "
                    f"keep; `mocksync resolve {rt.uuid} --discard-local` takes the team's")
            try:
                parsed = parse_env(local_data, self.agent.settings.mockoon_max_migration)
            except ValidationError as exc:
                raise ValidationError(f"cannot keep {rt.path.name}: {exc}; fix the file and "
                                      "retry, or use --discard-local") from None
            if parsed.uuid != rt.uuid:
                raise ValidationError(
                    f"cannot keep {rt.path.name}: it now holds environment {parsed.uuid}, not "
                    f"{rt.uuid}; put the environment back, or use --discard-local")
            problem = self.agent.quotas.size_problem(rt.space, parsed.doc)
            if problem:
                raise QuotaError(f"cannot keep {rt.path.name}: {problem}")
            target = parsed.doc
        else:
            log_sets = (cs for cs, _received in self.agent.store.log(rt.uuid))
            target = render(team_state(rt.uuid, log_sets, self.agent.device, hold.cut))
        ops = diff(render(state), target, state, self.agent.rng)
        ops += recreated(state, ops)  # what the chosen side has and the other deleted
        trash = None if keep_local else self.trash_copy(rt)
        if ops:
            self.agent.commit(rt, ops)  # still held: sent below, in order, with the others
        # The conflicts the decision answers that its edit did not clear (the decided side
        # already held the register): the decided value written again, having seen both
        # sides, as `resolve ID` does, so they clear on every device, not only here.
        keep = [op for c in self.agent.store.conflicts(rt.uuid)
                if settled_by_decision(c, self.agent.device, hold.cut)
                for op in resolution_ops(state, c, False, self.agent.rng)]
        if keep:
            self.agent.commit(rt, keep)
        self.agent.holds.remove(rt.uuid)
        sent = self.send_held(rt, hold.cut)
        for c in self.agent.store.conflicts(rt.uuid):
            if settled_by_decision(c, self.agent.device, hold.cut):
                self.agent.store.mark_resolved(rt.uuid, c["id"])  # (none left unless refused)
        if parsed is not None and local_data is not None:
            # The file is the version the editor has: a later save is diffed against it.
            sha = content_hash(local_data)
            self.agent.store.set_base(rt.uuid, str(rt.path), sha, local_data)
            self.agent.history.note_loaded(rt.path, sha, parsed.doc)
            rt.layout = parsed.layout
            if rt.state == HELD:
                rt.state, rt.reason = SYNCED, ""
        self.agent.schedule_write(rt)
        kept = "local" if keep_local else "team"
        self.agent.publish(ResolvedOffline(env=rt.uuid, kept=kept, ops=len(ops), sent=sent))
        return {"uuid": rt.uuid, "file": str(rt.path), "kept": kept, "changed": bool(ops),
                "ops": len(ops), "sent": sent, "trash": str(trash) if trash else None}

    def trash_copy(self, rt: EnvRuntime) -> Path | None:
        """Keep this device's file (the version being discarded) in the recoverable trash."""
        self.agent.home.trash.mkdir(exist_ok=True)
        stamp = int(self.agent.clock())
        dest = self.agent.home.trash / f"{stamp}-{rt.path.name}"
        n = 2
        while dest.exists():
            dest = self.agent.home.trash / f"{stamp}-{n}-{rt.path.name}"
            n += 1
        if rt.path.is_file():
            shutil.copy2(rt.path, dest)
            return dest
        base = self.agent.store.get_base(rt.uuid)  # the file is gone: keep what the editor last had
        if base is None:
            return None
        dest.write_bytes(base[2])
        return dest

    def send_held(self, rt: EnvRuntime, cut: int) -> int:
        """Send our change sets the hold kept back (seq order, so peers apply them at once)."""
        if self.agent.transport is None:
            return 0
        vv = self.agent.store.version_vector(rt.uuid)
        wires = self.agent.store.wires_missing(rt.uuid, vv | {self.agent.device: cut})
        for wire in wires:
            self.agent.transport.broadcast(rt.space, rt.uuid, wire)
        return len(wires)
