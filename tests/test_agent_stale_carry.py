"""An event's carried bytes are taken in only while the file still holds them.

Red team of issue 15's carried saves (`FileEvent.content`): the watcher reads a save when it
probes, and the daemon takes the save in from those bytes when it handles the event, maybe
later (the event waits for a store turn while the worker writes a teammate's edit). If the
editor saved again meanwhile and the daemon took that newer save in first (the worker's
write met it: `WriteRaced`, or `reconnect`'s scan), the older bytes came in after it: the
save in between was diffed against the newer version, its own edits read as reverted, and
committed so; the newer save's own event then changed nothing. The editor's last edit was
lost. Before issue 15 the event read the file and found the newer save already taken in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mocksync.agent.folderread import FileRead
from mocksync.agent.watcher import FileEvent
from mocksync.agent.writer import content_hash

from helpers.agents import settle, state_doc, two_devices
from helpers.files import read_doc, response_by_uuid, responses
from helpers.polling import wait_until


def json_bytes(doc: object) -> bytes:
    return json.dumps(doc, indent=2).encode()


def editor_save(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".5f3a")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def test_a_stale_carried_save_does_not_undo_the_newer_save_taken_first(
        tmp_path: Path) -> None:
    async with two_devices(tmp_path, settled=True) as two:
        a, path = two.a, two.file_a
        doc = read_doc(path)
        ids = [r["uuid"] for r in responses(doc)[:4]]
        assert len(ids) == 4
        for i in ids[:3]:  # the first save: three edits
            response_by_uuid(doc, i)["label"] = "first save"
        v1 = json_bytes(doc)
        response_by_uuid(doc, ids[3])["label"] = "second save"  # the second: one more
        v2 = json_bytes(doc)
        # The watcher read v1 (its event waits), then the editor saved v2 and the daemon took
        # v2 in first.
        st = os.stat(path)
        stale = FileRead(v1, (st.st_ino, st.st_mtime_ns - 1, len(v1)), st.st_mode)
        editor_save(path, v2)
        await wait_until(lambda: response_by_uuid(state_doc(a, two.env), ids[3])["label"]
                         == "second save", "A to take the second save in")
        await settle(a, two.b)
        async with a.store_turn():
            a.handle_event(FileEvent("changed", path, None, content_hash(v1), stale))
        await settle(a, two.b)
        labels = {i: response_by_uuid(state_doc(a, two.env), i)["label"] for i in ids}
        assert labels == {ids[0]: "first save", ids[1]: "first save",
                          ids[2]: "first save", ids[3]: "second save"}
        assert read_doc(path) == json.loads(v2)
