"""Linked files between two devices (issue #7): two in-process Agents on a LocalBus.

What travels: FILE bodies of responses and callbacks and the TLS files of an environment,
byte for byte, with their modes (private keys 0600 whatever they had), as ordinary signed
change sets. What never does: files named by absolute paths or paths leaving the folder,
symlinks pointing outside it (reported, not read), and file contents in logs or listings.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mocksync.agent.bus import LocalBus
from mocksync.agent.daemon import Agent
from mocksync.agent.errors import QuotaError
from mocksync.agent.spacedir import SpaceDirectory
from mocksync.model.files import (
    CONTENT_REG,
    PATH_REG,
    content_value,
    file_entities,
    file_uuid,
)

from helpers.agents import env_status, make_agent, running, settle
from helpers.devices import Device, make_device, team_space
from helpers.files import copy_example, edit_file, read_doc
from helpers.polling import wait_until

POLL_S = 0.05
KEY = b"-----BEGIN PRIVATE KEY-----\nTOP-SECRET-KEY-BYTES-1234\n-----END PRIVATE KEY-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nCERT-BYTES\n-----END CERTIFICATE-----\n"
LOGO = bytes(random.Random(7).randrange(256) for _ in range(70_000))  # binary, not UTF-8


@dataclass
class Two:
    a: Agent
    b: Agent
    dev_a: Device
    dev_b: Device
    bus: LocalBus


def tune(*agents: Agent) -> None:
    for ag in agents:
        ag.linked.poll_s = POLL_S


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Two]:
    dev_a, dev_b = make_device(tmp_path, "a"), make_device(tmp_path, "b")
    team_space(dev_a, dev_b)
    bus = LocalBus()
    a, b = make_agent(dev_a, bus), make_agent(dev_b, bus)
    tune(a, b)
    async with running(a, b):
        yield Two(a, b, dev_a, dev_b, bus)


def put(folder: Path, rel: str, data: bytes, mode: int = 0o644) -> Path:
    p = folder / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.chmod(p, mode)
    return p


def payments_with_files(folder: Path) -> Path:
    """The payments example (a FILE response, a FILE callback, TLS cert + key) plus a binary
    FILE response, with every file it links in place."""
    src = copy_example("payments-callbacks.json", folder, "payments.json")
    doc = read_doc(src)
    route = next(r for r in doc["routes"] if any(x["bodyType"] == "FILE" for x in r["responses"]))
    logo = dict(copy.deepcopy(route["responses"][0]), uuid="6f1c2d3e-0000-4000-8000-00000000b10b",
                label="logo", filePath="fixtures/img/logo.png", default=False)
    route["responses"].append(logo)
    src.write_text(json.dumps(doc, indent=2))
    put(folder, "fixtures/receipt.html", "<p>reçu n°1</p>\n".encode())
    put(folder, "fixtures/webhook.json", b'{"event": "paid"}\n', 0o640)
    put(folder, "fixtures/img/logo.png", LOGO)
    put(folder, "tls/cert.pem", CERT, 0o644)
    put(folder, "tls/key.pem", KEY, 0o644)  # too open here: it still arrives as 0600
    return src


async def share_payments(t: Two) -> str:
    src = payments_with_files(t.dev_a.folder)
    env = t.a.share(str(src), space="team")["uuid"]
    await wait_until(lambda: all((t.dev_b.folder / r).exists() for r in (
        "fixtures/receipt.html", "fixtures/webhook.json", "fixtures/img/logo.png",
        "tls/cert.pem", "tls/key.pem")) and env in t.b.envs and t.b.envs[env].path.exists(),
        "B to have the environment and every linked file")
    return env


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o7777


def linked(agent: Agent, env: str) -> dict[str, dict[str, Any]]:
    row = env_status(agent, env)
    assert row is not None
    return {lk["path"]: lk for lk in row["linked"]}


# ------------------------------------------------------------------------------ arrival


async def test_file_bodies_tls_files_and_binary_files_arrive_complete(two: Two,
                                                                     caplog) -> None:
    caplog.set_level(logging.DEBUG)
    env = await share_payments(two)
    fa, fb = two.dev_a.folder, two.dev_b.folder
    for rel in ("fixtures/receipt.html", "fixtures/webhook.json", "fixtures/img/logo.png",
                "tls/cert.pem", "tls/key.pem"):
        assert (fb / rel).read_bytes() == (fa / rel).read_bytes(), rel
    assert (fb / "fixtures/img/logo.png").read_bytes() == LOGO
    assert mode(fb / "tls/key.pem") == 0o600  # private key: 0600 whatever it had on A
    assert mode(fb / "fixtures/webhook.json") == 0o640  # other modes kept
    assert mode(fb / "tls/cert.pem") == 0o644
    # The environment JSON is untouched by the file entities.
    assert read_doc(two.b.envs[env].path) == read_doc(two.a.envs[env].path)
    assert set(linked(two.b, env)) == {"fixtures/receipt.html", "fixtures/webhook.json",
                                       "fixtures/img/logo.png", "tls/cert.pem", "tls/key.pem"}
    assert {lk["state"] for lk in linked(two.b, env).values()} == {"synced"}
    assert {lk["state"] for lk in linked(two.a, env).values()} == {"synced"}
    # Signed change sets like any edit; each file is one entity with the derived uuid.
    ents = file_entities(two.b.store.state(env))
    assert ents["tls/key.pem"].uuid == file_uuid(env, "tls/key.pem")
    # Key bytes are never logged, and the conflicts listing never shows contents.
    assert "TOP-SECRET" not in caplog.text and "CERT-BYTES" not in caplog.text


async def test_an_unchanged_file_is_not_sent_again(two: Two) -> None:
    env = await share_payments(two)
    await settle(two.a, two.b)
    before = two.a.store.version_vector(env)
    # Re-saving the environment, or touching a fixture without changing it, sends nothing.
    doc = edit_file(two.a.envs[env].path, lambda d: None)
    (two.dev_a.folder / "fixtures/receipt.html").touch()
    two.a.linked.poll_once()
    two.a.linked.after_local_edit(two.a.envs[env])
    await settle(two.a, two.b)
    assert two.a.store.version_vector(env) == before
    assert read_doc(two.a.envs[env].path) == doc


async def test_an_edit_to_a_fixture_on_b_reaches_a(two: Two) -> None:
    env = await share_payments(two)
    target = two.dev_b.folder / "fixtures/webhook.json"
    target.write_bytes(b'{"event": "refunded"}\n')
    await wait_until(lambda: (two.dev_a.folder / "fixtures/webhook.json").read_bytes()
                     == b'{"event": "refunded"}\n', "B's fixture edit on A")
    assert mode(two.dev_a.folder / "fixtures/webhook.json") == 0o640
    await settle(two.a, two.b)
    assert two.a.conflicts() == [] and two.b.conflicts() == []
    assert linked(two.a, env)["fixtures/webhook.json"]["state"] == "synced"


async def test_a_top_level_json_fixture_syncs_and_is_no_local_environment(two: Two) -> None:
    src = copy_example("payments-callbacks.json", two.dev_a.folder, "payments.json")
    doc = read_doc(src)
    next(c for c in doc["callbacks"] if c["bodyType"] == "FILE")["filePath"] = "users.json"
    src.write_text(json.dumps(doc, indent=2))
    put(two.dev_a.folder, "users.json", b'[{"id": 1}]')
    env = two.a.share(str(src), space="team")["uuid"]
    await wait_until(lambda: (two.dev_b.folder / "users.json").exists(), "users.json on B")
    put(two.dev_a.folder, "users.json", b'[{"id": 2}]')  # through the folder watcher
    await wait_until(lambda: (two.dev_b.folder / "users.json").read_bytes() == b'[{"id": 2}]',
                     "the edit on B")
    await settle(two.a, two.b)
    files = [e["file"] for e in two.a.status()["environments"]]
    assert str(two.dev_a.folder / "users.json") not in files
    assert str(two.dev_b.folder / "users.json") not in [
        e["file"] for e in two.b.status()["environments"]]
    assert linked(two.b, env)["users.json"]["state"] == "synced"


# ------------------------------------------------------------------------------ changes


async def test_a_deleted_linked_file_is_deleted_on_the_other_device(two: Two) -> None:
    env = await share_payments(two)
    (two.dev_a.folder / "fixtures/receipt.html").unlink()
    await wait_until(lambda: not (two.dev_b.folder / "fixtures/receipt.html").exists(),
                     "the delete on B")
    trashed = list(two.dev_b.home.trash.glob("*receipt.html*"))
    assert len(trashed) == 1  # recoverable
    await settle(two.a, two.b)
    for ag in (two.a, two.b):
        row = linked(ag, env)["fixtures/receipt.html"]
        assert row["state"] == "missing" and "deleted" in row["reason"]
    # It comes back when recreated.
    put(two.dev_b.folder, "fixtures/receipt.html", b"<p>new</p>")
    await wait_until(lambda: (two.dev_a.folder / "fixtures/receipt.html").exists()
                     and (two.dev_a.folder / "fixtures/receipt.html").read_bytes()
                     == b"<p>new</p>", "the recreated file on A")


async def test_a_renamed_fixture_moves_on_the_other_device(two: Two) -> None:
    env = await share_payments(two)
    fa = two.dev_a.folder
    os.rename(fa / "fixtures/webhook.json", fa / "fixtures/hook-v2.json")

    def repoint(doc: dict) -> None:
        next(c for c in doc["callbacks"] if c["bodyType"] == "FILE")["filePath"] = \
            "fixtures/hook-v2.json"

    edit_file(two.a.envs[env].path, repoint)
    fb = two.dev_b.folder
    await wait_until(lambda: (fb / "fixtures/hook-v2.json").exists()
                     and not (fb / "fixtures/webhook.json").exists(), "the rename on B")
    assert (fb / "fixtures/hook-v2.json").read_bytes() == b'{"event": "paid"}\n'
    assert "fixtures/hook-v2.json" in linked(two.b, env)


async def test_concurrent_edits_of_one_file_one_wins_everywhere_other_is_a_conflict(
        two: Two) -> None:
    env = await share_payments(two)
    await settle(two.a, two.b)
    await two.b.transport.stop()  # B offline: both edit the same fixture
    put(two.dev_a.folder, "fixtures/webhook.json", b'{"by": "A"}', 0o640)
    await wait_until(lambda: linked(two.a, env)["fixtures/webhook.json"]["state"] == "synced"
                     and two.a.store.version_vector(env) != two.b.store.version_vector(env),
                     "A's commit")
    put(two.dev_b.folder, "fixtures/webhook.json", b'{"by": "B"}', 0o640)
    await wait_until(lambda: linked(two.b, env)["fixtures/webhook.json"]["state"] == "synced",
                     "B's commit")
    await two.b.transport.start(two.b)  # back online: catch-up both ways
    fa, fb = two.dev_a.folder / "fixtures/webhook.json", two.dev_b.folder / "fixtures/webhook.json"
    await wait_until(lambda: fa.read_bytes() == fb.read_bytes(), "one version on both")
    await settle(two.a, two.b)
    winner = fa.read_bytes()
    assert winner in (b'{"by": "A"}', b'{"by": "B"}')
    loser = b'{"by": "B"}' if winner == b'{"by": "A"}' else b'{"by": "A"}'
    for ag in (two.a, two.b):
        cs = ag.conflicts()
        assert len(cs) == 1, cs
        c = cs[0]
        assert c["where"] == "linked file fixtures/webhook.json"
        assert "b64" not in json.dumps(c)  # hashes, sizes and modes: never contents
        assert c["loser"]["value"]["size"] == len(loser)
    # Recoverable: take the loser back, everywhere.
    c = two.a.conflicts()[0]
    take = "ours" if c["loser"]["device"] == two.a.device else "theirs"
    assert two.a.resolve_conflict(c["id"], take)["changed"]
    await wait_until(lambda: fa.read_bytes() == loser and fb.read_bytes() == loser,
                     "the loser back on both devices")


async def test_a_local_edit_racing_a_teammates_version_wins_and_keeps_theirs(two: Two) -> None:
    """B edits the file while A's version is on its way and before B noticed its own edit:
    B's arrives later so it wins, and A's version is listed on B, recoverable."""
    env = await share_payments(two)
    await settle(two.a, two.b)
    two.b.linked.poll_s = 3600.0  # B notices its own edit only when told (below)
    await asyncio.sleep(3 * POLL_S)
    fa, fb = two.dev_a.folder / "fixtures/webhook.json", two.dev_b.folder / "fixtures/webhook.json"
    fb.write_bytes(b'{"by": "B, offline-ish"}')
    fa.write_bytes(b'{"by": "A"}')
    await wait_until(lambda: file_entities(two.b.store.state(env))["fixtures/webhook.json"]
                     .get(CONTENT_REG)["size"] == len(b'{"by": "A"}'), "A's version in B's state")
    assert fb.read_bytes() == b'{"by": "B, offline-ish"}'  # B's unsynced edit is not overwritten
    two.b.linked.poll_once()
    await wait_until(lambda: fa.read_bytes() == b'{"by": "B, offline-ish"}', "B's edit on A")
    await settle(two.a, two.b)
    cs = two.b.conflicts()
    assert len(cs) == 1 and cs[0]["where"] == "linked file fixtures/webhook.json"
    assert cs[0]["loser"]["device"] == two.a.device
    assert cs[0]["loser"]["value"]["size"] == len(b'{"by": "A"}')
    assert two.b.resolve_conflict(cs[0]["id"], "theirs")["changed"]
    await wait_until(lambda: fa.read_bytes() == fb.read_bytes() == b'{"by": "A"}',
                     "A's version back on both devices")


async def test_an_edit_made_while_the_daemon_was_down_is_synced_at_start(
        two: Two, tmp_path: Path) -> None:
    env = await share_payments(two)
    await settle(two.a, two.b)
    await two.a.stop()  # (leaves the bus)
    put(two.dev_a.folder, "tls/cert.pem", b"RENEWED CERT\n")
    a2 = make_agent(two.dev_a, two.bus)
    tune(a2)
    async with running(a2):
        await wait_until(lambda: (two.dev_b.folder / "tls/cert.pem").read_bytes()
                         == b"RENEWED CERT\n", "the offline edit on B")
        assert linked(a2, env)["tls/cert.pem"]["state"] == "synced"
    assert mode(two.dev_b.folder / "tls/cert.pem") == 0o644


# ------------------------------------------------------------------------------ refused


async def test_an_absolute_path_is_reported_and_adopt_fixes_it(two: Two, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    put(outside, "shared-body.json", b'{"shared": true}')
    put(outside, "server.key", KEY, 0o644)
    src = copy_example("payments-callbacks.json", two.dev_a.folder, "payments.json")
    doc = read_doc(src)
    next(c for c in doc["callbacks"] if c["bodyType"] == "FILE")["filePath"] = \
        str(outside / "shared-body.json")
    doc["tlsOptions"]["keyPath"] = str(outside / "server.key")
    src.write_text(json.dumps(doc, indent=2))
    put(two.dev_a.folder, "tls/cert.pem", CERT)
    put(two.dev_a.folder, "fixtures/receipt.html", b"r")
    env = two.a.share(str(src), space="team")["uuid"]
    await wait_until(lambda: env in two.b.envs, "B to adopt the env")
    rows = linked(two.a, env)
    body = rows[str(outside / "shared-body.json")]
    assert body["state"] == "outside" and "absolute" in body["reason"]
    assert "mocksync adopt payments.json" in body["reason"]
    assert rows[str(outside / "server.key")]["state"] == "outside"
    assert not any(e.get(PATH_REG, "").endswith("server.key")
                   for e in two.a.store.state(env).live("file"))

    res = two.a.linked.adopt("payments.json")
    assert {a["to"] for a in res["adopted"]} == {"payments/shared-body.json", "payments/server.key"}
    fb = two.dev_b.folder
    await wait_until(lambda: (fb / "payments/server.key").exists()
                     and (fb / "payments/shared-body.json").exists(), "adopted files on B")
    assert (fb / "payments/server.key").read_bytes() == KEY
    assert mode(fb / "payments/server.key") == 0o600
    assert mode(two.dev_a.folder / "payments/server.key") == 0o600
    await wait_until(lambda: read_doc(two.a.envs[env].path)["tlsOptions"]["keyPath"]
                     == "payments/server.key", "A's file to point at the copy")
    await wait_until(lambda: read_doc(two.b.envs[env].path)["tlsOptions"]["keyPath"]
                     == "payments/server.key", "B's file to point at the copy")
    await settle(two.a, two.b)
    assert {lk["state"] for lk in linked(two.b, env).values()} == {"synced"}
    assert (outside / "server.key").exists()  # the original is left where it was
    assert two.a.linked.adopt("payments.json")["adopted"] == []  # nothing left to adopt


async def test_escaping_paths_and_symlinks_pointing_outside_are_refused(
        two: Two, tmp_path: Path) -> None:
    secret_dir = tmp_path / "secrets"
    put(secret_dir, "id_rsa", b"SSH-PRIVATE-KEY-NEVER-SYNC")
    put(two.dev_a.folder.parent, "sibling.json", b"SIBLING-FILE-NEVER-SYNC")
    src = copy_example("payments-callbacks.json", two.dev_a.folder, "payments.json")
    doc = read_doc(src)
    next(c for c in doc["callbacks"] if c["bodyType"] == "FILE")["filePath"] = \
        "fixtures/../../sibling.json"
    src.write_text(json.dumps(doc, indent=2))
    (two.dev_a.folder / "fixtures").mkdir()
    os.symlink(secret_dir / "id_rsa", two.dev_a.folder / "fixtures/receipt.html")
    put(two.dev_a.folder, "tls/cert.pem", CERT)
    os.symlink(secret_dir, two.dev_a.folder / "tls-outside")
    doc["tlsOptions"]["keyPath"] = "tls-outside/id_rsa"  # through a symlinked folder
    src.write_text(json.dumps(doc, indent=2))
    env = two.a.share(str(src), space="team")["uuid"]
    await wait_until(lambda: env in two.b.envs and two.b.envs[env].path.exists(), "B's env")
    await settle(two.a, two.b)
    rows = linked(two.a, env)
    assert rows["fixtures/../../sibling.json"]["state"] == "outside"
    assert "leaves the synced folder" in rows["fixtures/../../sibling.json"]["reason"]
    for p in ("fixtures/receipt.html", "tls-outside/id_rsa"):
        assert rows[p]["state"] == "outside" and "symlink" in rows[p]["reason"], rows[p]
    assert rows["tls/cert.pem"]["state"] == "synced"
    # Not read, not synced: nothing of them in either log, nothing on B.
    assert set(file_entities(two.a.store.state(env))) == {"tls/cert.pem"}
    for dev in (two.dev_a, two.dev_b):
        blob = b"".join(p.read_bytes() for p in dev.home.root.glob("log.sqlite3*"))
        assert b"NEVER-SYNC" not in blob
    assert not (two.dev_b.folder / "fixtures/receipt.html").exists()
    assert not (two.dev_b.folder / "tls-outside").exists()


async def test_hostile_file_entities_from_a_peer_are_never_written(two: Two,
                                                                   tmp_path: Path) -> None:
    env = await share_payments(two)
    await settle(two.a, two.b)
    # B's folder has a symlink where a teammate's file would go: never followed.
    outside = tmp_path / "victim"
    outside.mkdir()
    (two.dev_b.folder / "fixtures/img/logo.png").unlink()
    os.symlink(outside / "logo.png", two.dev_b.folder / "fixtures/img/logo.png")
    good = content_value(b"x", 0o644, private=False)
    tampered = dict(content_value(b"fine", 0o644, private=False), b64="ZXZpbA==")
    # A (a member, so its change sets verify) commits ops no honest device makes.
    ops = [
        ("c", file_uuid(env, "../escape.sh"), "file", [(PATH_REG, "../escape.sh"),
                                                       (CONTENT_REG, good)]),
        ("c", file_uuid(env, "fixtures/bad.json"), "file",
         [(PATH_REG, "fixtures/bad.json"), (CONTENT_REG, tampered)]),
        ("s", file_uuid(env, "fixtures/img/logo.png"), CONTENT_REG,
         content_value(b"overwrite via symlink", 0o644, private=False)),
    ]
    two.a._commit(two.a.envs[env], ops)
    await settle(two.a, two.b)
    assert not (two.dev_b.folder.parent / "escape.sh").exists()
    assert not (two.dev_b.folder / "fixtures/bad.json").exists()
    assert not (outside / "logo.png").exists()
    rows = linked(two.b, env)
    assert rows["fixtures/img/logo.png"]["state"] == "outside"


async def test_quota_counts_linked_files(two: Two) -> None:
    dirs = SpaceDirectory(two.dev_a.home)
    team = next(s.space_id for s in dirs.spaces() if s.name == "team")
    dirs.set_plan(team, "team", max_env_bytes=60_000)
    src = copy_example("payments-callbacks.json", two.dev_a.folder, "payments.json")
    put(two.dev_a.folder, "fixtures/receipt.html", b"r" * 80_000)
    with pytest.raises(QuotaError) as exc:
        two.a.share(str(src), space="team")
    msg = str(exc.value)
    assert "quota exceeded" in msg and "linked files count toward the size" in msg
    assert "1 linked file" in msg
    assert two.a.envs == {}  # refused: nothing shared
    # Under the limit it shares; a fixture edit that grows past it is held, not sent.
    put(two.dev_a.folder, "fixtures/receipt.html", b"r" * 1_000)
    env = two.a.share(str(src), space="team")["uuid"]
    await wait_until(lambda: (two.dev_b.folder / "fixtures/receipt.html").exists(), "B's copy")
    put(two.dev_a.folder, "fixtures/receipt.html", b"R" * 90_000)
    await wait_until(lambda: linked(two.a, env)["fixtures/receipt.html"]["state"] == "held",
                     "the grown file to be held")
    row = linked(two.a, env)["fixtures/receipt.html"]
    assert "linked files count" in row["reason"]
    await settle(two.a, two.b)
    assert (two.dev_b.folder / "fixtures/receipt.html").read_bytes() == b"r" * 1_000
    # Back under the limit: synced.
    put(two.dev_a.folder, "fixtures/receipt.html", b"ok")
    await wait_until(lambda: (two.dev_b.folder / "fixtures/receipt.html").read_bytes() == b"ok",
                     "the file once it fits")


async def test_a_joining_devices_different_local_copy_is_a_conflict_never_overwritten(
        two: Two) -> None:
    """Issue #12: a teammate's version never replaces a local file this device never synced;
    `status` names it as a conflict, and moving the file away lets the team's version in."""
    await two.b.transport.stop()
    put(two.dev_b.folder, "fixtures/webhook.json", b"B's own old copy")
    src = payments_with_files(two.dev_a.folder)
    env = two.a.share(str(src), space="team")["uuid"]
    await two.b.transport.start(two.b)
    fb = two.dev_b.folder / "fixtures/webhook.json"
    await wait_until(lambda: (two.dev_b.folder / "fixtures/receipt.html").exists()
                     and linked(two.b, env)["fixtures/webhook.json"]["state"] == "conflict",
                     "the other files on B and webhook.json shown as a conflict")
    row = linked(two.b, env)["fixtures/webhook.json"]
    assert "never synced" in row["reason"] and "Move or rename it" in row["reason"]
    two.b.linked.poll_once()
    two.b.linked.after_local_edit(two.b.envs[env])  # a local trigger neither writes nor sends
    await settle(two.a, two.b)
    assert fb.read_bytes() == b"B's own old copy"
    assert (two.dev_a.folder / "fixtures/webhook.json").read_bytes() == b'{"event": "paid"}\n'
    assert two.a.conflicts(env) == []
    os.rename(fb, two.dev_b.folder / "fixtures/webhook.old")
    await wait_until(lambda: fb.read_bytes() == b'{"event": "paid"}\n', "the team's version")
    await wait_until(lambda: linked(two.b, env)["fixtures/webhook.json"]["state"] == "synced",
                     "webhook.json synced on B")


async def test_status_lists_linked_files_and_is_empty_without_any(two: Two) -> None:
    env = two.a.new("Plain API", "team")["uuid"]
    await asyncio.sleep(0)
    assert env_status(two.a, env)["linked"] == []
    # petstore links exports/audit.csv, which is not here: reported as missing.
    pet = two.a.share(str(copy_example("petstore.json", two.dev_a.folder)), space="team")["uuid"]
    row = linked(two.a, pet)["exports/audit.csv"]
    assert row["state"] == "missing" and "not on this device" in row["reason"]
    put(two.dev_a.folder, "exports/audit.csv", b"id,amount\n1,2\n")
    await wait_until(lambda: (two.dev_b.folder / "exports/audit.csv").exists(), "B's copy")
    await wait_until(lambda: linked(two.a, pet)["exports/audit.csv"]["state"] == "synced",
                     "synced on A")
