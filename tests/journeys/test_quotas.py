"""Journeys: plan quotas as a team lives them (issue 11, items 4 and 5).

A relay run with a small plan (`--max-envs 2`, `--max-env-bytes 20000`); the daemons learn its
limits when they connect, so `share` says no at once (exit 1, a sentence with the plan's
numbers, nothing changed) and a save that grows an environment past the size quota is held
(state `held`, nothing sent to anyone) until a later save brings it back under, which syncs
by itself. Everything is seen through the CLI and the files, as a user would.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

from .harness import Device, Team

EX = Path(__file__).resolve().parents[2] / "examples" / "environments"
#: The size quota the relay runs with, and the sizes from the bug report.
MAX_ENV_BYTES = 20_000
FITS_BYTES = 19_737  # petstore.json as shipped
GROWN_BYTES = 27_685
#: How long a journey watches for something that must NOT happen (an over-quota edit arriving).
QUIET_S = 1.5


def compact_size(doc: dict[str, Any]) -> int:
    """What the quota measures: the environment as compact JSON (no mocksync import: the
    journey computes it as any user's script would)."""
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def sized(doc: dict[str, Any], size: int) -> dict[str, Any]:
    """`doc` with the first route's first response documented by a label padded to `size`."""
    out = copy.deepcopy(doc)
    resp = out["routes"][0]["responses"][0]
    resp["label"] = ""
    pad = size - compact_size(out)
    assert pad >= 0, f"cannot shrink {compact_size(out)} bytes to {size}"
    resp["label"] = "x" * pad
    assert compact_size(out) == size
    return out


def connected(dev: Device) -> bool:
    return dev.status()["relay"]["state"] == "connected"


def start_team(team: Team, *, desktop: bool, **limits: Any) -> list[Device]:
    """The relay restarted with `limits`; alice (admin) and bob, and (`desktop`) alice's
    second device; all running. Returns [alice's laptop, bob, alice's desktop]."""
    team.relay.stop()
    team.relay.start(**limits)
    laptop = team.device("alice-laptop", "alice")
    devices = [laptop, team.device("bob-laptop", "bob")]
    if desktop:
        devices.append(team.device("alice-desktop", "alice"))
    team.space(laptop, "team")
    laptop.start()
    for dev in devices[1:]:
        team.join(dev, "team", by=laptop, device=dev.member == "alice")
        dev.start()
    team.wait(lambda: connected(laptop), "alice's laptop connected to the relay")
    return devices


def test_share_past_the_count_quota_fails_and_changes_nothing(team: Team) -> None:
    alice, bob = start_team(team, desktop=False, max_envs=2)
    for name in ("petstore", "chat-websocket", "payments-callbacks"):
        shutil.copy(EX / f"{name}.json", alice.path(name))
    alice.ms("share", "petstore.json", "--space", "team")
    alice.ms("share", "chat-websocket.json", "--space", "team")
    team.wait(lambda: len(bob.files()) == 2, "both shared environments on bob's laptop")

    team.wait(lambda: alice.state("payments-callbacks.json") == "local",
              "payments-callbacks listed as local")
    before = alice.ms("list", "--json").out
    res = alice.ms("share", "payments-callbacks.json", "--space", "team", check=False)
    assert res.code == 1, res.text
    assert "quota exceeded: team plan allows 2 environments and the space already has 2" \
        in res.err
    assert "shared" not in res.out
    assert alice.ms("list", "--json").out == before  # nothing changed
    assert alice.state("payments-callbacks.json") == "local"

    # bob's daemon knows the relay's plan too: his third environment is refused the same way.
    shutil.copy(EX / "payments-callbacks.json", bob.path("payments"))
    team.wait(lambda: connected(bob), "bob connected to the relay")
    res = bob.ms("share", "payments.json", "--space", "team", check=False)
    assert res.code == 1 and "team plan allows 2 environments" in res.err, res.text
    for dev in (alice, bob):
        synced = [e for e in dev.status()["environments"] if e["state"] == "synced"]
        assert sorted(e["name"] for e in synced) == ["Chat realtime", "Petstore API"], synced
    # a teammate's environment keeps its sharer's file name (issue 18)
    assert bob.files() == ["chat-websocket.json", "payments.json", "petstore.json"]

    # Deleting one frees its slot, on the daemon and on the relay: the third one fits now.
    alice.ms("delete", "chat-websocket.json")
    team.wait(lambda: not bob.has("chat-realtime"), "the deleted one gone from bob's folder")
    res = alice.ms("share", "payments-callbacks.json", "--space", "team")
    assert res.out.startswith("shared 'Payments & webhooks")
    team.wait(lambda: (e := bob.env("Payments & webhooks — Café ☕")) and e["state"] == "synced"
              and e["space_name"] == "team", "the third environment synced on bob's laptop")
    assert alice.env("payments-callbacks.json")["state"] == "synced"


def test_size_quota_at_share_and_on_every_later_edit(team: Team) -> None:
    alice, bob, desktop = start_team(team, desktop=True, max_env_bytes=MAX_ENV_BYTES)
    petstore = json.loads((EX / "petstore.json").read_bytes())
    assert compact_size(petstore) == FITS_BYTES

    # At share: an environment already over the quota is refused, and stays local.
    alice.save("huge", sized(dict(petstore, uuid="0f0e0d0c-0b0a-4908-8706-050403020100",
                                  name="Huge API"), GROWN_BYTES))
    res = alice.ms("share", "huge.json", "--space", "team", check=False)
    assert res.code == 1, res.text
    assert ("quota exceeded: team plan allows environments up to 20 kB; this one is 27.7 kB"
            in res.err), res.err
    assert alice.state("huge.json") == "local"

    # Within the quota: shared, and every device gets it.
    alice.save("petstore", petstore)
    alice.ms("share", "petstore.json", "--space", "team")
    name = petstore["uuid"]
    for dev in (desktop, bob):
        team.wait(lambda d=dev: d.has("petstore"), f"petstore on {dev.name}")

    # A later edit grows it past the quota: held with the plan's numbers, sent to nobody.
    grown = sized(petstore, GROWN_BYTES)
    alice.save("petstore", grown)
    entry = team.wait(lambda: (e := alice.env(name)) and e["state"] == "held" and e,
                      "alice's status to hold the grown environment")
    assert entry["reason"].startswith(
        "quota exceeded: team plan allows environments up to 20 kB; this one is 27.7 kB"), entry
    # The sentence is readable in `status` whatever the terminal's width: one line under the
    # table (a table column wrapped it a few words per line on 80 columns).
    narrow = alice.ms("status", columns=80).out
    assert ("  petstore.json: held: quota exceeded: team plan allows environments up to "
            "20 kB; this one is 27.7 kB") in narrow, narrow
    time.sleep(QUIET_S)
    for dev in (desktop, bob):
        assert compact_size(dev.read("petstore")) == FITS_BYTES
    assert alice.read("petstore") == grown  # the user's file is left as they saved it

    # Shrunk back below the quota: it syncs again by itself.
    shrunk = sized(petstore, MAX_ENV_BYTES - 100)
    alice.save("petstore", shrunk)
    team.wait(lambda: alice.env(name)["state"] == "synced", "alice's environment synced again")
    assert alice.env(name)["reason"] is None
    for dev in (desktop, bob):
        team.wait(lambda d=dev: d.read("petstore") == shrunk,
                  f"the shrunk version on {dev.name}")
    assert bob.env(name)["state"] == "synced"
