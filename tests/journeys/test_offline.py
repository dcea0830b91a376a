"""Journey: working offline, and coming back.

The three cases of docs/design/merge.md as a team lives them: only Bob changed the environment while his
daemon was stopped (his edit is pushed when it starts); only the team changed it (he pulls);
both changed it while the relay was unreachable (merged property by property, no conflict).
Then the `prompt` policy, Mockoon Pro's dialog: an environment both sides changed is `held`
until Bob decides with `resolve ENV --keep-local` or `--discard-local`.
"""

from __future__ import annotations

import time
from typing import Any

from .harness import Crew, Device

#: How long a journey lets a held environment sit before checking nothing leaked (seconds).
QUIET_S = 1.5


def response(doc: dict[str, Any], endpoint: str, i: int = 0) -> dict[str, Any]:
    return next(r for r in doc["routes"] if r["endpoint"] == endpoint)["responses"][i]


def share_fresh(crew: Crew, as_name: str) -> tuple[str, dict[str, Any]]:
    """Alice shares a fresh copy of the petstore example; its uuid and synced document."""
    crew.laptop.add_example("petstore", as_name)
    env = crew.laptop.share(as_name)["uuid"]
    return env, crew.team.synced(env, *crew.all)


def no_conflicts(env: str, *devices: Device) -> None:
    for dev in devices:
        res = dev.ms("conflicts", env, "--json", check=False)
        assert res.code == 0 and res.json() == [], (dev.name, res.out, res.err)


def test_only_local_then_only_team_changed_while_offline(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    env, _ = share_fresh(crew, "offline-a.json")

    # 1. Bob's daemon is stopped; he keeps working in Mockoon. Nobody else changes anything.
    bob.stop()
    bob.edit(env, lambda d: response(d, "v1/pets").update(label="offline bob"))
    bob.start()
    team.everywhere(env, crew.all, lambda d: response(d, "v1/pets")["label"] == "offline bob",
                    "Bob's offline edit")

    # 2. Bob is offline again; this time only Alice edits. Bob catches up when he starts.
    bob.stop()
    laptop.edit(env, lambda d: d.update(endpointPrefix="api/v3"))
    desktop.wait_doc(env, lambda d: d["endpointPrefix"] == "api/v3", "Alice's edit")
    assert bob.doc(env)["endpointPrefix"] != "api/v3"  # his daemon is stopped: file untouched
    bob.start()
    bob.wait_doc(env, lambda d: d["endpointPrefix"] == "api/v3", "the team's edit")
    doc = team.synced(env, *crew.all)
    assert response(doc, "v1/pets")["label"] == "offline bob"
    no_conflicts(env, *crew.all)


def test_both_changed_while_the_relay_was_unreachable_merge(crew: Crew) -> None:
    team, (laptop, _desktop, bob) = crew.team, crew.all
    env, _ = share_fresh(crew, "offline-b.json")

    # The relay goes away: every device is offline (no LAN discovery in these journeys).
    team.relay.stop()
    bob.edit(env, lambda d: response(d, "v1/pets").update(statusCode=202))
    laptop.edit(env, lambda d: d.update(latency=25))
    time.sleep(QUIET_S)
    assert bob.doc(env)["latency"] != 25 and response(laptop.doc(env), "v1/pets")["statusCode"] != 202

    # The relay is back: both edits are merged on every device, nothing listed as a conflict.
    team.relay.start()
    team.everywhere(env, crew.all,
                    lambda d: d["latency"] == 25 and response(d, "v1/pets")["statusCode"] == 202,
                    "both offline edits merged", timeout=40)
    team.synced(env, *crew.all)
    no_conflicts(env, *crew.all)


def test_prompt_policy_holds_until_the_user_decides(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    bob.restart_with(offline_policy="prompt")
    env, start = share_fresh(crew, "offline-c.json")

    # Asking to decide an environment that is not held is refused, and changes nothing.
    res = bob.ms("resolve", env, "--keep-local", check=False)
    assert res.code == 1 and "not waiting for a keep-local/discard-local decision" in res.err

    # Both Bob (daemon stopped) and Alice change it.
    bob.stop()
    bob.edit(env, lambda d: d.update(port=4001))
    mine = bob.doc(env)
    laptop.edit(env, lambda d: d.update(name="Shop (Alice)"))
    desktop.wait_doc(env, lambda d: d["name"] == "Shop (Alice)", "Alice's rename")
    bob.start(offline_policy="prompt")

    # Bob's status says `held` and why; his file is not overwritten, his edit not sent.
    held = bob.wait_state(env, "held")
    assert "changed" in held["reason"] and "--keep-local" in held["reason"], held
    time.sleep(QUIET_S)
    assert bob.doc(env) == mine
    assert laptop.doc(env)["port"] == start["port"] and desktop.doc(env)["port"] == start["port"]

    # He keeps his version: it becomes everyone's (Alice's rename is overridden).
    out = bob.ms("resolve", env, "--keep-local")
    assert "resolved" in out.out
    team.everywhere(env, crew.all, lambda d: d["port"] == 4001 and d["name"] == start["name"],
                    "Bob's kept version")
    assert team.synced(env, *crew.all) == mine

    # Once more, and this time he discards his offline edit: the team's version wins.
    bob.stop()
    bob.edit(env, lambda d: d.update(port=4002))
    laptop.edit(env, lambda d: d.update(latency=50))
    desktop.wait_doc(env, lambda d: d["latency"] == 50, "Alice's latency edit")
    bob.start(offline_policy="prompt")
    bob.wait_state(env, "held")
    bob.ms("resolve", env, "--discard-local")
    team.everywhere(env, crew.all, lambda d: d["port"] == 4001 and d["latency"] == 50,
                    "the team's version")
    team.synced(env, *crew.all)
    assert bob.state(env) == "synced"
