"""Sharing a file does, off the loop, what a daemon start does for each synced file (issue 15):
the store's log warmed and the file's span index built. Before, the first save after sharing
built the index of the whole text on the event loop (the first edit of a freshly shared 5 MB
environment took 1.4 s to reach the teammate, every later one ~70 ms)."""

from __future__ import annotations

from mocksync.model import dumps
from mocksync.model.jsfmt import MOCKOON_LAYOUT
from mocksync.spaceio.actions import create_space

from envfactory import small_env
from helpers.relaylab import Lab, until


async def test_sharing_builds_the_span_index_of_the_shared_file(lab: Lab) -> None:
    alice = lab.device("alice")
    space = create_space(alice.home, alice.identity, "team").space_id
    await lab.start_relay()
    a, _ta = await lab.agent(alice)
    doc = small_env()
    path = (a.folder / "env.json").resolve()
    path.write_text(dumps(doc, MOCKOON_LAYOUT), encoding="utf-8")  # as Mockoon saves it
    await until(lambda: path in a.local, what="alice's daemon to see the file")
    a.share(str(path), space)

    def indexed() -> bool:
        parsed = a.edits.parsed.get(path)
        return parsed is not None and parsed.spans is not None

    await until(indexed, what="the shared file's span index, built without a save")
