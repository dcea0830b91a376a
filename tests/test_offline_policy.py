"""The `prompt` offline policy (docs/design/merge.md "Offline"), end to end through a real relay.

The decision (push / pull / both / none) is a pure function, tested as a table. The rest runs
real Agents with RelayTransport against a relay on 127.0.0.1: two devices edit the same
environment while apart (agents stopped, files edited on disk), then reconnect one after the
other, so who is held is deterministic. With `prompt`, the device that reconnects last is held
(file untouched, its change sets unsent, `status` says why and names both commands) until
`--keep-local` (its file becomes everyone's version) or `--discard-local` (the team's version
comes back, its file goes to the trash). Only-local and only-remote never hold, and the
default `merge` policy still merges.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from mocksync.agent.api import register
from mocksync.agent.control import ControlServer
from mocksync.agent.daemon import Agent
from mocksync.errors import ValidationError
from mocksync.model import render
from mocksync.net.relay_transport import RelayTransport
from mocksync.sync.messages import peek_changeset
from mocksync.sync.offline import (
    BOTH,
    NONE,
    PULL,
    PUSH,
    HoldingSource,
    decide,
    is_unsent,
    should_hold,
    team_state,
)

from envfactory import small_env
from helpers.relaylab import Lab, Team, on_disk, rendered, synced_team, take, until, write

# ------------------------------------------------------------------------------ the decision

ME, ALICE, CAROL = "dev-me", "dev-alice", "dev-carol"


@pytest.mark.parametrize(("local", "relay", "want"), [
    ({}, {}, NONE),                                       # nothing anywhere
    ({ME: 2, ALICE: 3}, {ME: 2, ALICE: 3}, NONE),         # in step
    ({ME: 3, ALICE: 3}, {ME: 2, ALICE: 3}, PUSH),         # only ours is new
    ({ME: 1}, {}, PUSH),                                  # shared while offline
    ({ME: 2, ALICE: 3}, {ME: 2, ALICE: 5}, PULL),         # only theirs is new
    ({}, {ALICE: 4}, PULL),                               # a new device catching up
    ({ME: 2, ALICE: 3}, {ME: 2, ALICE: 3, CAROL: 1}, PULL),  # a new author
    ({ME: 3, ALICE: 3}, {ME: 2, ALICE: 4}, BOTH),         # both changed it
    ({ME: 1}, {ALICE: 1}, BOTH),                          # ours never reached the relay
    ({ME: 3, ALICE: 5}, {ME: 2, ALICE: 3}, PUSH),         # the relay lags behind us on theirs
    ({ME: 2}, {ME: 5}, NONE),                             # the relay has more of ours: not new
])
def test_decide_table(local: dict[str, int], relay: dict[str, int], want: str) -> None:
    assert decide(ME, local, relay) == want


def test_only_prompt_and_both_hold() -> None:
    assert should_hold("prompt", BOTH)
    for decision in (PUSH, PULL, NONE):
        assert not should_hold("prompt", decision)
    for decision in (PUSH, PULL, NONE, BOTH):
        assert not should_hold("merge", decision)


class _FakeSource:
    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int]] = []

    def version_vector(self, space: str, env: str) -> dict[str, int]:
        return {ME: 5, ALICE: 2}

    def wires(self, space: str, env: str, device: str, after: int, upto: int) -> list[bytes]:
        self.asked.append((device, after, upto))
        return [b"w%d" % n for n in range(after + 1, upto + 1)]


def test_holding_source_hides_our_unsent_change_sets_from_lan_peers() -> None:
    cuts = {"held-env": 3, "held-from-scratch": 0}
    src = HoldingSource(_FakeSource(), ME, cuts.get)
    assert src.version_vector("s", "held-env") == {ME: 3, ALICE: 2}
    assert src.version_vector("s", "held-from-scratch") == {ALICE: 2}
    assert src.version_vector("s", "free-env") == {ME: 5, ALICE: 2}
    assert src.wires("s", "held-env", ME, 1, 5) == [b"w2", b"w3"]
    assert src.wires("s", "held-env", ME, 3, 5) == []
    assert src.wires("s", "held-env", ALICE, 0, 2) == [b"w1", b"w2"]  # others' pass
    assert src.wires("s", "free-env", ME, 3, 5) == [b"w4", b"w5"]


# ------------------------------------------------------------------------------ the lab


async def both_edit_offline(lab: Lab, t: Team, policy: str,
                            ) -> tuple[Agent, RelayTransport, Agent, RelayTransport, bytes]:
    """Alice and Bob each edit while their daemons are down; Alice reconnects first (only
    local: pushed), then Bob (both changed). Returns the agents and Bob's offline bytes."""
    adoc = copy.deepcopy(t.doc)
    adoc["name"], adoc["port"] = "Alice's name", 3100
    bdoc = copy.deepcopy(t.doc)
    bdoc["name"], bdoc["latency"] = "Bob's name", 250
    write(t.apath, adoc)
    bbytes = write(t.bpath, bdoc)

    a, ta = await lab.agent(t.alice, policy)
    assert await ta.wait_synced(1)
    assert t.env not in a.holds  # alice only had local changes: pushed
    me_a = a.device
    assert lab.relay is not None
    tag = ta._tagger(t.space)(t.env)
    await until(lambda: lab.relay.storage.vv(t.space, tag).get(me_a)
                == a.store.version_vector(t.env)[me_a], what="relay to hold alice's edit")
    b, tb = await lab.agent(t.bob, policy)
    assert await tb.wait_synced(1)
    return a, ta, b, tb, bbytes


