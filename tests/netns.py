"""Helpers for the LAN tests: devices on one machine, and hosts in network namespaces.

Devices: each has a home (keys, log, docs) and a folder; `team` pairs devices into a space
with the real join handshake (`devtools.pairing.pair`), and `share_log` hands a member the
admin's current membership log (what log gossip would do) so late members know each other.

Namespaces (docs/design/testing.md): a bridge in its own namespace and one namespace per host, joined by
veth pairs created directly between them, addressed in 198.18.0.0/24 with no default route, so
nothing in the host namespace is touched and no packet can leave the lab. Every lab gets a
unique name prefix and is torn down (processes first, then namespaces) whatever happens.
`skip_reason()` says why namespace tests cannot run here (not root, no `ip`), so they are
skipped with that sentence, never silently passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mocksync.agent.client import ControlClient, ControlError, DaemonNotRunning
from mocksync.devtools.pairing import pair
from mocksync.paths import Home
from mocksync.space.actions import create_space, init_device
from mocksync.space.identity import Identity
from mocksync.space.store import append_entries, get_space

from helpers.polling import wait_sync

#: Subnet every lab uses (RFC 2544 benchmark range: routed nowhere).
LAB_NET = "198.18.0"
#: Longest any single `ip` command may take.
IP_TIMEOUT_S = 10


# ------------------------------------------------------------------------------ devices


@dataclass
class Device:
    name: str
    home: Home
    folder: Path
    identity: Identity

    @property
    def id(self) -> str:
        return self.identity.device_id


def make_device(root: Path, name: str) -> Device:
    home = Home.resolve(root / name / "home")
    folder = root / name / "envs"
    folder.mkdir(parents=True)
    ident, _personal = init_device(home, name=name, member_name=f"{name}-user")
    return Device(name, home, folder, ident)


def team(admin: Device, *others: Device, name: str = "team") -> str:
    """A space created by `admin` with `others` paired in, every member's log current."""
    space = create_space(admin.home, admin.identity, name).space_id
    for dev in others:
        assert pair(admin.home, dev.home, space) == space
    for dev in others:
        share_log(admin, dev, space)
    return space


def share_log(src: Device, dst: Device, space: str) -> None:
    """Give `dst` every membership entry `src` holds (what log gossip would do)."""
    sp = get_space(src.home, space)
    append_entries(dst.home, space, sp.entries)


@contextlib.contextmanager
def short_tmp(prefix: str = "mslan-") -> Iterator[Path]:
    """A short temp dir (AF_UNIX socket paths are limited to ~107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def mockoon_bytes(doc: Any) -> bytes:
    """What Mockoon desktop writes: JSON.stringify(doc, null, 2), no trailing newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


def editor_save(path: Path, doc: Any) -> None:
    """An editor-style save: whole file to a temp name beside it, then rename over."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(mockoon_bytes(doc) if not isinstance(doc, bytes) else doc)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def wait_for(pred: Callable[[], Any], what: str, timeout: float, step: float = 0.05) -> Any:
    """`helpers.polling.wait_sync` with the timeout these tests always give."""
    return wait_sync(pred, what, timeout, step)


async def await_for(pred: Callable[[], Any], what: str, timeout: float,
                    step: float = 0.02) -> Any:
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = pred()
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)


def mocksync_command() -> list[str]:
    script = Path(sys.executable).parent / "mocksync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mocksync.cli"]


# ------------------------------------------------------------------------------ namespaces


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

    def popen(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], stdout=log,
                                    stderr=log, stdin=subprocess.DEVNULL,
                                    env=env or dict(os.environ))
        self.procs.append(proc)
        return proc


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
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            for proc in host.procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for name in reversed(self._made):
            _ip("netns", "del", name, check=False)
        self._made.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()


# ------------------------------------------------------------------------------ daemons

#: Longest a namespaced daemon may take to answer `status` after it was started.
DAEMON_WAIT_S = 30.0


class Daemon:
    """`mocksync daemon --bind ADDR` for one device, inside one host's namespace."""

    def __init__(self, dev: Device, host: Host) -> None:
        self.dev, self.host = dev, host
        (dev.home.root / "config.toml").write_text(
            "blind_window_s = 0.3\nwatch_step_ms = 5\nwatch_debounce_ms = 30\n")
        self.log = dev.home.root / "daemon.log"
        self.proc = host.popen([*mocksync_command(), "--home", str(dev.home.root), "daemon",
                                "--folder", str(dev.folder), "--bind", host.address, "-v"],
                               self.log)
        wait_for(self._ready, f"{dev.name}'s daemon to start", DAEMON_WAIT_S)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon {self.dev.name} exited: {self.tail()}")
        try:
            return self.call("status")["daemon"]["pid"] == self.proc.pid
        except (DaemonNotRunning, ControlError):
            return False

    def call(self, method: str, **params: Any) -> Any:
        return ControlClient(self.dev.home.socket, timeout=30).call(method, **params)

    def peers(self) -> dict[str, dict[str, Any]]:
        return {p["device"]: p for p in self.call("peers")["peers"]}

    def connected_to(self, *devices: Device) -> bool:
        peers = self.peers()
        return all(peers.get(d.id, {}).get("state") == "connected" for d in devices)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def env_file(dev: Device) -> Path | None:
    files = [p for p in dev.folder.glob("*.json") if not p.name.startswith(".")]
    return files[0] if len(files) == 1 else None


def edit(path: Path, fn) -> None:
    doc = read_json(path)
    assert doc is not None, f"{path} is not readable JSON"
    fn(doc)
    editor_save(path, doc)


def set_doc(route: int, value: str):
    def fn(doc: dict[str, Any]) -> None:
        doc["routes"][route]["documentation"] = value
    return fn
