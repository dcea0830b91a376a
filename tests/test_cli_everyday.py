"""Issue 18 "Everyday use": JSON on every error path, diff across environments and
--exit-code, the daemon's checks before its banner, one help layout, the sharer's file name,
one peer row per device, progress (plain lines and a pseudo-terminal), `mocksync service`.

Commands run in-process through click's runner (the same code as the executable, without an
interpreter start-up each time); the daemon's checks run the real executable, since what is
tested is what it prints before it would start.
"""

from __future__ import annotations

import io
import json
import os
import plistlib
import pty
import random
import re
import select
import shlex
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from mocksync.agent.errors import UnsupportedSystemError
from mocksync.agent.peerrows import one_row_per_device
from mocksync.agent.service import LAUNCHD_LABEL, daemon_argv, plan_for
from mocksync.agent.statusdoc import list_document, status_document
from mocksync.cli import load_all, main
from mocksync.cli.common import ENV_HELP
from mocksync.cli.progressui import (
    Reporter,
    caught_up,
    progress_lines,
    syncing_items,
    wait_caught_up,
)
from mocksync.devtools.clidoc import _walk
from mocksync.errors import ValidationError
from mocksync.model import snapshot_ops, to_wire, validate_ops
from mocksync.model.errors import NoFreeNameError
from mocksync.model.ops import FILE_NAME, MAX_FILE_NAME_CHARS
from mocksync.model.sharedname import MAX_SHARED_NAME_BYTES, choose_file_name, shared_name_problem
from mocksync.sync.progress import MAX_TRACKED_PULLS, SyncProgress, missing_count