def env_status(agent: Agent, env: str) -> dict[str, Any]:
    return next(e for e in agent.status()["environments"] if e["uuid"] == env)


async def assert_held(lab: Lab, t: Team, a: Agent, ta: RelayTransport, b: Agent,
                      bbytes: bytes) -> int:
    """Bob is held: remote sets in his log, file untouched, his sets sent to nobody."""
    me_b = b.device
    cut = b.offline_cut(t.env)
    assert cut is not None and cut == t.vv[me_b] >= 1  # the last of his the relay had
    # Alice's offline edit is in Bob's log (kept), but not in his file.
    await until(lambda: b.store.version_vector(t.env).get(a.device)
                == a.store.version_vector(t.env)[a.device], what="alice's sets in bob's log")
    assert rendered(b, t.env)["port"] == 3100
    await asyncio.sleep(0.3)  # give a wrong write or upload every chance to happen
    assert t.bpath.read_bytes() == bbytes
    assert b.store.version_vector(t.env)[me_b] > cut  # bob's offline edit is committed...
    tag = ta._tagger(t.space)(t.env)
    assert lab.relay is not None
    assert lab.relay.storage.vv(t.space, tag).get(me_b) == cut  # ...but not on the relay
    assert a.store.version_vector(t.env).get(me_b) == cut  # ...nor at alice
    assert "Bob's name" not in json.dumps(rendered(a, t.env))
    st = env_status(b, t.env)
    assert st["state"] == "held"
    assert "both this device and the team changed" in st["reason"]
    assert "while offline" in st["reason"]
    assert "--keep-local" in st["reason"] and "--discard-local" in st["reason"]
    assert env_status(a, t.env)["state"] == "synced"
    return cut


# ------------------------------------------------------------------------------ scenarios


