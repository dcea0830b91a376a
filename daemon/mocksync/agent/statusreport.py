"""The agent's raw `status` and `list` rows: each environment's runtime state with the
overlays that outrank it (held, linked files, blocked by refusals, machine faults).

`statusdoc` shapes these for people and scripts; this part only gathers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import MODEL_VERSION, PROTOCOL_VERSION, __version__
from ..space.standing import Departure, departure, device_labels
from .envfiles import SYNCED, EnvRuntime

if TYPE_CHECKING:
    from .daemon import Agent


#: Why `status` shows no relay: neither a space nor the settings name one.
NO_RELAY = ("no relay: no space names one (`space create --relay URL`) and none is configured "
            "(`daemon --relay URL`); edits sync with LAN peers only")


class StatusReport:
    """Gathers status rows from the other parts (owned by `Agent`)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def all_envs(self) -> list[dict[str, Any]]:
        out = [rt.to_json(len(self.agent.store.conflicts(rt.uuid))) | self.agent.offline_holds.hold_view(rt)
               | self.agent.linked.status(rt) | self.health(rt) | self.agent.retries.view(rt)
               for rt in list(self.agent.envs.values())]  # (a snapshot: the store worker may add)
        gone = self.departures()
        for rt in out:
            rt["space_name"] = self.agent.spaces.name(rt["space"])
            d = gone.get(rt["space"])
            if d is not None:  # out of the space (the signed log says so): not synced
                rt |= {"state": d.kind, "reason": d.sentence()}
        out += [lf.to_json() for lf in list(self.agent.local.values())]
        return sorted(out, key=lambda d: d["file"] or "")

    def status(self) -> dict[str, Any]:
        tstat = self.agent.transport.status() if self.agent.transport is not None else {}
        return {
            "device": {"id": self.agent.device, "name": self.agent.identity.name},
            "daemon": {"running": True, "version": __version__, "folder": str(self.agent.folder),
                       "pid": __import__("os").getpid(), "protocol": PROTOCOL_VERSION,
                       "model": MODEL_VERSION, "uptime_s": round(self.agent.clock() - self.agent.started_at, 1),
                       # Why local edits are not seen now (the folder moved away), or None.
                       "watch_problem": self.watch_problem()},
            "relay": tstat.get("relay", {"url": self.agent.settings.relay,
                                         "state": "offline" if self.agent.settings.relay else "none",
                                         "reason": None if self.agent.settings.relay else
                                         NO_RELAY}),
            # Every relay connection (one per relay route of the spaces, net.relay_fleet).
            "relays": tstat.get("relays", []),
            "spaces": self.spaces(),
            "peers": self.named_peers(tstat.get("peers", [])),
            # The LAN transport: port, bind, presence, messages by kind (issue 16).
            "lan": tstat.get("lan"),
            "progress": tstat.get("progress", []),  # catch-ups in flight (sync/progress.py)
            "environments": self.all_envs(),
            "rejected": self.agent.store.rejected(10),
        }

    def watch_problem(self) -> str | None:
        w = self.agent.watcher
        return str(w.error) if w is not None and w.error is not None else None

    def named_peers(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Peer rows with each device's name and its member's label from the membership logs
        (`name (id prefix)` where two members share a name), beside the id."""
        labels: dict[str, tuple[str, str]] = {}
        for sp in self.agent.spaces.spaces():
            labels.update(device_labels(sp.state))
        out = []
        for row in rows:
            known = labels.get(row.get("device") or "")
            if known is not None:
                row = {**row, "name": known[0], "member": known[1]}
            out.append(row)
        return out

    def departures(self) -> dict[str, Departure]:
        """Spaces this device was removed from, or whose member left, as their logs prove."""
        out = {}
        for sp in self.agent.spaces.spaces():
            d = departure(sp.state, self.agent.device)
            if d is not None:
                out[sp.space_id] = d
        return out

    def spaces(self) -> list[dict[str, Any]]:
        """Each space this device belongs to and the relays it names (issue 17), in order;
        `local_relays`: those this device alone added (`space relays --use`, not signed);
        `removed`: why this device is out of it (null while a member)."""
        gone = self.departures()
        return [{"id": sp.space_id, "name": sp.name, "kind": sp.state.kind,
                 "relays": list(sp.state.relays),
                 "local_relays": list(getattr(sp, "local_relays", ())),
                 "removed": d.to_json() if (d := gone.get(sp.space_id)) else None}
                for sp in self.agent.spaces.spaces()]

    def health(self, rt: EnvRuntime) -> dict[str, Any]:
        """`blocked` (and why) when refused or quarantined change sets stop `rt` syncing, and
        the refusals to list (`agent.health`)."""
        from .health import BLOCKED, sync_health

        st = self.agent.spaces.get(rt.space)
        active = set(st.state.devices) if st is not None else set()
        rows = self.agent.store.refusals(rt.uuid)
        held = self.agent.store.quarantined(rt.uuid)
        if not rows and not held:
            return {"refused": []}
        names = {d: n for d in {r["device"] for r in rows} | {q[0] for q in held}
                 if (n := self.agent.spaces.member_name(rt.space, d))}
        h = sync_health(self.agent.store.version_vector(rt.uuid), rows, held,
                        now_ms=int(self.agent.clock() * 1000), active=active, names=names)
        out: dict[str, Any] = {"refused": h.refused}
        if h.blocked is not None and rt.state in (SYNCED, "syncing"):
            out |= {"state": BLOCKED, "reason": h.blocked}
        return out
