"""Hosts in network namespaces, each running real daemons (docs/design/testing.md).

A bridge in its own namespace and one namespace per host, joined by veth pairs created
directly between them, addressed in 198.18.0.0/24 with no default route, so nothing in the
host namespace is touched and no packet can leave the lab. Every lab gets a unique name prefix
and is torn down (processes first, then namespaces) whatever happens. `skip_reason()` says why
namespace tests cannot run here (not root, no `ip`); `NEEDS_NAMESPACES` skips a module with
that sentence, never silently passes it.

Devices are helpers/devices.py's; daemons are helpers/daemons.py's `DaemonProcess` started
inside a host (`host_daemon`), so they are stopped and reaped like every other child.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers.daemons import DAEMON_START_S, CliResult, DaemonProcess, cli_process
from helpers.devices import Device
from helpers.files import editor_save
from helpers.polling import wait_sync
from helpers.procs import terminate

#: Subnet every lab uses (RFC 2544 benchmark range: routed nowhere).
LAB_NET = "198.18.0"
#: Longest any single `ip` command may take.
IP_TIMEOUT_S = 10
#: Longest a namespace test waits for discovery, sessions and convergence (seconds).
NETNS_WAIT_S = 30.0
#: Timing settings of a namespaced daemon (config.toml): short blind window, fast watcher.
HOST_DAEMON_CONFIG = "blind_window_s = 0.3\nwatch_step_ms = 5\nwatch_debounce_ms = 30\n"


def skip_reason() -> str | None:
    """Why namespace tests cannot run on this machine, or None when they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return ("network namespace tests need root (ip netns add); run them as root, as CI "
                "does, to test real LAN partitions")
    if shutil.which("ip") is None:
        return "the `ip` command (Debian package iproute2) is missing: apt-get install -y iproute2"
    probe = f"msprobe{secrets.token_hex(3)}"
    try:
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                           timeout=IP_TIMEOUT_S)
        if r.returncode != 0:
            return f"cannot create network namespaces here: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=IP_TIMEOUT_S)
    return None


_REASON = skip_reason()
#: A module's `pytestmark`: marked `netns`, skipped with the reason where namespaces cannot
#: be made.
NEEDS_NAMESPACES = [pytest.mark.netns,
                    pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r


@dataclass
class Host:
    name: str  # namespace name
    address: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def link(self, up: bool) -> None:
        """A real partition: this host's only interface goes down (or back up)."""
        _ip("-n", self.name, "link", "set", "eth0", "up" if up else "down")
        if up:
            _ip("-n", self.name, "route", "replace", "224.0.0.0/4", "dev", "eth0")


class Lab:
    """Hosts on one bridge, each in its own network namespace (see module docstring)."""

    def __init__(self, hosts: int) -> None:
        self.prefix = f"ms{secrets.token_hex(3)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: list[Host] = []
        self._made: list[str] = []
        try:
            self._build(hosts)
        except BaseException:
            self.teardown()
            raise

    def _build(self, count: int) -> None:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i in range(count):
            name = f"{self.prefix}-h{i}"
            address = f"{LAB_NET}.{11 + i}"
            _ip("netns", "add", name)
            self._made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
                "netns", name)
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", self.switch, "link", "set", f"p{i}", "up")
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0")
            self.hosts.append(Host(name, address))

    def teardown(self) -> None:
        for host in self.hosts:
            for proc in host.procs:
                terminate(proc)
        for name in reversed(self._made):
            _ip("netns", "del", name, check=False)
        self._made.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()


# ------------------------------------------------------------------------------ daemons


def host_daemon(dev: Device, host: Host) -> DaemonProcess:
    """`mocksync daemon --bind ADDR` for `dev` inside `host` (mDNS on), answering `status`."""
    (dev.home.root / "config.toml").write_text(HOST_DAEMON_CONFIG)
    daemon = DaemonProcess(dev.home, dev.folder, log_path=dev.home.root / "daemon.log",
                           host=host, name=f"{dev.name}'s daemon")
    daemon.start(wait=False)
    daemon.wait_ready(DAEMON_START_S)
    return daemon


def cli_on(dev: Device, *args: str, host: Host | None = None) -> CliResult:
    """`mocksync --home DEV ARGS...`, inside `host` when given."""
    return cli_process(dev.home, *args, host=host)


def join_on(dev: Device, host: Host, by: Device, space: str) -> CliResult:
    """`invite` on `by`, then `join --bind ADDR` on `dev` inside `host` (found on the LAN)."""
    token = cli_on(by, "invite", space).out.strip()
    res = cli_on(dev, "join", token, "--bind", host.address, "--timeout", "20", host=host)
    assert res.code == 0, f"join of {dev.name} failed: {res.err}"
    return res


def share_new(daemon: DaemonProcess, dev: Device, name: str, doc: Any, space: str,
              timeout: float = NETNS_WAIT_S) -> Path:
    """Save `doc` as `name` in `dev`'s folder, wait until its daemon lists it, share it."""
    src = dev.folder / name
    editor_save(src, doc)
    wait_sync(lambda: daemon.lists(src), f"{dev.name} to list {name}", timeout)
    daemon.call("share", file=str(src), space=space)
    return src
