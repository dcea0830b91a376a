"""`mocksync merge` as git's merge driver never drops work silently (issue 15): a branch that
deletes a route merged with one that added a response to it leaves the merge conflicted
(driver exit 1, git stops), says what was dropped, and keeps the preferred side's result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from envfactory import find, small_env, u
from envfactory import response as make_response

MOCKSYNC = [sys.executable, "-m", "mocksync"]
ADDED = "aaaaaaaa-0000-4000-8000-000000000970"


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, check=check, capture_output=True,
                          text=True, timeout=60)


def _dump(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    driver = " ".join(MOCKSYNC) + " --home " + str(tmp_path / "home") + " merge %O %A %B"
    _git(repo, "config", "merge.mocksync.driver", driver)
    (repo / ".gitattributes").write_text("*.json merge=mocksync\n")
    (repo / "env.json").write_text(_dump(small_env()))
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    return repo


def _branches(repo: Path, delete_on_main: bool) -> None:
    """One branch deletes route /users, the other adds a response to it."""
    base = small_env()
    deleted = json.loads(_dump(base))
    deleted["routes"] = [r for r in deleted["routes"] if r["uuid"] != u(10)]
    find(deleted, u(1))["children"] = [c for c in find(deleted, u(1))["children"]
                                       if c["uuid"] != u(10)]
    added = json.loads(_dump(base))
    resp = make_response(0, label="added on a branch")
    resp["uuid"] = ADDED
    find(added, u(10))["responses"].append(resp)
    main_doc, other_doc = (deleted, added) if delete_on_main else (added, deleted)
    _git(repo, "checkout", "-qb", "other")
    (repo / "env.json").write_text(_dump(other_doc))
    _git(repo, "commit", "-qam", "other side")
    _git(repo, "checkout", "-q", "main")
    (repo / "env.json").write_text(_dump(main_doc))
    _git(repo, "commit", "-qam", "main side")


@pytest.mark.parametrize("delete_on_main", [True, False], ids=["delete-ours", "delete-theirs"])
def test_a_response_added_to_a_deleted_route_stops_the_git_merge(repo: Path,
                                                                  delete_on_main: bool) -> None:
    _branches(repo, delete_on_main)
    r = _git(repo, "merge", "--no-edit", "other", check=False)
    assert r.returncode != 0, r.stdout + r.stderr  # the driver exited 1: git stops
    assert "CONFLICT" in r.stdout
    status = _git(repo, "status", "--porcelain").stdout
    assert "UU env.json" in status
    merged = json.loads((repo / "env.json").read_text())
    # The delete wins (whichever side made it); the response is named, not silently gone.
    assert u(10) not in {x["uuid"] for x in merged["routes"]}
    assert ADDED not in (repo / "env.json").read_text()


def test_the_driver_exit_code_and_message(tmp_path: Path) -> None:
    base = small_env()
    ours = json.loads(_dump(base))
    ours["routes"] = [r for r in ours["routes"] if r["uuid"] != u(10)]
    find(ours, u(1))["children"] = [c for c in find(ours, u(1))["children"] if c["uuid"] != u(10)]
    theirs = json.loads(_dump(base))
    resp = make_response(0, label="added")
    resp["uuid"] = ADDED
    find(theirs, u(10))["responses"].append(resp)
    paths = []
    for name, doc in (("base", base), ("ours", ours), ("theirs", theirs)):
        p = tmp_path / f"{name}.json"
        p.write_text(_dump(doc))
        paths.append(str(p))
    r = subprocess.run([*MOCKSYNC, "--home", str(tmp_path / "home"), "merge", *paths, "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    [c] = out["conflicts"]
    assert c["entity"] == ADDED and c["field"] == ["#parent", "p", "list"]
    assert c["parent"] == u(10)
    assert "deleted meanwhile" in c["description"] and "/users" in c["description"]
    assert "deleted meanwhile" in r.stderr
    # Without the delete the same addition merges cleanly (exit 0).
    r = subprocess.run([*MOCKSYNC, "--home", str(tmp_path / "home"), "merge", paths[0],
                        paths[0], paths[2], "-o", str(tmp_path / "out.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