async def test_prompt_both_changed_holds_then_keep_local(lab: Lab) -> None:
    t = await synced_team(lab, "prompt")
    a, ta, b, tb, bbytes = await both_edit_offline(lab, t, "prompt")
    cut = await assert_held(lab, t, a, ta, b, bbytes)

    # Alice was not held: the command says so plainly and changes nothing.
    with pytest.raises(ValidationError, match="not waiting for a keep-local/discard-local"):
        a.resolve_offline(t.env, True)

    # A restart does not lift the hold (the remote sets are already in the log by now).
    await lab.stop_agent(b)
    b, tb = await lab.agent(t.bob, "prompt")
    assert await tb.wait_synced(1)
    assert b.offline_cut(t.env) == cut
    assert env_status(b, t.env)["state"] == "held"

    # Bob edits again while held: committed, still not written over, and not handed to any
    # transport (a LAN peer would get a broadcast pushed at once).
    handed: list[tuple[str, bytes]] = []
    real_broadcast = tb.broadcast

    def spy(space: str, env: str, wire: bytes) -> None:
        handed.append((env, wire))
        real_broadcast(space, env, wire)

    tb.broadcast = spy  # type: ignore[method-assign]
    bdoc = json.loads(bbytes)
    bdoc["latency"] = 300
    bbytes = write(t.bpath, bdoc)
    before = b.store.version_vector(t.env)[b.device]
    await take(b, t.bpath)
    assert b.store.version_vector(t.env)[b.device] == before + 1
    await asyncio.sleep(0.2)
    assert t.bpath.read_bytes() == bbytes
    assert a.store.version_vector(t.env).get(b.device) == cut
    assert handed == []

    # Through the control method, as `mocksync resolve ENV --keep-local` calls it.
    server = ControlServer(t.bpath.parent / "unused.sock")
    register(server, b)
    handler = server._routes["resolve_env"]
    with pytest.raises(ValidationError, match="keep_local"):
        await handler({"env": t.env, "keep_local": "yes"})
    assert t.env in b.holds  # a bad request changed nothing
    res = await handler({"env": t.bpath.name, "keep_local": True})
    assert res["kept"] == "local" and res["changed"] and res["trash"] is None
    assert res["sent"] >= 3  # bob's two held edits and the keep-local change set
    head = b.store.version_vector(t.env)[b.device]
    assert [peek_changeset(w)[3] for _env, w in handed] == list(range(cut + 1, head + 1))

    assert t.env not in b.holds
    assert env_status(b, t.env)["state"] == "synced"
    await until(lambda: rendered(a, t.env) == bdoc, what="alice to take bob's file version")
    await until(lambda: on_disk(t.apath) == bdoc, what="alice's file rewritten")
    assert rendered(b, t.env) == bdoc and on_disk(t.bpath) == bdoc
    assert rendered(a, t.env)["port"] == t.doc["port"]  # alice's offline port lost, as asked
    await until(lambda: a.store.version_vector(t.env) == b.store.version_vector(t.env),
                what="same change sets on both devices")
    assert not b.store.conflicts(t.env)  # the decision settled bob's conflicts
    # ...on every device: bob's name already held the register (a later stamp), so the
    # decision needed no edit of it; it is written again having seen both sides (issue 15).
    assert rendered(a, t.env)["name"] == "Bob's name"
    assert a.store.conflicts(t.env) == []
    with pytest.raises(ValidationError, match="not waiting"):
        b.resolve_offline(t.env, True)


async def test_prompt_discard_local_takes_team_version_and_trashes_ours(lab: Lab) -> None:
    t = await synced_team(lab, "prompt")
    a, ta, b, _tb, bbytes = await both_edit_offline(lab, t, "prompt")
    await assert_held(lab, t, a, ta, b, bbytes)
    team = copy.deepcopy(rendered(a, t.env))  # what alice (and the relay) hold
    assert team["name"] == "Alice's name" and team["port"] == 3100 and team["latency"] == 100

    res = b.resolve_offline(str(t.bpath), keep_local=False)
    assert res["kept"] == "team" and res["changed"]
    trash = Path(res["trash"])
    assert trash.parent == t.bob.home.trash and trash.read_bytes() == bbytes  # recoverable

    await until(lambda: on_disk(t.bpath) == team, what="bob's file back to the team version")
    assert rendered(b, t.env) == team
    await until(lambda: a.store.version_vector(t.env) == b.store.version_vector(t.env),
                what="alice to get bob's discarded and compensating change sets")
    assert rendered(a, t.env) == team and on_disk(t.apath) == team
    assert env_status(b, t.env)["state"] == "synced"
    assert not b.store.conflicts(t.env)
    assert a.store.conflicts(t.env) == []  # settled everywhere, not only here


