"""The environment commands a user runs (`share`, `new`, `unshare`, `delete`, `restore`,
`conflicts`, `resolve ID`, `log`), each checked before anything changes.

Decisions stay in the model (`model.lifecycle`, `model.resolution`, `model.sharedname`);
commands sequence them against the folder, the log and the registry of synced environments.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agentevents import Shared
from ..errors import ValidationError
from ..model import dumps, parse_env, render, snapshot_ops
from ..model.jsfmt import MOCKOON_LAYOUT
from ..model.lifecycle import reshare_refusal
from ..model.ops import DELETED, FILE_NAME, LIFECYCLE, UNSHARED, Set
from ..model.resolution import flip_take, resolution_ops, takes_loser
from ..model.spans import text_to_write
from .envfiles import MISSING, SYNCED, EnvRuntime
from .folderedits import peer_refusal
from .registry import EnvRecord
from .writer import (
    atomic_write,
    content_hash,
)

if TYPE_CHECKING:
    from .daemon import Agent


class Commands:
    """User commands on environments (owned by `Agent`; its methods of the same names delegate)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def share(self, file: str, space: str | None = None, copy: bool = False) -> dict[str, Any]:
        from .sharing import fresh_copy

        path = Path(file).expanduser()
        if not path.is_absolute():
            path = self.agent.folder / path
        path = path.resolve()
        if path.parent != self.agent.folder:
            raise ValidationError(f"{path} is not in the synced folder {self.agent.folder}; move it there first")
        data, sig = self.agent.edits.read_sig(path)
        if data is None:
            raise ValidationError(f"{path}: no such file")
        parsed = parse_env(data, self.agent.settings.mockoon_max_migration)
        space_id = self.agent.spaces.resolve(space) if space else self.agent.spaces.default_space()
        self.check_standing(space_id)
        doc = parsed.doc
        if copy:
            doc = fresh_copy(doc, self.agent.rng)
            path = self.agent.edits.free_path(f"{path.stem}-copy")
        elif parsed.uuid in self.agent.envs:
            raise ValidationError(f"{path.name} is already synced (space {self.agent.spaces.name(self.agent.envs[parsed.uuid].space)})")
        elif self.agent.store.has_env(parsed.uuid):
            refusal = reshare_refusal(self.agent.store.state(parsed.uuid), path.name)
            if refusal:  # unshared or deleted: the uuid is retired (model/lifecycle.py)
                raise ValidationError(refusal)
        self.agent.quotas.check_share(space_id, doc)
        # The file name travels with the first change set (encrypted like every op), so
        # teammates' devices keep it when it is free there (model/sharedname.py).
        ops = snapshot_ops(doc, self.agent.rng) + [Set(doc["uuid"], FILE_NAME, path.name)]
        refusal = peer_refusal(parsed.views, ops)
        if refusal is not None:  # checked before anything is recorded: nothing changes
            raise ValidationError(f"{path.name}: {refusal}")
        rt = EnvRuntime(doc["uuid"], space_id, path, name=str(doc.get("name", "")),
                        layout=parsed.layout, file_sig=None if copy else sig)
        self.agent.envs[rt.uuid] = rt
        self.agent.registry.put(EnvRecord(rt.uuid, space_id, str(path), rt.name))
        self.agent.commit(rt, ops)
        if copy:
            self.agent.writes.write_env(rt, force=True)
        elif text_to_write(data, render(self.agent.store.state(rt.uuid)), parsed.layout) is not None:
            self.agent.schedule_write(rt)  # normalisation changed it: written once the editor can see
        else:
            sha = content_hash(data)
            seen = self.agent.store.version_vector(rt.uuid)  # the snapshot just committed
            self.agent.store.set_base(rt.uuid, str(path), sha, data, seen=seen)
            # The version shared is the one its editor has: the first save is parsed from it
            # and diffed against it and its entity views, as every later save is (not the
            # stored base parsed and flattened whole on the loop: issue 15), and stamped
            # with what it reflects (a teammate's edit written meanwhile stays concurrent).
            self.agent.history.note_loaded(path, sha, parsed.doc)
            self.agent.seen_versions.put(rt.uuid, sha, seen)
            self.agent.edits.parsed[path] = parsed
            self.agent.edits.views[path] = (sha, parsed.views)
            # What a start does for each synced file, now, off the loop: else the first save
            # after sharing builds the span index and loads the log on the loop (1.4 s for a
            # 5 MB environment, issue 15).
            self.agent.writes.ensure_written(rt)
        self.agent.local.pop(path, None)
        self.agent.linked.after_local_edit(rt)
        self.agent.publish(Shared(env=rt.uuid, file=str(path), origin="local"))
        return rt.to_json(0) | {"space_name": self.agent.spaces.name(space_id)}

    def new(self, name: str, space: str | None = None) -> dict[str, Any]:
        from .sharing import new_environment

        ports = set()
        for d in self.agent.all_envs():
            with contextlib.suppress(OSError, ValidationError, KeyError):
                ports.add(parse_env(self.agent.edits.read_sig(Path(d["file"]))[0] or b"",
                                    10**9).doc.get("port"))
        doc = new_environment(name, self.agent.rng, used_ports=ports)
        path = self.agent.edits.free_path(name)
        data = dumps(doc, MOCKOON_LAYOUT).encode("utf-8")
        space_id = self.agent.spaces.resolve(space) if space else self.agent.spaces.default_space()
        self.check_standing(space_id)  # before a file is written for nothing
        self.agent.quotas.check_share(space_id, doc)
        if self.agent.watcher is not None:
            self.agent.watcher.expect_write(path, content_hash(data))
        atomic_write(path, data)
        return self.share(str(path), space)

    def check_standing(self, space_id: str) -> None:
        """Refuse to put an environment in a space this device is out of (removed, or its
        member left), as the signed log proves: nothing would reach anyone."""
        from ..space.standing import departure

        sp = self.agent.spaces.get(space_id)
        d = departure(sp.state, self.agent.device) if sp is not None else None
        if d is not None:
            raise ValidationError(f"not shared: {d.sentence()}")

    def find(self, text: str) -> EnvRuntime:
        from .errors import UnknownEnvironment
        from .registry import resolve_env

        cands = [rt.to_json(0) for rt in self.agent.envs.values()]
        hit = resolve_env(text, cands + [lf.to_json() for lf in self.agent.local.values() if lf.uuid])
        rt = self.agent.envs.get(hit["uuid"])
        if rt is None:
            raise UnknownEnvironment(f"{hit['file']} is a local environment, not synced "
                                     f"(share it with `mocksync share {hit['file']}`)")
        return rt

    def set_lifecycle(self, rt: EnvRuntime, value: str) -> None:
        self.agent.commit(rt, [Set(rt.uuid, LIFECYCLE, value)])

    def unshare(self, text: str) -> dict[str, Any]:
        rt = self.find(text)
        self.set_lifecycle(rt, UNSHARED)
        self.agent.writes.write_env(rt, force=True)
        out = {"uuid": rt.uuid, "file": str(rt.path), "state": "local"}
        self.agent.forget(rt)
        self.agent.on_file(rt.path, initial=True)
        return out

    def delete(self, text: str) -> dict[str, Any]:
        rt = self.find(text)
        self.set_lifecycle(rt, DELETED)
        out = {"uuid": rt.uuid, "file": str(rt.path), "state": "local",
               "note": "left the space; other devices move their copy to their trash"}
        if rt.state != MISSING:
            self.agent.writes.write_env(rt, force=True)
        self.agent.forget(rt)
        if rt.path.exists():
            self.agent.on_file(rt.path, initial=True)
        return out

    def restore(self, text: str) -> dict[str, Any]:
        rt = self.find(text)
        if rt.state != MISSING and rt.path.exists():
            return {"uuid": rt.uuid, "file": str(rt.path), "restored": False}
        rt.state, rt.reason = SYNCED, ""
        doc = render(self.agent.store.state(rt.uuid))
        self.agent.writes.put_file(rt, dumps(doc, rt.layout).encode("utf-8"), doc)
        return {"uuid": rt.uuid, "file": str(rt.path), "restored": True}

    def conflicts(self, text: str | None = None) -> list[dict[str, Any]]:
        from ..model.merge import describe_entity

        env = self.find(text).uuid if text else None
        out = self.agent.store.conflicts(env)
        for c in out:
            st = self.agent.store.state(c["env"])
            c["where"] = describe_entity(st, c["entity"])
            if c.get("parent"):  # work a delete dropped (issue 15): say what was deleted
                c["what"] = ("put in " if c["field"][0] == "#parent" else "names ") + \
                    describe_entity(st, c["parent"]) + ", deleted meanwhile"
            self.agent.linked.present_conflict(c)  # a linked file: its path; hashes, never bytes
            c["flip"] = flip_take(c, self.agent.device)  # `--take` that swaps kept and lost here
            rt = self.agent.envs.get(c["env"])
            if rt is not None:  # who wrote each side and in which file, for people to read
                c["file"] = rt.path.name
                for side in ("winner", "loser"):
                    if isinstance(c.get(side), dict):
                        c[side]["member"] = self.agent.spaces.member_name(
                            rt.space, c[side].get("device", ""))
        return out

    def resolve_conflict(self, conflict_id: str, take: str) -> dict[str, Any]:
        hits = [c for c in self.agent.store.conflicts() if c["id"] == conflict_id
                or c["id"].startswith(conflict_id)]
        if not hits:
            raise ValidationError(f"no open conflict {conflict_id!r} (see `mocksync conflicts`)")
        if len(hits) > 1:
            raise ValidationError(f"{conflict_id!r} matches {len(hits)} conflicts; give more of the id")
        c = hits[0]
        rt = self.agent.envs.get(c["env"])
        if rt is None:
            raise ValidationError(f"environment {c['env']} is no longer synced")
        # "ours" is the side this device wrote, or the current winner when it wrote neither.
        want_loser = takes_loser(c, take, self.agent.device)
        # The resolution is an ordinary change set written after seeing both sides: applied
        # anywhere, it empties the register's frontier (or brings back what a delete
        # dropped: the parent with the addition), so the conflict clears on every device.
        ops = resolution_ops(self.agent.store.state(rt.uuid), c, want_loser, self.agent.rng)
        changed = want_loser
        if ops:
            self.agent.commit(rt, ops)
        if changed:
            self.agent.schedule_write(rt)
        if any(x["id"] == c["id"] for x in self.agent.store.conflicts(c["env"])):
            self.agent.store.mark_resolved(c["env"], c["id"])  # (older logs: dismissed here only)
        kept = c["loser"] if want_loser else c["winner"]
        return {"id": c["id"], "took": take, "changed": changed, "value": kept.get("value"),
                "absent": bool(kept.get("absent"))}

    def change_log(self, text: str) -> list[dict[str, Any]]:
        from ..model import validate_ops

        rt = self.find(text)
        out = []
        for cs, received in self.agent.store.log(rt.uuid):
            ops = validate_ops(list(cs.ops))
            kinds: dict[str, int] = {}
            for op in ops:
                kinds[op.name] = kinds.get(op.name, 0) + 1
            names = {"c": "created", "s": "set", "x": "unset", "d": "deleted"}
            summary = ", ".join(f"{n} {names[k]}" for k, n in kinds.items())
            from ..changes import physical_ms

            out.append({"device": cs.device, "member": self.agent.spaces.member_name(rt.space, cs.device),
                        "seq": cs.seq, "hlc": cs.hlc, "time": physical_ms(cs.hlc) / 1000,
                        "received": received / 1000, "ops": len(ops), "summary": summary})
        return out
