"""Registers -> environment JSON, normalised so the result is always a valid Mockoon file.

Deterministic: every device holding the same registers renders the same value, key order and
array order included. The normalisation rules are docs/design/merge.md's ("Rendering and invariants"):
tree repair (orphans and cycles to the end of `rootChildren`), exactly one default response per
non-CRUD route, references to deleted buckets and callbacks cleared. Rendering never writes a
register: diffs are taken against this output, so normalisation never emits ops.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from ..errors import ValidationError
from .jsfmt import Layout, dumps
from .schema import (
    BUCKET,
    CALLBACK,
    COLLECTIONS,
    ENV,
    FOLDER,
    LIST,
    RESPONSE,
    ROOT,
    ROUTE,
    TREE,
)
from .state import ABSENT, Entity, State

_NO_PLACE = ("", "~")  # sorts after every real key


def _pos(e: Entity, place: str) -> tuple[str, str]:
    v = e.get(("p", place), None)
    if not isinstance(v, list | tuple) or len(v) != 2:
        return _NO_PLACE
    return (v[0], v[1])


def _sort_key(e: Entity, place: str) -> tuple[str, str]:
    return (_pos(e, place)[1], e.uuid)


_LIST_REG = ("p", LIST)
_TREE_REG = ("p", TREE)
#: Render-cache key prefix (never a uuid's first character) of the response objects a
#: cached route object was built from.
_ROUTE_INPUTS = "\x00route-inputs:"


def _list_key(e: Entity) -> tuple[str, str]:
    """`_sort_key(e, LIST)` inlined: it runs for every entity on every render."""
    r = e.regs.get(_LIST_REG)
    v = None if r is None else r.value
    if (type(v) is list or type(v) is tuple) and len(v) == 2:
        return (v[1], e.uuid)
    return (_NO_PLACE[1], e.uuid)


def _object(e: Entity, children: dict[str, Any]) -> dict[str, Any]:
    """Build one entity's JSON object in its key order; `children` are computed collections."""
    order = e.get(("k",), None)
    keys: list[str] = list(order) if isinstance(order, list | tuple) else []
    fields: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for rid, r in e.regs.items():
        if rid[0] != "v" or r.value is ABSENT:
            continue
        if len(rid) == 2:
            fields[rid[1]] = r.value
        else:
            nested.setdefault(rid[1], {})[rid[2]] = r.value
    seen = set(keys)
    extra = sorted(k for k in fields if k not in seen)
    extra += [k for k in children if k not in seen and k not in fields]
    out: dict[str, Any] = {}
    for k in keys + extra:
        if k in out:
            continue
        if k == "uuid":
            out["uuid"] = e.uuid
        elif k in children:
            out[k] = children[k]
        elif k in fields:
            v = fields[k]
            if isinstance(v, dict):  # nested object marker: one register per key
                sub = nested.get(k, {})
                sorder = e.get(("k", k), None)
                skeys = list(sorder) if isinstance(sorder, list | tuple) else []
                sseen = set(skeys)
                obj = {sk: sub[sk] for sk in skeys if sk in sub}
                for sk in sorted(x for x in sub if x not in sseen):
                    obj[sk] = sub[sk]
                out[k] = obj
            else:
                out[k] = v
    if "uuid" not in out:
        out = {"uuid": e.uuid, **out}
    return out


def _tree(state: State, folders: list[Entity], routes: list[Entity]) -> dict[str, list[Entity]]:
    """Children per container ("" = root), repaired: orphans and cycle breakers go last at root."""
    live_folders = {f.uuid: f for f in folders}
    parent: dict[str, str] = {}
    for e in folders + routes:
        c = _pos(e, TREE)[0]
        parent[e.uuid] = c if (c == ROOT or c in live_folders) and c != e.uuid else "#orphan"
    # Break folder cycles: in each cycle the folder whose tree place was written last is cut.
    for f in folders:
        path: list[str] = []
        onpath: set[str] = set()
        cur = f.uuid
        while cur in live_folders and parent.get(cur) not in (ROOT, "#orphan"):
            if cur in onpath:
                cycle = path[path.index(cur):]
                cut = max(cycle, key=lambda u: (live_folders[u].regs[("p", TREE)].stamp, u))
                parent[cut] = "#orphan"
                break
            path.append(cur)
            onpath.add(cur)
            cur = parent[cur]
    kids: dict[str, list[Entity]] = {}
    orphans: list[Entity] = []
    for e in folders + routes:
        p = parent[e.uuid]
        if p == "#orphan":
            orphans.append(e)
        else:
            kids.setdefault(p, []).append(e)
    for lst in kids.values():
        lst.sort(key=lambda e: _sort_key(e, TREE))
    orphans.sort(key=lambda e: _sort_key(e, TREE))
    kids.setdefault(ROOT, []).extend(orphans)
    return kids


