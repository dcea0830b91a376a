"""Convergence: 3-5 replicas of one environment edit it concurrently (the edits a person makes
in Mockoon), exchange change sets through a network that reorders, delays and duplicates them,
and must all end with the same file, a valid one, in which every register holds the value of
its greatest-stamped write.

Every failing example hypothesis prints is a complete recipe (its plan holds every seed), and
`print_blob` adds a `@reproduce_failure` line. `MOCKSYNC_LONG=1` (make test-long) runs the
`long` variant with 3000 examples per environment.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from mocksync.model import (
    ABSENT,
    State,
    diff,
    dumps,
    render,
    snapshot_ops,
    to_wire,
    validate_ops,
)
from mocksync.model.state import close_deps

from envfactory import small_env
from helpers.mergekit import assert_valid

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "environments"
LONG = bool(os.environ.get("MOCKSYNC_LONG"))


def _envs() -> dict[str, dict[str, Any]]:
    envs = {"small_env": small_env()}
    pet = EXAMPLES / "petstore.json"
    if pet.exists():
        envs["petstore"] = json.loads(pet.read_text("utf-8"))
    return envs


ENVS = _envs()


def test_at_least_one_environment_is_used():
    assert "small_env" in ENVS and ENVS["small_env"]["routes"]
    if (EXAMPLES / "petstore.json").exists():
        assert "petstore" in ENVS


# ============================================================================ change sets


@dataclass(frozen=True)
class CS:
    ops: tuple
    stamp: tuple[int, str]
    origin: tuple[str, int]
    deps: dict[str, int] = field(hash=False, compare=False)


def through_the_wire(ops) -> tuple:
    """Ops as a receiver gets them: wire lists, JSON round trip, validated."""
    return tuple(validate_ops(json.loads(json.dumps([to_wire(op) for op in ops]))))


class Replica:
    def __init__(self, device: str, env: dict, genesis: CS) -> None:
        self.device = device
        self.state = State(env["uuid"])
        self.hlc = 0
        self.seq = 0
        self.applied: set[tuple[str, int]] = set()
        self.vv: dict[str, int] = {}
        self.receive(genesis)

    def receive(self, cs: CS) -> None:
        self.state.apply(cs.ops, cs.stamp, cs.origin, cs.deps)
        self.hlc = max(self.hlc, cs.stamp[0])
        self.applied.add(cs.origin)
        dev, n = cs.origin[0], self.vv.get(cs.origin[0], 0)
        while (dev, n + 1) in self.applied:  # version vector: the contiguous prefix only
            n += 1
        self.vv[dev] = n

    def edit(self, kind: str, rng: random.Random) -> CS | None:
        base = render(self.state)
        edited = copy.deepcopy(base)  # rendered objects are shared with the render cache
        expect = EDITS[kind](edited, rng)
        if expect is None:
            return None
        ops = diff(base, edited, self.state, rng)
        if not ops:
            return None
        self.hlc += 1
        self.seq += 1
        # As the store stamps them: what we applied, closed over what those had seen.
        deps = close_deps(self.vv, None, self.device, self.state.deps_of)
        cs = CS(through_the_wire(ops), (self.hlc, self.device), (self.device, self.seq), deps)
        self.receive(cs)
        # The diff is exact: our own file, read back from the registers, is what we saved
        # (normalised the way Mockoon itself would when the edit removed a bucket/callback).
        got = render(self.state)
        assert got == expect, f"{kind}: own edit did not survive diff + apply"
        return cs


# ============================================================================ edits
# Each edit changes a rendered doc in place as a person would in Mockoon, and returns the
# document the renderer must give back (None: nothing to do).


def _uuid(rng: random.Random) -> str:
    n = rng.getrandbits(128)
    n = (n & ~(0xF << 76)) | (0x4 << 76)
    n = (n & ~(0x3 << 62)) | (0x2 << 62)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _text(rng: random.Random) -> str:
    return "".join(rng.choice("abcxyz/ é☕\"\\\n{}") for _ in range(rng.randint(0, 8)))


def _containers(doc) -> list[tuple[str | None, list]]:
    return [(None, doc["rootChildren"])] + [(f["uuid"], f["children"]) for f in doc["folders"]]


def _holder(doc, uuid: str) -> list:
    for _, kids in _containers(doc):
        if any(c["uuid"] == uuid for c in kids):
            return kids
    raise KeyError(uuid)


def _detach(doc, uuid: str) -> dict:
    kids = _holder(doc, uuid)
    i = next(i for i, c in enumerate(kids) if c["uuid"] == uuid)
    return kids.pop(i)


def _subtree(doc, folder: str) -> set[str]:
    by = {f["uuid"]: f for f in doc["folders"]}
    out, stack = set(), [folder]
    while stack:
        f = stack.pop()
        out.add(f)
        stack += [c["uuid"] for c in by[f]["children"] if c["type"] == "folder"]
    return out


def _response(rng, default: bool) -> dict:
    return {
        "uuid": _uuid(rng), "body": _text(rng), "latency": 0, "statusCode": 200,
        "label": _text(rng), "headers": [], "bodyType": "INLINE", "filePath": "",
        "databucketID": "", "sendFileAsBody": False, "rules": [], "rulesOperator": "OR",
        "disableTemplating": False, "fallbackTo404": False, "default": default,
        "crudKey": "id", "callbacks": [],
    }


def edit_property(doc, rng):
    routes = doc["routes"]
    choices = [("route", r) for r in routes] + [
        ("response", x) for r in routes for x in r["responses"]] + [
        ("bucket", b) for b in doc.get("data", [])]
    if not choices:
        return None
    what, obj = rng.choice(choices)
    if what == "route":
        key = rng.choice(["endpoint", "documentation", "streamingInterval"])
        obj[key] = rng.randint(0, 5000) if key == "streamingInterval" else _text(rng)
    elif what == "response":
        key = rng.choice(["body", "label", "statusCode", "latency"])
        obj[key] = {"statusCode": lambda: rng.choice([200, 201, 204, 400, 404, 500]),
                    "latency": lambda: rng.randint(0, 900)}.get(key, lambda: _text(rng))()
    else:
        obj[rng.choice(["name", "documentation", "value"])] = _text(rng)
    return doc


def add_route(doc, rng):
    n = rng.randint(1, 3)
    route = {
        "uuid": _uuid(rng), "type": "http", "documentation": "", "method": "get",
        "endpoint": "new/" + _text(rng), "responses": [_response(rng, i == 0) for i in range(n)],
        "responseMode": None, "streamingMode": None, "streamingInterval": 0,
    }
    doc["routes"].insert(rng.randint(0, len(doc["routes"])), route)
    _, kids = rng.choice(_containers(doc))
    kids.insert(rng.randint(0, len(kids)), {"type": "route", "uuid": route["uuid"]})
    return doc


def delete_route(doc, rng):
    if not doc["routes"]:
        return None
    r = doc["routes"].pop(rng.randrange(len(doc["routes"])))
    _detach(doc, r["uuid"])
    return doc


def delete_folder(doc, rng):
    if not doc["folders"]:
        return None
    f = rng.choice(doc["folders"])["uuid"]
    gone = _subtree(doc, f)
    for g in list(gone):  # routes inside go too, as in Mockoon
        for c in next(x for x in doc["folders"] if x["uuid"] == g)["children"]:
            if c["type"] == "route":
                gone.add(c["uuid"])
    _detach(doc, f)
    doc["folders"] = [x for x in doc["folders"] if x["uuid"] not in gone]
    doc["routes"] = [x for x in doc["routes"] if x["uuid"] not in gone]
    return doc


def move_route(doc, rng):
    if not doc["routes"]:
        return None
    ref = _detach(doc, rng.choice(doc["routes"])["uuid"])
    _, kids = rng.choice(_containers(doc))
    kids.insert(rng.randint(0, len(kids)), ref)
    return doc


def move_folder(doc, rng):
    if not doc["folders"]:
        return None
    f = rng.choice(doc["folders"])["uuid"]
    inside = _subtree(doc, f)
    ref = _detach(doc, f)
    targets = [(c, kids) for c, kids in _containers(doc) if c not in inside]
    _, kids = rng.choice(targets)
    kids.insert(rng.randint(0, len(kids)), ref)
    return doc


def reorder_responses(doc, rng):
    routes = [r for r in doc["routes"] if len(r["responses"]) >= 2]
    if not routes:
        return None
    rs = rng.choice(routes)["responses"]
    if rng.random() < 0.5:
        rs.insert(rng.randint(0, len(rs) - 1), rs.pop(rng.randrange(len(rs))))
    else:
        rng.shuffle(rs)
    return doc


def set_default(doc, rng):
    routes = [r for r in doc["routes"] if len(r["responses"]) >= 2]
    if not routes:
        return None
    rs = rng.choice(routes)["responses"]
    current = [i for i, x in enumerate(rs) if x["default"]]
    new = rng.choice([i for i in range(len(rs)) if i not in current])
    for i, x in enumerate(rs):
        x["default"] = i == new
    return doc


def add_response(doc, rng):
    if not doc["routes"]:
        return None
    r = rng.choice(doc["routes"])
    r["responses"].insert(rng.randint(0, len(r["responses"])), _response(rng, not r["responses"]
                                                                          and r["type"] != "crud"))
    return doc


def delete_response(doc, rng):
    routes = [r for r in doc["routes"] if len(r["responses"]) >= 2]
    if not routes:
        return None
    r = rng.choice(routes)
    gone = r["responses"].pop(rng.randrange(len(r["responses"])))
    if gone["default"] and r["type"] != "crud":
        r["responses"][0]["default"] = True  # as Mockoon does
    return doc


def edit_tls(doc, rng):
    tls = doc["tlsOptions"]
    for key in rng.sample(sorted(tls), rng.randint(1, 2)):
        if key == "enabled":
            tls[key] = not tls[key]
        elif key == "type":
            tls[key] = "PFX" if tls[key] == "CERT" else "CERT"
        else:
            tls[key] = _text(rng)
    return doc


def edit_headers(doc, rng):
    holders = [doc] + [x for r in doc["routes"] for x in r["responses"]]
    h = rng.choice(holders)
    if h["headers"] and rng.random() < 0.4:
        drop = rng.randrange(len(h["headers"]))
        h["headers"] = [x for i, x in enumerate(h["headers"]) if i != drop]
    else:
        h["headers"] = h["headers"] + [{"key": "X-" + _text(rng), "value": _text(rng)}]
    return doc


def add_bucket(doc, rng):
    doc["data"].insert(rng.randint(0, len(doc["data"])), {
        "uuid": _uuid(rng), "id": f"{rng.getrandbits(32):08x}", "name": _text(rng),
        "documentation": "", "value": "[]"})
    return doc


def use_bucket(doc, rng):
    """Point a response or a callback at a bucket (races a concurrent delete of it)."""
    if not doc["data"]:
        return None
    holders = [x for r in doc["routes"] for x in r["responses"]] + doc.get("callbacks", [])
    if not holders:
        return None
    rng.choice(holders)["databucketID"] = rng.choice(doc["data"])["id"]
    return doc


def delete_bucket(doc, rng):
    """Delete a bucket and leave references to it: the renderer must clear them."""
    if not doc["data"]:
        return None
    b = doc["data"].pop(rng.randrange(len(doc["data"])))
    expect = copy.deepcopy(doc)
    for x in [x for r in expect["routes"] for x in r["responses"]] + expect.get("callbacks", []):
        if x["databucketID"] == b["id"] and b["id"] not in {d["id"] for d in doc["data"]}:
            x["databucketID"] = ""
    return expect


def invoke_callback(doc, rng):
    if not doc.get("callbacks") or not doc["routes"]:
        return None
    x = rng.choice([x for r in doc["routes"] for x in r["responses"]] or [None])
    if x is None:
        return None
    x["callbacks"] = x["callbacks"] + [{"uuid": rng.choice(doc["callbacks"])["uuid"],
                                        "latency": rng.randint(0, 9)}]
    return doc


def delete_callback(doc, rng):
    if not doc.get("callbacks"):
        return None
    c = doc["callbacks"].pop(rng.randrange(len(doc["callbacks"])))
    expect = copy.deepcopy(doc)
    for r in expect["routes"]:
        for x in r["responses"]:
            x["callbacks"] = [i for i in x["callbacks"] if i["uuid"] != c["uuid"]]
    return expect


EDITS: dict[str, Callable[[dict, random.Random], dict | None]] = {
    f.__name__: f for f in (
        edit_property, add_route, delete_route, delete_folder, move_route, move_folder,
        reorder_responses, set_default, add_response, delete_response, edit_tls, edit_headers,
        add_bucket, use_bucket, delete_bucket, invoke_callback, delete_callback,
    )
}
# Weights: the common edits more often than the destructive ones.
EDIT_KINDS = sorted(EDITS) + ["edit_property"] * 3 + ["move_route"] * 2 + ["set_default"] * 2 + [
    "edit_tls", "edit_headers", "move_folder", "add_route"]


# ============================================================================ the simulation

DEVICES = ["dA", "dB", "dC", "dD", "dE"]

step = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 4), st.sampled_from(EDIT_KINDS), st.integers(0, 2**32)),
    st.tuples(st.just("deliver"), st.integers(0, 2**32)),
    st.tuples(st.just("dup"), st.integers(0, 2**32)),
)
plans = st.tuples(st.integers(3, 5), st.lists(step, min_size=1, max_size=40), st.integers(0, 2**32))


def reference_registers(changesets: list[CS]):
    """Last-writer-wins by hand: per register, the value of the greatest-stamped write (later
    ops of one change set win over earlier ones); which entities were created and deleted."""
    regs: dict[tuple[str, tuple], tuple[Any, tuple]] = {}
    created, deleted = set(), set()
    for cs in sorted(changesets, key=lambda c: c.stamp):
        for op in cs.ops:
            if op[0] == "c":
                created.add(op[1])
                for rid, v in op[3]:
                    regs[(op[1], rid)] = (v, cs.stamp)
            elif op[0] == "s":
                regs[(op[1], op[2])] = (op[3], cs.stamp)
            elif op[0] == "x":
                regs[(op[1], op[2])] = (ABSENT, cs.stamp)
            else:
                deleted.add(op[1])
    return regs, created, deleted


def run(env: dict, plan, say: Callable[[str], None] = note) -> Counter[str]:
    """Play the plan; check convergence; return how many change sets each edit kind made."""
    n, steps, final_seed = plan
    env = copy.deepcopy(env)
    genesis = CS(through_the_wire(snapshot_ops(env, random.Random(0))), (1, "g"), ("g", 1), {})
    replicas = [Replica(DEVICES[i], env, genesis) for i in range(n)]
    sent: list[CS] = [genesis]
    made: Counter[str] = Counter()
    pending: list[tuple[int, int]] = []  # (change set index, replica) not yet delivered
    delivered: list[tuple[int, int]] = []
    for k, st_ in enumerate(steps):
        rng = random.Random(f"{k}:{st_[-1]}")  # the step number keeps new uuids apart
        if st_[0] == "edit":
            who = st_[1] % n
            cs = replicas[who].edit(st_[2], rng)
            say(f"{DEVICES[who]} {st_[2]}: {'no-op' if cs is None else len(cs.ops)} ops")
            if cs is not None:
                made[st_[2]] += 1
                sent.append(cs)
                pending += [(len(sent) - 1, r) for r in range(n) if r != who]
        elif st_[0] == "deliver" and pending:
            i, r = pending.pop(rng.randrange(len(pending)))
            replicas[r].receive(sent[i])
            delivered.append((i, r))
        elif st_[0] == "dup" and delivered:
            i, r = rng.choice(delivered)
            replicas[r].receive(sent[i])
    # The network heals: everything reaches everyone, in a random order, some of it twice.
    rng = random.Random(final_seed)
    rng.shuffle(pending)
    pending += rng.sample(pending, len(pending) // 3) + rng.sample(delivered, len(delivered) // 3)
    for i, r in pending:
        replicas[r].receive(sent[i])

    texts = {dumps(render(rep.state)) for rep in replicas}
    assert len(texts) == 1, "replicas diverged"
    doc = json.loads(texts.pop())
    assert_valid(doc)

    regs, created, deleted = reference_registers(sent)
    for rep in replicas:
        for (uuid, rid), (value, stamp) in regs.items():
            reg = rep.state.entity(uuid).regs[rid]
            assert reg.stamp == stamp, (rep.device, uuid, rid)
            assert reg.value is value if value is ABSENT else json.dumps(reg.value) == json.dumps(value)
        for uuid, ent in rep.state.entities.items():
            assert ent.live == (uuid in created and uuid not in deleted), uuid
    alive = {e["uuid"] for e in doc.get("routes", []) + doc.get("folders", []) + doc.get("data", [])
             + doc.get("callbacks", [])} | {x["uuid"] for r in doc["routes"] for x in r["responses"]}
    assert not alive & deleted, "a deleted entity came back"

    # Every replica lists the same conflicts (derived from the log, not the arrival order:
    # issue 11 item 8); none names as the loser a write that holds its register, and a
    # delete's loser stays dead.
    # The dropped-work records too (issue 15): the same list, in the same order, everywhere.
    listed = {tuple((c.id, c.entity, c.field, c.parent, c.winner_stamp, c.loser_stamp)
                    for c in rep.state.conflicts) for rep in replicas}
    assert len(listed) == 1, ("replicas list different conflicts", [
        (rep.device, set(mine) - set.intersection(*map(set, listed)))
        for rep, mine in zip(replicas, [tuple((c.id, c.entity, c.field, c.parent, c.winner_stamp,
                                               c.loser_stamp) for c in rep.state.conflicts)
                                        for rep in replicas], strict=True)])
    rendered = alive | {f["uuid"] for f in doc.get("folders", [])}
    for rep in replicas:
        for c in rep.state.conflicts:
            ent = rep.state.entity(c.entity)
            if c.field[0] == "#deleted":
                assert not ent.live
                assert c.winner_value is ABSENT
            elif c.field[0] in ("#parent", "#ref"):
                # Live work that hangs on (or names) an entity deleted concurrently.
                assert ent.live and c.winner_value is ABSENT
                assert rep.state.entity(c.parent).deleted and c.parent not in rendered
                if c.field == ("#parent", "p", "list"):
                    assert c.entity not in rendered  # a response of a deleted route
            else:
                assert c.winner_stamp > c.loser_stamp
                assert ent.regs[c.field].stamp != c.loser_stamp
                assert json.dumps(c.winner_value) != json.dumps(c.loser_value)

    # No work vanishes without a trace: a live response the file does not show (its route
    # was deleted while it was added) and a route or folder shown at the root because its
    # folder was deleted while it was put there are each listed as dropped work.
    state = replicas[0].state
    dropped = {c.entity for c in state.conflicts if c.field[0] == "#parent"}
    for e in state.live():
        place = {"response": "list", "route": "tree", "folder": "tree"}.get(e.kind or "")
        where = e.get(("p", place), None) if place else None
        if where and where[0] in state.dead:
            assert e.uuid in dropped, f"{e.kind} {e.uuid} dropped without a trace"
        if e.kind == "response":
            assert e.uuid in rendered or e.uuid in dropped

    # Each device's own last write to a register survives unless another change set wrote that
    # register with a greater stamp (said again per device, in the words of the contract).
    for rep in replicas:
        own = [cs for cs in sent if cs.origin[0] == rep.device]
        last: dict[tuple, tuple[Any, tuple]] = {}
        for cs in own:
            for op in cs.ops:
                if op[0] == "s":
                    last[(op[1], op[2])] = (op[3], cs.stamp)
        for (uuid, rid), (value, stamp) in last.items():
            beaten = any(
                cs.stamp > stamp and any(op[0] in "sx" and (op[1], op[2]) == (uuid, rid)
                                         or op[0] == "c" and op[1] == uuid for op in cs.ops)
                for cs in sent if cs.origin[0] != rep.device)
            if not beaten:
                final = replicas[0].state.entity(uuid).regs[rid]
                assert final.stamp == stamp and json.dumps(final.value) == json.dumps(value)
    return made


def _settings(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=False, print_blob=True)


#: Examples per environment in the default run; the `long` sibling below runs 3000 (make
#: test-long). 100 random plans on top of the fixed busy scenario keep `make test` in budget.
DEFAULT_EXAMPLES = 100


@pytest.mark.parametrize("name", sorted(ENVS))
@_settings(DEFAULT_EXAMPLES)
@given(plan=plans)
def test_replicas_converge(name, plan):
    run(ENVS[name], plan)


@pytest.mark.long
@pytest.mark.skipif(not LONG, reason="set MOCKSYNC_LONG=1 (make test-long) for 3000 examples")
@pytest.mark.parametrize("name", sorted(ENVS))
@_settings(3000)
@given(plan=plans)
def test_replicas_converge_long(name, plan):
    run(ENVS[name], plan)


def test_a_fixed_busy_scenario_converges():
    """A deterministic run with many edits of every kind, so a plain `pytest` always covers
    them all whatever hypothesis draws."""
    rng = random.Random(12345)
    made: Counter[str] = Counter()
    for env in ENVS.values():
        steps = []
        for i in range(150):
            if i % 3 == 0:
                steps.append(("deliver", rng.getrandbits(32)))
            if i % 7 == 0:
                steps.append(("dup", rng.getrandbits(32)))
            steps.append(("edit", rng.randrange(5), sorted(EDITS)[i % len(EDITS)], rng.getrandbits(32)))
        made += run(env, (5, steps, 7), say=lambda _: None)
    assert set(made) == set(EDITS), f"some edit kinds never produced a change: {made}"