from envfactory import small_env
from helpers.procs import mocksync_command


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    res = CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(
        main, ["--home", str(home), *args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


def env_file(path: Path, doc: dict[str, Any]) -> str:
    path.write_text(json.dumps(doc, indent=2))
    return str(path)


# ------------------------------------------------------------------ --json on every error path


def _error_args(path: list[str], cmd: click.Command, tmp: Path) -> list[str]:
    """Arguments that make `cmd` fail: missing files, unknown names, a bogus token."""
    args: list[str] = []
    for p in cmd.params:
        if isinstance(p, click.Argument):
            args += [str(tmp / "missing.json")] if p.name != "token" else ["not-a-token"]
    if path[-1] == "resolve":
        args += ["--take", "ours"]
    return args


def test_every_json_command_prints_one_document_on_errors(tmp_path: Path) -> None:
    load_all()
    home = tmp_path / "home"  # no identity, no daemon
    checked = []
    for path, cmd in _walk(main, ["mocksync"]):
        if isinstance(cmd, click.Group) or not any(o.name == "as_json" for o in cmd.params):
            continue
        if path[1:] == ["init"]:
            continue  # succeeds on a fresh home (and prints its one document)
        args = path[1:] + _error_args(path, cmd, tmp_path) + ["--json"]
        res = run(home, *args, env={"HOME": str(tmp_path / "user"), "PATH": "/nonexistent"})
        try:
            doc = json.loads(res.stdout)  # exactly one document: two would not parse
        except ValueError:
            pytest.fail(f"`mocksync {' '.join(args)}` printed no single JSON document: "
                        f"{res.stdout!r} (stderr {res.stderr!r})")
        checked.append(path[1:])
        if path[1] == "service":
            continue  # install succeeds (under HOME, not loaded: no systemctl), then status
        assert res.exit_code != 0, (args, res.stdout)
        err = doc.get("error") if isinstance(doc, dict) else None
        if err is None:  # validate's own answer for a bad file
            assert doc.get("valid") is False, (args, doc)
            continue
        assert doc["exit_code"] == res.exit_code, (args, doc)
        assert err["message"] and err["code"], (args, doc)
        assert err["message"] in res.stderr  # the sentence still reaches a person
    assert len(checked) >= 15, checked
    assert ["status"] in checked and ["validate"] in checked and ["diff"] in checked


def test_json_usage_error_is_a_document_with_exit_2(tmp_path: Path) -> None:
    res = run(tmp_path, "status", "--json", "--no-such-flag")
    assert res.exit_code == 2
    assert json.loads(res.stdout) == {
        "error": {"code": "usage", "message": "No such option '--no-such-flag'."}, "exit_code": 2}
    res = run(tmp_path, "status", "--no-such-flag")
    assert res.exit_code == 2 and res.stdout == ""  # without --json: stderr only


def test_a_guessed_command_name_says_which_command_is_meant(tmp_path: Path) -> None:
    # `mocksync ui` (the web page is `open`) said only "No such command 'ui'".
    res = run(tmp_path, "ui")
    assert res.exit_code == 2 and "did you mean `mocksync open`?" in res.stderr, res.stderr
    res = run(tmp_path, "ui", "--json")
    assert json.loads(res.stdout)["error"]["message"] == (
        "No such command 'ui'; did you mean `mocksync open`?")
    res = run(tmp_path, "nonsense")
    assert res.exit_code == 2 and "did you mean" not in res.stderr


def test_status_json_without_daemon(tmp_path: Path) -> None:
    res = run(tmp_path, "status", "--json")
    assert res.exit_code == 3
    doc = json.loads(res.stdout)
    assert doc["error"]["code"] == "daemon_not_running" and doc["daemon"] == {"running": False}


def test_validate_and_diff_json_on_missing_and_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    good = env_file(tmp_path / "good.json", small_env())
    res = run(tmp_path, "validate", str(tmp_path / "nope.json"), "--json")
    assert res.exit_code == 1
    assert json.loads(res.stdout)["error"]["code"] == "unreadable"
    res = run(tmp_path, "diff", good, str(bad), "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["error"]["code"] == "invalid" and doc["file"] == str(bad)


# ------------------------------------------------------------------ diff


def test_diff_of_two_environments_says_so(tmp_path: Path) -> None:
    a = env_file(tmp_path / "a.json", small_env())
    other = small_env()
    other["uuid"], other["name"] = "e0000000-0000-4000-8000-00000000ffff", "Other"
    b = env_file(tmp_path / "b.json", other)
    res = run(tmp_path, "diff", a, b)
    assert res.exit_code == 1
    assert "two different environments" in res.stderr and "share" not in res.stderr
    doc = json.loads(run(tmp_path, "diff", a, b, "--json").stdout)
    assert doc["error"]["code"] == "different_environments"
    assert {doc["old_uuid"], doc["new_uuid"]} == {small_env()["uuid"], other["uuid"]}


def test_diff_exit_code_like_git(tmp_path: Path) -> None:
    a = env_file(tmp_path / "a.json", small_env())
    changed = small_env()
    changed["routes"][0]["responses"][0]["body"] = "changed"
    b = env_file(tmp_path / "b.json", changed)
    relaid = tmp_path / "c.json"
    relaid.write_text(json.dumps(small_env()))  # the same, laid out differently
    assert run(tmp_path, "diff", a, b).exit_code == 0  # plain diff: 0, as before
    res = run(tmp_path, "diff", "--exit-code", a, b)
    assert res.exit_code == 1 and "changed" in res.stdout
    assert run(tmp_path, "diff", "--exit-code", a, b, "--json").exit_code == 1
    assert run(tmp_path, "diff", "--exit-code", a, a).exit_code == 0
    assert run(tmp_path, "diff", "--exit-code", a, str(relaid)).exit_code == 0


# ------------------------------------------------------------------ the daemon's checks


@pytest.mark.parametrize("args,code,says", [
    (["--relay", "ftp://relay.example:21"], 2, "relay"),
    (["--bind", "not-an-address"], 2, "bind address"),
    (["--bind", "0.0.0.0"], 2, "bind address"),
    ([], 1, "mocksync init"),
])
def test_daemon_checks_before_its_banner(tmp_path: Path, args: list[str], code: int,
                                         says: str) -> None:
    proc = subprocess.run([*mocksync_command(), "--home", str(tmp_path / "h"), "daemon",
                           "--folder", str(tmp_path / "f"), "--no-mdns", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc
    assert says in proc.stderr and "watching" not in proc.stderr, proc.stderr
    assert not (tmp_path / "h" / "control.sock").exists()


# ------------------------------------------------------------------ help layout


ORDER = re.compile(r"^Usage: .+?\n\n(?P<desc>.+?)\n\nOptions:\n(?P<opts>.+?)(?:\n\n(?P<epi>.*))?$",
                   re.S)


def test_every_help_page_has_one_layout() -> None:
    """Description, then (where ENV is taken) what ENV may be, then options, then Examples."""
    load_all()
    pages = 0
    for path, cmd in _walk(main, ["mocksync"]):
        ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100)
        text = cmd.get_help(ctx).rstrip()
        m = ORDER.match(text)
        assert m, f"{' '.join(path)}: not description/options/examples:\n{text}"
        assert "Example" not in m["desc"] and "Example" not in m["opts"], " ".join(path)
        epi = m["epi"] or ""
        if isinstance(cmd, click.Group):  # a group lists its commands between the two
            assert epi.startswith("Commands:"), " ".join(path)
            epi = epi.split("\n\n", 1)[1] if "\n\n" in epi else ""
        assert epi.lstrip().startswith("Examples:"), " ".join(path)
        assert "Example" not in epi.lstrip()[len("Examples:"):], " ".join(path)
        assert "mocksync" in epi, " ".join(path)
        takes_env = any(isinstance(p, click.Argument) and p.name in ("env", "target")
                        for p in cmd.params)
        assert (ENV_HELP in m["desc"]) == takes_env, " ".join(path)
        if takes_env:
            assert m["desc"].index(ENV_HELP) > 0  # after the description itself
        pages += 1
    assert pages > 25


# ------------------------------------------------------------------ the sharer's file name


@pytest.mark.parametrize("name", ["petstore.json", "Pet Store.json", "ünï.JSON", "a" * 250 + ".json"])
def test_safe_shared_names(name: str) -> None:
    assert shared_name_problem(name) is None
    assert choose_file_name(name, "Petstore API", lambda n: True) == name


@pytest.mark.parametrize("name,why", [
    ("../evil.json", "separator"), ("sub/x.json", "separator"), ("a\\b.json", "separator"),
    (".hidden.json", "hidden"), ("..", "hidden"), ("notes.txt", "end in"), (".json", "hidden"),
    ("x\n.json", "control"), ("a" * 300 + ".json", "longer"), (None, "string"), (3, "string"),
    ("", "string"),
])
def test_unsafe_shared_names_fall_back_to_the_title(name: Any, why: str) -> None:
    assert why in (shared_name_problem(name) or "")
    assert choose_file_name(name, "Petstore API", lambda n: True) == "petstore-api.json"


def test_a_taken_name_falls_back_as_before() -> None:
    taken = {"petstore.json", "petstore-api.json", "petstore-api-2.json"}
    assert choose_file_name("petstore.json", "Petstore API",
                            lambda n: n not in taken) == "petstore-api-3.json"
    assert choose_file_name(None, "Petstore API", lambda n: n not in taken) == "petstore-api-3.json"
    with pytest.raises(NoFreeNameError):
        choose_file_name("petstore.json", "x", lambda n: False)


def test_file_name_register_travels_in_ops_and_is_checked() -> None:
    doc = small_env()
    ops = snapshot_ops(doc, random.Random(1)) + [("s", doc["uuid"], FILE_NAME, "petstore.json")]
    back = validate_ops([to_wire(op) for op in ops])
    assert back[-1] == ("s", doc["uuid"], FILE_NAME, "petstore.json")
    for bad in (7, "", "x" * (MAX_FILE_NAME_CHARS + 1)):
        with pytest.raises(ValidationError, match="file name"):
            validate_ops([to_wire(("s", doc["uuid"], FILE_NAME, bad))])
    assert MAX_SHARED_NAME_BYTES >= MAX_FILE_NAME_CHARS // 4


# ------------------------------------------------------------------ one row per device


def _lan(dev: str, state: str = "connected") -> dict[str, Any]:
    return {"device": dev, "member": "bob", "via": "lan", "state": state, "rtt_ms": 2,
            "address": "127.0.0.1", "reason": None, "spaces": ["team"]}


def _relay(dev: str, space: str = "S1") -> dict[str, Any]:
    return {"device": dev, "member": "bob", "via": "relay", "state": "online", "rtt_ms": None,
            "space": space}


def test_eleven_peers_reachable_both_ways_are_eleven_rows() -> None:
    devs = [f"D{i}" for i in range(11)]
    rows = [_lan(d) for d in devs] + [_relay(d) for d in devs] + [_relay(d, "S2") for d in devs]
    out = one_row_per_device(rows)
    assert [r["device"] for r in out] == devs
    for r in out:
        assert (r["via"], r["state"], r["fallback"]) == ("lan", "connected", "relay")
        assert [x["via"] for x in r["routes"]] == ["lan", "relay"]


def test_the_route_in_use_is_the_best_one_up() -> None:
    out = one_row_per_device([_lan("A", "unreachable"), _relay("A"), _relay("B")])
    a, b = out
    assert (a["via"], a["state"], a["fallback"]) == ("relay", "online", None)
    assert a["routes"][1]["state"] == "unreachable"
    assert (b["via"], b["fallback"]) == ("relay", None)
    assert one_row_per_device([{"via": "relay", "state": "online"}]) == [
        {"via": "relay", "state": "online"}]  # no device: kept as it is


# ------------------------------------------------------------------ progress


def test_progress_bookkeeping() -> None:
    assert missing_count({"a": 3, "b": 9}, {"a": 10, "b": 5, "c": 2}) == 9
    p = SyncProgress(max_pulls=2)
    p.begin("S", "tag1", None, 100, now=1.0)
    p.advance("S", "tag1", 40, env="E1")
    p.begin("S", "tag2", "E2", 5, now=2.0)
    p.begin("S", "tag3", "E3", 5, now=3.0)  # over the bound: not shown
    assert [(v["env"], v["done"], v["total"], v["percent"]) for v in p.view()] == [
        ("E1", 40, 100, 40), ("E2", 0, 5, 0)]
    p.advance("S", "tag2", 9)  # more than announced: total follows
    assert p.for_env("E2")["total"] == 9 and p.for_env("E2")["percent"] == 100
    p.end("S", "tag1")
    assert p.for_env("E1") is None
    with pytest.raises(ValueError):
        p.begin("S", "x", None, -1, now=0.0)
    assert MAX_TRACKED_PULLS >= 100


def test_status_document_marks_syncing_and_maps_file_names() -> None:
    raw = {"peers": [_lan("A"), _relay("A")],
           "environments": [
               {"uuid": "E1", "name": "Petstore", "file": "/f/petstore.json", "state": "synced",
                "reason": None},
               {"uuid": "E2", "name": "Local", "file": "/f/l.json", "state": "local",
                "reason": None}],
           "progress": [{"space": "S", "env": "E1", "done": 3, "total": 10, "percent": 30,
                         "started": 1.0},
                        {"space": "S", "env": "E9", "done": 0, "total": 4, "percent": 0,
                         "started": 2.0}]}
    doc = status_document(raw, {"E1": "petstore.json"})
    assert len(doc["peers"]) == 1
    e1, e2 = doc["environments"]
    assert e1["state"] == "syncing" and e1["progress"] == {"done": 3, "total": 10, "percent": 30}
    assert "3 of 10" in e1["reason"] and e1["shared_as"] == "petstore.json"
    assert "progress" not in e2 and "shared_as" not in e2
    assert [p["name"] for p in doc["progress"]] == ["Petstore", None]  # E9: no file yet
    assert raw["environments"][0]["state"] == "synced"  # the input is not changed
    assert list_document(raw["environments"], {"E1": None})[0]["shared_as"] is None
    assert not caught_up(doc) and len(syncing_items(doc)) == 2


def test_progress_lines_in_a_pipe() -> None:
    items = [{"key": "E1", "label": "Petstore", "done": 3, "total": 10}]
    lines, memo = progress_lines({}, items)
    assert lines == ["syncing Petstore: 3 of 10 change sets"]
    assert progress_lines(memo, items)[0] == []  # nothing moved: nothing printed
    assert progress_lines(memo, [])[0] == ["done E1"]
    out = io.StringIO()
    docs = iter([{"progress": [{"env": "E1", "name": "Petstore", "done": 3, "total": 10}]},
                 {"progress": [{"env": "E1", "name": "Petstore", "done": 10, "total": 10}]},
                 {"progress": []}])
    now = [0.0]
    with Reporter(out) as rep:
        assert not rep.is_tty
        done, last = wait_caught_up(lambda: next(docs), rep, 60, clock=lambda: now[0],
                                    sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert done and last == {"progress": []}
    assert out.getvalue().splitlines() == ["syncing Petstore: 3 of 10 change sets",
                                           "syncing Petstore: 10 of 10 change sets",
                                           "done: Petstore"]
    assert "\x1b" not in out.getvalue()


def test_wait_gives_up_at_its_timeout() -> None:
    doc = {"progress": [{"env": "E1", "done": 1, "total": 9}]}
    now = [0.0]
    done, _ = wait_caught_up(lambda: doc, Reporter(io.StringIO()), 2.0, clock=lambda: now[0],
                             sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert not done and now[0] >= 2.0


def test_progress_bars_on_a_pseudo_terminal() -> None:
    code = (
        "import os, sys\n"
        "from mocksync.cli.progressui import Reporter\n"
        "with open(os.ttyname(1), 'w') as tty, Reporter(tty) as rep:\n"
        "    assert rep.is_tty\n"
        "    rep.show([{'key': 'E1', 'label': 'Petstore', 'done': 3, 'total': 10}])\n"
        "    rep.show([])\n"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=slave, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "syncing Petstore" in text and "\x1b[" in text  # drawn in place with escapes
    assert "10/10" in text  # finished: the bar shown full


# ------------------------------------------------------------------ mocksync service


def test_systemd_unit_is_generated_for_this_install() -> None:
    argv = daemon_argv("/opt/my venv/bin/python", "/home/a/.mocksync", "/home/a/mock%oon")
    plan = plan_for("Linux", Path("/home/a"), 1000, argv, "/home/a/.mocksync/daemon.log")
    assert plan.path == Path("/home/a/.config/systemd/user/mocksync.service")
    unit = ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(plan.content.decode())
    svc = unit["Service"]
    assert shlex.split(svc["ExecStart"].replace("%%", "%")) == argv
    assert svc["Restart"] == "on-failure" and svc["UMask"] == "0077"
    assert unit["Install"]["WantedBy"] == "default.target"
    assert plan.load[-1] == ("systemctl", "--user", "enable", "--now", "mocksync.service")


def test_launchd_agent_is_generated_for_macos() -> None:
    argv = daemon_argv("/usr/local/bin/python3", "/Users/a/.mocksync", None)
    plan = plan_for("Darwin", Path("/Users/a"), 501, argv, "/Users/a/.mocksync/daemon.log")
    assert plan.path == Path(f"/Users/a/Library/LaunchAgents/{LAUNCHD_LABEL}.plist")
    doc = plistlib.loads(plan.content)
    assert doc["Label"] == LAUNCHD_LABEL and doc["ProgramArguments"] == argv
    assert doc["RunAtLoad"] is True and doc["KeepAlive"] == {"SuccessfulExit": False}
    assert doc["StandardErrorPath"] == "/Users/a/.mocksync/daemon.log"
    assert plan.load == (("launchctl", "bootstrap", "gui/501", str(plan.path)),)


def test_service_refuses_other_systems_and_bad_arguments() -> None:
    with pytest.raises(UnsupportedSystemError, match="Windows is not supported yet"):
        plan_for("Windows", Path("C:/Users/a"), 0, ["py"], "log")
    with pytest.raises(ValidationError, match="line break"):
        daemon_argv("/usr/bin/python3", "/home/a\n[Service]", None)


def test_service_install_status_uninstall(tmp_path: Path) -> None:
    if sys.platform not in ("linux", "darwin"):
        pytest.skip(f"mocksync service supports Linux and macOS, not {sys.platform}")
    user, home = tmp_path / "user", tmp_path / "home"
    env = {"HOME": str(user), "PATH": "/nonexistent"}  # no service manager to load it
    res = run(home, "service", "install", "--folder", str(tmp_path / "f"), env=env)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "not loaded:" in res.stdout and "is not installed here" in res.stdout
    doc = json.loads(run(home, "service", "status", "--json", env=env).stdout)
    assert doc["installed"] is True and doc["running"] is None
    written = Path(doc["file"])
    assert written.is_file() and str(user) in str(written)
    assert str(home.resolve()) in written.read_text(errors="replace")
    res = run(home, "service", "uninstall", env=env)
    assert res.exit_code == 0 and not written.exists()
    assert run(home, "service", "status", env=env).exit_code == 1  # not installed


def test_a_second_home_never_takes_over_the_first_homes_service(tmp_path: Path) -> None:
    """One service file per user: `service install` for a second home replaced the first
    home's service without a word, and that home's `service status` still said `installed`
    (its `uninstall` then removed the other home's). Each home must see only its own."""
    if sys.platform not in ("linux", "darwin"):
        pytest.skip(f"mocksync service supports Linux and macOS, not {sys.platform}")
    user, work, play = tmp_path / "user", tmp_path / "work", tmp_path / "play"
    env = {"HOME": str(user), "PATH": "/nonexistent"}
    assert run(work, "service", "install", env=env).exit_code == 0
    written = Path(json.loads(run(work, "service", "status", "--json", env=env).stdout)["file"])
    before = written.read_bytes()

    res = run(play, "service", "install", env=env)
    assert res.exit_code == 1 and "another home" in res.stderr, res.stderr
    assert f"--home {work.resolve()} service uninstall" in res.stderr, res.stderr
    assert written.read_bytes() == before  # nothing written
    doc = json.loads(run(play, "service", "status", "--json", env=env).stdout)
    assert doc["installed"] is False and doc["other_home"] == str(work.resolve())
    res = run(play, "service", "uninstall", env=env)
    assert res.exit_code == 1 and written.read_bytes() == before  # not removed
    assert json.loads(run(work, "service", "status", "--json", env=env).stdout)["installed"]

    assert run(work, "service", "uninstall", env=env).exit_code == 0
    assert run(play, "service", "install", env=env).exit_code == 0  # now free


@pytest.mark.parametrize("system", ["Linux", "Darwin"])
def test_the_home_a_service_file_runs_is_read_back(system: str) -> None:
    from mocksync.agent.service import installed_home

    home = "/home/a/my mock%sync $HOME"
    plan = plan_for(system, Path("/home/a"), 1000, daemon_argv("/usr/bin/python3", home, None),
                    "/home/a/daemon.log")
    assert installed_home(system, plan.content) == home
    assert installed_home(system, b"not a service file") is None
