"""Journey: `mocksync merge` as git's merge driver for `*.json`, set up as the README says.

Why a journey: the README's setup (`*.json merge=mocksync` in .gitattributes) sends every
JSON file of the repository through the driver, not only environments. The driver refused
anything that is not an environment ("not a Mockoon environment"), so git stopped on
package.json even when the two branches changed different lines, which git merges by itself
without the driver. Here a user's repository holds an environment and a package.json; both
are changed on two branches, and `git merge` (which runs the real `mocksync` executable) must
merge each the way its kind merges: the environment property by property, package.json as
text, with git's conflict markers when the same line changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .harness import example_doc, mocksync_command

PACKAGE = '{\n  "name": "shop",\n  "version": "1.0.0",\n  "scripts": {\n    "test": "jest"\n  }\n}\n'


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, check=check, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def _commit_on(repo: Path, branch: str, env: dict[str, Any], package: str) -> None:
    _git(repo, "checkout", "-q", branch)
    (repo / "petstore.json").write_text(json.dumps(env, indent=2))
    (repo / "package.json").write_text(package)
    _git(repo, "commit", "-qam", f"on {branch}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    # The README's setup, word for word but for the executable's path.
    driver = " ".join([*mocksync_command(), "merge", "%O", "%A", "%B"])
    _git(repo, "config", "merge.mocksync.name", "mocksync environment merge")
    _git(repo, "config", "merge.mocksync.driver", driver)
    (repo / ".gitattributes").write_text("*.json merge=mocksync\n")
    (repo / "petstore.json").write_text(json.dumps(example_doc("petstore"), indent=2))
    (repo / "package.json").write_text(PACKAGE)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    _git(repo, "branch", "feature")
    return repo


def test_git_merges_environments_by_property_and_other_json_as_text(repo: Path) -> None:
    env = json.loads((repo / "petstore.json").read_text())
    ours, theirs = json.loads(json.dumps(env)), json.loads(json.dumps(env))
    ours["port"] = 4100
    theirs["routes"][0]["documentation"] = "from the feature branch"
    _commit_on(repo, "feature", theirs, PACKAGE.replace('"jest"', '"vitest"'))
    _commit_on(repo, "main", ours, PACKAGE.replace('"1.0.0"', '"1.1.0"'))

    r = _git(repo, "merge", "--no-edit", "feature", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    merged = json.loads((repo / "petstore.json").read_text())
    assert merged["port"] == 4100
    assert merged["routes"][0]["documentation"] == "from the feature branch"
    package = json.loads((repo / "package.json").read_text())
    assert package["version"] == "1.1.0" and package["scripts"]["test"] == "vitest"
    assert _git(repo, "status", "--porcelain").stdout == ""


def test_the_same_line_changed_in_other_json_stops_the_merge_with_git_markers(
        repo: Path) -> None:
    _commit_on(repo, "feature", json.loads((repo / "petstore.json").read_text()),
               PACKAGE.replace('"shop"', '"shop-feature"'))
    _commit_on(repo, "main", json.loads((repo / "petstore.json").read_text()),
               PACKAGE.replace('"shop"', '"shop-main"'))

    r = _git(repo, "merge", "--no-edit", "feature", check=False)
    assert r.returncode != 0 and "CONFLICT" in r.stdout, r.stdout + r.stderr
    assert "merged as text" in r.stderr, r.stderr
    text = (repo / "package.json").read_text()
    assert "<<<<<<< ours" in text and '"shop-main"' in text and '"shop-feature"' in text
    assert ">>>>>>> theirs" in text
    assert "UU package.json" in _git(repo, "status", "--porcelain").stdout
