"""Journey: the disk fills up under a device's folder, or under its home, then space returns.

What a user lives (issue 13): Bob's disk is full while the team keeps editing. His daemon
cannot write the team's edits into his file, or cannot commit his own save to its log; it must
say so in `status` in words (`error`: "disk full writing petstore-api.json ..."), keep his file
intact, log the real cause (not SQLite's "cannot rollback"), and, once he frees space, catch
up by itself (nobody runs `mocksync reconnect`) with nothing lost on any device.

The full disk is real: a 2 MiB tmpfs mounted by the test (root only; skipped saying so
otherwise) over Bob's folder or his home, filled with a file until the kernel says ENOSPC.
It is always unmounted at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Device, Team

#: Size of the tmpfs the test fills (small, so filling it is quick).
TMPFS_BYTES = 2 * 1024 * 1024
#: Longest the daemon may take to notice the full disk / to recover once space returns: its
#: backoff is capped at 30 s, but the first retries come within a few seconds.
RECOVER_S = 30.0

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None,
    reason="mounting a tmpfs to fill up needs root and mount(8); run the suite as root (CI does)")


@contextlib.contextmanager
def tmpfs(where: Path) -> Iterator[Path]:
    """A fresh TMPFS_BYTES tmpfs mounted on `where` (made empty first); always unmounted."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "tmpfs",
                    str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(where: Path) -> Path:
    """Fill the filesystem of `where` with one file until the kernel refuses (ENOSPC)."""
    filler = where / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 64, 1):  # big steps, then whatever still fits
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def label(doc: dict[str, Any], i: int) -> str:
    return doc["routes"][i]["responses"][0]["label"]


def set_label(i: int, value: str):  # noqa: ANN201 - an edit for Device.save
    return lambda d: d["routes"][i]["responses"][0].update(label=value)


def start_and_share(team: Team, laptop: Device, desktop: Device, bob: Device) -> tuple[str, dict]:
    team.space(laptop, "team")
    team.start(laptop, desktop, bob)
    team.join(bob, "team", by=laptop)
    team.join(desktop, "team", by=laptop, device=True)
    laptop.add_example("petstore", "petstore.json")
    env = laptop.share("petstore.json")["uuid"]
    doc = team.synced(env, laptop, desktop, bob)
    return env, doc


def error_entry(dev: Device, env: str) -> dict[str, Any] | None:
    e = dev.env(env)
    return e if e is not None and e.get("state") == "error" else None


def test_folder_disk_full_during_team_edits_then_freed(team: Team) -> None:
    laptop = team.device("alice-laptop", "alice")
    desktop = team.device("alice-desktop", "alice")
    bob = team.device("bob-laptop", "bob")
    with tmpfs(bob.folder):
        try:
            env, _ = start_and_share(team, laptop, desktop, bob)
            bob_file = bob.file_of(env)
            assert bob_file is not None
            before = bob_file.read_bytes()
            filler = fill(bob.folder)

            # The team keeps editing while Bob's disk is full.
            laptop.save("petstore", set_label(0, "laptop while bob is full"))
            desktop.save(desktop.file_of(env).name, set_label(1, "desktop while bob is full"))
            entry = team.wait(lambda: error_entry(bob, env), "bob's status to say error",
                              timeout=RECOVER_S)
            assert entry["reason"].startswith(f"disk full writing {bob_file.name} ("), entry
            assert "No space left on device" in entry["reason"]
            assert "retrying by itself" in entry["reason"]
            assert bob_file.read_bytes() == before  # intact, never half-written
            text = bob.ms("status").out
            assert "error" in text and f"disk full writing {bob_file.name}" in text
            log = bob.log()
            assert f"disk full writing {bob_file.name}" in log and "ENOSPC" in log
            assert "cannot rollback" not in log
            # Laptop and desktop are unaffected.
            team.everywhere(env, (laptop, desktop), lambda d: label(d, 0).startswith("laptop")
                            and label(d, 1).startswith("desktop"), "both edits")

            filler.unlink()  # space returns; nobody runs `mocksync reconnect`
            team.everywhere(env, (bob,), lambda d: label(d, 0) == "laptop while bob is full"
                            and label(d, 1) == "desktop while bob is full",
                            "the edits made while bob's disk was full", timeout=RECOVER_S)
            bob.wait_state(env, "synced", timeout=RECOVER_S)
            bob.save(bob_file.name, set_label(2, "bob after"))
            doc = team.synced(env, laptop, desktop, bob)
            assert [label(doc, i) for i in range(3)] == [
                "laptop while bob is full", "desktop while bob is full", "bob after"]
        finally:
            for dev in (bob, desktop, laptop):
                dev.stop()


def test_home_disk_full_commit_and_receive_then_freed(team: Team) -> None:
    laptop = team.device("alice-laptop", "alice")
    desktop = team.device("alice-desktop", "alice")
    home = team.root / "bob-laptop" / "h"
    with tmpfs(home):
        bob = team.device("bob-laptop", "bob")  # `init` in the tmpfs
        try:
            env, _ = start_and_share(team, laptop, desktop, bob)
            bob_file = bob.file_of(env)
            assert bob_file is not None
            filler = fill(home)

            # Bob saves while his home is full, and the team edits too.
            bob.save(bob_file.name, set_label(0, "bob while his home is full"))
            laptop.save("petstore", set_label(1, "laptop while bob's home is full"))
            entry = team.wait(lambda: error_entry(bob, env), "bob's status to say error",
                              timeout=RECOVER_S)
            assert entry["reason"].startswith("disk full "), entry
            assert "the daemon's own state in" in entry["reason"]
            assert label(bob.read(bob_file.name), 0) == "bob while his home is full"
            log = bob.log()
            assert "disk full" in log and "cannot rollback" not in log

            filler.unlink()
            want = ("bob while his home is full", "laptop while bob's home is full")
            team.everywhere(env, (laptop, desktop, bob),
                            lambda d: (label(d, 0), label(d, 1)) == want,
                            "both edits everywhere once bob's home has space",
                            timeout=RECOVER_S)
            bob.wait_state(env, "synced", timeout=RECOVER_S)
            doc = team.synced(env, laptop, desktop, bob)
            assert (label(doc, 0), label(doc, 1)) == want
        finally:
            for dev in (bob, desktop, laptop):
                dev.stop()
