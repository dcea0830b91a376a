"""Attack: values that break later work, refused at ingest the same way on every device.

Before issue 12 a member's change set holding JSON nested 900 levels deep was accepted or not
depending on how deep the call stack happened to be (Python's recursion limit was the only
limit), then broke later work that walks values recursively, while `status` said `synced`.
Now `model.limits` decides, iteratively and with a named limit, inside the one check every
op passes (`validate_ops`): on every peer for ops that arrive, and on the author's device for
the ops a save or a share would send, so a local file is `invalid` exactly when the change set
it would make is refused by peers.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocksync.changes import ChangeSet
from mocksync.changes.hlc import pack
from mocksync.errors import MocksyncError, ValidationError
from mocksync.model import snapshot_ops, to_wire, validate_ops
from mocksync.model.limits import MAX_VALUE_DEPTH, depth_over, value_problem
from mocksync.model.ops import dec_value, enc_value

from envfactory import small_env
from helpers.relaylab import Lab, detached_trio, rendered, take, until


def nested(depth: int, leaf: Any = "x", dicts: bool = False) -> Any:
    """A value `depth` containers deep, built without recursion."""
    v = leaf
    for i in range(depth):
        v = {"k": v} if dicts and i % 2 else [v]
    return v


def true_depth(v: Any) -> int:
    """The oracle (recursive, for small values only)."""
    if isinstance(v, dict):
        return 1 + max((true_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((true_depth(x) for x in v), default=0)
    return 0


# ------------------------------------------------------------------------------ pure limits


def test_depth_limit_is_exact_and_needs_no_stack() -> None:
    assert value_problem(nested(MAX_VALUE_DEPTH)) is None
    assert value_problem(nested(MAX_VALUE_DEPTH + 1)) is not None
    assert value_problem(nested(MAX_VALUE_DEPTH + 1, dicts=True)) is not None
    assert value_problem("x" * 100_000) is None and value_problem(7) is None
    t0 = time.perf_counter()
    assert depth_over(nested(200_000)) == MAX_VALUE_DEPTH + 1  # no RecursionError
    assert time.perf_counter() - t0 < 5


def test_decoder_giving_up_is_the_same_refusal() -> None:
    """A value too deep for the JSON decoder (which raises RecursionError somewhere past a
    few hundred levels, depending on the stack) is refused with the same sentence."""
    with pytest.raises(ValueError, match=f"more than {MAX_VALUE_DEPTH} levels"):
        dec_value("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValidationError, match=f"more than {MAX_VALUE_DEPTH} levels"):
        validate_ops([["s", "u1", ["v", "x"], enc_value(nested(MAX_VALUE_DEPTH + 1))]])
    assert validate_ops([["s", "u1", ["v", "x"], enc_value(nested(MAX_VALUE_DEPTH))]])


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=5))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                               max_size=3),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(json_value, st.integers(0, 45), st.booleans())
def test_depth_decision_matches_the_oracle(value: Any, extra: int, dicts: bool) -> None:
    v = nested(extra, value, dicts)
    assert (value_problem(v) is None) == (true_depth(v) <= MAX_VALUE_DEPTH)


@settings(max_examples=150, deadline=None)
@given(json_value, st.integers(MAX_VALUE_DEPTH - 3, MAX_VALUE_DEPTH + 3), st.booleans())
def test_sender_and_receiver_decide_alike(value: Any, depth: int, dicts: bool) -> None:
    """What the author checks (the Python value) and what a peer checks (the value decoded
    from the op's JSON text) get the same verdict: JSON keeps nesting exactly."""
    v = nested(depth, value, dicts)
    assert value_problem(v) == value_problem(dec_value(enc_value(v)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_value, st.integers(MAX_VALUE_DEPTH - 2, MAX_VALUE_DEPTH + 2), st.booleans(),
       st.sampled_from(["route", "env", "response"]), st.booleans())
def test_a_whole_environment_is_refused_exactly_when_a_value_is_too_deep(
        value: Any, depth: int, dicts: bool, where: str, as_object: bool) -> None:
    """The ops sharing an environment makes pass peers' check iff every register value is
    within the limit (a nested object is split: one register per key, one level less)."""
    doc = small_env()
    target = {"env": doc, "route": doc["routes"][0],
              "response": doc["routes"][0]["responses"][0]}[where]
    v = nested(depth, value, dicts)
    target["custom"] = {"sub": v} if as_object else v
    try:
        validate_ops([to_wire(op) for op in snapshot_ops(doc, random.Random(1))])
        ok = True
    except ValidationError:
        ok = False
    split = not as_object and isinstance(v, dict)  # a field holding an object: one level off
    assert ok == (true_depth(v) - split <= MAX_VALUE_DEPTH)


# ------------------------------------------------------------------------------ the attack


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """alice and carol (honest), bob (the malicious member), agents without transport: the
    change set is handed to `receive`, the entry point of LAN and relay alike."""
    async with detached_trio(Lab(tmp_path)) as t:
        yield t


def _deep_change_set(t: dict[str, Any], depth: int) -> bytes:
    """Bob's change set, made with the library's own code: it verifies, only its value is bad."""
    bob = t["bob"]
    route = t["doc"]["routes"][0]["uuid"]
    cs = ChangeSet(space=t["space"], env=t["env"], device=bob.identity.device_id, seq=1,
                   hlc=pack(int(time.time() * 1000), 0), deps={}, prev_hash=b"",
                   ops=(["s", route, ["v", "documentation"], enc_value(nested(depth))],))
    return cs.sign(bob.identity.signing_key).encode()


@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH + 1, 900])
async def test_deep_value_refused_alike_and_status_says_so(trio: dict[str, Any],
                                                           depth: int) -> None:
    t = trio
    env, space = t["env"], t["space"]
    wire = _deep_change_set(t, depth)
    bid = t["bob"].identity.device_id
    for name in ("alice", "carol"):
        a = t["agents"][name]
        before = rendered(a, env)
        with pytest.raises(MocksyncError, match=f"more than {MAX_VALUE_DEPTH} levels"):
            a.receive(space, wire)
        assert rendered(a, env) == before  # nothing applied
        assert bid not in a.store.version_vector(env)
        entry = next(e for e in a.status()["environments"] if e["uuid"] == env)
        assert entry["state"] == "blocked", entry
        assert f"#1 from {bid}" in entry["reason"] and "levels deep" in entry["reason"]
        assert entry["refused"][0]["blocking"] is True
    # Later local saves on the victims keep working.
    a = t["agents"]["alice"]
    doc = rendered(a, env)
    doc["name"] = "later save"
    p = a.envs[env].path
    p.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    await take(a, p.resolve())
    assert rendered(a, env)["name"] == "later save"
    assert t["agents"]["carol"].receive(space, a.store.wires_missing(
        env, t["agents"]["carol"].store.version_vector(env))[0]).status == "applied"


