"""Journey (issue 18, "Everyday use"): a team's shared environments keep the sharer's file
name on every device, a name already taken falls back and `list` shows where it went, `status`
and `peers` show one row per device, and `status --json` is a JSON document even with no
daemon running.

Alice (laptop + desktop) and Bob share one space (the crew); Carol has a device but no daemon.
Only what a user sees is asserted: the files in each folder, the CLI's output and exit codes.
"""

from __future__ import annotations

import json

from .harness import Crew


def test_a_shared_environment_keeps_its_file_name_and_clashes_fall_back(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all

    # Bob already has a local file of his own called everyday-clash.json.
    bob.add_example("chat-websocket", "everyday-clash.json")
    bob_own = bob.read("everyday-clash.json")

    # Alice shares two environments whose titles differ from their file names.
    laptop.add_example("petstore", "everyday-shop.json", edit=lambda d: d.update(name="Shop API"))
    laptop.add_example("payments-callbacks", "everyday-clash.json",
                       edit=lambda d: d.update(name="Clash API"))
    shop = laptop.share("everyday-shop.json")["uuid"]
    clash = laptop.share("everyday-clash.json")["uuid"]
    team.synced(shop, laptop, desktop, bob)
    team.synced(clash, laptop, desktop, bob)

    # Same name on every device where it is free: a script naming the file works everywhere.
    for dev in (desktop, bob):
        assert dev.file_of(shop) == dev.path("everyday-shop.json"), dev.name
    assert desktop.file_of(clash) == desktop.path("everyday-clash.json")
    # Bob's own file is never written over: Alice's lands under its title, as before.
    assert bob.file_of(clash) == bob.path("clash-api.json")
    assert bob.read("everyday-clash.json") == bob_own
    assert bob.state("everyday-clash.json") == "local"

    # `list` shows the mapping: where it is here, and the sharer's name.
    rows = {e["uuid"]: e for e in bob.list() if e.get("uuid") in (shop, clash)}
    assert rows[clash]["file"].endswith("/clash-api.json")
    assert rows[clash]["shared_as"] == "everyday-clash.json"
    assert rows[shop]["file"].endswith("/everyday-shop.json")
    assert rows[shop]["shared_as"] == "everyday-shop.json"
    text = bob.ms("list").out
    line = next(ln for ln in text.splitlines() if "clash-api.json" in ln)
    assert "everyday-clash.json" in line, text

    # The name is encrypted with the change sets: nothing in the relay's data names it.
    relay_data = b"".join(p.read_bytes() for p in team.relay.data.rglob("*") if p.is_file())
    assert b"everyday-clash" not in relay_data and b"everyday-shop" not in relay_data


def test_one_row_per_peer_and_json_without_a_daemon(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    others = {laptop.id, desktop.id}
    peers = team.wait(lambda: (p := bob.ms("peers", "--json").json())
                      and others <= {r["device"] for r in p} and p,
                      "alice's two devices among bob's peers")
    ids = [r["device"] for r in peers]
    assert len(ids) == len(set(ids)), peers  # once each, however many routes reach it
    for r in peers:
        assert r["via"] in ("lan", "relay") and "fallback" in r and r["routes"], r
        assert [x["via"] for x in r["routes"]][0] == r["via"]
    st = bob.status()
    assert sorted(r["device"] for r in st["peers"]) == sorted(ids)
    assert "fallback" in bob.ms("peers").out

    # Waiting for catch-up ends once nothing is syncing; in a pipe, no escape codes.
    res = bob.ms("status", "--wait", "--timeout", "60", "--json")
    doc = res.json()
    assert doc["progress"] == [] and all(e["state"] != "syncing" for e in doc["environments"])
    assert "\x1b" not in res.out + res.err

    # Carol installed mocksync but her daemon is not running: still one JSON document.
    carol = team.device("carol-laptop", "carol")
    res = carol.ms("status", "--json", check=False)
    assert res.code == 3, res.text
    doc = json.loads(res.out)
    assert doc["error"]["code"] == "daemon_not_running" and doc["daemon"] == {"running": False}
    assert "not running" in res.err

    # She starts it and, at once, asks to wait for the first sync (as the README's setup does
    # right after `mocksync daemon` or `service install`): `--wait` waits for the daemon to
    # answer too, instead of saying it is not running while it starts.
    carol.start(relay=False, wait=False)
    res = carol.ms("status", "--wait", "--timeout", "60", check=False)
    assert res.code == 0, res.text
    assert "daemon  running" in res.out, res.text
    carol.stop()  # the crew's team lives on for later journeys: leave no extra daemon