def tree_parents(state: State) -> dict[str, str]:
    """The tree container each live route and folder renders in (ROOT for `rootChildren`),
    repairs included: an orphan's or a cycle breaker's is ROOT whatever its register says."""
    live = {k: sorted(state.live(k), key=lambda e: _sort_key(e, LIST)) for k in (FOLDER, ROUTE)}
    tree = _tree(state, live[FOLDER], live[ROUTE])
    return {e.uuid: c for c, kids in tree.items() for e in kids}


def render(state: State) -> dict[str, Any]:
    """The environment document for the current registers.

    Read-only: leaf objects are shared with the State's render cache, so a caller that wants
    to edit the result must copy it first (`copy.deepcopy`). A new top-level object each call.
    """
    env = state.entities.get(state.env_uuid)
    if env is None or not env.live:
        raise ValidationError(f"environment {state.env_uuid} has no live state to render")
    again = _render_again(state, env)
    if again is not None:
        return again
    by_kind: dict[str, list[Entity]] = {k: [] for k in (FOLDER, ROUTE, RESPONSE, BUCKET, CALLBACK)}
    for e in state.entities.values():
        if e.live and e.kind in by_kind:
            by_kind[e.kind].append(e)
    for kind in by_kind:
        if kind != RESPONSE:
            by_kind[kind].sort(key=_list_key)

    # References cleared when their target was deleted (not when it never existed here).
    # Only strings are ids: a peer may have written any JSON value into these fields.
    dead_bucket_ids = {
        _str_id(e) for e in state.entities.values() if e.kind == BUCKET and e.deleted
    } - {_str_id(e) for e in by_kind[BUCKET]}
    dead_bucket_ids.discard(None)
    dead_callbacks = {e.uuid for e in state.entities.values() if e.kind == CALLBACK and e.deleted}

    # Responses are sorted route by route, not all at once: the same order within each
    # route, and no single sort of a 15 MB environment's ~100k responses holding the GIL
    # (and so every other thread, the event loop's included) for 0.1 s (issue 15).
    responses: dict[str, list[Entity]] = {}
    for r in by_kind[RESPONSE]:
        responses.setdefault(_pos(r, LIST)[0], []).append(r)
    for group in responses.values():
        group.sort(key=_list_key)

    tree = _tree(state, by_kind[FOLDER], by_kind[ROUTE])

    def tree_refs(container: str) -> list[dict[str, str | None]]:
        return [{"type": e.kind, "uuid": e.uuid} for e in tree.get(container, [])]

    b = _Builder(state.render_cache, dead_bucket_ids, dead_callbacks, responses)
    children: dict[str, Any] = {
        "folders": [_object(f, {"children": tree_refs(f.uuid)}) for f in by_kind[FOLDER]],
        "routes": [b.route_obj(r) for r in by_kind[ROUTE]],
        "rootChildren": tree_refs(ROOT),
        "data": [b.leaf(x) for x in by_kind[BUCKET]],
        "callbacks": [b.callback_obj(c) for c in by_kind[CALLBACK]],
    }
    # Collections the file never had stay absent while empty (older migrations).
    present = set(env.get(("k",), None) or ())
    for c in COLLECTIONS[ENV]:
        if c.key not in present and not children[c.key]:
            del children[c.key]
    doc = _object(env, children)
    _remember(state, doc, children, by_kind, responses, bool(dead_bucket_ids or dead_callbacks))
    return doc


