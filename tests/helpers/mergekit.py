"""What the merge-case tests share (issue 14: moved out of test_model_merge_cases so the
other model tests import a helper, not a test module): the example environments as pytest
params, the invariants every merged document keeps, tree editing as Mockoon's UI does it, and
change sets applied in every delivery order."""


from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mocksync.model import (
    State,
    diff,
    dumps,
    merge3,
    render,
    snapshot_ops,
    state_from_doc,
    validate_ops,
)
from mocksync.model.ops import to_wire

from envfactory import clone, find, small_env
from envfactory import response as make_response
from envfactory import route as make_route

try:  # written concurrently by another engineer: used when present, never relied upon alone
    from mocksync.devtools.envgen import check_env_invariants
except ImportError:  # pragma: no cover
    check_env_invariants = None

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "environments"


# ============================================================================ environments


def load_envs() -> list[tuple[str, dict[str, Any]]]:
    """The example environments found on disk, then small_env (always there)."""
    envs = [(p.stem, json.loads(p.read_text("utf-8"))) for p in sorted(EXAMPLES.glob("*.json"))
            if p.stat().st_size < 1_000_000]  # the >1 MB one: round trips, and one merge below
    envs.append(("small_env", small_env()))
    return envs


ENVS = load_envs()


def envs_where(pred) -> list:
    """pytest params of the environments that have what a case needs; never empty."""
    chosen = [pytest.param(clone(doc), id=name) for name, doc in ENVS if pred(doc)]
    assert chosen, "no environment has what this case needs (small_env should)"
    return chosen


# ============================================================================ invariants


def all_entities(doc):
    yield "environment", doc
    for key in ("folders", "routes", "data", "callbacks"):
        for obj in doc.get(key, []):
            yield key, obj
            for r in obj.get("responses", []) if key == "routes" else []:
                yield "response", r


def tree_problems(doc: dict[str, Any]) -> list[str]:
    """Our own check of the rules docs/design/merge.md's renderer keeps (independent of envgen)."""
    problems = []
    uuids = Counter(obj.get("uuid") for _, obj in all_entities(doc))
    problems += [f"uuid {u} used {n} times" for u, n in uuids.items() if n > 1]
    folders = {f["uuid"]: f for f in doc.get("folders", [])}
    routes = {r["uuid"]: r for r in doc["routes"]}
    seen: Counter[str] = Counter()
    stack = [doc.get("rootChildren", [])]
    reached_folders = set()
    while stack:
        for ref in stack.pop():
            u = ref["uuid"]
            seen[u] += 1
            if ref["type"] == "folder":
                if u not in folders:
                    problems.append(f"tree names missing folder {u}")
                elif u not in reached_folders:
                    reached_folders.add(u)
                    stack.append(folders[u]["children"])
            elif ref["type"] == "route":
                if u not in routes:
                    problems.append(f"tree names missing route {u}")
            else:
                problems.append(f"tree ref of type {ref['type']!r}")
    for u in list(folders) + list(routes):
        if seen[u] != 1:
            problems.append(f"{u} is in the tree {seen[u]} times (reachable from the root)")
    all_refs = Counter(c["uuid"] for f in folders.values() for c in f["children"])
    all_refs.update(c["uuid"] for c in doc.get("rootChildren", []))
    problems += [f"{u} referenced {n} times in the tree" for u, n in all_refs.items() if n != 1]
    bucket_ids = {b["id"] for b in doc.get("data", [])}
    callback_uuids = {c["uuid"] for c in doc.get("callbacks", [])}
    for r in doc["routes"]:
        defaults = [x["uuid"] for x in r["responses"] if x.get("default") is True]
        if r.get("type") != "crud" and r["responses"] and len(defaults) != 1:
            problems.append(f"route {r['uuid']} has {len(defaults)} default responses")
        if r.get("type") == "crud" and len(defaults) > 1:
            problems.append(f"crud route {r['uuid']} has {len(defaults)} default responses")
        for x in r["responses"]:
            if x.get("databucketID") and x["databucketID"] not in bucket_ids:
                problems.append(f"response {x['uuid']} names missing bucket {x['databucketID']}")
            for inv in x.get("callbacks", []):
                if inv["uuid"] not in callback_uuids:
                    problems.append(f"response {x['uuid']} invokes missing callback {inv['uuid']}")
    for c in doc.get("callbacks", []):
        if c.get("databucketID") and c["databucketID"] not in bucket_ids:
            problems.append(f"callback {c['uuid']} names missing bucket {c['databucketID']}")
    return problems


def assert_valid(doc: dict[str, Any]) -> None:
    problems = tree_problems(doc)
    if check_env_invariants is not None:
        # small_env's callback keeps a hand-made key order; that is allowed (a register).
        problems += [p for p in check_env_invariants(doc, strict_keys=False)
                     if "not in Mockoon's order" not in p]
    assert not problems, problems
    # The render is normalised: a fixed point of parse -> registers -> render.
    assert render(state_from_doc(doc)) == doc


def merged(base, ours, theirs, prefer="ours"):
    res = merge3(base, ours, theirs, prefer)
    assert_valid(res.doc)
    assert res.doc == render(res.state)
    return res


# ============================================================================ doc editing


def new_uuid(n: int) -> str:
    return f"aaaaaaaa-0000-4000-8000-{n:012d}"


