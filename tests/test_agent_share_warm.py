"""Sharing a file does, off the loop, what a daemon start does for each synced file (issue 15):
the store's log warmed and the file's span index built. Before, the first save after sharing
built the index of the whole text on the event loop (the first edit of a freshly shared 5 MB
environment took 1.4 s to reach the teammate, every later one ~70 ms)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mocksync.agent.daemon import Agent
from mocksync.agent.writer import content_hash
from mocksync.devtools.pairing import pair
from mocksync.model import dumps
from mocksync.model.jsfmt import MOCKOON_LAYOUT
from mocksync.model.spans import index_unwalked, indexed_text
from mocksync.spaceio.actions import create_space

from envfactory import small_env
from helpers.relaylab import Lab, until


async def share_as_saved(a: Agent, space: str, doc: dict[str, Any]) -> Path:
    """`doc` saved the way Mockoon saves it, seen by `a` as a local file, then shared."""
    path = (a.folder / "env.json").resolve()
    path.write_text(dumps(doc, MOCKOON_LAYOUT), encoding="utf-8")
    await until(lambda: path in a.local, what="alice's daemon to see the file")
    a.share(str(path), space)
    return path


def indexed(a: Agent, path: Path) -> bool:
    parsed = a.edits.parsed.get(path)
    return parsed is not None and parsed.spans is not None


async def test_sharing_builds_the_span_index_of_the_shared_file(lab: Lab) -> None:
    alice = lab.device("alice")
    space = create_space(alice.home, alice.identity, "team").space_id
    await lab.start_relay()
    a, _ta = await lab.agent(alice)
    path = await share_as_saved(a, space, small_env())
    await until(lambda: indexed(a, path), what="the shared file's span index, built without a save")


async def test_the_shared_version_is_the_first_saves_base_without_a_whole_parse(lab: Lab) -> None:
    """The editor holds the file as shared: its first save is diffed against that version,
    with that version's entity views (before: the stored base was parsed and flattened whole
    on the loop at that save, ~0.4 s of a 5 MB environment's first edit)."""
    alice = lab.device("alice")
    space = create_space(alice.home, alice.identity, "team").space_id
    await lab.start_relay()
    a, _ta = await lab.agent(alice)
    doc = small_env()
    path = await share_as_saved(a, space, doc)
    sha = content_hash(path.read_bytes())
    assert a.history.find(path, sha) == doc
    assert a.edits.views[path][0] == sha


async def test_a_teammates_new_environment_is_walked_off_the_loop(lab: Lab) -> None:
    """Bob's daemon writes Alice's new environment whole; the text's span index is walked on
    the spare thread right after, so Bob's first remote edit patches at once."""
    alice, bob = lab.device("alice"), lab.device("bob")
    create_space(alice.home, alice.identity, "team")
    space = pair(alice.home, bob.home, "team")
    await lab.start_relay()
    a, _ta = await lab.agent(alice)
    b, _tb = await lab.agent(bob)
    doc = small_env()
    env = doc["uuid"]
    await share_as_saved(a, space, doc)
    await until(lambda: b.envs.get(env) is not None and b.envs[env].path.exists(),
                what="bob's copy of the env")
    cache = b.store.state(env).text_cache.setdefault(MOCKOON_LAYOUT, {})
    await until(lambda: indexed_text(cache) is not None and not index_unwalked(cache),
                what="bob's text walked")
    assert indexed_text(cache) == b.envs[env].path.read_text(encoding="utf-8")


async def test_a_save_parsed_whole_is_indexed_without_another_save(lab: Lab) -> None:
    """A save the re-parse cannot place (here: the whole layout changed) is parsed whole and
    has no span index; the spare thread makes it, so the save after it is not the slow one."""
    alice = lab.device("alice")
    space = create_space(alice.home, alice.identity, "team").space_id
    await lab.start_relay()
    a, _ta = await lab.agent(alice)
    doc = small_env()
    path = await share_as_saved(a, space, doc)
    await until(lambda: indexed(a, path), what="the shared file's span index")
    doc["name"] = "relaid"
    path.write_text(json.dumps(doc), encoding="utf-8")  # one line: nothing left in place
    await until(lambda: a.edits.parsed[path].doc.get("name") == "relaid",
                what="the save taken in")
    await until(lambda: indexed(a, path), what="the span index of the save parsed whole")
