"""Red team: another local user against a device's home (issue 13).

What worked before the fix: a home given as `--home` on a folder other users could write (a
shared or group-writable directory; `init` then makes it 0700) kept whatever they had put in
it first. `init` followed a `keys` symlink planted by another user and wrote the device's
private keys into that user's folder, and used a `log.sqlite3` the other user owned (mode
0666: the plaintext environments of the log and its WAL readable by them). Fixed in
`mocksync.paths` (`foreign_entry_problem`, checked by `Home.ensure` before anything is
created or followed): an entry of the home, `keys/` or `trash/` owned by another user is
refused with a sentence naming it, and nothing is written.

What held (tried, asserted elsewhere): the control socket's folder in /tmp pre-made by another
user or as a symlink, a socket answered by another uid (tests/test_local_user.py); temp files
are O_EXCL | O_NOFOLLOW with random names (tests/test_fsatomic.py); FIFOs, devices and links
out of the folder (tests/test_folderread.py, tests/journeys/test_odd_files.py).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mocksync.errors import PrivateDirError
from mocksync.paths import Home, foreign_entry_problem

#: A uid no process of the test runs as (root can chown to it without creating a user).
OTHER_UID = 54321

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root to give files to another uid (chown)")


def _stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, uid, 0, 0, 0, 0))


def test_foreign_entry_problem_names_the_file_and_the_owner() -> None:
    me = 1000
    assert foreign_entry_problem(Path("/h/keys"), _stat(stat.S_IFDIR | 0o700, me), me) is None
    assert foreign_entry_problem(Path("/h/k"), _stat(stat.S_IFLNK | 0o777, me), me) is None
    problem = foreign_entry_problem(Path("/h/keys"), _stat(stat.S_IFLNK | 0o777, 1002), me)
    assert problem is not None and "/h/keys" in problem and "uid 1002" in problem
    assert "remove it" in problem


def _init(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mocksync", "--home", str(home), "init",
                           "--name", "laptop"], capture_output=True, text=True, timeout=60)


@needs_root
@pytest.mark.parametrize("planted", ["keys-link", "log", "trash-entry"])
def test_init_refuses_what_another_user_planted_in_a_loose_home(tmp_path: Path,
                                                                planted: str) -> None:
    home = tmp_path / "shared-home"
    home.mkdir()
    home.chmod(0o777)  # a folder others could write before it became the home
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)
    if planted == "keys-link":
        (home / "keys").symlink_to(theirs)
        os.lchown(home / "keys", OTHER_UID, OTHER_UID)
        culprit = home / "keys"
    elif planted == "log":
        culprit = home / "log.sqlite3"
        culprit.write_bytes(b"")
        culprit.chmod(0o666)
        os.chown(culprit, OTHER_UID, OTHER_UID)
    else:
        (home / "trash").mkdir(mode=0o777)
        culprit = home / "trash" / "1-petstore.json"
        culprit.symlink_to(theirs / "loot.json")
        os.lchown(culprit, OTHER_UID, OTHER_UID)

    res = _init(home)
    assert res.returncode != 0, res.stdout
    assert str(culprit) in res.stderr and f"uid {OTHER_UID}" in res.stderr
    assert list(theirs.iterdir()) == []  # no key, nothing at all in their folder
    assert not (home / "docs.json").exists()  # nothing made: no identity, no space
    assert not (home / "keys").is_dir() or (home / "keys").is_symlink() \
        or list((home / "keys").iterdir()) == []

    # Once it is gone, init works and everything is the user's own.
    culprit.unlink()
    res = _init(home)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(os.lstat(home).st_mode) == 0o700
    for p in [home, *home.rglob("*")]:
        assert os.lstat(p).st_uid == os.getuid(), p
    assert sorted(p.name for p in (home / "keys").iterdir())


def test_home_ensure_raises_the_same_in_process(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another uid (chown)")
    home = tmp_path / "h"
    home.mkdir()
    (home / "docs.json").write_text("{}")
    os.chown(home / "docs.json", OTHER_UID, OTHER_UID)
    with pytest.raises(PrivateDirError, match="another user"):
        Home(home).ensure()
    assert not (home / "keys").exists()
