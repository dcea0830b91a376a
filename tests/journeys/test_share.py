"""Journey: a team starts syncing environments (share, share --copy, new), a teammate
recovers a file deleted by mistake (restore), and a FILE body next to an environment travels
with it (linked files).

Alice (laptop + desktop) and Bob share one space. Everything is done as a user does it: the
`mocksync` command, files saved into the folder, `status`/`list` read back.
"""

from __future__ import annotations

from typing import Any

from .harness import Crew


def test_share_copy_new_reach_every_teammate(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all

    # Alice drops petstore.json into her folder: it is a local file, nobody else sees it.
    laptop.add_example("petstore")
    assert laptop.state("petstore.json") == "local"
    mine = laptop.read("petstore.json")["uuid"]
    assert bob.file_of(mine) is None and desktop.file_of(mine) is None

    # She shares it with the team: same content, `synced`, on all three devices.
    shared = laptop.share("petstore.json")
    assert shared["name"] == "Petstore API"
    pet = shared["uuid"]
    doc = team.synced(pet, laptop, desktop, bob)
    assert doc["name"] == "Petstore API" and len(doc["routes"]) == 15
    bob_row = next(e for e in bob.list() if e["uuid"] == pet)
    assert bob_row["state"] == "synced" and bob_row.get("space_name") == "team"

    # Alice's desktop shares a copy of a local file: the original stays as it was (local),
    # the copy has fresh uuids and is synced everywhere.
    desktop.add_example("chat-websocket")
    original = desktop.read("chat-websocket.json")
    copied = desktop.share("chat-websocket.json", copy=True)
    assert copied["uuid"] != original["uuid"]
    copy_doc = team.synced(copied["uuid"], laptop, desktop, bob)
    assert desktop.read("chat-websocket.json") == original
    assert desktop.state(original["uuid"]) == "local"
    assert laptop.file_of(original["uuid"]) is None and bob.file_of(original["uuid"]) is None
    old_routes = {r["uuid"] for r in original["routes"]}
    assert len(copy_doc["routes"]) == len(original["routes"])
    assert not old_routes & {r["uuid"] for r in copy_doc["routes"]}

    # Bob creates a new environment for the team: a valid, empty environment everywhere.
    created = bob.new("Orders API")
    orders = team.synced(created["uuid"], laptop, desktop, bob)
    assert orders["name"] == "Orders API" and orders["routes"] == []
    assert bob.ms("validate", str(bob.file_of(created["uuid"]))).code == 0

    # Every device lists the three synced environments.
    for dev in (laptop, desktop, bob):
        synced = {e["uuid"] for e in dev.list() if e["state"] == "synced"}
        assert {pet, copied["uuid"], created["uuid"]} <= synced, dev.name


def test_restore_after_a_local_delete(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    laptop.add_example("chat-websocket", "chat.json")
    pet = laptop.share("chat.json")["uuid"]
    before = team.synced(pet, laptop, desktop, bob)

    # Bob deletes his copy by mistake: his status says `missing`; nobody else loses it.
    path = bob.file_of(pet)
    assert path is not None
    path.unlink()
    missing = bob.wait_state(pet, "missing")
    assert missing["reason"], "status should say why the environment is missing"
    assert laptop.doc(pet) == before and desktop.doc(pet) == before
    assert laptop.state(pet) == "synced"

    # Meanwhile Alice keeps editing; then Bob restores: the file is back, with her edit.
    laptop.edit(pet, lambda d: d.update(name="Chat v2"))
    team.everywhere(pet, (desktop,), lambda d: d["name"] == "Chat v2", "Alice's rename")
    out = bob.ms("restore", pet)
    assert "restored" in out.out
    doc = bob.wait_doc(pet, lambda d: d["name"] == "Chat v2", "the restored file")
    again = bob.ms("restore", pet).out  # a second restore writes nothing and says so
    assert again.startswith("nothing to restore:") and "restored" not in again, again
    assert doc["routes"] == before["routes"]
    bob.wait_state(pet, "synced")
    team.synced(pet, laptop, desktop, bob)


def test_linked_file_reaches_the_teammate(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    # payments-callbacks serves fixtures/receipt.html (a FILE body next to the environment).
    laptop.add_example("payments-callbacks", "payments.json")
    body = "<html><body>Receipt #1 — café</body></html>\n".encode()
    laptop.write_raw("fixtures/receipt.html", body)
    pay = laptop.share("payments.json")["uuid"]
    team.synced(pay, laptop, desktop, bob)

    # Bob's folder gets the body beside his copy, byte for byte.
    receipt = bob.folder / "fixtures" / "receipt.html"
    team.wait(lambda: receipt.exists() and receipt.read_bytes() == body,
              "fixtures/receipt.html on bob-laptop")
    row = team.wait(lambda: _linked(laptop.env(pay), "fixtures/receipt.html"),
                    "the linked file in alice-laptop's status")
    assert row["state"] == "synced", row

    # Alice edits the body: Bob's copy follows.
    body2 = b"<html><body>Receipt #2</body></html>\n"
    laptop.write_raw("fixtures/receipt.html", body2)
    team.wait(lambda: receipt.read_bytes() == body2, "the edited receipt on bob-laptop")
    desktop_receipt = desktop.folder / "fixtures" / "receipt.html"
    team.wait(lambda: desktop_receipt.read_bytes() == body2, "the edited receipt on alice-desktop")


def _linked(entry: dict | None, path: str) -> dict | None:
    """The `linked` row of a status entry for `path`, when it is in sync."""
    for row in (entry or {}).get("linked") or ():
        if row.get("path") == path and row.get("state") == "synced":
            return row
    return None


def test_many_linked_files_no_device_has_yet_take_one_line_in_status(crew: Crew) -> None:
    """An environment linking dozens of files nobody has put next to it yet (the bundled
    large-catalog example links 57) printed one `missing` line each: `status` became a wall of
    the same sentence and buried everything else. A few are named, the rest counted."""
    team, laptop = crew.team, crew.laptop
    name = "many-links.json"

    def link_many(doc: dict[str, Any]) -> None:
        responses = [r for route in doc["routes"] for r in route["responses"]]
        for i, r in enumerate(responses[:8]):
            r["bodyType"], r["filePath"] = "FILE", f"absent/file-{i}.csv"

    laptop.add_example("petstore", name, edit=link_many)
    env = laptop.share(name)["uuid"]

    def missing() -> list[str] | None:
        rows = (laptop.env(env) or {}).get("linked") or []
        paths = [r["path"] for r in rows if r.get("state") == "missing"]
        return paths if sum(p.startswith("absent/") for p in paths) == 8 else None

    paths = team.wait(missing, "the eight absent linked files listed as missing")
    text = laptop.ms("status").out
    named = [line for line in text.splitlines() if line.startswith(f"  {name}: ")
             and ": missing: " in line]
    assert len(named) == 3, text
    assert f"  {name}: {len(paths) - 3} more linked files missing: " in text, text