class _Builder:
    """Entity objects from registers, reusing the State's render cache (see `render`)."""

    def __init__(self, cache: dict[str, dict[str, Any]], dead_bucket_ids: set[str | None],
                 dead_callbacks: set[str], responses: dict[str, list[Entity]]) -> None:
        self.cache = cache
        self.dead_bucket_ids = dead_bucket_ids
        self.dead_callbacks = dead_callbacks
        self.responses = responses

    def leaf(self, e: Entity) -> dict[str, Any]:
        o = self.cache.get(e.uuid)
        if o is None or o is _MARK:
            o = self.cache[e.uuid] = _object(e, {})
        return o

    def response_obj(self, r: Entity) -> dict[str, Any]:
        o = self.leaf(r)
        dead_bucket_ids, dead_callbacks = self.dead_bucket_ids, self.dead_callbacks
        if dead_bucket_ids and _names(o.get("databucketID"), dead_bucket_ids):
            o = dict(o, databucketID="")
        cbs = o.get("callbacks")
        if dead_callbacks and isinstance(cbs, list) and any(
            isinstance(c, dict) and _names(c.get("uuid"), dead_callbacks) for c in cbs
        ):
            o = dict(o, callbacks=[
                c for c in cbs if not (isinstance(c, dict) and _names(c.get("uuid"), dead_callbacks))
            ])
        return o

    def route_obj(self, route: Entity) -> dict[str, Any]:
        cache = self.cache
        rs = self.responses.get(route.uuid, [])
        objs = [self.response_obj(r) for r in rs]
        # A route's object is kept like a leaf's (dropped when the route is touched) and
        # reused while its responses are the very same objects as when it was built: a
        # one-response edit of a 15 MB environment then rebuilds one route, not thousands.
        hit = cache.get(route.uuid)
        built_from = cache.get(_ROUTE_INPUTS + route.uuid)
        if hit is not None and hit is not _MARK and built_from is not None:
            had = built_from["responses"]
            if len(had) == len(objs) and all(a is b for a, b in zip(had, objs, strict=True)):
                return hit
        inputs = list(objs)
        if objs:  # CRUD routes: at most one default (two devices may each have set one)
            _one_default(rs, objs, force=route.get(("v", "type"), None) != "crud")
        o = cache[route.uuid] = _object(route, {"responses": objs})
        cache[_ROUTE_INPUTS + route.uuid] = {"responses": inputs}
        return o

    def callback_obj(self, c: Entity) -> dict[str, Any]:
        o = self.leaf(c)
        if self.dead_bucket_ids and _names(o.get("databucketID"), self.dead_bucket_ids):
            o = dict(o, databucketID="")
        return o


# ---------------------------------------------------------------------------- render again
#
# After a one-value change of a 15 MB environment, rendering it all again walks 25,000
# entities to change one. So a full render leaves a memo (the document, where each leaf and
# route sits in it) and a mark in the render cache for every entity; `State.apply` drops
# the cache entry of every entity it touches. The next render finds the touched entities
# (those without an entry) and, when they are all live leaves (responses, buckets,
# callbacks) or routes that kept their places (and a bucket its id), or the environment
# itself with its key order kept, rebuilds only them and their routes; anything else (a
# create, a delete, a move, a folder edit, deleted references around) renders whole.
# Equal to a full render by construction (tested).

#: Render-cache value marking an entity as rendered (never a real entity object: identity).
_MARK: dict[str, Any] = {}
_MEMO = "\x00render-memo"
#: Kinds `render` reads; a touched entity of another kind (a linked file) changes nothing.
_RENDERED = frozenset((ENV, FOLDER, ROUTE, RESPONSE, BUCKET, CALLBACK))


def _remember(state: State, doc: dict[str, Any], children: dict[str, Any],
              by_kind: dict[str, list[Entity]], responses: dict[str, list[Entity]],
              dead_refs: bool) -> None:
    cache = state.render_cache
    cache.pop(_MEMO, None)
    if dead_refs:
        return  # deleted buckets or callbacks to clear: always rendered whole
    places: dict[str, Any] = {}
    at: dict[str, tuple[str, int]] = {}
    for key, kind in (("routes", ROUTE), ("data", BUCKET), ("callbacks", CALLBACK)):
        for i, e in enumerate(by_kind[kind]):
            at[e.uuid] = (key, i)
    for kind in (RESPONSE, BUCKET, CALLBACK, ROUTE):
        for e in by_kind[kind]:
            r = e.regs.get(_LIST_REG)
            places[e.uuid] = None if r is None else r.value
    trees = {}
    for e in by_kind[ROUTE]:
        r = e.regs.get(_TREE_REG)
        trees[e.uuid] = None if r is None else r.value
    ids = {e.uuid: _str_id(e) for e in by_kind[BUCKET]}
    for u in state.entities:
        if u not in cache:
            cache[u] = _MARK
    env = state.entities[state.env_uuid]
    cache[_MEMO] = {"memo": _Memo(doc, dict(children), len(state.entities), at, places, ids,
                                  {k: [r.uuid for r in v] for k, v in responses.items()},
                                  trees, env.get(("k",), None))}


