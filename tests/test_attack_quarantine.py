"""Attack: change sets that are refused or quarantined while `status` says `synced`.

A member's device with its clock far ahead (or a member doing it on purpose) sends change sets
stamped in the future: they are quarantined, not applied, and every later change set of that
device waits behind them. A refused change set (ops the model refuses, a forked chain) stops its
author's chain the same way. Before issue 12 `status` showed such an environment as `synced`.
Now it is `blocked`, with a sentence naming the device, the change set and why, and every
refusal is listed (`refused`, with `blocking`) in `status --json` and in the text.

The decision is `agent.health.sync_health` (pure, tested first); then agents receive change
sets built with the library's own signing code, through `receive` (the LAN and relay entry
point). tests/journeys/test_refusals_in_status.py shows the same through the CLI.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mocksync.agent.daemon import Agent
from mocksync.agent.health import FORGED, MAX_LISTED_REFUSALS, sync_health
from mocksync.changes import ChangeSet
from mocksync.changes.hlc import pack
from mocksync.errors import MocksyncError

from helpers.relaylab import Lab, detached_trio, rendered

NOW = 1_800_000_000_000
V, W = "VVVVV-VVVVV-VVVVV-VVVVV", "WWWWW-WWWWW-WWWWW-WWWWW"


# ------------------------------------------------------------------------------ the decision


def test_nothing_refused_is_healthy() -> None:
    h = sync_health({V: 3}, [], [], now_ms=NOW, active={V})
    assert h.blocked is None and h.refused == []


def test_authentic_refusal_blocks_until_the_chain_moves_past_it() -> None:
    row = {"device": V, "seq": 4, "reason": "op 0 is malformed: too deep", "at_ms": NOW}
    h = sync_health({V: 3}, [row], [], now_ms=NOW, active={V, W}, names={V: "bob"})
    assert h.blocked is not None
    assert h.blocked.startswith(f"change set #4 from {V} (bob) was refused: op 0 is malformed")
    assert h.refused[0]["blocking"] is True
    h = sync_health({V: 4}, [row], [], now_ms=NOW, active={V})
    assert h.blocked is None and h.refused[0]["blocking"] is False  # listed, not blocking


def test_forgeries_and_removed_devices_do_not_block() -> None:
    forged = {"device": V, "seq": 4, "reason": FORGED + "signature does not verify", "at_ms": 1}
    assert sync_health({V: 3}, [forged], [], now_ms=NOW, active={V}).blocked is None
    cut = {"device": W, "seq": 9, "reason": "after its removal", "at_ms": 1}
    h = sync_health({V: 3}, [cut], [], now_ms=NOW, active={V})
    assert h.blocked is None and h.refused[0]["blocking"] is False


def test_quarantine_always_blocks_and_says_how_far_ahead() -> None:
    h = sync_health({V: 3}, [], [(V, 4, pack(NOW + 7_200_000, 0))], now_ms=NOW, active={V})
    assert h.blocked is not None and "quarantined: stamped 7200 s ahead" in h.blocked
    assert h.refused == [{"device": V, "seq": 4, "blocking": True, "at_ms": None,
                          "reason": h.refused[0]["reason"]}]


def test_many_refusals_are_counted_and_listing_is_bounded() -> None:
    rows = [{"device": V, "seq": 10 + i, "reason": "bad", "at_ms": i} for i in range(30)]
    h = sync_health({V: 3}, rows, [], now_ms=NOW, active={V})
    assert "(and 29 more)" in (h.blocked or "")
    assert len(h.refused) == MAX_LISTED_REFUSALS


# ------------------------------------------------------------------------------ the attack


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """alice and carol (honest), bob (the malicious member), agents without transport: the
    change set is handed to `receive`, the entry point of LAN and relay alike."""
    async with detached_trio(Lab(tmp_path)) as t:
        yield t


def _bobs(t: dict[str, Any], *, seq: int = 1, ahead_ms: int = 0, prev: bytes = b"",
          signer: Any = None, name: str = "bob's edit") -> ChangeSet:
    cs = ChangeSet(space=t["space"], env=t["env"], device=t["bob"].identity.device_id, seq=seq,
                   hlc=pack(int(time.time() * 1000) + ahead_ms, 0), deps={}, prev_hash=prev,
                   ops=(["s", t["env"], ["v", "name"], f'"{name}"'],))
    return cs.sign((signer or t["bob"].identity).signing_key)


def _entry(agent: Agent, env: str) -> dict[str, Any]:
    return next(e for e in agent.status()["environments"] if e["uuid"] == env)


async def test_far_future_change_set_is_quarantined_and_blocks(trio: dict[str, Any]) -> None:
    t = trio
    a, env = t["agents"]["alice"], t["env"]
    assert _entry(a, env)["state"] == "synced"
    first = _bobs(t, ahead_ms=2 * 3600 * 1000)
    a.receive(t["space"], first.encode())  # quarantined: no error, nothing applied
    a.receive(t["space"], _bobs(t, seq=2, ahead_ms=2 * 3600 * 1000, prev=first.hash,
                                name="later").encode())
    assert rendered(a, env)["name"] == "Small"
    e = _entry(a, env)
    bid = t["bob"].identity.device_id
    assert e["state"] == "blocked"
    assert f"#1 from {bid} (bob)" in e["reason"] and "quarantined: stamped" in e["reason"]
    assert e["refused"][0] == {"device": bid, "seq": 1, "blocking": True, "at_ms": None,
                               "reason": e["refused"][0]["reason"]}


async def test_forgery_is_listed_but_the_victim_still_syncs(trio: dict[str, Any]) -> None:
    """Carol (a member) forges bob's first change set: refused and listed as not blocking;
    bob's genuine one with that number is applied afterwards, and nothing blocks."""
    t = trio
    a, env, space = t["agents"]["alice"], t["env"], t["space"]
    forged = _bobs(t, signer=t["carol"].identity, name="forged")
    with pytest.raises(MocksyncError, match="signature"):
        a.receive(space, forged.encode())
    e = _entry(a, env)
    assert e["state"] == "synced"
    assert e["refused"][0]["blocking"] is False and e["refused"][0]["reason"].startswith(FORGED)
    a.receive(space, _bobs(t).encode())
    assert rendered(a, env)["name"] == "bob's edit"
    assert _entry(a, env)["state"] == "synced"


async def test_status_text_names_the_refusal(trio: dict[str, Any], monkeypatch: Any) -> None:
    """The text `status` prints a `blocked` environment's sentence and each refusal (the CLI's
    own formatting, fed the daemon's status document)."""
    from mocksync.cli import daemoncmds
    from mocksync.cli.common import main_group

    t = trio
    a = t["agents"]["alice"]
    a.receive(t["space"], _bobs(t, ahead_ms=3600 * 1000).encode())
    doc = a.status()
    monkeypatch.setattr(daemoncmds, "_call", lambda ctx, method, **kw: doc)
    out = CliRunner().invoke(main_group, ["--home", str(t["alice"].home), "status"]).output
    assert "blocked" in out and "quarantined: stamped" in out
    assert f"refused #1 from {t['bob'].identity.device_id}" in out