async def test_prompt_only_local_or_only_remote_is_not_held(lab: Lab) -> None:
    t = await synced_team(lab, "prompt")
    a, ta = await lab.agent(t.alice, "prompt")
    assert await ta.wait_synced(1)

    # Only remote for Bob: Alice edits (online) while Bob's daemon is down.
    adoc = on_disk(t.apath)
    adoc["name"] = "remote only"
    write(t.apath, adoc)
    await take(a, t.apath)
    tag = ta._tagger(t.space)(t.env)
    assert lab.relay is not None
    await until(lambda: lab.relay.storage.vv(t.space, tag) == a.store.version_vector(t.env),
                what="relay to hold alice's edit")
    b, tb = await lab.agent(t.bob, "prompt")
    assert await tb.wait_synced(1)
    assert t.env not in b.holds
    await until(lambda: on_disk(t.bpath).get("name") == "remote only", what="bob's file pulled")
    assert env_status(b, t.env)["state"] == "synced"
    await lab.stop_agent(b)

    # Only local for Bob: he edits while his daemon is down, Alice does nothing.
    bdoc = on_disk(t.bpath)
    bdoc["latency"] = 555
    write(t.bpath, bdoc)
    b, tb = await lab.agent(t.bob, "prompt")
    assert await tb.wait_synced(1)
    assert t.env not in b.holds
    await until(lambda: on_disk(t.apath).get("latency") == 555, what="bob's edit at alice")
    assert on_disk(t.bpath) == bdoc
    assert env_status(b, t.env)["state"] == "synced"


async def test_merge_policy_still_merges_offline_edits(lab: Lab) -> None:
    t = await synced_team(lab, "merge")
    a, _ta, b, _tb, _bbytes = await both_edit_offline(lab, t, "merge")
    assert t.env not in b.holds
    await until(lambda: a.store.version_vector(t.env) == b.store.version_vector(t.env),
                what="both devices to hold every change set")
    ra = rendered(a, t.env)
    assert ra == rendered(b, t.env)
    assert ra["port"] == 3100 and ra["latency"] == 250  # both sides' edits kept
    assert ra["name"] in ("Alice's name", "Bob's name")
    await until(lambda: on_disk(t.bpath) == ra and on_disk(t.apath) == ra,
                what="both files rewritten with the merge")
    assert env_status(b, t.env)["state"] == "synced"


# ------------------------------------------------------------------------------ pure helpers


def test_team_state_replays_without_our_unsent_change_sets(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mocksync.model import snapshot_ops
    from mocksync.store import Store

    doc = small_env()
    env = doc["uuid"]
    store = Store(tmp_path / "log.sqlite3")
    key = Ed25519PrivateKey.generate()
    wires = []
    for device, ops in [(ALICE, snapshot_ops(doc)),
                        (ME, [("s", env, ("v", "port"), 4000)]),
                        (ME, [("s", env, ("v", "name"), "mine, unsent")]),
                        (ALICE, [("s", env, ("v", "latency"), 7)])]:
        cs, _res = store.commit_local(key, space="0" * 32, env=env, device=device, ops=ops,
                                      now_ms=int(time.time() * 1000))
        wires.append(cs.encode())
    try:
        log = [cs for cs, _received in store.log(env)]
        got = render(team_state(env, log, ME, cut=1))
        assert got["port"] == 4000 and got["latency"] == 7 and got["name"] == doc["name"]
        assert render(team_state(env, log, ME, cut=2)) == render(store.state(env))
        assert render(team_state(env, reversed(log), ME, cut=1)) == got  # any order
        assert [is_unsent(w, ME, 1) for w in wires] == [False, False, True, False]
        assert not is_unsent(b"not a change set", ME, 0)
    finally:
        store.close()