class _Memo:
    """What the last full render built, for `_render_again`."""

    def __init__(self, doc: dict[str, Any], children: dict[str, Any], count: int,
                 at: dict[str, tuple[str, int]], places: dict[str, Any],
                 ids: dict[str, str | None], responses: dict[str, list[str]],
                 trees: dict[str, Any], env_keys: Any) -> None:
        self.doc = doc
        #: Each route's tree place, and the environment's key order, as last rendered.
        self.trees = trees
        self.env_keys = env_keys
        self.children = children
        self.count = count
        self.at = at
        self.places = places
        self.ids = ids
        self.responses = responses


def _render_again(state: State, env: Entity) -> dict[str, Any] | None:
    """The document rebuilt from the last render's memo, or None: render whole."""
    cache = state.render_cache
    entry = cache.get(_MEMO)
    if entry is None:
        return None
    memo: _Memo = entry["memo"]
    if len(state.entities) != memo.count:
        return None
    entities = state.entities
    touched = [u for u in entities if u not in cache]
    routes: set[str] = set()
    leaves: list[Entity] = []
    env_touched = False
    for u in touched:
        e = entities[u]
        if e.kind not in _RENDERED:
            continue
        if e is env:  # its fields: rebuilt below anyway; its key order decides collections
            if env.get(("k",), None) != memo.env_keys:
                return None
            env_touched = True
            continue
        if e.kind not in (RESPONSE, BUCKET, CALLBACK, ROUTE) or not e.live:
            return None
        r = e.regs.get(_LIST_REG)
        if (None if r is None else r.value) != memo.places.get(u, _MARK):
            return None
        if e.kind == ROUTE:  # a route's own fields: rebuilt with its responses
            t = e.regs.get(_TREE_REG)
            if memo.at.get(u, ("",))[0] != "routes" or \
                    (None if t is None else t.value) != memo.trees.get(u, _MARK):
                return None
            routes.add(u)
            continue
        if e.kind == RESPONSE:
            container = _pos(e, LIST)[0]
            if memo.at.get(container, ("",))[0] != "routes":
                return None  # not shown (its route is gone): nothing else knows
            routes.add(container)
        else:
            if e.kind == BUCKET and _str_id(e) != memo.ids.get(u):
                return None
            leaves.append(e)
    for u in touched:
        cache.setdefault(u, _MARK)
    if not routes and not leaves and not env_touched:
        return dict(memo.doc)
    responses = {
        rt: sorted((entities[x] for x in memo.responses.get(rt, ())), key=_list_key)
        for rt in routes}
    b = _Builder(cache, set(), set(), responses)
    children = dict(memo.children)
    for rt in routes:
        key, i = memo.at[rt]
        lst = children[key] = list(children[key]) if children[key] is memo.children[key] \
            else children[key]
        lst[i] = b.route_obj(entities[rt])
    for e in leaves:
        key, i = memo.at[e.uuid]
        lst = children[key] = list(children[key]) if children[key] is memo.children[key] \
            else children[key]
        lst[i] = b.leaf(e) if e.kind == BUCKET else b.callback_obj(e)
    doc = _object(env, children)
    memo.doc, memo.children = doc, children
    return doc


def _str_id(e: Entity) -> str | None:
    v = e.get(("v", "id"), None)
    return v if isinstance(v, str) else None


def _names(ref: Any, ids: Set[str | None]) -> bool:
    """Is `ref` one of `ids`? False for non-strings (unhashable lists and objects included)."""
    return isinstance(ref, str) and ref in ids


def _one_default(rs: list[Entity], objs: list[dict[str, Any]], force: bool = True) -> None:
    """Exactly one `default: true`: the one whose `default` register was set last, else (when
    `force`; CRUD routes may have none) the first."""
    best = -1
    best_stamp = None
    for i, r in enumerate(rs):
        reg = r.regs.get(("v", "default"))
        if reg is not None and reg.value is True and (best_stamp is None or reg.stamp > best_stamp):
            best, best_stamp = i, reg.stamp
    if best < 0:
        if not force:
            return
        best = 0
    for i, o in enumerate(objs):
        want = i == best
        if ("default" in o or want) and o.get("default") is not want:
            objs[i] = dict(o, default=want)  # cached objects are shared: copy, never mutate


def render_text(state: State, layout: Layout) -> str:
    """The environment file's text for the current registers, in `layout`, reusing the text of
    every entity that did not change since the last call (see `jsfmt.dumps`)."""
    return dumps(render(state), layout, state.text_cache.setdefault(layout, {}))