async def test_deep_value_in_a_local_file_is_invalid_not_sent(trio: dict[str, Any]) -> None:
    """Bob's own device refuses to send what peers would refuse: his file is `invalid`, with
    the place named, and the last good version keeps syncing."""
    t = trio
    b = t["agents"]["bob"]
    env = t["env"]
    doc = rendered(b, env)
    doc["routes"][0]["documentation"] = nested(900)
    # The file bob's device keeps this environment in (the sharer's name, see model/sharedname).
    p = Path(next(e for e in b.status()["environments"] if e["uuid"] == env)["file"])
    # Edited once bob's device wrote it (as a person would), each save taken in as the
    # watcher does (`take`: in a store turn, never beside that write on the store worker).
    rt, worker = b.envs[env], b.worker
    assert worker is not None
    await until(lambda: p.exists() and rt.write_handle is None and not worker.pending,
                what="bob's device to write the environment's file")
    p.write_text(json.dumps(doc), encoding="utf-8")
    await take(b, p.resolve())
    entry = next(e for e in b.status()["environments"] if e["uuid"] == env)
    assert entry["state"] == "invalid", entry
    assert entry["reason"].startswith("routes[0]: ") and "documentation" in entry["reason"]
    assert "levels deep" in entry["reason"] and "peers would refuse" in entry["reason"]
    assert t["bob"].identity.device_id not in b.store.version_vector(env)  # nothing committed
    # The file fixed: the edit syncs again.
    doc["routes"][0]["documentation"] = nested(MAX_VALUE_DEPTH)
    p.write_text(json.dumps(doc), encoding="utf-8")
    await take(b, p.resolve())
    assert next(e for e in b.status()["environments"] if e["uuid"] == env)["state"] == "synced"
    assert b.store.version_vector(env)[t["bob"].identity.device_id] == 1


async def test_sharing_a_file_with_a_too_deep_value_changes_nothing(trio: dict[str, Any]
                                                                   ) -> None:
    t = trio
    b = t["agents"]["bob"]
    doc = small_env()
    doc["uuid"] = "e0000000-0000-4000-8000-0000000000dd"
    doc["routes"][1]["documentation"] = nested(MAX_VALUE_DEPTH + 1)
    p = b.folder / "deep.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    await take(b, p.resolve())
    with pytest.raises(ValidationError, match="routes\\[1\\]: .*levels deep"):
        b.share(str(p), t["space"])
    assert doc["uuid"] not in b.envs and not b.store.has_env(doc["uuid"])
