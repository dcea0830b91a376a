"""The linked-file view of a State is kept while changes cannot touch it (issue 15).

`LinkedFiles` used to walk every entity of an environment (and stat every linked file) after
each change; it now keeps what `linked_paths_of_state` and `file_entities` said and asks
`files.links_touched` whether the entities touched since (`State.touched_since`) can have
changed it. The property that matters: whenever it says no, a fresh walk gives the same."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tinydb import TinyDB

from mocksync.agent import linked as linked_mod
from mocksync.agent.envfiles import EnvRuntime
from mocksync.agent.linked import LinkedFiles
from mocksync.devtools.envgen import generate_env
from mocksync.model import diff, state_from_doc
from mocksync.model.files import (
    file_entities,
    file_uuid,
    link_watch,
    linked_paths,
    linked_paths_memo,
    linked_paths_of_state,
    links_touched,
    tls_registers,
)

ENV = generate_env(40_000, seed=3)


def _with_links(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for i, route in enumerate(doc["routes"][:4]):
        r = route["responses"][0]
        r["bodyType"], r["filePath"] = "FILE", f"fixtures/r{i}.json"
    return doc


def test_touched_since_lists_what_changed_after_a_mark_most_recent_first() -> None:
    state = state_from_doc(copy.deepcopy(ENV), rng=random.Random(0))
    mark = state.touches
    assert state.touched_since(mark) == []
    a, b = (ENV["routes"][i]["responses"][0]["uuid"] for i in (0, 1))
    state.apply([("s", a, ("v", "label"), "x")], (10**12, "B"))
    state.apply([("s", b, ("v", "label"), "y")], (10**12 + 1, "B"))
    assert state.touched_since(mark) == [b, a]
    later = state.touches
    state.apply([("s", a, ("v", "label"), "z")], (10**12 + 2, "B"))
    assert state.touched_since(later) == [a]  # touched again: moved to the front, once
    assert state.touched_since(mark) == [a, b]


def test_everyday_edits_do_not_touch_links_and_link_edits_do() -> None:
    doc = _with_links(ENV)
    state = state_from_doc(doc, rng=random.Random(0))
    refs = linked_paths_of_state(state)
    watched, tls = link_watch(state, refs), tls_registers(state)
    assert len(refs) >= 4 and tls  # (a Mockoon environment always has tlsOptions)

    def touches(ops: list[tuple]) -> bool:
        mark = state.touches
        state.apply(ops, (10**12 + state.touches, "B"))
        return links_touched(state, state.touched_since(mark), watched, tls)

    linked = doc["routes"][0]["responses"][0]["uuid"]
    quiet = next(r for r in doc["routes"] if all(x.get("bodyType") != "FILE"
                                                 for x in r["responses"]))
    plain = quiet["responses"][0]["uuid"]
    assert not touches([("s", plain, ("v", "label"), "a label")])
    assert not touches([("s", quiet["uuid"], ("v", "endpoint"), "elsewhere")])
    assert not touches([("s", doc["uuid"], ("v", "port"), 4000)])
    assert not touches([("s", plain, ("v", "filePath"), "x.json")])  # not a FILE body
    assert touches([("s", plain, ("v", "bodyType"), "FILE")])
    assert touches([("s", linked, ("v", "filePath"), "fixtures/other.json")])
    assert touches([("s", linked, ("v", "label"), "its label")])  # (a referencing one)
    assert touches([("d", doc["routes"][1]["uuid"])])  # the route of a FILE response
    assert touches([("s", doc["uuid"], ("v", "tlsOptions", "enabled"), True)])
    rel = "fixtures/r0.json"
    assert touches([("c", file_uuid(doc["uuid"], rel), "file", [(("v", "path"), rel)])])


_edit_kinds = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 10**6)), min_size=1,
                       max_size=8)


@settings(max_examples=30, deadline=None)
@given(_edit_kinds)
def test_a_kept_view_always_equals_a_fresh_walk(edits: list[tuple[int, int]]) -> None:
    doc = _with_links(ENV)
    state = state_from_doc(copy.deepcopy(doc), rng=random.Random(0))
    refs, files = linked_paths_of_state(state), file_entities(state)
    mark, watched, tls = state.touches, link_watch(state, refs), tls_registers(state)
    for n, (kind, pick) in enumerate(edits):
        base = copy.deepcopy(doc)
        route = doc["routes"][pick % len(doc["routes"])]
        resp = route["responses"][pick % len(route["responses"])]
        if kind == 0:
            resp["label"] = f"label {pick}"
        elif kind == 1:
            resp["bodyType"] = "FILE" if resp.get("bodyType") != "FILE" else "INLINE"
        elif kind == 2:
            resp["filePath"] = f"fixtures/p{pick % 5}.json"
        elif kind == 3 and len(doc["routes"]) > 2:
            doc["routes"].remove(route)
            doc["rootChildren"] = [c for c in doc["rootChildren"] if c["uuid"] != route["uuid"]]
            for f in doc["folders"]:
                f["children"] = [c for c in f["children"] if c["uuid"] != route["uuid"]]
        elif kind == 4:
            doc["routes"].insert(0, doc["routes"].pop(pick % len(doc["routes"])))
        elif kind == 5:
            route["endpoint"] = f"e/{pick}"
        elif kind == 6:
            doc["port"] = 3000 + pick % 1000
            if pick % 3 == 0:
                doc["tlsOptions"] = dict(doc["tlsOptions"], enabled=True, type="CERT",
                                         certPath=f"certs/{pick % 4}.pem")
        else:
            rel = f"fixtures/p{pick % 5}.json"
            state.apply([("c", file_uuid(doc["uuid"], rel), "file", [(("v", "path"), rel)])],
                        (10**12 + 10 * n + 5, "C"))
        state.apply(diff(base, doc, state, random.Random(n)), (10**12 + 10 * n, "B"))
        if links_touched(state, state.touched_since(mark), watched, tls):
            refs, files = linked_paths_of_state(state), file_entities(state)
            watched, tls = link_watch(state, refs), tls_registers(state)
        mark = state.touches
        assert refs == linked_paths_of_state(state)
        assert [(r.origin, r.armed_by) for r in refs] == [
            (r.origin, r.armed_by) for r in linked_paths_of_state(state)]
        assert files == file_entities(state)


def test_route_references_are_remembered_by_route_object() -> None:
    """A save's quota check (`LinkedFiles.quota_bytes`) sees the same references as a full
    walk, reusing those of every route object it saw last time (reparse shares them)."""
    doc = _with_links(ENV)
    memo: dict = {}
    assert linked_paths_memo(doc, memo) == linked_paths(doc)
    assert len(memo) == len(doc["routes"])
    # The next save: a new top object sharing every route but one, whose response now links.
    nxt = dict(doc, routes=list(doc["routes"]))
    changed = copy.deepcopy(doc["routes"][5])
    changed["responses"][0].update(bodyType="FILE", filePath="fixtures/new.json")
    nxt["routes"][5] = changed
    sentinel = doc["routes"][7]
    memo[id(sentinel)] = (sentinel, ["remembered"])  # what the memo says is what is used
    got = linked_paths_memo(nxt, memo)
    assert "remembered" in got
    assert [r for r in got if r != "remembered"] == [
        r for r in linked_paths(nxt) if r not in linked_paths(sentinel_doc(sentinel, doc))]
    assert any(r.path == "fixtures/new.json" for r in got)
    assert memo[id(changed)][0] is changed and id(doc["routes"][5]) not in memo


def sentinel_doc(route: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    return {"uuid": doc["uuid"], "routes": [route]}


class _StoreStub:
    def __init__(self, state: Any) -> None:
        self.st = state

    def loaded_state(self, env: str) -> Any:
        return self.st

    def state(self, env: str) -> Any:
        return self.st


class _WorkerHost:
    """The `LinkedHost` members `status` uses, with a store worker that runs jobs on demand."""

    def __init__(self, folder: Path, rt: Any, state: Any) -> None:
        self.folder, self.device, self.watcher, self.rng = folder, "d-here", None, None
        self.store = _StoreStub(state)
        self.rt = rt
        self.jobs: list[Any] = []

    def env(self, uuid: str) -> Any:
        return self.rt if uuid == self.rt.uuid else None

    def env_at(self, path: Path) -> Any:
        return self.rt if path == self.rt.path else None

    def spawn_on_worker(self, fn: Any, *args: Any) -> bool:
        self.jobs.append((fn, args))
        return True


def test_status_walks_a_big_environment_on_the_worker_never_on_the_loop(
        tmp_path: Path, monkeypatch: Any) -> None:
    """Issue 15: `status` answers on the loop; a State too big to walk there has its linked
    files planned on the store worker, and the answer uses the last plan meanwhile."""
    monkeypatch.setattr(linked_mod, "MAX_LOOP_WALK_ENTITIES", 20)
    doc = _with_links(ENV)
    state = state_from_doc(copy.deepcopy(doc), rng=random.Random(0))
    assert len(state.entities) > 20
    rt = EnvRuntime(doc["uuid"], "s1", tmp_path / "big.json", name="Big")
    host = _WorkerHost(tmp_path, rt, state)
    lf = LinkedFiles(host, TinyDB(tmp_path / "docs.json"))  # type: ignore[arg-type]
    assert lf.status(rt) == {"linked": []}  # nothing planned yet: asked of the worker
    assert len(host.jobs) == 1
    assert lf.status(rt) == {"linked": []} and len(host.jobs) == 1  # (asked once)
    fn, args = host.jobs.pop()
    fn(*args)  # the worker's turn
    rows = lf.status(rt)["linked"]
    assert {r["rel"] for r in rows} >= {f"fixtures/r{i}.json" for i in range(4)}
    # A label edit keeps the view: answered here, no job.
    label_of = doc["routes"][9]["responses"][0]["uuid"]
    state.apply([("s", label_of, ("v", "label"), "x")], (10**12, "B"))
    assert lf.status(rt)["linked"] == rows and not host.jobs
    # A new link needs a walk: the old answer now, the new one once the worker made it.
    plain = next(r for r in doc["routes"] if all(x.get("bodyType") != "FILE"
                                                 for x in r["responses"]))["responses"][0]
    state.apply([("s", plain["uuid"], ("v", "bodyType"), "FILE"),
                 ("s", plain["uuid"], ("v", "filePath"), "fixtures/late.json")],
                (10**12 + 1, "B"))
    assert lf.status(rt)["linked"] == rows and len(host.jobs) == 1
    fn, args = host.jobs.pop()
    fn(*args)
    assert "fixtures/late.json" in {r["rel"] for r in lf.status(rt)["linked"]}
