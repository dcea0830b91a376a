"""Every daemon command of the CLI against a real `mocksync daemon` child process (issue #3):
human output and `--json`, exit codes (3 when no daemon answers, 1 for a refusal with the
reason on stderr), a second daemon on the same home refused while the first keeps running, and
the control socket's mode.

The daemon is always the real executable. Most commands run through click's runner in this
process (the same command code, talking over the same socket; an interpreter start-up per
call would make this file several times slower); the real `mocksync` executable is run too
where the process boundary itself is what is tested (exit codes seen by a shell, the console
script wiring).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mocksync.devtools.envgen import check_env_invariants
from mocksync.store import Store

from helpers.daemons import DaemonProcess, cli, cli_process, status_env, write_config
from helpers.devices import Device, make_device, team_space
from helpers.files import (
    all_uuids,
    copy_example,
    edit_file,
    editor_save,
    read_doc,
    response_by_uuid,
    responses,
    set_label,
)
from helpers.polling import wait_sync
from helpers.procs import mocksync_command, short_tmp

CHANGESET_KEYS = {"device", "member", "seq", "hlc", "time", "ops", "summary"}


@dataclass
class Running:
    dev: Device
    daemon: DaemonProcess

    def cli(self, *args: str):
        return cli(self.dev.home, *args)

    def ok(self, *args: str):
        res = cli(self.dev.home, *args)
        assert res.code == 0, f"mocksync {' '.join(args)} -> {res.code}: {res.err}"
        return res

    def json(self, *args: str):
        return self.ok(*args, "--json").json()


@pytest.fixture
def root() -> Iterator[Path]:
    with short_tmp() as r:
        yield r


@pytest.fixture
def running(root: Path) -> Iterator[Running]:
    dev = make_device(root, "dev")
    write_config(dev.home, blind_window_s=0.3)
    with DaemonProcess(dev.home, dev.folder) as d:
        yield Running(dev, d)


# ------------------------------------------------------------------------------ no daemon


def test_commands_exit_3_when_no_daemon_runs(root: Path) -> None:
    dev = make_device(root, "dev")
    for args in (["status", "--json"], ["share", "x.json"]):
        res = cli_process(dev.home, *args)
        assert res.code == 3, (args, res)
        assert "daemon is not running" in res.err and "mocksync daemon" in res.err
        if "--json" in args:  # still exactly one JSON document on stdout (issue 18)
            doc = json.loads(res.out)
            assert doc["error"]["code"] == "daemon_not_running" and doc["exit_code"] == 3
            assert doc["daemon"] == {"running": False}
        else:
            assert res.out == ""
    for args in (["status"], ["list", "--json"], ["new", "x"], ["unshare", "x"], ["delete", "x"],
                 ["restore", "x"], ["log", "x"], ["conflicts"], ["resolve", "x", "--take", "ours"],
                 ["reconnect"]):
        res = cli(dev.home, *args)
        assert res.code == 3, (args, res)
        assert "daemon is not running" in res.err
        if "--json" in args:
            assert json.loads(res.out)["exit_code"] == 3
        else:
            assert res.out == ""


# ------------------------------------------------------------------------------ read commands


def test_status_and_list_human_and_json(running: Running) -> None:
    dev = running.dev
    pet = copy_example("petstore.json", dev.folder)
    wait_sync(lambda: status_env(running.daemon.client(), pet), "petstore in status")

    st = running.json("status")
    assert st["device"] == {"id": dev.id, "name": "dev"}
    assert st["daemon"]["running"] is True and st["daemon"]["folder"] == str(dev.folder)
    assert st["daemon"]["version"] and st["daemon"]["pid"] == running.daemon.pid
    assert st["relay"]["state"] in ("none", "offline") and "reason" in st["relay"]
    assert st["peers"] == []
    [env] = st["environments"]
    assert env["file"] == str(pet) and env["state"] == "local" and env["name"] == "Petstore API"
    assert set(env) >= {"uuid", "name", "file", "space", "state", "reason", "conflicts"}

    human = running.ok("status").out
    assert f"device  dev ({dev.id})" in human
    assert f"daemon  running, version {st['daemon']['version']}, folder {dev.folder}" in human
    assert "peers   none connected" in human
    assert "petstore.json" in human and "local" in human

    listed = running.json("list")
    assert isinstance(listed, list) and [e["uuid"] for e in listed] == [env["uuid"]]
    human = running.ok("list").out
    assert "Petstore API" in human and "petstore.json" in human


def test_share_new_log_and_edits(running: Running) -> None:
    dev = running.dev
    pet = copy_example("petstore.json", dev.folder)
    original = pet.read_bytes()
    wait_sync(lambda: status_env(running.daemon.client(), pet), "petstore in status")

    # Human share, by bare file name (resolved in the synced folder).
    res = running.ok("share", "petstore.json")
    assert re.search(r"shared 'Petstore API' \([0-9a-f-]{36}\) from .*petstore\.json in space "
                     r"personal", res.out), res.out
    assert pet.read_bytes() == original  # sharing a file as Mockoon wrote it rewrites nothing
    env = read_doc(pet)["uuid"]
    assert status_env(running.daemon.client(), pet)["state"] == "synced"
    # Sharing again is refused with a reason.
    again = running.cli("share", str(pet))
    assert again.code == 1 and "already synced" in again.err

    # `new`, human and JSON: valid, synced, Mockoon's own shape.
    created = running.json("new", "Orders API")
    assert created["state"] == "synced" and created["space_name"] == "personal"
    new_doc = read_doc(Path(created["file"]))
    assert check_env_invariants(new_doc) == []
    assert new_doc["name"] == "Orders API" and new_doc["uuid"] == created["uuid"]
    res = running.ok("new", "Billing API")
    assert re.search(r"created .*billing-api\.json \([0-9a-f-]{36}\), synced in space personal",
                     res.out), res.out
    billing = read_doc(dev.folder / "billing-api.json")
    assert check_env_invariants(billing) == [] and billing["port"] != new_doc["port"]

    # log: one change set per share, then one per edit.
    log = running.json("log", "petstore.json")
    assert len(log) == 1 and set(log[0]) >= CHANGESET_KEYS
    assert log[0]["device"] == dev.id and log[0]["seq"] == 1 and log[0]["member"] == "dev-user"
    assert "created" in log[0]["summary"]
    target = responses(read_doc(pet))[0]["uuid"]
    edit_file(pet, set_label(target, "edited once"))
    log = wait_sync(lambda: (lg := running.json("log", env)) and len(lg) == 2 and lg,
                    "the edit in the log")
    assert log[1]["seq"] == 2 and log[1]["ops"] == 1 and log[1]["summary"] == "1 set"
    human = running.ok("log", "Petstore API").out
    assert "1 set" in human and "created" in human and dev.id[:11] in human
    missing = running.cli("log", "no-such-env")
    assert missing.code == 1 and "no environment matches" in missing.err

    listed = {e["name"]: e for e in running.json("list")}
    assert {n: e["state"] for n, e in listed.items()} == {
        "Petstore API": "synced", "Orders API": "synced", "Billing API": "synced"}


def test_share_copy_gives_fresh_uuids_and_consistent_references(running: Running) -> None:
    dev = running.dev
    src = copy_example("payments-callbacks.json", dev.folder)
    before = src.read_bytes()
    orig = read_doc(src)
    wait_sync(lambda: status_env(running.daemon.client(), src), "the file in status")
    res = running.json("share", str(src), "--copy")
    copy_path = Path(res["file"])
    assert copy_path != src and copy_path.parent == dev.folder and copy_path.exists()
    assert src.read_bytes() == before  # the original is left as it was, and local
    assert status_env(running.daemon.client(), src)["state"] == "local"
    assert status_env(running.daemon.client(), copy_path)["state"] == "synced"
    copy = read_doc(copy_path)
    assert res["uuid"] == copy["uuid"] != orig["uuid"]
    assert copy["name"] == orig["name"] + " (copy)"
    # Fresh uuids everywhere.
    assert all_uuids(copy).isdisjoint(all_uuids(orig))
    assert len(all_uuids(copy)) == len(all_uuids(orig))
    # Every reference followed its entity: mapping the old uuids to the new ones in the
    # original gives exactly the copy (tree entries, callback invocations included).
    mapping = {orig["uuid"]: copy["uuid"]}
    for key in ("folders", "routes", "data", "callbacks"):
        for a, b in zip(orig[key], copy[key], strict=True):
            mapping[a["uuid"]] = b["uuid"]
            for ra, rb in zip(a.get("responses", []), b.get("responses", []), strict=True):
                mapping[ra["uuid"]] = rb["uuid"]
    text = json.dumps(orig)
    for old, new in mapping.items():
        text = text.replace(old, new)
    expected = json.loads(text)
    expected["name"] = copy["name"]
    assert copy == expected
    assert any(r["callbacks"] for r in responses(orig))  # the example does use callbacks
    assert check_env_invariants(copy) == []
    # Human form, and a second copy gets its own new file.
    out = running.ok("share", str(src), "--copy").out
    assert "(copy)" in out and "payments-callbacks-copy-2.json" in out
    assert (dev.folder / "payments-callbacks-copy-2.json").exists()


def test_unshare_delete_restore(running: Running) -> None:
    dev = running.dev
    files = [copy_example(n, dev.folder) for n in ("petstore.json", "chat-websocket.json")]
    orders = Path(running.json("new", "Orders API")["file"])
    for f in files:
        running.ok("share", str(f))

    res = running.json("unshare", "petstore.json")
    assert res["state"] == "local" and res["file"] == str(files[0])
    assert status_env(running.daemon.client(), files[0])["state"] == "local"
    out = running.ok("unshare", str(files[1])).out
    assert out.startswith("unshared; kept as a local file:") and str(files[1]) in out
    assert files[0].exists() and files[1].exists()
    not_synced = running.cli("unshare", str(files[0]))
    assert not_synced.code == 1 and "local environment, not synced" in not_synced.err

    # A synced file deleted on this device: missing, with the sentence offering both ways.
    orders.unlink()
    env = wait_sync(lambda: (e := status_env(running.daemon.client(), orders))
                    and e["state"] == "missing" and e, "orders to be missing")
    assert "mocksync restore" in env["reason"] and "mocksync delete" in env["reason"]
    human = running.ok("status").out
    assert "missing" in human
    out = running.ok("restore", "orders-api.json").out
    assert out.strip() == f"restored {orders}"
    assert check_env_invariants(read_doc(orders)) == []
    assert status_env(running.daemon.client(), orders)["state"] == "synced"
    assert running.json("restore", str(orders))["restored"] is False

    res = running.json("delete", "Orders API")
    assert res["state"] == "local" and "trash" in res["note"]
    assert orders.exists()  # this device keeps its file, now local
    assert status_env(running.daemon.client(), orders)["state"] == "local"
    gone = running.cli("delete", "Orders API")
    assert gone.code == 1 and "not synced" in gone.err
    temp = Path(running.json("new", "Temp API")["file"])
    out = running.ok("delete", "temp-api.json").out
    assert out.strip() == (f"deleted from the space; kept here as a local file: {temp} "
                           "(left the space; other devices move their copy to their trash)")


# ------------------------------------------------------------------------------ conflicts


def test_conflicts_and_resolve(root: Path) -> None:
    a, b = make_device(root, "a"), make_device(root, "b")
    space = team_space(a, b)
    write_config(a.home, blind_window_s=0.3)
    pet = copy_example("petstore.json", a.folder)
    target = responses(read_doc(pet))[0]["uuid"]
    daemon = DaemonProcess(a.home, a.folder)
    with daemon:
        assert cli(a.home, "conflicts").out.strip() == "no conflicts"
        res = cli(a.home, "share", str(pet), "--space", "team", "--json")
        assert res.code == 0, res.err
        env = res.json()["uuid"]
        assert res.json()["space"] == space
    # Device B gets the shared environment, then edits the same field concurrently with A.
    sa, sb = Store(a.home.log_db), Store(b.home.log_db)
    try:
        for w in sa.wires_missing(env, {}):
            sb.ingest(w, a.identity.sign_public, int(time.time() * 1000))
    finally:
        sa.close()
    def edit_a(doc: dict) -> None:
        set_label(target, "from A")(doc)
        response_by_uuid(doc, target)["statusCode"] = 201

    edit_file(pet, edit_a)
    with daemon:  # A's daemon takes in the edit made while it was down
        wait_sync(lambda: len(cli(a.home, "log", env, "--json").json()) == 2, "A's edit logged")
    cs, _ = sb.commit_local(b.identity.signing_key, space=space, env=env, device=b.id,
                            ops=[("s", target, ("v", "label"), "from B"),
                                 ("s", target, ("v", "statusCode"), 418)],
                            now_ms=int(time.time() * 1000) + 5)
    sb.close()
    sa = Store(a.home.log_db)
    try:
        sa.ingest(cs.encode(), b.identity.sign_public, int(time.time() * 1000) + 10)
    finally:
        sa.close()

    with daemon:
        # B's later stamp won; A's file is brought up to date by itself.
        wait_sync(lambda: response_by_uuid(read_doc(pet), target)["label"] == "from B",
                  "the winner in A's file")
        res = cli(a.home, "conflicts", "--json")
        assert res.code == 1  # found conflicts
        c, c2 = res.json()
        if c["field"] != ["v", "label"]:
            c, c2 = c2, c
        assert c2["field"] == ["v", "statusCode"] and c2["winner"]["value"] == 418
        assert c["env"] == env and c["entity"] == target and c["field"] == ["v", "label"]
        assert c["winner"]["value"] == "from B" and c["winner"]["device"] == b.id
        assert c["loser"]["value"] == "from A" and c["loser"]["device"] == a.id
        human = cli(a.home, "conflicts", "petstore.json")
        assert human.code == 1 and "'from B'" in human.out and "'from A'" in human.out
        assert "mocksync resolve" in human.out
        assert status_env(daemon.client(), pet)["conflicts"] == 2

        bad = cli(a.home, "resolve", "nope")
        assert bad.code == 2
        res = cli(a.home, "resolve", c["id"][:8], "--take", "ours", "--json")
        assert res.code == 0, res.err
        assert res.json() == {"id": c["id"], "took": "ours", "changed": True,
                              "value": "from A", "absent": False}
        wait_sync(lambda: response_by_uuid(read_doc(pet), target)["label"] == "from A",
                  "our value back in the file")
        # Human form; keeping the winner changes nothing.
        res = cli(a.home, "resolve", c2["id"], "--take", "theirs")
        assert res.code == 0, res.err
        assert res.out.strip() == "resolved: kept 418, the value already in place (file unchanged)"
        assert response_by_uuid(read_doc(pet), target)["statusCode"] == 418
        none = cli(a.home, "conflicts", "--json")
        assert none.code == 0 and none.json() == []
        unknown = cli(a.home, "resolve", c["id"], "--take", "theirs")
        assert unknown.code == 1 and "no open conflict" in unknown.err
        held = cli(a.home, "resolve", "petstore.json", "--keep-local")
        assert held.code == 1 and "not waiting for a keep-local/discard-local" in held.err


# ------------------------------------------------------------------------------ refusals


def test_invalid_missing_duplicates_and_quota_through_the_cli(running: Running) -> None:
    dev = running.dev
    pet = copy_example("petstore.json", dev.folder)
    wait_sync(lambda: status_env(running.daemon.client(), pet), "petstore in status")
    running.ok("share", str(pet))
    whole = pet.read_bytes()
    with open(pet, "r+b") as fh:  # a half-written save
        fh.truncate(0)
        fh.write(whole[: len(whole) // 3])
    env = wait_sync(lambda: (e := [x for x in running.json("status")["environments"]
                                   if x["file"] == str(pet)][0]) and e["state"] == "invalid" and e,
                    "status --json to show invalid")
    assert re.search(r"not valid JSON at line \d+, column \d+", env["reason"]), env["reason"]
    doc = json.loads(whole)
    set_label(responses(doc)[0]["uuid"], "after the fix")(doc)
    editor_save(pet, doc)
    wait_sync(lambda: status_env(running.daemon.client(), pet)["state"] == "synced",
              "synced again by itself")
    assert len(running.json("log", str(pet))) == 2

    # Duplicate uuids: `validate` and `share` both refuse, naming the uuid.
    dup = copy_example("chat-websocket.json", dev.folder, "dup.json")
    d = read_doc(dup)
    d["routes"][1]["uuid"] = d["routes"][0]["uuid"]
    editor_save(dup, d)
    v = cli(dev.home, "validate", str(dup))
    assert v.code == 1 and d["routes"][0]["uuid"] in v.err and "duplicate uuids" in v.err
    vj = cli(dev.home, "validate", str(dup), "--json")
    assert vj.code == 1 and vj.json()["valid"] is False
    s = running.cli("share", str(dup))
    assert s.code == 1 and d["routes"][0]["uuid"] in s.err and "duplicate uuids" in s.err

    # Quota: the personal space is the solo plan, 5 environments.
    for name in ("One", "Two", "Three", "Four"):
        running.ok("new", name)
    refused = running.cli("new", "Five too many")
    assert refused.code == 1
    assert "quota exceeded: solo plan allows 5 environments and the space already has 5" \
        in refused.err
    sixth = copy_example("payments-callbacks.json", dev.folder)
    refused = running.cli("share", str(sixth))
    assert refused.code == 1 and "solo plan allows 5 environments" in refused.err


# ------------------------------------------------------------------------------ one daemon


def test_second_daemon_is_refused_and_socket_is_private(running: Running) -> None:
    home = running.dev.home
    mode = stat.S_IMODE(os.stat(home.socket).st_mode)
    assert mode == 0o600, oct(mode)
    assert stat.S_ISSOCK(os.stat(home.socket).st_mode)
    second = subprocess.run(
        [*mocksync_command(), "--home", str(home.root), "daemon", "--folder",
         str(running.dev.folder), "--no-mdns", "--no-ui"], capture_output=True, text=True,
        timeout=30)
    assert second.returncode == 1
    assert "already running" in second.stderr and f"pid {running.daemon.pid}" in second.stderr
    # The first one is unharmed.
    assert running.json("status")["daemon"]["pid"] == running.daemon.pid
    assert stat.S_IMODE(os.stat(home.socket).st_mode) == 0o600
    # SIGTERM stops it cleanly: socket removed, lock released (a new daemon can start).
    assert running.daemon.stop() == 0
    assert not home.socket.exists()
    assert cli(home, "status").code == 3
    with DaemonProcess(home, running.dev.folder) as again:
        res = cli_process(home, "status", "--json")
        assert res.code == 0 and res.json()["daemon"]["pid"] == again.pid
