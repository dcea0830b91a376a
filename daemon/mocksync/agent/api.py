"""Control API methods: one thin handler per CLI command, each calling one Agent method.

The CLI and editor plugins call these over the Unix socket (control.py). Parameters are
checked here (types, required keys) so a bad request gets a clear error and changes nothing.
"""

from __future__ import annotations

from typing import Any

from ..errors import ValidationError
from ..model.files import MAX_LINKED_FILES, MAX_LINKED_PATH_CHARS
from ..model.ops import FILE_NAME
from ..ports import LogPusher, Reconnecting
from .control import ControlServer
from .daemon import Agent
from .statusdoc import list_document, status_document


def _str(params: dict[str, Any], key: str) -> str:
    """The required string parameter `key` (ValidationError when absent, empty or not text)."""
    v = params.get(key)
    if not isinstance(v, str) or not v:
        raise ValidationError(f"parameter {key!r} must be a non-empty string")
    return v


def _opt_str(params: dict[str, Any], key: str) -> str | None:
    """The optional string parameter `key`: None when absent, else as `_str` checks it."""
    return None if params.get(key) is None else _str(params, key)


def _adopt_paths(value: Any) -> list[str] | None:
    """`adopt`'s optional `paths`: at most MAX_LINKED_FILES non-empty strings, each at most
    MAX_LINKED_PATH_CHARS (an environment syncs no more files, names no longer paths)."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_LINKED_FILES or not all(
            isinstance(p, str) and 0 < len(p) <= MAX_LINKED_PATH_CHARS for p in value):
        raise ValidationError(f"parameter 'paths' must be a list of at most {MAX_LINKED_FILES} "
                              f"paths of 1 to {MAX_LINKED_PATH_CHARS} characters")
    return value


def shared_names(agent: Agent) -> dict[str, str | None]:
    """Each synced environment's file name on its sharer's device (None: not recorded)."""
    out: dict[str, str | None] = {}
    for uuid in list(agent.envs):
        ent = agent.store.state(uuid).entity(uuid)
        value = ent.get(FILE_NAME, None) if ent is not None else None
        out[uuid] = value if isinstance(value, str) else None
    return out


def register(server: ControlServer, agent: Agent) -> None:
    # Commands that read or change the store's environments take a turn on its worker
    # (`agent.store_turn`): they run between two ingests of peers' change sets, never
    # during one. `status`, `list`, `peers` and `who` read committed rows only: no turn, so
    # they answer at once while a peer floods the daemon (issue 12).
    @server.route("status")
    async def status(params: dict[str, Any]) -> dict[str, Any]:
        return status_document(agent.status(), shared_names(agent))

    @server.route("list")
    async def list_(params: dict[str, Any]) -> dict[str, Any]:
        tstat = agent.transport.status() if agent.transport is not None else {}
        return {"environments": list_document(agent.all_envs(), shared_names(agent),
                                              tstat.get("progress"))}

    @server.route("share")
    async def share(params: dict[str, Any]) -> dict[str, Any]:
        async with agent.store_turn():
            return agent.share(_str(params, "file"), _opt_str(params, "space"),
                               bool(params.get("copy", False)))

    @server.route("new")
    async def new(params: dict[str, Any]) -> dict[str, Any]:
        async with agent.store_turn():
            return agent.new(_str(params, "name"), _opt_str(params, "space"))

    @server.route("unshare")
    async def unshare(params: dict[str, Any]) -> dict[str, Any]:
        async with agent.store_turn():
            return agent.unshare(_str(params, "env"))

    @server.route("delete")
    async def delete(params: dict[str, Any]) -> dict[str, Any]:
        async with agent.store_turn():
            return agent.delete(_str(params, "env"))

    @server.route("restore")
    async def restore(params: dict[str, Any]) -> dict[str, Any]:
        async with agent.store_turn():
            return agent.restore(_str(params, "env"))

    @server.route("adopt")
    async def adopt(params: dict[str, Any]) -> dict[str, Any]:
        # Linked files named by absolute or escaping paths: copied in, paths rewritten (#7);
        # local files a teammate linked: shared on purpose (#12). `paths`: only those.
        paths = _adopt_paths(params.get("paths"))
        async with agent.store_turn():
            return agent.linked.adopt(_str(params, "env"), paths)

    @server.route("conflicts")
    async def conflicts(params: dict[str, Any]) -> dict[str, Any]:
        async with agent.store_turn():
            return {"conflicts": agent.conflicts(_opt_str(params, "env"))}

    @server.route("resolve")
    async def resolve(params: dict[str, Any]) -> dict[str, Any]:
        take = _str(params, "take")
        if take not in ("ours", "theirs"):
            raise ValidationError("take must be 'ours' or 'theirs'")
        async with agent.store_turn():
            return agent.resolve_conflict(_str(params, "id"), take)

    @server.route("resolve_env")
    async def resolve_env(params: dict[str, Any]) -> dict[str, Any]:
        # `resolve ENV --keep-local|--discard-local`: the answer to an environment the
        # `prompt` offline policy holds (the agent refuses an env that is not held).
        env = _str(params, "env")
        keep_local = params.get("keep_local")
        if not isinstance(keep_local, bool):
            raise ValidationError("parameter 'keep_local' must be true (--keep-local) or false "
                                  "(--discard-local)")
        async with agent.store_turn():
            return agent.resolve_offline(env, keep_local)

    @server.route("log")
    async def log(params: dict[str, Any]) -> dict[str, Any]:
        async with agent.store_turn():
            return {"changesets": agent.change_log(_str(params, "env"))}

    @server.route("reconnect")
    async def reconnect(params: dict[str, Any]) -> dict[str, Any]:
        async with agent.store_turn():
            agent.scan()
        if isinstance(agent.transport, Reconnecting):
            await agent.transport.reconnect()
        return {"ok": True}

    @server.route("membership")
    async def membership(params: dict[str, Any]) -> dict[str, Any]:
        """The CLI changed a space's membership (`remove`): apply it now, not at the next
        periodic check: take back what the removal refuses, and upload the new entries so
        the relay refuses the removed device at once too."""
        async with agent.store_turn():
            revoked = agent.enforce_membership()
        if isinstance(agent.transport, LogPusher):
            await agent.transport.push_logs()
        return {"ok": True, "revoked": revoked}

    @server.route("peers")
    async def peers(params: dict[str, Any]) -> dict[str, Any]:
        tstat = agent.transport.status() if agent.transport is not None else {}
        rows = agent.report.named_peers(tstat.get("peers", []))
        return {"peers": status_document({"peers": rows}, {})["peers"]}

    # ---- presence: what each online user is looking at (issue 11 item 6). An editor plugin
    # may say it (`presence`); otherwise the environment a device last saved counts.
    def describe(env: str | None, entity: str | None) -> tuple[str | None, str | None]:
        if env is None:
            return None, None
        rt = agent.envs.get(env)
        env_name = rt.name if rt is not None else None
        entity_name = None
        if entity is not None:
            from ..model.merge import describe_entity

            try:
                entity_name = describe_entity(agent.store.state(env), entity)
            except Exception:  # an env we do not hold (yet): show the raw id
                entity_name = entity
        return env_name, entity_name

    @server.route("presence")
    async def presence(params: dict[str, Any]) -> dict[str, Any]:
        from ..sync.messages import MAX_EDITOR_CHARS, MAX_ENTITY_CHARS
        from .presence import Looking

        env_text = _opt_str(params, "env")
        entity = _opt_str(params, "entity")
        editor = _opt_str(params, "editor") or "mockoon"
        if len(editor) > MAX_EDITOR_CHARS or not editor.isprintable():
            raise ValidationError(f"editor must be 1..{MAX_EDITOR_CHARS} printable characters")
        if entity is not None and (len(entity) > MAX_ENTITY_CHARS or not entity.isprintable()):
            raise ValidationError(f"entity must be 1..{MAX_ENTITY_CHARS} printable characters")
        if entity is not None and env_text is None:
            raise ValidationError("an entity needs its env: give env too")
        space = env = None
        if env_text is not None:
            rt = agent.find(env_text)
            space, env = rt.space, rt.uuid
        agent.tell_presence(Looking(space, env, entity, editor))
        return {"presence": {"space": space, "env": env, "entity": entity, "editor": editor}}

    @server.route("who")
    async def who(params: dict[str, Any]) -> dict[str, Any]:
        from .presence import who_rows

        me = agent.presence.current(agent.clock())
        env_name, entity_name = describe(me.env, me.entity)
        mine = {"device": agent.device, "name": agent.identity.name,
                "member": getattr(agent.identity, "member_name", None), "you": True,
                "via": None, "online": True, "env": me.env, "env_name": env_name,
                "entity": me.entity, "entity_name": entity_name, "editor": me.editor}
        return {"who": who_rows(mine, agent.status()["peers"], describe)}
