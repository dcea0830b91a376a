"""Journey: a device's environment folder goes away for a while and comes back.

What a user lives: a git checkout, a sync tool or a hurried `mv` takes Alice's folder away
while her daemon runs. Before, the watch ended for good with one log line: `status` looked
healthy and no later save was ever seen. Now `status` says the folder is being watched for
(a `watch` line, `daemon.watch_problem` in `--json`), and once the folder is back her saves
reach the team again and the team's edits reach her file, with nobody restarting anything.
"""

from __future__ import annotations

from .harness import Crew

#: Longest the daemon may take to notice the folder went or came back (it looks every second).
NOTICE_S = 30.0


def test_a_folder_moved_away_and_back_is_watched_again(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    laptop.add_example("petstore", "folder-moved.json")
    uuid = laptop.share("folder-moved.json")["uuid"]
    team.synced(uuid, laptop, desktop, bob)

    away = desktop.folder.with_name("envs.away")
    desktop.folder.rename(away)
    try:
        problem = team.wait(lambda: desktop.status()["daemon"].get("watch_problem"),
                            "desktop's status to say its folder is gone", timeout=NOTICE_S)
        assert str(desktop.folder) in problem
        text = desktop.ms("status").out
        assert "watch   " in text and str(desktop.folder) in text, text
    finally:
        away.rename(desktop.folder)
    team.wait(lambda: desktop.status()["daemon"].get("watch_problem") is None,
              "desktop's status to clear the watch problem", timeout=NOTICE_S)
    assert "watch   " not in desktop.ms("status").out

    # Her own save is seen again and reaches the team...
    desktop.edit(uuid, lambda d: d.update(port=3917))
    bob.wait_doc(uuid, lambda d: d["port"] == 3917, "desktop's save after the folder came back")
    # ...and the team's edits reach her file.
    bob.edit(uuid, lambda d: d.update(name="Back Again"))
    desktop.wait_doc(uuid, lambda d: d["name"] == "Back Again", "bob's edit in desktop's file")
