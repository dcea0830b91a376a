"""Attack: read who works with whom from the relay (issue 12, "the relay learns as little as
possible").

Before: every membership entry the relay stores and verifies carried the space's name, every
member's name and every device's name in the clear, removal cuts named environment ids, and
the relay's refusals and log lines quoted the space's name. Whoever ran the relay, or read its
disk, learned the team.

Now names are sealed with a key derived from the space's first content key (`space.names`),
which every member holds across rotations; the relay verifies signatures over the sealed
bytes; removal cuts are keyed by env tags; the relay names spaces by id.

Black-box: a real relay (at its most verbose log level) and real daemons form a team, share
and edit an environment, remove a device (key rotation), and admit a member after the
rotation. Then the relay's whole data directory (SQLite file, WAL, everything) and its log
output are searched for every name and the environment id: none is there. The members, the
late joiner included, still read every name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import journeys.harness as harness
from journeys.harness import Team

SPACE = "quetzal-orchard"
MEMBERS = {"Wilhelmina": ["wilhelmina-thinkpad", "wilhelmina-imac"],
           "Bartholomew": ["bartholomew-xps"]}
LATE = ("cordelia-framework", "Cordelia")


def _title(text: str):
    def edit(doc: dict[str, Any]) -> None:
        doc["routes"][0]["documentation"] = text
    return edit


def _found(needles: list[str], blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    """(needle, where) for every needle (any case, UTF-8) present in any blob."""
    out = []
    for where, data in blobs.items():
        low = data.lower()
        for n in needles:
            if n.lower().encode() in low:
                out.append((n, where))
    return out


def _relay_files(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes()
            for p in sorted(data_dir.rglob("*")) if p.is_file()}


def test_relay_database_and_log_hold_no_names(monkeypatch: pytest.MonkeyPatch) -> None:
    spawn = harness.spawn

    def verbose(args: list[str], log_path: Path):  # the relay at its most talkative
        return spawn(args + ["-vv"] if "relay" in args else args, log_path)

    monkeypatch.setattr(harness, "spawn", verbose)
    team = Team()
    try:
        devs = team.crew(SPACE, members=MEMBERS)
        thinkpad, imac, xps = devs
        thinkpad.add_example("petstore")
        pet = thinkpad.share("petstore.json", space=SPACE)["uuid"]
        team.synced(pet, *devs)
        xps.edit(pet, _title("an edit by bartholomew"))
        team.everywhere(pet, (thinkpad, imac), lambda d: d["routes"][0]["documentation"]
                        == "an edit by bartholomew", "bartholomew's edit")
        # A removal (cut + key rotation), then a member who joins after the rotation.
        thinkpad.ms("remove", SPACE, "Bartholomew")
        late = team.device(*LATE)
        late.start()
        team.join(late, SPACE, by=thinkpad)
        team.synced(pet, thinkpad, imac, late)
        late.edit(pet, _title("an edit by cordelia"))
        team.everywhere(pet, (thinkpad, imac), lambda d: d["routes"][0]["documentation"]
                        == "an edit by cordelia", "cordelia's edit")

        # Members read every name, the late joiner included (sealed before her key existed).
        doc = late.ms("members", SPACE, "--json").json()
        assert doc["space"]["name"] == SPACE
        assert {m["name"] for m in doc["members"]} == {"Wilhelmina", "Cordelia"}
        assert {d["name"] for m in doc["members"] for d in m["devices"]} == {
            "wilhelmina-thinkpad", "wilhelmina-imac", "cordelia-framework"}
        assert [r["name"] for r in doc["removed_devices"]] == ["bartholomew-xps"]

        # The relay: nothing of it names anyone, the space or the environment.
        needles = [SPACE, *MEMBERS, *[d for ds in MEMBERS.values() for d in ds], *LATE, pet]
        files = _relay_files(team.relay.data)
        assert any(name.endswith(".sqlite3") for name in files), files.keys()
        assert sum(len(b) for b in files.values()) > 10_000  # it does hold the team's data
        log_text = team.relay.log_path.read_bytes()
        assert b"DEBUG" in log_text or b"INFO" in log_text  # the log was captured
        assert _found(needles, files | {"relay log": log_text}) == []
        team.relay.stop()  # checkpointed on close: the main file too
        assert _found(needles, _relay_files(team.relay.data)) == []
    except BaseException:
        print(team.logs())
        raise
    finally:
        team.close()
