"""The daemon and its folder (issue #3), two in-process devices on a LocalBus.

What a user does to files behind the daemon's back: a save caught half-written, a rename, a
delete, a copy-paste that duplicates uuids, an environment too big or one too many for the
plan. Each time the daemon must say what is wrong in `status` (the same JSON `status --json`
prints), propagate nothing bad to the other device, and recover by itself once the file is
right again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mocksync.agent.bus import LocalBus
from mocksync.agent.daemon import Agent
from mocksync.agent.errors import QuotaError
from mocksync.errors import ValidationError
from mocksync.model.errors import DuplicateUuidError

from helpers.agents import EventLog, env_status, make_agent, running, state_doc
from helpers.devices import Device, make_device, parse_file, team_space
from helpers.files import copy_example, edit_file, editor_save, read_doc, responses, set_label
from helpers.polling import wait_until


@dataclass
class Pair:
    a: Agent
    b: Agent
    dev_a: Device
    dev_b: Device
    space: str
    env: str
    file_a: Path
    file_b: Path


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    """A shares petstore in a team space; B has received it as a file of its own."""
    dev_a, dev_b = make_device(tmp_path, "a"), make_device(tmp_path, "b")
    space = team_space(dev_a, dev_b)
    bus = LocalBus()
    src = copy_example("petstore.json", dev_a.folder)
    async with running(make_agent(dev_a, bus), make_agent(dev_b, bus)) as (a, b):
        shared = a.share(str(src), space="team")
        env = shared["uuid"]
        await wait_until(lambda: env in b.envs and b.envs[env].path.exists(), "B to adopt the env")
        file_b = b.envs[env].path
        await wait_until(lambda: read_doc(file_b) == read_doc(src), "B's file to match A's")
        yield Pair(a, b, dev_a, dev_b, space, env, src, file_b)


def vv(agent: Agent, env: str) -> dict[str, int]:
    return agent.store.version_vector(env)


# ------------------------------------------------------------------------------ invalid JSON


async def test_half_written_file_is_invalid_then_recovers_by_itself(pair: Pair) -> None:
    whole = pair.file_a.read_bytes()
    b_before = pair.file_b.read_bytes()
    vv_before = vv(pair.a, pair.env)
    # An editor caught mid-save: the file holds the first half of the text, written in place.
    with open(pair.file_a, "r+b") as fh:
        fh.truncate(0)
        fh.write(whole[: len(whole) // 2])
    st = await wait_until(
        lambda: (e := env_status(pair.a, pair.env)) and e["state"] == "invalid" and e,
        "A to report the file invalid")
    assert re.search(r"line \d+, column \d+", st["reason"]), st["reason"]
    assert "last good version is kept" in st["reason"]
    assert pair.a.status()["environments"]  # the JSON status renders with an invalid env
    json.dumps(pair.a.status())
    # Nothing was committed, nothing reached B, B's file is untouched.
    assert vv(pair.a, pair.env) == vv_before
    assert vv(pair.b, pair.env) == vv_before
    assert pair.file_b.read_bytes() == b_before

    # The save completes, with an edit in it: synced again with no command, and the edit flows.
    doc = json.loads(whole)
    target = responses(doc)[3]["uuid"]
    set_label(target, "fixed after a half save")(doc)
    editor_save(pair.file_a, doc)
    await wait_until(lambda: env_status(pair.a, pair.env)["state"] == "synced",
                     "A to be synced again")
    assert env_status(pair.a, pair.env)["reason"] is None
    await wait_until(lambda: read_doc(pair.file_b) == doc, "the fixed edit to reach B's file")
    assert vv(pair.a, pair.env)[pair.dev_a.id] == vv_before[pair.dev_a.id] + 1


async def test_file_that_is_not_an_environment_is_invalid_and_kept(pair: Pair) -> None:
    vv_before = vv(pair.a, pair.env)
    editor_save(pair.file_a, b'{"hello": "world"}')
    st = await wait_until(
        lambda: (e := env_status(pair.a, pair.env)) and e["state"] == "invalid" and e,
        "A to report a non-environment")
    assert "not a Mockoon environment" in st["reason"]
    assert vv(pair.a, pair.env) == vv_before
    assert vv(pair.b, pair.env) == vv_before


# ------------------------------------------------------------------------------ rename / delete


async def test_renamed_file_keeps_syncing_under_its_new_name(pair: Pair) -> None:
    new_path = pair.file_a.with_name("renamed-petstore.json")
    os.rename(pair.file_a, new_path)
    await wait_until(lambda: (e := env_status(pair.a, pair.env)) and e["file"] == str(new_path),
                     "A's status to show the new name")
    st = env_status(pair.a, pair.env)
    assert st["state"] == "synced"
    assert pair.a.registry.get(pair.env).file == str(new_path)  # survives a restart
    assert env_status(pair.a, pair.file_a) is None  # the old name is gone from status
    doc = edit_file(new_path, set_label(responses(read_doc(new_path))[0]["uuid"], "after rename"))
    await wait_until(lambda: read_doc(pair.file_b) == doc, "the edit in the renamed file at B")
    # B's own file keeps its own name: a rename is local.
    assert pair.file_b.exists()
    # And the other way: B's edit lands in A's renamed file.
    doc_b = edit_file(pair.file_b, set_label(responses(doc)[1]["uuid"], "from B"))
    await wait_until(lambda: read_doc(new_path) == doc_b, "B's edit in A's renamed file")


async def test_rename_in_two_steps_new_name_first_keeps_syncing(pair: Pair) -> None:
    """`cp old new` then `rm old` a while later (not one rename the watcher can pair)."""
    new_path = pair.file_a.with_name("moved.json")
    new_path.write_bytes(pair.file_a.read_bytes())
    st = await wait_until(lambda: env_status(pair.a, new_path), "the copy in status")
    assert st["state"] == "invalid" and "same uuid as the synced" in st["reason"]
    await asyncio.sleep(0.1)
    pair.file_a.unlink()
    await wait_until(lambda: (e := env_status(pair.a, pair.env)) and e["file"] == str(new_path)
                     and e["state"] == "synced", "the env to live on under the new name")
    assert env_status(pair.a, pair.file_a) is None
    assert pair.a.registry.get(pair.env).file == str(new_path)
    doc = edit_file(new_path, set_label(responses(read_doc(new_path))[0]["uuid"], "moved"))
    await wait_until(lambda: read_doc(pair.file_b) == doc, "the edit from the new name at B")


async def test_deleted_file_is_missing_other_device_keeps_it_restore_brings_it_back(
        pair: Pair) -> None:
    b_before = pair.file_b.read_bytes()
    vv_before = vv(pair.a, pair.env)
    pair.file_a.unlink()
    st = await wait_until(
        lambda: (e := env_status(pair.a, pair.env)) and e["state"] == "missing" and e,
        "A to report the file missing")
    assert f"mocksync restore {pair.env}" in st["reason"]
    assert f"mocksync delete {pair.env}" in st["reason"]
    assert "deleted on this device" in st["reason"]
    # A local delete is not a delete for the team.
    assert vv(pair.a, pair.env) == vv_before
    assert pair.file_b.read_bytes() == b_before
    assert pair.env in pair.b.envs

    # While A's file is gone, B edits: A takes the change in but writes no file.
    doc_b = edit_file(pair.file_b, set_label(responses(read_doc(pair.file_b))[2]["uuid"], "B meanwhile"))
    await wait_until(lambda: state_doc(pair.a, pair.env) == doc_b, "B's edit in A's state")
    assert not pair.file_a.exists()

    res = pair.a.restore(pair.env)
    assert res == {"uuid": pair.env, "file": str(pair.file_a), "restored": True}
    assert parse_file(pair.file_a) == doc_b  # the restored file holds B's edit too
    assert env_status(pair.a, pair.env)["state"] == "synced"
    # Restoring a file that is there changes nothing.
    assert pair.a.restore(pair.env)["restored"] is False
    # The restored file syncs again.
    doc = edit_file(pair.file_a, set_label(responses(doc_b)[0]["uuid"], "after restore"))
    await wait_until(lambda: read_doc(pair.file_b) == doc, "an edit after restore at B")


async def test_delete_for_everyone_moves_the_other_copy_to_trash(pair: Pair) -> None:
    events = EventLog(pair.b)
    res = pair.a.delete(pair.env)
    assert res["state"] == "local"
    assert pair.env not in pair.a.envs
    # B moves its file to the trash and forgets the environment on its store worker, and says
    # so on the loop: all three are awaited (the file can be gone before the rest).
    await wait_until(lambda: not pair.file_b.exists() and events.of("deleted", env=pair.env)
                     and pair.env not in pair.b.envs,
                     "B's copy to leave the folder, B's deleted event, B to forget it")
    trashed = events.of("deleted", env=pair.env)
    assert len(trashed) == 1 and Path(trashed[0]["trash"]).exists()
    assert read_doc(Path(trashed[0]["trash"]))["uuid"] == pair.env
    # A keeps its file, now local.
    assert env_status(pair.a, pair.file_a)["state"] == "local"


async def test_unshare_leaves_a_local_file_on_every_device(pair: Pair) -> None:
    res = pair.a.unshare(pair.env)
    assert res["state"] == "local"
    await wait_until(lambda: pair.env not in pair.b.envs, "B to leave the space too")
    assert pair.file_b.exists() and pair.file_a.exists()
    assert env_status(pair.b, pair.file_b)["state"] == "local"
    assert env_status(pair.a, pair.file_a)["state"] == "local"
    # An edit after unshare goes nowhere.
    before = pair.file_b.read_bytes()
    events = EventLog(pair.a)
    edit_file(pair.file_a, set_label(responses(read_doc(pair.file_a))[0]["uuid"], "local only"))
    await asyncio.sleep(0.3)  # several watcher steps: time enough for a save to be handled
    assert pair.file_b.read_bytes() == before
    assert events.of("change") == []


# ------------------------------------------------------------------------------ duplicate uuids


def with_duplicate(doc: dict) -> tuple[dict, str]:
    dup = doc["routes"][0]["uuid"]
    doc["routes"][1]["uuid"] = dup
    return doc, dup


async def test_share_refuses_duplicate_uuids_naming_them(pair: Pair) -> None:
    doc = read_doc(copy_example("chat-websocket.json", pair.dev_a.folder))
    doc, dup = with_duplicate(doc)
    path = pair.dev_a.folder / "dup.json"
    editor_save(path, doc)
    with pytest.raises(DuplicateUuidError) as err:
        pair.a.share(str(path))
    assert dup in str(err.value) and "duplicate uuids" in str(err.value)
    st = await wait_until(lambda: (e := env_status(pair.a, path)) and e, "dup.json in status")
    assert st["state"] == "invalid" and dup in st["reason"]
    assert doc["uuid"] not in pair.a.envs


async def test_synced_file_that_gains_duplicates_turns_invalid(pair: Pair) -> None:
    vv_before = vv(pair.a, pair.env)
    b_before = pair.file_b.read_bytes()
    doc, dup = with_duplicate(read_doc(pair.file_a))
    editor_save(pair.file_a, doc)
    st = await wait_until(
        lambda: (e := env_status(pair.a, pair.env)) and e["state"] == "invalid" and e,
        "A to refuse the duplicated uuid")
    assert dup in st["reason"] and "duplicate uuids" in st["reason"]
    assert vv(pair.a, pair.env) == vv_before
    assert pair.file_b.read_bytes() == b_before
    # Undo the paste: synced again, nothing was sent.
    editor_save(pair.file_a, b_before)
    await wait_until(lambda: env_status(pair.a, pair.env)["state"] == "synced", "synced again")
    assert vv(pair.a, pair.env) == vv_before


# ------------------------------------------------------------------------------ quotas


async def test_personal_space_refuses_a_sixth_environment(tmp_path: Path) -> None:
    dev = make_device(tmp_path, "solo")
    async with running(make_agent(dev)) as (agent,):
        names = ["petstore.json", "chat-websocket.json", "payments-callbacks.json"]
        for n in names:
            agent.share(str(copy_example(n, dev.folder)))
        agent.new("Orders API")
        agent.new("Billing API")
        assert sum(1 for rt in agent.envs.values() if rt.space == dev.personal) == 5
        with pytest.raises(QuotaError) as err:
            agent.new("One too many")
        assert "solo plan allows 5 environments" in str(err.value)
        assert "already has 5" in str(err.value)
        assert not (dev.folder / "one-too-many.json").exists()  # refused before writing
        sixth = copy_example("petstore.json", dev.folder, "sixth.json")
        doc = read_doc(sixth)
        doc["uuid"] = "6e000000-0000-4000-8000-000000000006"
        editor_save(sixth, doc)
        await wait_until(lambda: env_status(agent, sixth), "sixth.json in status")
        with pytest.raises(QuotaError) as err:
            agent.share(str(sixth))
        assert "solo plan allows 5 environments" in str(err.value)
        assert env_status(agent, sixth)["state"] == "local"
        assert doc["uuid"] not in agent.envs
        # share --copy counts too.
        with pytest.raises(QuotaError):
            agent.share(str(sixth), copy=True)
        assert len(list(dev.folder.glob("*.json"))) == 6


async def test_environment_over_the_size_limit_is_refused_and_held(tmp_path: Path) -> None:
    dev = make_device(tmp_path, "solo")
    async with running(make_agent(dev)) as (agent,):
        big = copy_example("chat-websocket.json", dev.folder, "big.json")
        doc = read_doc(big)
        responses(doc)[0]["body"] = "x" * 6_000_000
        editor_save(big, doc)
        with pytest.raises(QuotaError) as err:
            agent.share(str(big))
        msg = str(err.value)
        assert "solo plan allows environments up to 5 MB" in msg and re.search(r"this one is 6(\.\d+)? MB", msg)
        assert doc["uuid"] not in agent.envs

        # A synced environment that grows past the limit is held, not sent.
        small = copy_example("petstore.json", dev.folder)
        uuid = agent.share(str(small))["uuid"]
        seq = agent.store.version_vector(uuid)
        grown = read_doc(small)
        responses(grown)[0]["body"] = "y" * 6_000_000
        editor_save(small, grown)
        st = await wait_until(
            lambda: (e := env_status(agent, uuid)) and e["state"] == "held" and e,
            "the grown environment to be held")
        assert "solo plan allows environments up to 5 MB" in st["reason"]
        assert "not synced until it fits" in st["reason"]
        assert agent.store.version_vector(uuid) == seq
        # Back under the limit: synced, and the edit that fits is committed.
        responses(grown)[0]["body"] = "small again"
        editor_save(small, grown)
        await wait_until(lambda: env_status(agent, uuid)["state"] == "synced", "synced again")
        assert state_doc(agent, uuid) == grown


async def test_edit_made_with_share_refused_changes_nothing(tmp_path: Path) -> None:
    dev = make_device(tmp_path, "solo")
    async with running(make_agent(dev)) as (agent,):
        path = dev.folder / "notes.json"
        path.write_text("{ not json")
        with pytest.raises(ValidationError) as err:
            agent.share(str(path))
        assert "line 1" in str(err.value)
        assert agent.envs == {}
        assert agent.store.envs() == []
