"""Journey (issue 13): odd files land in Alice's folder while the team works.

A named pipe `y.json`, a symlink `x.json -> /etc/passwd` and a symlink `far.json` to a private
environment Alice keeps outside the synced folder. Her `status` names each one, skipped, with
what it is; her daemon keeps syncing the team's environment both ways and restarts without
hanging; nothing from outside the folder ever reaches Bob or her other device.

(The FIFO is only ever looked at through `status` and `path()`: reading it, as any plain
`open()` does, would block the reader, which is exactly what the daemon no longer does.)
"""

from __future__ import annotations

import contextlib
import json
import os

from .harness import Crew, example_doc, wait


def test_odd_files_are_named_never_read_and_never_leave(crew: Crew) -> None:
    team, laptop, desktop, bob = crew.team, crew.laptop, crew.desktop, crew.bob
    name = laptop.add_example("petstore", as_name="odd-petstore.json")
    pet = laptop.share(name)["uuid"]
    team.synced(pet, laptop, desktop, bob)

    private = example_doc("chat-websocket")
    outside = team.root / "alice-private.json"
    outside.write_text(json.dumps(private, indent=2))
    odd = [laptop.path(n) for n in ("y.json", "x.json", "far.json")]
    try:
        os.mkfifo(odd[0])
        odd[1].symlink_to("/etc/passwd")
        odd[2].symlink_to(outside)

        # Alice's status names each one at once, with what it is and what to do.
        assert "named pipe (FIFO)" in laptop.wait_state("y.json", "skipped")["reason"]
        assert "/etc/passwd" in laptop.wait_state("x.json", "skipped")["reason"]
        far = laptop.wait_state("far.json", "skipped")
        assert "outside the synced folder" in far["reason"] and far["uuid"] is None
        text = laptop.ms("status").out
        assert "skipped: y.json is a named pipe" in text and "x.json" in text
        # Sharing the outside environment through its link is refused.
        refused = laptop.ms("share", str(odd[2]), "--space", "team", check=False)
        assert refused.code != 0 and "not in the synced folder" in refused.err

        # The team's environment keeps flowing both ways.
        bob.edit(pet, lambda d: d.__setitem__("port", 4101))
        wait(lambda: laptop.read(name)["port"] == 4101, "Bob's edit on Alice's laptop")
        laptop.save(name, lambda d: d.__setitem__("port", 4102))
        bob.wait_doc(pet, lambda d: d["port"] == 4102, "Alice's edit")
        desktop.wait_doc(pet, lambda d: d["port"] == 4102, "Alice's edit")

        # A restart with the odd files still there comes up (it used to hang on the FIFO).
        laptop.restart()
        assert laptop.state("y.json") == "skipped" and laptop.state("x.json") == "skipped"
        assert laptop.state(pet) == "synced"
        bob.edit(pet, lambda d: d.__setitem__("port", 4103))
        wait(lambda: laptop.read(name)["port"] == 4103, "Bob's edit after Alice's restart")

        # Nothing from outside the folder reached the team.
        for dev in (bob, desktop):
            assert dev.doc(private["uuid"]) is None
            files = {os.path.basename(e["file"]) for e in dev.status()["environments"]}
            assert not files & {"y.json", "x.json", "far.json"}
    finally:
        for p in odd:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    wait(lambda: laptop.env("y.json") is None, "y.json to leave Alice's status once removed")
