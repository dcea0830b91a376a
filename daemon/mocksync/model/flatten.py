"""Environment JSON -> entity views: the shape both diff and validation work on.

A view holds one entity's own fields (everything but `uuid` and child collections) in file
order, the file's key order, and where the entity sits: its index in its array ("list") and,
for routes and folders, in the tree. Tree entries naming nothing, or naming an item a second
time, are dropped (Mockoon's repairRefs does the same); a route or folder missing from the tree
sits at the end of `rootChildren`, where rendering would put it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import DuplicateUuidError, NotAnEnvironmentError
from .schema import COLLECTION_KEYS, ENV, FOLDER, LIST, RESPONSE, ROOT, ROUTE, TREE

#: Limits on what one environment may hold (a 15 MB generated env has ~25k entities).
MAX_ENTITIES = 500_000
MAX_UUID_LENGTH = 128


@dataclass
class EntityView:
    uuid: str
    kind: str
    fields: dict[str, Any]
    keys: list[str]
    path: str
    #: place name -> (container, index in that container)
    places: dict[str, tuple[str, int]] = field(default_factory=dict)


#: Which array of which kind holds which kind of children, in document order of the file.
_ARRAYS = ((ENV, "folders", FOLDER), (ENV, "routes", ROUTE), (ENV, "data", "bucket"),
           (ENV, "callbacks", "callback"), (ROUTE, "responses", RESPONSE))


def _uuid_of(obj: Any, path: str) -> str:
    if not isinstance(obj, dict):
        raise NotAnEnvironmentError(f"{path} is not an object")
    u = obj.get("uuid")
    if not isinstance(u, str) or not u:
        raise NotAnEnvironmentError(f"{path} has no uuid")
    if len(u) > MAX_UUID_LENGTH:
        raise NotAnEnvironmentError(f"{path} has a uuid longer than {MAX_UUID_LENGTH} characters")
    return u


def _view(obj: dict[str, Any], kind: str, path: str) -> EntityView:
    skip = COLLECTION_KEYS[kind]
    fields = {k: v for k, v in obj.items() if k != "uuid" and k not in skip}
    return EntityView(uuid=obj["uuid"], kind=kind, fields=fields, keys=list(obj), path=path)


def _list_of(obj: dict[str, Any], key: str, path: str) -> list[Any]:
    v = obj.get(key, [])
    if not isinstance(v, list):
        raise NotAnEnvironmentError(f"{path}{key} is not a list")
    return v


def flatten(doc: Any) -> dict[str, EntityView]:
    """All entities of an environment document, env first, then in document order."""
    if not isinstance(doc, dict):
        raise NotAnEnvironmentError("the top level is not an object")
    env_uuid = _uuid_of(doc, "the environment")
    for key in ("routes",):
        if key not in doc:
            raise NotAnEnvironmentError(f"no '{key}' array")
    views: dict[str, EntityView] = {}
    seen: dict[str, list[str]] = {env_uuid: ["the environment"]}
    views[env_uuid] = _view(doc, ENV, "")

    def add(obj: Any, kind: str, path: str, container: str, index: int) -> None:
        u = _uuid_of(obj, path)
        if u in seen:
            seen[u].append(path)
            return
        seen[u] = [path]
        v = _view(obj, kind, path)
        v.places[LIST] = (container, index)
        views[u] = v
        if len(views) > MAX_ENTITIES:
            raise NotAnEnvironmentError(f"more than {MAX_ENTITIES} entities")

    for parent_kind, key, kind in _ARRAYS:
        if parent_kind != ENV:
            continue
        for i, obj in enumerate(_list_of(doc, key, "")):
            add(obj, kind, f"{key}[{i}]", env_uuid, i)
    for ri, obj in enumerate(_list_of(doc, "routes", "")):
        if not isinstance(obj, dict) or views.get(obj.get("uuid", "")) is None:
            continue
        route_uuid = obj["uuid"]
        if views[route_uuid].kind != ROUTE or views[route_uuid].path != f"routes[{ri}]":
            continue
        for j, resp in enumerate(_list_of(obj, "responses", f"routes[{ri}].")):
            add(resp, RESPONSE, f"routes[{ri}].responses[{j}]", route_uuid, j)

    dupes = {u: paths for u, paths in seen.items() if len(paths) > 1}
    if dupes:
        raise DuplicateUuidError(dupes)

    # The tree: rootChildren and each folder's children.
    counters: dict[str, int] = {}

    def place_children(items: list[Any], container: str, path: str) -> None:
        for i, ref in enumerate(items):
            if not isinstance(ref, dict):
                raise NotAnEnvironmentError(f"{path}[{i}] is not an object")
            u = ref.get("uuid")
            v = views.get(u) if isinstance(u, str) else None
            if v is None or v.kind not in (FOLDER, ROUTE) or TREE in v.places:
                continue  # dangling or repeated reference: dropped, as Mockoon does
            n = counters.get(container, 0)
            v.places[TREE] = (container, n)
            counters[container] = n + 1

    place_children(_list_of(doc, "rootChildren", ""), ROOT, "rootChildren")
    for fi, obj in enumerate(_list_of(doc, "folders", "")):
        place_children(_list_of(obj, "children", f"folders[{fi}]."), obj["uuid"], f"folders[{fi}].children")
    for v in views.values():
        if v.kind in (FOLDER, ROUTE) and TREE not in v.places:
            n = counters.get(ROOT, 0)
            v.places[TREE] = (ROOT, n)
            counters[ROOT] = n + 1
    return views
