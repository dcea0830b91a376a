"""Odd files in the folder (issue 13), black-box: a real `mocksync daemon` and the real CLI.

Before the fix a FIFO named `y.json` hung the daemon for good at the next rescan or restart
(blocking open), a symlink `x.json -> /etc/passwd` was read and listed from outside the folder,
and an unreadable file showed only after a rescan. Now each is `skipped` in `status` (text and
--json) with its reason, named as soon as it appears, and the daemon keeps answering.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.daemons import DaemonProcess, cli, cli_process
from helpers.devices import Device, make_device
from helpers.files import copy_example, edit_file
from helpers.polling import wait_sync
from helpers.procs import short_tmp

WAIT_S = 10.0


@pytest.fixture
def dev() -> Iterator[Device]:
    with short_tmp() as root:
        d = make_device(root, "odd")
        copy_example("petstore.json", d.folder)
        yield d


def entries(dev: Device) -> dict[str, dict[str, Any]]:
    """`status --json` environments by file name, through the CLI."""
    res = cli(dev.home, "status", "--json")
    assert res.code == 0, res.err
    return {Path(e["file"]).name: e for e in res.json()["environments"]}


def wait_state(dev: Device, name: str, state: str, timeout: float = WAIT_S) -> dict[str, Any]:
    return wait_sync(lambda: (entries(dev).get(name) or {}).get("state") == state
                     and entries(dev)[name], f"{name} to be {state} in status", timeout)


def test_odd_files_are_named_and_never_hang_the_daemon(dev: Device, tmp_path: Path) -> None:
    daemon = DaemonProcess(dev.home, dev.folder).start()
    try:
        wait_state(dev, "petstore.json", "local")
        folder = dev.folder.resolve()
        os.mkfifo(folder / "y.json")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(folder / "sock.json"))
        (folder / "x.json").symlink_to("/etc/passwd")
        outside = tmp_path / "outside.json"
        shutil.copyfile(folder / "petstore.json", outside)
        (folder / "far.json").symlink_to(outside)
        (folder / "inner").mkdir()
        copy_example("chat-websocket.json", folder / "inner")
        (folder / "near.json").symlink_to(folder / "inner" / "chat-websocket.json")
        if os.geteuid() == 0:
            os.mknod(folder / "dev.json", stat.S_IFCHR | 0o600, os.makedev(1, 3))

        # Named on the event (no rescan, no reconnect), each with what it is.
        fifo = wait_state(dev, "y.json", "skipped")
        assert "named pipe (FIFO)" in fifo["reason"] and fifo["uuid"] is None
        assert "is a socket" in wait_state(dev, "sock.json", "skipped")["reason"]
        passwd = wait_state(dev, "x.json", "skipped")
        assert "/etc/passwd" in passwd["reason"] and "outside the synced folder" in passwd["reason"]
        far = wait_state(dev, "far.json", "skipped")
        assert far["uuid"] is None and far["name"] == ""  # never read: its content is not shown
        if os.geteuid() == 0:
            assert "device node" in wait_state(dev, "dev.json", "skipped")["reason"]
        # A symlink staying inside the folder is followed (listed by its target).
        wait_sync(lambda: any(e["file"] == str(folder / "inner" / "chat-websocket.json")
                              and e["state"] == "local" for e in
                              cli(dev.home, "status", "--json").json()["environments"]),
                  "the environment behind near.json listed as local")
        files = [e["file"] for e in cli(dev.home, "status", "--json").json()["environments"]]
        assert "/etc/passwd" not in files and str(outside) not in files

        # The text form says the same, through the real executable.
        text = cli_process(dev.home, "status")
        assert text.code == 0, text.err
        assert "y.json" in text.out and "skipped: y.json is a named pipe" in text.out
        assert "x.json" in text.out and "outside the synced folder" in text.out

        # The daemon keeps working: a real environment still syncs its edits.
        assert cli(dev.home, "share", "petstore.json").code == 0
        wait_state(dev, "petstore.json", "synced")
        edit_file(folder / "petstore.json", lambda d: d.__setitem__("port", 3999))
        assert daemon.stop() == 0

        # Restart with every odd file still there: it starts (was: hung for good at the scan).
        daemon.start(wait=False)
        daemon.wait_ready(timeout=20)
        after = entries(dev)
        assert after["y.json"]["state"] == "skipped"
        assert after["x.json"]["state"] == "skipped"
        assert after["sock.json"]["state"] == "skipped"
        assert after["petstore.json"]["state"] == "synced"
        # The FIFO is never written over, nor opened: still a FIFO, nobody blocked on it.
        assert stat.S_ISFIFO(os.lstat(folder / "y.json").st_mode)
        assert os.readlink(folder / "x.json") == "/etc/passwd"
        # Removing an odd file removes its line.
        os.unlink(folder / "y.json")
        wait_sync(lambda: "y.json" not in entries(dev), "y.json to leave status")
        sock.close()
    finally:
        daemon.stop()


def _can_drop_dac() -> str | None:
    """Why the unreadable-file test cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return None  # not root: permissions apply to the daemon as they are
    if shutil.which("setpriv") is None:
        return "root reads any file, and setpriv (to drop CAP_DAC_OVERRIDE) is not installed"
    probe = subprocess.run(["setpriv", "--inh-caps=-all",
                            "--bounding-set=-dac_override,-dac_read_search", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        return f"setpriv cannot drop capabilities here: {probe.stderr.decode().strip()}"
    return None


class UnprivilegedDaemon(DaemonProcess):
    """The daemon as an ordinary user's would run: as root (the tests' user) but without
    the capabilities that let root read any file, so file permissions apply to it."""

    def argv(self) -> list[str]:
        if os.geteuid() != 0:
            return super().argv()
        return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
                *super().argv()]


@pytest.mark.skipif(_can_drop_dac() is not None, reason=str(_can_drop_dac()))
def test_unreadable_file_is_named_at_once(dev: Device) -> None:
    daemon = UnprivilegedDaemon(dev.home, dev.folder).start()
    try:
        folder = dev.folder.resolve()
        wait_state(dev, "petstore.json", "local")
        # A new file nobody may read, and an existing one made unreadable: both named on the
        # event (before the fix: not at all until a rescan or restart).
        locked = folder / "locked.json"
        shutil.copyfile(folder / "petstore.json", locked)
        locked.chmod(0)
        entry = wait_state(dev, "locked.json", "skipped", timeout=5)
        assert "permission denied" in entry["reason"] and "chmod u+r locked.json" in entry["reason"]
        (folder / "petstore.json").chmod(0)
        wait_state(dev, "petstore.json", "skipped", timeout=5)
        # Readable again: back to a local environment at once.
        locked.chmod(0o644)
        wait_state(dev, "locked.json", "local", timeout=5)
        assert daemon.stop() == 0
    finally:
        daemon.stop()