def new_route(n: int, endpoint: str, n_responses: int = 1) -> dict[str, Any]:
    resps = [make_response(0, default=(i == 0), label=f"r{i}") for i in range(n_responses)]
    for i, r in enumerate(resps):
        r["uuid"] = new_uuid(n + 1 + i)
    r = make_route(0, endpoint, resps)
    r["uuid"] = new_uuid(n)
    return r


def children_of(doc, container: str | None) -> list[dict[str, str]]:
    if container is None:
        return doc["rootChildren"]
    return find(doc, container)["children"]


def parent_of(doc, uuid: str) -> str | None:
    for ref in doc["rootChildren"]:
        if ref["uuid"] == uuid:
            return None
    for f in doc["folders"]:
        if any(c["uuid"] == uuid for c in f["children"]):
            return f["uuid"]
    raise KeyError(uuid)


def tree_order(doc, container: str | None) -> list[str]:
    return [c["uuid"] for c in children_of(doc, container)]


def detach(doc, uuid: str) -> dict[str, str]:
    kids = children_of(doc, parent_of(doc, uuid))
    i = next(i for i, c in enumerate(kids) if c["uuid"] == uuid)
    return kids.pop(i)


def move(doc, uuid: str, container: str | None, index: int | None = None) -> None:
    ref = detach(doc, uuid)
    kids = children_of(doc, container)
    kids.insert(len(kids) if index is None else index, ref)


def add_route(doc, route: dict, container: str | None, index: int | None = None) -> None:
    doc["routes"].append(route)
    kids = children_of(doc, container)
    kids.insert(len(kids) if index is None else index, {"type": "route", "uuid": route["uuid"]})


def delete_route(doc, uuid: str) -> None:
    detach(doc, uuid)
    doc["routes"] = [r for r in doc["routes"] if r["uuid"] != uuid]


def delete_folder(doc, uuid: str) -> list[str]:
    """Delete a folder with everything in it, as Mockoon does; returns the uuids removed."""
    gone = []

    def walk(f):
        for c in f["children"]:
            gone.append(c["uuid"])
            if c["type"] == "folder":
                walk(find(doc, c["uuid"]))

    walk(find(doc, uuid))
    detach(doc, uuid)
    gone.append(uuid)
    doc["folders"] = [f for f in doc["folders"] if f["uuid"] not in gone]
    doc["routes"] = [r for r in doc["routes"] if r["uuid"] not in gone]
    return gone


def descendants(doc, folder: str) -> set[str]:
    out = set()
    for c in find(doc, folder)["children"]:
        out.add(c["uuid"])
        if c["type"] == "folder":
            out |= descendants(doc, c["uuid"])
    return out


def non_crud(doc, min_responses: int = 1) -> list[dict]:
    return [r for r in doc["routes"]
            if r["type"] != "crud" and len(r["responses"]) >= min_responses]


def default_index(route) -> int:
    return next(i for i, x in enumerate(route["responses"]) if x["default"] is True)


def referenced_bucket(doc) -> dict | None:
    used = {x["databucketID"] for r in doc["routes"] for x in r["responses"]}
    return next((b for b in doc.get("data", []) if b["id"] in used), None)


def invoked_callback(doc) -> dict | None:
    used = {i["uuid"] for r in doc["routes"] for x in r["responses"] for i in x["callbacks"]}
    return next((c for c in doc.get("callbacks", []) if c["uuid"] in used), None)


def all_responses(doc):
    return [x for r in doc["routes"] for x in r["responses"]]


# ============================================================================ State API


@dataclass(frozen=True)
class CS:
    """A change set as the sync layer would hand it to the model."""

    ops: tuple
    stamp: tuple[int, str]
    origin: tuple[str, int]
    deps: dict[str, int]


def wire(ops) -> tuple:
    """Ops as they travel (wire lists), re-validated as a receiver does."""
    return tuple(validate_ops([to_wire(op) for op in ops]))


def genesis(doc) -> CS:
    return CS(wire(snapshot_ops(doc, random.Random(0))), (1, "g"), ("g", 1), {})


def state_of(*changesets: CS, env_uuid: str) -> State:
    s = State(env_uuid)
    for cs in changesets:
        s.apply(cs.ops, cs.stamp, cs.origin, cs.deps)
    return s


def edit(base_state: State, new_doc, device: str, hlc: int, seq: int = 1,
         deps: dict | None = None) -> CS:
    ops = diff(render(base_state), new_doc, base_state, random.Random(f"{device}{hlc}"))
    return CS(wire(ops), (hlc, device), (device, seq), {"g": 1} if deps is None else deps)


def every_order(env_uuid: str, g: CS, changesets: list[CS]) -> tuple[dict, list[State]]:
    """Apply the change sets after genesis in every order (each once, then all again as
    duplicates): all orders must render the same document. Returns it and the states."""
    docs, states = [], []
    for perm in itertools.permutations(changesets):
        s = state_of(g, *perm, env_uuid=env_uuid)
        for cs in reversed(perm):  # duplicates, late
            s.apply(cs.ops, cs.stamp, cs.origin, cs.deps)
        docs.append(dumps(render(s)))
        states.append(s)
    assert len(set(docs)) == 1, "delivery order changed the result"
    doc = json.loads(docs[0])
    assert_valid(doc)
    return doc, states


def conflict_ids(s: State) -> set[str]:
    return {c.id for c in s.conflicts}
